/* server_internal.h — what the files of kvd's server share. The front
 * doors see server.h only.
 *
 *   server.c       start, stop, accessors and the node's callbacks
 *   coordinator.c  requests from this node's clients: attempts, retries,
 *                  deadlines, session renewal (any node)
 *   exec.c         commands executed here as the leader: propose, serve reads
 *   relay.c        requests and answers between nodes, results <-> protobuf
 *   snapfile.c     snapshot files (§7): written, read in chunks, staged
 *   status.c       /v1/status, INFO and /metrics
 */
#ifndef KV_SERVER_INTERNAL_H
#define KV_SERVER_INTERNAL_H

#include <limits.h>

#include "server.h"

enum {
    GROUP = 1,     /* one group for now; every structure is per group */
    SWEEP_MS = 10, /* how often deadlines and retries are looked at */
    NO_LEADER_RETRY_MS = 50,
    BUSY_RETRY_MS = 20,
    EXEC_BUCKETS = 4096, /* writes at the leader, by session */
};

/* Request latency buckets, in seconds (Prometheus histogram). */
enum { LAT_BUCKETS = 14 };
extern const double LAT_BOUNDS[LAT_BUCKETS];

struct histogram {
    uint64_t buckets[LAT_BUCKETS + 1];
    uint64_t count;
    double sum;
};

/* A command a client gave this node, until it is answered. */
struct request {
    struct request *prev, *next;
    uint64_t id;
    uint8_t *data; /* the packed Command */
    size_t len;
    bool is_read;
    uint64_t start_ms, deadline_ms;
    uint64_t next_try_ms; /* when to try (again) */
    uint64_t start_ns;
    raft_id leader_hint;
    bool local_exec; /* being executed here, as the leader */
    raft_id sent_to; /* the node the last try went to: only its answer counts */
    bool renew;      /* KV_SUBMIT_RENEW */
    uint64_t renewed_client_id;
    char last_error[160];
    kv_done_cb cb;
    void *ctx;
};

/* A command being executed here as the leader, for a coordinator (this
 * node or another). */
struct exec {
    struct exec *prev, *next; /* in the reads or writes list */
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
    struct kv_sm *sm;
    uv_timer_t sweep;
    bool stopping;
    int closing;
    /* Snapshots: files in <data>/snap, the current one named by its index. */
    char snap_dir[PATH_MAX - 128];
    raft_index snap_index;
    bool snap_busy;
    int read_fd;
    raft_index read_fd_index;
    int staging_fd;
    uint64_t snapshots_taken, snapshots_installed;
    uint64_t prng;
    uint64_t next_request_id, next_read_id;
    struct request *requests;
    struct exec *reads, *writes;
    struct exec *by_session[EXEC_BUCKETS];
    /* Metrics. */
    struct histogram lat_write, lat_read;
    uint64_t ops_ok, ops_timeout, ops_unavailable, ops_bad, forwarded, retried;
    bool damaged_logged; /* a damaged value was reported once */
    uint64_t sessions_renewed;
    uint64_t became_candidate, became_leader;
    struct transport_fault faults[TRANSPORT_MAX_FAULTS];
    size_t n_faults;
};

static inline uint64_t now_ms(struct kv_server *s)
{
    return uv_now(s->loop);
}

static inline uint64_t next_random(struct kv_server *s)
{
    return raft_splitmix64(&s->prng); /* session ids only need to differ */
}

static inline struct raft *core(struct kv_server *s)
{
    return raft_node_raft(s->node, GROUP);
}

/* coordinator.c */
struct request *find_request(struct kv_server *s, uint64_t id);
/* The command ends: its callback gets code, message and result. */
void request_finish(struct kv_server *s, struct request *q, enum kv_code code, const char *message,
                    const struct kv_result *result);
/* The leader (or the node it went to) answered it. */
void request_answered(struct kv_server *s, struct request *q, Kvpb__ReplyCode code, raft_id leader,
                      const char *message, const struct kv_result *result);
void requests_sweep(uv_timer_t *t); /* deadlines and retries, every SWEEP_MS */
const char *read_failed(struct kv_server *s, int rc);

/* exec.c */
size_t exec_bucket(uint64_t client, uint64_t seq);
void exec_start(struct kv_server *s, raft_id origin, uint64_t req_id, const uint8_t *data,
                size_t len);
void exec_answer(struct kv_server *s, struct exec *x, struct exec **list, Kvpb__ReplyCode code,
                 const char *message, const struct kv_result *result);
void serve_reads(struct kv_server *s);
void fail_writes(struct kv_server *s, Kvpb__ReplyCode code, const char *message);
void fail_execs(struct kv_server *s, Kvpb__ReplyCode code, const char *message);
Kvpb__ReplyCode reply_code_of(int rv);
const char *reply_message_of(struct kv_server *s, int rv);

/* relay.c */
void send_relay(struct kv_server *s, raft_id to, const Kvpb__Relay *relay);
void reply_to(struct kv_server *s, raft_id origin, uint64_t req_id, Kvpb__ReplyCode code,
              const char *message, const struct kv_result *result);
void on_relay(void *data, uint64_t from, uint64_t group, const uint8_t *body, size_t len);

/* snapfile.c: the node's snapshot callbacks (node.h) and the files */
void cb_snapshot_wanted(void *data, uint64_t group, raft_index index);
int cb_snapshot_read(void *data, uint64_t group, raft_index index, uint64_t offset, void *buf,
                     size_t len);
int cb_snapshot_chunk(void *data, uint64_t group, const struct raft_install_snapshot *is);
int cb_snapshot_install(void *data, uint64_t group, void *txn, raft_index index, char *err,
                        size_t errlen);
void cb_snapshot_installed(void *data, uint64_t group, raft_index index, bool committed);
void snap_file(struct kv_server *s, char *buf, size_t len, raft_index index);
void snap_cleanup(struct kv_server *s, bool all_temporary);

/* server.c */
void server_release(struct kv_server *s);

#endif /* KV_SERVER_INTERNAL_H */
