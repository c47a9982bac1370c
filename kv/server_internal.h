/* server_internal.h — what the files of kvd's server share. The front
 * doors see server.h only.
 *
 *   server.c       start, stop, accessors and the node's callbacks
 *   coordinator.c  requests from this node's clients: attempts, retries,
 *                  deadlines, session renewal (any node)
 *   exec.c         commands executed here as the leader: propose, serve reads
 *   relay.c        requests and answers between nodes, results <-> protobuf;
 *                  the corruption check (replicas compare content hashes)
 *   snapfile.c     snapshot files (§7): written, read in chunks, staged
 *   status.c       /v1/status, INFO and /metrics
 *   route.c        keys to shards (ring.h), multi-shard commands split and
 *                  gathered, sessions per shard, leaders spread over nodes
 *   members.c      the members table (group 0), shards moved by
 *                  membership change
 *
 * A shard is a Raft group (ring.h: shard s is group s + 1). The server
 * keeps a struct shard for every shard of the map; those with a replica
 * here (hosted) have a state machine, snapshots and the commands executing
 * here as their leader; the others only a hint of who leads them. One more
 * struct shard, after the map's, is the metadata group (group 0, every
 * member hosts it): the members table.
 */
#ifndef KV_SERVER_INTERNAL_H
#define KV_SERVER_INTERNAL_H

#include <limits.h>

#include "ring.h"
#include "server.h"
#include "tracejson.h"

enum {
    SWEEP_MS = 10, /* how often deadlines and retries are looked at */
    NO_LEADER_RETRY_MS = 50,
    BUSY_RETRY_MS = 20,
    EXEC_BUCKETS = 4096, /* writes at the leader, by session */
    REQ_BUCKETS = 4096,  /* this node's requests, by id (ids are sequential) */
};

/* Request latency buckets, in seconds (Prometheus histogram). */
enum { LAT_BUCKETS = 14 };
extern const double LAT_BOUNDS[LAT_BUCKETS];

struct histogram {
    uint64_t buckets[LAT_BUCKETS + 1];
    uint64_t count;
    double sum;
};

/* One shard (Raft group) of the map, as this node sees it. */
struct shard {
    uint32_t index;        /* the shard number, 0..G-1 */
    uint64_t group;        /* its Raft group: index + 1 */
    bool hosted;           /* one of its replicas is this node */
    raft_id leader_hint;   /* the leader last heard of (from answers) */
    uint32_t next_replica; /* round robin over replicas while no leader is known */
    /* Hosted only: */
    struct kv_sm *sm;
    raft_id preferred_leader; /* route.c, leader balance */
    uint64_t balance_next_ms, balance_backoff_ms;
    /* Snapshots: files <data>/snap/g<group>-<index>.snap. */
    raft_index snap_index;
    bool snap_busy;
    int read_fd;
    raft_index read_fd_index;
    int staging_fd;
    uint64_t snapshots_taken, snapshots_installed;
    /* Commands executing here as its leader. */
    struct exec *reads, *writes;
    struct exec **by_session; /* EXEC_BUCKETS chains of writes */
    uint64_t became_candidate, became_leader;
    /* The corruption check (relay.c). The alarm: this node's copy of the
     * shard differs from the majority's; set once, cleared only by a
     * restart (a fresh struct). */
    bool corrupt;
    raft_index corrupt_index;             /* where the hashes were compared */
    uint64_t corrupt_hash, expected_hash; /* ours there, and the majority's */
    char corrupt_detail[160];             /* how it was found, for status */
    /* As the leader: the round of checks under way (NULL until the first),
     * when the next starts, the replicas found odd (not handed
     * leadership), and, if the odd one is this node, when it next tries to
     * hand leadership over. */
    struct hash_tally *tally;
    uint64_t check_next_ms, handoff_next_ms;
    raft_id odd[RING_MAX_REPLICAS];
    size_t n_odd;
    /* Membership (members.c), as its leader: a move toward the ring's
     * replicas under way, since when, the next step's time; snapshot bytes
     * sent (all, and when the move started). */
    bool moving;
    uint64_t move_started_ms, move_next_ms;
    uint64_t gone_query_ms; /* a replica not placed here: when it next asks (members.c) */
    uint64_t snap_bytes_sent, move_snap_bytes;
};

struct fanout;

/* A command a client gave this node, until it is answered. */
struct request {
    struct request *prev, *next;
    struct request *chain; /* kv_server.by_id bucket */
    uint64_t id;
    struct shard *sh;           /* where its key(s) live */
    struct kv_session *session; /* whose slot renews (KV_SUBMIT_RENEW), or NULL */
    uint8_t *data;              /* the packed Command */
    size_t len;
    bool is_read;
    bool local_read; /* KV_SUBMIT_LOCAL_READ */
    uint64_t start_ms, deadline_ms;
    uint64_t next_try_ms; /* when to try (again) */
    uint64_t start_ns;
    raft_id leader_hint;
    bool local_exec;   /* being executed here, as the leader */
    raft_id sent_to;   /* the node the last try went to: only its answer counts */
    uint64_t sent_ms;  /* when */
    raft_id handed_to; /* the last node it ever went to (0: none: it cannot take effect) */
    bool renew;        /* a connection's session: renewed if it expired */
    uint64_t renewed_client_id;
    char last_error[160];
    kv_done_cb cb;
    void *ctx;
};

/* A command being executed here as the leader, for a coordinator (this
 * node or another). */
struct exec {
    struct shard *sh;
    struct exec *prev, *next; /* in the shard's reads or writes list */
    struct exec *chain;       /* writes: hash bucket chain */
    raft_id origin;           /* the coordinator */
    uint64_t req_id;          /* its request id */
    uint64_t client_id, seq;  /* writes */
    uint64_t read_id;         /* reads */
    Kvpb__Command *cmd;       /* reads: served once applied >= read_index */
    raft_index read_index;
    bool read_ready;
    uint64_t start_ms;
};

struct kv_server {
    uv_loop_t *loop;
    struct kv_server_config cfg;
    struct raft_node *node;
    struct ring *ring;    /* the placement (ring.h) */
    struct shard *shards; /* every shard of the map, by number, then group 0 */
    uint32_t n_shards;    /* G (not counting group 0) */
    struct shard *meta;   /* &shards[n_shards]: group 0, the members table */
    /* The members table in force (members.c): unpacked, packed, whether
     * it is group 0's (false: --peers'); its ids in order. */
    Kvpb__NodeTable *table;
    uint8_t *table_raw;
    size_t table_len;
    bool table_stored;
    bool bootstrap; /* groups started from now on get the ring's voters */
    raft_id ring_nodes[RING_MAX_NODES];
    size_t n_ring_nodes;
    uint64_t reconcile_at_ms;
    uint64_t moves_started, moves_done, moves_planned;
    uv_timer_t sweep;
    bool stopping;
    int closing;
    char snap_dir[PATH_MAX - 128]; /* <data>/snap */
    int snap_jobs;                 /* snapshots being written (stop waits for them) */
    uint64_t prng;
    uint64_t next_request_id, next_read_id;
    struct request *requests;
    /* The same requests by id: an answer finds its request without a walk
     * of every one outstanding. */
    struct request *by_id[REQ_BUCKETS];
    uint64_t balance_at_ms; /* route.c: when leader balance looks next */
    uint64_t transfers_balance;
    /* Metrics. */
    struct histogram lat_write, lat_read;
    uint64_t ops_ok, ops_timeout, ops_unavailable, ops_bad, forwarded, retried, redirected;
    bool damaged_logged; /* a damaged value was reported once */
    /* Content hashes this node compared with another replica's (relay.c). */
    uint64_t hash_checks_ok, hash_checks_mismatch;
    uint64_t sessions_renewed;
    uint64_t fanouts; /* commands split over shards */
    struct transport_fault faults[TRANSPORT_MAX_FAULTS];
    size_t n_faults;
    struct kv_trace trace; /* JSON trace records: --trace-file, GET /v1/events */
};

/* A JSON record of kvd's own (propose, apply, answer, net) to the trace,
 * when it has somewhere to go: begin it, add members, end it. */
bool trace_begin(struct kv_server *s, struct tj *j, char *buf, size_t size, const char *kind,
                 uint64_t group);
void trace_end(struct kv_server *s, struct tj *j, uint64_t group);
/* A request's id in trace records: its session and sequence number. */
void trace_req(struct tj *j, uint64_t client_id, uint64_t seq);

static inline uint64_t now_ms(struct kv_server *s)
{
    return uv_now(s->loop);
}

static inline uint64_t next_random(struct kv_server *s)
{
    return raft_splitmix64(&s->prng); /* session ids only need to differ */
}

/* The core of a hosted shard. */
static inline struct raft *core(struct kv_server *s, const struct shard *sh)
{
    return raft_node_raft(s->node, sh->group);
}

/* The hosted shard of a group (group 0: the members table), or NULL. */
static inline struct shard *shard_of_group(struct kv_server *s, uint64_t group)
{
    if (group > s->n_shards)
        return NULL;
    struct shard *sh = group ? &s->shards[group - 1] : s->meta;
    return sh->hosted ? sh : NULL;
}

/* coordinator.c */
struct request *find_request(struct kv_server *s, uint64_t id);
/* The command ends: its callback gets code, message and result. */
void request_finish(struct kv_server *s, struct request *q, enum kv_code code, const char *message,
                    const struct kv_result *result);
/* The leader (or the node it went to) answered it. */
void request_answered(struct kv_server *s, struct request *q, Kvpb__ReplyCode code, raft_id leader,
                      const char *message, const struct kv_result *result);
/* A new request for one shard; cb gets its end. Started at once. */
/* session: the connection's (renewed if a shard expired it), or NULL;
 * flags: KV_SUBMIT_*. */
void request_start(struct kv_server *s, struct shard *sh, const Kvpb__Command *cmd,
                   struct kv_session *session, int flags, uint64_t deadline_ms, kv_done_cb cb,
                   void *ctx);
void requests_sweep(uv_timer_t *t); /* deadlines and retries, every SWEEP_MS */
/* This node's core learned sh's leader: what waits elsewhere goes there. */
void requests_leader_known(struct kv_server *s, struct shard *sh, raft_id leader);
const char *read_failed(struct kv_server *s, int rc);
/* status.c */
bool node_failed(const struct kv_server *s);
/* A hosted group's role, term, leader, commit, applied, last and snapshot
 * index, into o (/v1/status, /v1/ring). */
void group_raft_fields(struct kv_server *s, struct shard *sh, json_t *o);

/* exec.c */
size_t exec_bucket(uint64_t client, uint64_t seq);
void exec_start(struct kv_server *s, struct shard *sh, raft_id origin, uint64_t req_id,
                const uint8_t *data, size_t len);
/* A read served from this replica's own state (maybe stale). */
void serve_local(struct kv_server *s, struct shard *sh, raft_id origin, uint64_t req_id,
                 const Kvpb__Command *cmd);
void exec_answer(struct kv_server *s, struct exec *x, struct exec **list, Kvpb__ReplyCode code,
                 const char *message, const struct kv_result *result);
void serve_reads(struct kv_server *s, struct shard *sh);
void fail_writes(struct kv_server *s, struct shard *sh, Kvpb__ReplyCode code, const char *message);
void fail_execs(struct kv_server *s, struct shard *sh, Kvpb__ReplyCode code, const char *message);
void fail_all_execs(struct kv_server *s, Kvpb__ReplyCode code, const char *message);
Kvpb__ReplyCode reply_code_of(int rv);
const char *reply_message_of(struct kv_server *s, int rv);

/* relay.c */
void send_relay(struct kv_server *s, uint64_t group, raft_id to, const Kvpb__Relay *relay);
void reply_to(struct kv_server *s, struct shard *sh, raft_id origin, uint64_t req_id,
              Kvpb__ReplyCode code, const char *message, const struct kv_result *result);
void on_relay(void *data, uint64_t from, uint64_t group, const uint8_t *body, size_t len);
/* From the sweep: as a group's leader, start a round of hash checks every
 * few seconds; as a corrupt leader, hand leadership over. */
void hash_checks(struct kv_server *s);
/* Raise the alarm on sh (once): index, our hash there, the expected one,
 * and how it was found ("2 of 3 replicas have ..."). Logged; sh then
 * serves no reads (and executes nothing as leader). */
void raise_corrupt(struct kv_server *s, struct shard *sh, raft_index index, uint64_t hash,
                   uint64_t expected, const char *detail);
/* The error a client gets for a shard whose copy here is corrupt. */
const char *corrupt_refusal(struct kv_server *s, struct shard *sh, char *buf, size_t len);
bool shard_peer_odd(const struct shard *sh, raft_id id);

/* snapfile.c: the node's snapshot callbacks (node.h) and the files */
void cb_snapshot_wanted(void *data, uint64_t group, raft_index index);
int cb_snapshot_read(void *data, uint64_t group, raft_index index, uint64_t offset, void *buf,
                     size_t len);
int cb_snapshot_chunk(void *data, uint64_t group, const struct raft_install_snapshot *is);
int cb_snapshot_install(void *data, uint64_t group, void *txn, raft_index index, char *err,
                        size_t errlen);
void cb_snapshot_installed(void *data, uint64_t group, raft_index index, bool committed);
int cb_snapshot_restore(void *data, uint64_t group, void *txn,
                        const struct raft_snapshot_meta *meta, char *err, size_t errlen);
void snap_file(struct kv_server *s, const struct shard *sh, char *buf, size_t len,
               raft_index index);
void snap_cleanup(struct kv_server *s, struct shard *sh, bool all_temporary);

/* route.c */
/* Compare the placement flags with the data dir's record (writing it on
 * first start) and fill in the recorded or default values. */
int placement_settle(struct kv_server_config *cfg, char *err, size_t errlen);
void balance_leaders(struct kv_server *s); /* from the sweep */
void preferred_leaders(struct kv_server *s);

/* members.c */
/* After the node started: put the stored members table (or --peers') in
 * force, and host the groups it places here. */
int members_start(struct kv_server *s, char *err, size_t errlen);
void members_applied(struct kv_server *s);               /* group 0 applied entries */
bool members_has(const struct kv_server *s, raft_id id); /* in the table in force */
void members_reconcile(struct kv_server *s);             /* from the sweep */
void cb_group_unknown(void *data, uint64_t group, raft_id from);
int cb_group_drop(void *data, uint64_t group, void *txn, char *err, size_t errlen);
void cb_group_dropped(void *data, uint64_t group, bool ok);
/* Relays: a replica asks whether it is still a member; the leader says it is not. */
void on_member_query(struct kv_server *s, uint64_t group, raft_id from);
void on_member_gone(struct kv_server *s, uint64_t group, raft_id from, raft_index config_index);
/* Where the group is to be: every member (group 0), or the shard's
 * replicas on the ring, the first its preferred leader. */
size_t shard_targets(struct kv_server *s, const struct shard *sh, const raft_id **ids);
/* "shard 3 (group 4)", "group 0 (members)" */
const char *shard_name(struct kv_server *s, const struct shard *sh, char *buf, size_t len);

/* server.c */
void server_release(struct kv_server *s);
const struct kv_peer *peer_of(struct kv_server *s, raft_id id);

#endif /* KV_SERVER_INTERNAL_H */
