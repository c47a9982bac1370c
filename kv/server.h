/* server.h — the heart of kvd: a Raft node (raft/io/node.h) hosting the
 * key-value state machine (sm.h), and the path of every client command.
 *
 * Any node accepts any command (thesis §6.2). The node a client talks to
 * -- the coordinator -- sends it to the leader, itself or another node
 * (a Relay in a raft.proto Forward), and keeps it until an answer comes or
 * its deadline passes: on "not leader", on a lost answer or while no leader
 * is known, it tries again with the same {client_id, seq}, so a command is
 * applied at most once however often it is retried (thesis §6.3). A
 * command that cannot be committed before the deadline (no quorum) gets an
 * explicit error, never a hang.
 *
 * At the leader a write is proposed and answered when the state machine
 * has applied it (matched by its session, since a retry may have put it in
 * the log twice: the second copy is answered from the session table). A
 * read takes a ReadIndex round (thesis §6.4) -- or a lease read with
 * --read-mode lease -- and is served once the state machine has applied the
 * index it returns. With --read-mode unsafe_local every node answers reads
 * from its own state, stale or not: a teaching knob.
 *
 * Keys are spread over shards by consistent hashing (ring.h); each shard
 * is a Raft group on R of the nodes. The coordinator sends a command to
 * the leader of its key's shard -- wherever that is, hosted here or not --
 * and splits a multi-key MGET, DEL or EXISTS by shard, gathering the parts
 * (not atomic across shards). A connection's session has one {client_id,
 * seq} per shard, since every shard keeps its own session table.
 */
#ifndef KV_SERVER_H
#define KV_SERVER_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "tcp.h"
#include "kv.pb-c.h"
#include "node.h"
#include "sm.h"
#include "trace.h"

enum kv_read_mode { KV_READ_INDEX, KV_READ_LEASE, KV_READ_LOCAL };

struct kv_peer {
    raft_id id;
    char host[64];        /* Raft: listen, and bind outgoing connections */
    char client_host[64]; /* the front doors (RESP, HTTP); usually host */
    uint16_t raft_port, resp_port, http_port;
};

enum { KV_MAX_PEERS = 64 }; /* ring.h RING_MAX_NODES */

struct kv_server_config {
    uint64_t cluster_id;
    raft_id id;
    const char *data_dir;
    size_t map_size_bytes;
    /* The members the cluster was created with (--peers), ourselves
     * included -- or, for a node that joined, the members table the node
     * it asked sent back, at table_epoch. Once the members table has
     * changed, the one in group 0 rules (members.c). */
    struct kv_peer peers[KV_MAX_PEERS];
    size_t n_peers;
    uint64_t table_epoch; /* 0: 1 */
    bool join;            /* --join: this node's groups start empty and learn their members */
    uint32_t rebalance_concurrency; /* shard moves one leader runs at once; 0: 1 */
    enum kv_read_mode read_mode;
    uint32_t request_timeout_ms; /* a command's deadline; default 5000 */
    uint64_t session_ttl_ms;     /* stamped on the commands this node proposes; 0: never */
    uint32_t apply_linger_us;    /* raft_node_config.apply_linger_us */
    bool apply_thread;           /* !raft_node_config.apply_on_loop */
    struct raft_config raft;
    uint32_t tick_ms;
    bool trace;
    /* JSON trace records (docs/trace.md) to this file, rotated to FILE.1 at
     * trace_file_max_bytes (0: 64 MiB); NULL: none. */
    const char *trace_file;
    uint64_t trace_file_max_bytes;
    const uint8_t *cluster_secret; /* raft_node_config.cluster_secret */
    /* Placement (ring.h): G shards of R replicas, V points per shard and
     * per node on the rings. Fixed when the data dir is created (recorded in
     * <data>/placement); 0: the recorded value, or for a new data dir 1
     * shard, R = every node with one shard and min(3, nodes) with more,
     * V = 64. */
    uint32_t shards, replicas, vnodes;
    const struct kv_auth *auth; /* the front doors' secrets (auth.h); NULL: all open */
    struct tcp_limits *limits;  /* the front doors' limits (tcp.h); NULL: none */
};

/* How a command ended, for the front doors: enum kv_code (errors.h). */

struct kv_reply {
    enum kv_code code;
    const char *message; /* for errors */
    const struct kv_result *result;
};

struct kv_server;

/* A connection's own session (thesis §6.3): one {client_id, seq} per
 * shard, each shard's state machine keeping its own table. The server
 * numbers the connection's writes with it and, when a shard expired the
 * session (nothing was applied), starts a new one there and runs the
 * command as its seq 1. Owned by the connection; it must outlive every
 * command submitted with it (until the callback). */
struct kv_session_slot {
    uint64_t client_id, seq;
};
struct kv_session {
    uint64_t id; /* shown to the user (CLIENT INFO); the first slot's client id */
    uint32_t n;
    struct kv_session_slot *slot;
};
int kv_session_init(struct kv_server *s, struct kv_session *sess);

/* Live trace records (GET /v1/events; trace.h). Subscribing turns the
 * node's JSON tracing on; the last one to leave (with no --trace-file)
 * turns it off. False: too many subscribers. */
bool kv_server_trace_subscribe(struct kv_server *s, struct kv_trace_sub *sub);
void kv_server_trace_unsubscribe(struct kv_server *s, struct kv_trace_sub *sub);
void kv_server_trace_drained(struct kv_server *s, struct kv_trace_sub *sub);
const struct kv_trace *kv_server_trace(struct kv_server *s);
void kv_session_release(struct kv_session *sess);

/* Why a command was refused with STATUS_SESSION_EXPIRED, for the doors. */
#define SESSION_EXPIRED_WHY                                                                        \
    "a newer command of this session was applied, or the session is unknown "                      \
    "(sessions start at seq 1 and expire after --session-ttl idle); nothing was applied"

typedef void (*kv_done_cb)(void *ctx, const struct kv_reply *reply);

/* Submit flags. */
enum {
    /* A read that may be stale: served by any replica of the key's shard
     * from its own state -- this node when it holds one -- with no round of
     * messages. It may miss writes acknowledged a moment ago, and two such
     * reads may go back in time (docs/kvd.md, Reads). */
    KV_SUBMIT_LOCAL_READ = 1,
};

int kv_server_start(struct kv_server **out, uv_loop_t *loop, const struct kv_server_config *cfg,
                    char *err, size_t errlen);
/* Run cmd (a copy is taken); cb is called exactly once, maybe before this
 * returns (a local read in unsafe_local mode). A write is numbered from
 * session (the connection's own) when given; without one, cmd's client_id
 * and seq are used as they are (a session the user named: its seq counts
 * per shard). flags: KV_SUBMIT_*. */
void kv_server_submit(struct kv_server *s, const Kvpb__Command *cmd, struct kv_session *session,
                      int flags, kv_done_cb cb, void *ctx);
/* A fresh client session id (random, nonzero). */
uint64_t kv_server_new_client(struct kv_server *s);
/* Status as JSON (id, role, term, leader, commit, applied, peers...). */
json_t *kv_server_status(struct kv_server *s);
/* Prometheus text format. */
void kv_server_metrics(struct kv_server *s, void (*emit)(void *arg, const char *text), void *arg);
/* The leader of the shard of key (NULL: key's length 0 means shard 0), as
 * far as this node knows (NULL if unknown). */
const struct kv_peer *kv_server_leader(struct kv_server *s, const void *key, size_t len);
/* The placement: shards, their replicas and leaders, keys per shard, the
 * ring's balance (/v1/ring, kvctl ring); and one key's (kvctl locate). */
json_t *kv_server_ring(struct kv_server *s);
json_t *kv_server_locate(struct kv_server *s, const void *key, size_t len);
uint32_t kv_server_shards(const struct kv_server *s);
const struct kv_peer *kv_server_self(struct kv_server *s);
/* Who may use the front doors (never NULL: all open when not configured). */
const struct kv_auth *kv_server_auth(const struct kv_server *s);
/* The front doors' limits and counters (NULL: none). */
struct tcp_limits *kv_server_limits(const struct kv_server *s);
const struct kv_server_config *kv_server_config(struct kv_server *s);
/* Leadership transfer of a shard this node leads (-1: every one it leads)
 * to `to` (0: the most up-to-date follower); RAFT_ codes (RAFT_ENOTLEADER:
 * it leads none of them). */
int kv_server_transfer(struct kv_server *s, int shard, raft_id to);
/* Forget node id's data-dir incarnation (raft_node_forget_peer): the
 * operator brings it back with an empty data dir. 0, or -1 with err. */
int kv_server_forget_peer(struct kv_server *s, raft_id id, bool replaced, char *err, size_t errlen);
/* Application-level faults (transport.h): set (n == 0 heals) and read. */
int kv_server_set_faults(struct kv_server *s, const struct transport_fault *rules, size_t n);
const struct transport_fault *kv_server_faults(struct kv_server *s, size_t *n);
/* Members (members.c, docs/membership.md). Add node (its id and
 * addresses) to the members table, or remove node->id from it: the shards
 * then move by membership change, in the background. cb gets KV_DONE and
 * the table as written once it is changed (an add of a member already there
 * at the same address too), KV_BAD with a reason, or another error. */
typedef void (*kv_members_cb)(void *ctx, enum kv_code code, const char *message,
                              json_t *table /* borrowed; the new table, on success */);
void kv_server_members_change(struct kv_server *s, bool add, const struct kv_peer *node,
                              kv_members_cb cb, void *ctx);
/* The members table in force here, and the placement's G, R and V. */
json_t *kv_server_members(struct kv_server *s);
/* Whether a browser's Origin is a member's HTTP door (http://HOST:PORT,
 * with its client host, its host, 127.0.0.1 or localhost): the dashboard
 * served by one node may control the others (CORS, http.c). */
bool kv_server_member_origin(struct kv_server *s, const char *origin);
/* The groups this node leads: their voters, learners and target replica
 * sets, and whether each is done, moving or planned. */
json_t *kv_server_rebalance(struct kv_server *s);
/* Fail what is outstanding, stop the node; the loop then runs dry. */
void kv_server_stop(struct kv_server *s);

#endif /* KV_SERVER_H */
