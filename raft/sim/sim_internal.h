/* sim_internal.h — the inside of the simulator, shared by sim.c and check.c. */
#ifndef RAFT_SIM_INTERNAL_H
#define RAFT_SIM_INTERNAL_H

#include "sim.h"

/* A log entry as the simulator keeps it, with a hash of the whole log up to
 * and including it ("chain"), so that comparing two logs' prefixes is
 * comparing two numbers (Log Matching, §5.3). */
struct sim_entry {
    raft_term term;
    enum raft_entry_type type;
    uint8_t *data;
    size_t len;
    uint64_t chain;
};

/* Entries offset+1 .. offset+n; what came before is in a snapshot, whose
 * last entry's term and chain are kept. */
struct sim_log {
    struct sim_entry *e; /* index i is e[i - offset - 1] */
    size_t n, cap;
    raft_index offset;
    raft_term offset_term;
    uint64_t offset_chain;
};

/* A snapshot as the simulator's "disk" keeps it: the state machine (applied
 * index and chain) encoded with padding, so that it travels in chunks. */
struct sim_snapshot {
    raft_index index; /* 0: none */
    raft_term term;
    uint64_t checksum;
    uint8_t *data;
    size_t size;
    struct raft_member members[SIM_MAX_NODES];
    size_t n_members;
};

struct sim_node {
    raft_id id;
    struct raft *r; /* NULL while crashed */
    bool paused;
    uint64_t incarnation; /* bumped by a crash: events of the old life are void */

    /* Stable storage: what survives a crash (and not a disk loss). */
    raft_term disk_term;
    raft_id disk_vote;
    struct sim_log disk;
    struct sim_snapshot snap;
    /* The data directory's incarnation, the id the runtime draws when it
     * makes one and sends in its handshake: 1 for the first, the next
     * number after each disk loss. */
    uint64_t data_dir;
    /* The incarnation recorded for each peer (index id - 1), on this disk;
     * a message of another one is refused (disk_loss.c). */
    uint64_t peer_data_dir[SIM_MAX_NODES];
    bool refusal_told[SIM_MAX_NODES]; /* the refusal of that peer was narrated */
    /* What the disk held when it was lost, for the checker (Commit Quorum):
     * until the peers forget the old incarnation, its acknowledgments may
     * still arrive, and they were true when sent. */
    struct sim_log lost_disk;
    raft_index lost_snap_index;

    /* A snapshot being received (volatile). */
    uint8_t *staging;
    size_t staging_len, staging_cap;

    /* Mirror of the core's in-memory log, rebuilt from its updates. */
    struct sim_log mem;
    raft_term term; /* after the last step */
    enum raft_role role;

    /* The state machine (volatile: rebuilt by replay after a restart). */
    raft_index applied;
    uint64_t applied_chain;
    raft_index commit;
    /* The clients' key-value store (client.c): the value of each key, the
     * number of the command that wrote it, 0 while absent. In snapshots. */
    uint64_t kv[SIM_KEYS];

    /* Writes in flight complete in order; this is when the last one does. */
    uint64_t write_done_ms;
    unsigned writes_pending;

    /* The node's clock (clock skew): local = anchor_local +
     * (virtual - anchor_virtual) * clock_pct / 100. */
    uint64_t clock_anchor_local, clock_anchor_virtual;
    unsigned clock_pct;

    /* What the last JSON "state" record said (sim.c), to write one only
     * when something changed. */
    uint64_t json_sig;
    bool json_said;
    /* The newest send time (this node's clock) each peer's AppendEntries
     * results echoed back: the swarm schedule isolates a leader right after
     * a heartbeat round came back, when its lease was just renewed
     * (random.c, lease_strike). */
    uint64_t acked_sent_ms[SIM_MAX_NODES + 1];

    /* Events that arrived while paused, in order. */
    struct sim_event **deferred;
    size_t n_deferred, cap_deferred;
};

struct sim_link {
    bool blocked;
    uint32_t delay_min_ms, delay_max_ms;
    uint64_t last_arrival_ms; /* FIFO links (like TCP) deliver in order */
};

struct sim_event; /* sim.c */

/* One client operation of the history (client.c): an invoke and, unless
 * still pending, its completion. */
enum sim_op_kind { SIM_OP_GET, SIM_OP_SET, SIM_OP_CAS };
enum sim_op_state { SIM_OP_PENDING, SIM_OP_OK, SIM_OP_FAIL, SIM_OP_INFO };
struct sim_client_op {
    int64_t process; /* the logical client (Jepsen's process) */
    raft_id node;    /* the server the request went to */
    enum sim_op_kind kind;
    enum sim_op_state state;
    unsigned key;         /* 0 .. SIM_KEYS - 1 */
    uint64_t value;       /* set/cas: the value written; get ok: the value read (0: absent) */
    uint64_t expected;    /* cas: the value expected (0: the key absent) */
    bool mismatch;        /* cas fail: the key did not hold `expected` (observed) */
    const char *error;    /* fail/info: why (static) */
    int64_t invoke_ns;    /* virtual time, strictly increasing across the history */
    int64_t complete_ns;  /* ok/fail: when the client heard; info: when it gave up */
    uint64_t deadline_ms; /* the client gives up then (info) */
    raft_index index;     /* set/cas: the index its entry got */
    uint64_t read_id;     /* get: the simulator's read id */
};

/* A client: one operation outstanding at most (lincheck.h's rule). */
struct sim_client {
    int64_t process; /* a new one after an unknown outcome (Jepsen's rule) */
    uint32_t op;     /* its outstanding op (index in sim.ops), UINT32_MAX: none */
    raft_id server;  /* the server it last talked to, which it tries first */
};

/* The operator's replacement of a node that lost its disk (disk_loss.c). */
enum sim_replace_step {
    SIM_REPLACE_REMOVE,  /* remove it, until the leader has committed that */
    SIM_REPLACE_ADD,     /* add it back as a learner */
    SIM_REPLACE_PROMOTE, /* promote it once the leader finds it caught up */
};
struct sim_replacement {
    raft_id id; /* 0: none running */
    enum sim_replace_step step;
    uint64_t next_poll_ms; /* virtual time of the operator's next look */
    raft_index removed_at; /* index of the committed configuration without it */
    uint32_t forgotten;    /* bit i: node i + 1 took its new incarnation */
};

/* A pending read and what was committed anywhere when it was issued. */
struct sim_read {
    uint64_t id;
    raft_id node;
    raft_index must_see; /* linearizability: the read must reflect this index */
};

struct sim {
    struct sim_options o;
    uint64_t now_ms;
    uint64_t prng;
    uint64_t seq; /* tie-breaker: events at the same time run in creation order */
    struct sim_event **heap;
    size_t heap_n, heap_cap;
    struct sim_node nodes[SIM_MAX_NODES];
    struct sim_link links[SIM_MAX_NODES][SIM_MAX_NODES];
    unsigned drop_pct, dup_pct;
    bool reorder; /* links may deliver out of order (not TCP-like) */
    uint64_t next_payload;
    uint64_t next_read_id;
    struct sim_read *reads;
    size_t n_reads, cap_reads;
    struct sim_stats stats;
    struct sim_replacement replace;
    uint64_t next_msg_id; /* JSON: sends are numbered, receipts carry the number */
    bool net_changed;     /* JSON: a "net" record is due */

    /* Checker state (check.c). */
    raft_id *leader_of_term; /* Election Safety: who led each term */
    size_t leader_of_term_cap;
    uint64_t *committed_chain; /* chain hash of the committed prefix at each index */
    raft_term *committed_term; /* the entry's term */
    raft_term *committed_in;   /* the term of the server that first committed it */
    size_t committed_n, committed_cap, committed_term_cap, committed_in_cap;
    struct check_slot *seen; /* Log Matching: (index, term) -> chain */
    size_t seen_n, seen_cap;
    char violation[512];
    char violation_grid[8192]; /* every log at the first violation */
    char violated[8][48];      /* names of the properties violated so far */
    unsigned n_violated;
    bool stop; /* a violation ends the run */
    /* Events run in the current 100 ms of virtual time: messages that
     * bounce with no delay (a delay fault may draw 0 ms) and multiply would
     * otherwise keep virtual time from moving. A healthy cluster of nine
     * runs a few thousand. */
    uint64_t events_this_ms;
    bool livelock;

    /* Client history (client.c): every operation of the clients, checked
     * for linearizability at the end of a random run. */
    struct sim_client clients[SIM_CLIENTS];
    struct sim_client_op *ops;
    size_t n_ops, cap_ops;
    uint64_t client_prng; /* the clients' own choices (keys, kinds) */
    int64_t history_last_ns;
    bool clients_on; /* sim_client_*() was called: the clients exist */
};

/* sim.c helpers used by check.c */
static inline raft_index sim_log_last(const struct sim_log *l)
{
    return l->offset + l->n;
}
/* The entry at index, or NULL when it is not held (compacted or beyond). */
const struct sim_entry *sim_log_at(const struct sim_log *l, raft_index index);
/* The chain hash of the log up to index; false when unknown (compacted). */
bool sim_log_chain(const struct sim_log *l, raft_index index, uint64_t *chain);
void sim_log_truncate(struct sim_log *l, raft_index from);
void sim_log_compact(struct sim_log *l, raft_index upto);
void sim_log_reset(struct sim_log *l, raft_index index, raft_term term, uint64_t chain);
int sim_log_append(struct sim_log *l, const struct raft_entry *e);
uint64_t sim_chain(uint64_t prev, const struct raft_entry *e);
/* A node's own clock now (clock skew, sim_set_clock_rate). */
uint64_t sim_node_clock(const struct sim *s, const struct sim_node *n);

/* client.c: the host's side of the clients' key-value store. */
/* Node n applied entry e (after check_update): update its store and answer
 * the client waiting for that index at n, if any. */
void client_apply(struct sim *s, struct sim_node *n, const struct raft_entry *e);
/* A read of id `read_id` was released (status RAFT_OK) or failed at n;
 * for a client's read, `note` receives its op in words (else ""). */
void client_read_done(struct sim *s, struct sim_node *n, uint64_t read_id, int status, char *note,
                      size_t note_size);
/* A command's key-value operation, parsed from its payload. */
struct kv_cmd {
    uint64_t number; /* "cmdN": the value it writes */
    enum sim_op_kind kind;
    unsigned key;
    uint64_t expected; /* cas */
};
bool kv_cmd_parse(const struct raft_entry *e, struct kv_cmd *c);
/* Node n crashed: its clients' connections drop (outcome unknown). */
void client_node_down(struct sim *s, struct sim_node *n);
/* The store in a snapshot: encode after the 16-byte header (at most
 * size - 16 bytes; returns the bytes needed), decode it back. */
size_t client_kv_encode(const struct sim_node *n, uint8_t *p, size_t room);
void client_kv_decode(struct sim_node *n, const uint8_t *p, size_t len);
void client_free(struct sim *s);

/* disk_loss.c */
/* Whether node `to` takes a message that `from` sent from the data dir of
 * incarnation `data_dir`. */
bool disk_loss_accepts(struct sim *s, struct sim_node *to, raft_id from, uint64_t data_dir);
/* The operator's next look at a replacement, after every tick. */
void disk_loss_operator_tick(struct sim *s);

/* sim.c: propose entries at node n (a client's request reaching it);
 * *first receives the index of the first one. */
int sim_propose_entries(struct sim *s, struct sim_node *n, const struct raft_entry *entries,
                        unsigned count, raft_index *first, raft_index *last);

/* sim.c: JSON records (sim_options.json). */
void sim_json_violation(struct sim *s, const char *property, const char *detail);
/* Narration in text only (the caller writes its own JSON record). */
void sim_say_text(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* check.c */
void check_free(struct sim *s);
/* After every step of node n: its update u, before the simulator acts on it. */
void check_update(struct sim *s, struct sim_node *n, const struct raft_update *u);
/* An entry became durable on n's disk (Log Matching records it). */
void check_durable_entry(struct sim *s, struct sim_node *n, raft_index index);
void check_read_served(struct sim *s, const struct sim_read *rd, const struct raft_read *r);
void check_violation(struct sim *s, const char *property, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* RAFT_SIM_INTERNAL_H */
