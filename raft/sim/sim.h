/* sim.h — a deterministic simulator for the Raft core.
 *
 * N instances of the pure core run in virtual time over a seeded network
 * that can delay, drop, duplicate and reorder messages and cut any link in
 * either direction; nodes crash (losing everything not yet persisted),
 * restart from what they persisted, and pause. After every event the
 * checker (check.c) verifies the global Raft properties of §5.2-§5.4:
 * Election Safety, Leader Append-Only, Log Matching, Leader Completeness and
 * State Machine Safety, plus the linearizability of ReadIndex reads. The same
 * options and seed give byte-identical output.
 *
 * The simulator plays the host: it honours the contract of raft.h (persist
 * before after_persist messages, in order; apply in order; time from the
 * event queue).
 */
#ifndef RAFT_SIM_H
#define RAFT_SIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "raft.h"

enum { SIM_MAX_NODES = 9 };

/* The clients of random schedules (client.c): a few keys, so that reads
 * and writes collide, and a fixed set of clients, each with one operation
 * outstanding: SIM_READERS that read, the others write. Apart, so that
 * writes stuck at a leader cut off from the others (until they time out)
 * do not keep its readers away from it. */
enum { SIM_KEYS = 3, SIM_CLIENTS = 24, SIM_READERS = 8 };

struct sim_options {
    unsigned nodes;
    unsigned voters; /* nodes 1..voters bootstrap the cluster; the rest may join later */
    uint64_t seed;
    struct raft_config raft; /* id and seed are set per node */
    uint32_t tick_ms;        /* how often every node gets RAFT_TICK */
    uint32_t delay_min_ms;   /* network delay of every link, uniform in [min, max] */
    uint32_t delay_max_ms;
    uint32_t fsync_min_ms; /* time a write takes to become durable */
    uint32_t fsync_max_ms;
    FILE *out;           /* trace and narration; NULL for silence */
    bool trace_messages; /* also print every message sent and dropped */
    /* Every record as a JSON line (docs/trace.md, "JSON lines"): the core's
     * rules, every message sent, received and dropped with an id matching a
     * receipt to its send, client requests, node states, the network's cuts
     * and the checker's violations. NULL for none. */
    FILE *json;
    /* Teaching knob of the host, refused like the core's (RAFT_EUNSAFE)
     * unless raft.allow_unsafe is set: peers take a node that lost its disk
     * back at once, the voter it was, with an empty log and no vote record,
     * instead of refusing its new incarnation until it is replaced. Raft
     * §5.4 assumes stable storage; see docs/simulator.md, "Disk loss". */
    bool unsafe_trust_wiped;
    /* Test knob: the checker's index-level read check (a read must reflect
     * every index committed before it began) is off, so that only the
     * client history can catch a stale read; proves that check can fail. */
    bool test_history_only;
};

/* Defaults for simulation: 150 ms election timeout, 30 ms heartbeats,
 * 5 ms ticks, 1-10 ms network delay, 1-3 ms fsync. */
void sim_options_default(struct sim_options *o, unsigned nodes, uint64_t seed);

struct sim;

/* Returns NULL (after printing why to stderr) on a bad configuration. */
struct sim *sim_new(const struct sim_options *o);
void sim_free(struct sim *s);

uint64_t sim_now(const struct sim *s);
unsigned sim_nodes(const struct sim *s);

/* Advance virtual time, processing every event due. */
void sim_run_for(struct sim *s, uint64_t ms);
/* Advance until pred() holds (checked after every event) or max_ms pass.
 * Returns whether pred() held. */
bool sim_run_until(struct sim *s, uint64_t max_ms, bool (*pred)(struct sim *s, void *arg),
                   void *arg);

/* The node that leads the highest term among running nodes, or 0. */
raft_id sim_leader(struct sim *s);
/* Whether every running member of the leader's configuration (or only every
 * voter) has committed and applied `index`. */
bool sim_all_committed(struct sim *s, raft_index index, bool voters_only);
struct raft *sim_raft(struct sim *s, raft_id id); /* NULL while crashed */
bool sim_is_up(const struct sim *s, raft_id id);
bool sim_is_paused(const struct sim *s, raft_id id);

/* Client operations. `at` 0 means the current leader. Proposals carry
 * distinct payloads. Return a raft error code. */
int sim_propose(struct sim *s, raft_id at, unsigned n, raft_index *first, raft_index *last);
/* The same with payloads of `size` bytes (at least the command's own name). */
int sim_propose_sized(struct sim *s, raft_id at, unsigned n, size_t size, raft_index *first,
                      raft_index *last);
int sim_read(struct sim *s, raft_id at);

/* The clients of the key-value store (client.c), as random schedules run
 * them. Each operation is taken by a free client (one operation
 * outstanding each; readers read, the others write) and recorded, invoke and completion, in the
 * client history; sim_check_history() checks it for linearizability.
 * A write is a set, or now and then a cas, of a random key, with a value
 * no other write uses; it is answered when the node it was proposed at
 * applies it. A read is a get, answered with the value in the serving
 * node's store when the core releases it. An outcome the client cannot
 * know (the node crashed, the entry was overwritten, no answer in time)
 * is "info", and the client goes on under a new process id. */
/* n writes by free clients, proposed together at node at (0: the leader).
 * Returns the core's answer, or RAFT_EBUSY when no client is free. */
int sim_client_write(struct sim *s, raft_id at, unsigned n);
/* A get of a random key at node at (0: the leader), by a free client. */
int sim_client_read(struct sim *s, raft_id at);
/* Check the history (tests/lincheck); a violation is reported as property
 * "Linearizability", with the failing window narrated in the trace.
 * Returns false on a violation. */
bool sim_check_history(struct sim *s);
/* Ask the leader to change the configuration (thesis §4). */
int sim_change_conf(struct sim *s, enum raft_conf_op op, raft_id id);
/* Ask the leader to hand leadership to `to` (0: the most up-to-date voter). */
int sim_transfer(struct sim *s, raft_id to);
/* Start an election at node `id` now (RAFT_TIMEOUT). */
int sim_campaign(struct sim *s, raft_id id);

/* Process faults. */
void sim_crash(struct sim *s, raft_id id);
void sim_restart(struct sim *s, raft_id id);
void sim_pause(struct sim *s, raft_id id);
void sim_resume(struct sim *s, raft_id id);

/* Disk loss (disk_loss.c): the node crashes if it runs, and its stable
 * storage is gone: log, term, vote, snapshot, and the incarnations of its
 * peers it had recorded. sim_restart() brings it back with an empty data
 * directory of a new incarnation, as a server that joins (no configuration
 * of its own: it must not bootstrap the cluster again). Its peers refuse
 * every message of the new incarnation until it is replaced (unless
 * unsafe_trust_wiped). */
void sim_lose_disk(struct sim *s, raft_id id);
/* The operator replaces node id, as the runtime's operator would after a
 * disk loss: remove it from the configuration; add it back as a learner
 * once the leader has committed that; promote it once the leader finds it
 * caught up (thesis §4.1, §4.2.1). Each peer forgets the incarnation it
 * recorded for id (and takes the new one) only once it can no longer
 * count id as the voter it was: it has committed the removal, or id is a
 * voter again. It runs in the background, a step whenever the cluster
 * allows (the operator looks every 50 ms). One replacement at a time:
 * returns false if another one is running. */
bool sim_replace(struct sim *s, raft_id id);
/* The node being replaced, or 0. */
raft_id sim_replacing(const struct sim *s);

/* Network faults. Links are directed: block(a, b) drops a's messages to b. */
void sim_block(struct sim *s, raft_id from, raft_id to, bool blocked);
void sim_heal(struct sim *s);
void sim_set_drop(struct sim *s, unsigned pct);
void sim_set_dup(struct sim *s, unsigned pct);
/* Links deliver in order (like TCP) unless reordering is on. */
void sim_set_reorder(struct sim *s, bool reorder);
void sim_set_delay(struct sim *s, uint32_t min_ms, uint32_t max_ms);
void sim_set_link_delay(struct sim *s, raft_id from, raft_id to, uint32_t min_ms, uint32_t max_ms);
/* Clock skew: node id's clock runs at pct percent of real (virtual) time. */
void sim_set_clock_rate(struct sim *s, raft_id id, unsigned pct);

/* Narration: a line in the trace, stamped with the virtual time. */
void sim_say(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Results of the checker. */
const char *sim_violation(const struct sim *s); /* first violation, or NULL */
bool sim_violated(const struct sim *s, const char *property);
struct sim_stats {
    uint64_t events;
    uint64_t messages_sent;
    uint64_t messages_dropped;
    uint64_t entry_bytes_sent; /* payload bytes carried by AppendEntries */
    uint64_t elections;        /* leaders elected */
    uint64_t proposals;
    uint64_t committed; /* highest index committed anywhere */
    uint64_t reads_ok;
    uint64_t reads_failed;
};
void sim_get_stats(const struct sim *s, struct sim_stats *st);

/* Print one line per node: role, term, commit, applied, last index. */
void sim_print_status(struct sim *s);
/* Print a node's log as index:term pairs. */
void sim_print_log(struct sim *s, raft_id id);
/* Every node's log as a grid, a row per node and a column per index (the
 * last ones, if the logs are long); a cell is the entry's term. */
void sim_format_logs(struct sim *s, char *buf, size_t size);
/* The grid as it was at the first violation ("" before one). */
const char *sim_violation_grid(const struct sim *s);

/* scenario.c: run a scenario file; returns 0 when its output matches the
 * expected trace (or was rewritten) and every expectation held. With
 * expect_only the trace is not compared (the labs' grader: a student's core
 * may decide at other moments); the `until` and `expect` commands and the
 * checker still judge the run. */
int sim_run_scenario_file(const char *path, bool rewrite, bool verbose, bool expect_only);
/* The same, also writing the run as JSON lines to json (sim_options.json),
 * the scenario's commands and comments included. */
int sim_run_scenario_file_json(const char *path, bool rewrite, bool verbose, bool expect_only,
                               FILE *json);

/* bugs.c: the catalogue of planted bugs (raftsim mutants). */
enum sim_reads {
    SIM_READS_ANY,       /* the seed draws ReadIndex or lease reads */
    SIM_READS_LEASE,     /* the bug lives in lease reads: every seed uses them */
    SIM_READS_READINDEX, /* the bug lives in ReadIndex rounds */
};
struct sim_bug {
    const char *name; /* as in --bug NAME */
    const char *what; /* the rule left out, with its citation */
    void (*plant)(struct raft_config *c);
    enum sim_reads reads;
};
extern const struct sim_bug sim_bugs[];
extern const unsigned sim_n_bugs;
const struct sim_bug *sim_bug_find(const char *name); /* NULL if unknown */

/* Random schedules: 1 is the first one (every fault kind of the list all the
 * time, one tuning), kept so that seeds found with it replay; 2 (the
 * default) is swarm testing: each seed draws its own subset of the faults,
 * their pace, its election timeout, and adds the nemeses Raft bugs need. */
enum { SIM_SCHEDULE_CLASSIC = 1, SIM_SCHEDULE_SWARM = 2 };

/* random.c: one random fault schedule. */
struct sim_random_options {
    uint64_t seed;
    unsigned nodes;
    uint64_t chaos_ms;  /* virtual time with faults */
    uint64_t settle_ms; /* after healing: a leader and a commit must come within this */
    const char *faults; /* comma list: partition,oneway,crash,pause,drop,dup,delay,reorder,
                         * membership, or "all"; with both crash and membership, a
                         * crash now and then loses the disk and the node is replaced */
    bool unsafe_commit_old_term;
    bool unsafe_trust_wiped; /* sim_options.unsafe_trust_wiped: no replacement either */
    bool history_only;       /* sim_options.test_history_only */
    bool prevote_off;
    bool check_quorum_off;
    const struct sim_bug *bug; /* a planted bug, or NULL */
    unsigned schedule;         /* SIM_SCHEDULE_*; 0 means the default */
    FILE *out;                 /* full trace, or NULL */
    bool trace_messages;
    char *grid; /* when set, receives every log as a grid at the first violation */
    size_t grid_size;
    FILE *json; /* sim_options.json */
};
void sim_random_options_default(struct sim_random_options *o, uint64_t seed, unsigned nodes);
/* Returns 0 on PASS; 1 on FAIL with the verdict in `verdict`. */
int sim_random_run(const struct sim_random_options *o, char *verdict, size_t size,
                   struct sim_stats *stats);

/* bench.c: the core's throughput with no I/O; prints figures. */
int sim_bench(uint64_t entries, unsigned batch, size_t entry_bytes);

#endif /* RAFT_SIM_H */
