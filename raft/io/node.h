/* node.h — a Raft node on a libuv loop: the cores of its groups, their
 * storage (storage.h) and the transport to its peers (transport.h), wired
 * together by the host contract of raft.h.
 *
 * For every update a core returns, the node sends at once the messages
 * that need no persist (the leader's AppendEntries: thesis §10.2.1, the
 * leader writes its log in parallel with replicating it) and keeps the
 * rest. At the end of the loop turn (a uv_prepare handle) everything kept,
 * for every group, goes to the log thread as one LMDB write transaction --
 * one fsync: group commit. Committed entries go to the apply thread, which
 * applies them in a transaction of the state machine's environment (state
 * and applied index change together: host contract 2), off the path of
 * the log's sync (storage.h, storage_sm_env). While the threads write, the
 * loop goes on receiving and sending; what arrives meanwhile forms the
 * next batches. Back on the loop thread, the messages that waited leave,
 * the cores learn what is durable (RAFT_PERSISTED), and the host learns
 * what was applied.
 *
 * A storage error (a full map, an I/O error) makes the node refuse all
 * further work (raft_node_error() says why): nothing of the failed batch
 * is visible, and a restart with more space continues from the disk.
 */
#ifndef RAFT_IO_NODE_H
#define RAFT_IO_NODE_H

#include <stdint.h>
#include <uv.h>

#include "raft.h"
#include "transport.h"

struct raft_node_peer {
    raft_id id;
    const char *host;
    uint16_t port;
};

/* A group this node hosts, and its voters at creation (the configuration
 * a group starts from when its log and snapshot are empty; after that the
 * log's configuration entries rule, thesis §4.1). */
struct raft_node_group {
    uint64_t id;
    const raft_id *voters; /* ourselves included; NULL: every peer (unless join) */
    size_t n_voters;
    /* No voters: this node joins a group that exists elsewhere, and learns
     * its configuration from the leader's log or snapshot (it was added as
     * a learner, thesis §4.2.1). */
    bool join;
};

struct raft_node_config {
    uint64_t cluster_id;
    raft_id id;
    const char *data_dir;
    size_t map_size_bytes;
    const char *host; /* our address */
    uint16_t port;
    const struct raft_node_peer *peers; /* every node we talk to, ourselves included */
    size_t n_peers;
    const struct raft_node_group *groups; /* the groups this node hosts */
    size_t n_groups;
    struct raft_config raft; /* id and seed are set per group */
    uint32_t tick_ms;
    bool trace; /* log every decision of the cores (raft_trace_format) */
    /* How long an apply commit waits, transaction open, for the next
     * entries to apply to join it (one sync for both); 0: never. Its
     * results are out already; only its durability waits (node.c linger). */
    uint32_t apply_linger_us;
    /* Apply committed entries on the loop thread, in an unsynced commit of
     * the state machine's environment per loop turn, instead of on a pool
     * thread (node.c start_apply): two thread hand-offs fewer on every
     * write's path. Only with a state machine environment of its own;
     * snapshot installs stay on the pool. */
    bool apply_on_loop;
    /* The key that proves membership in the handshake (transport.h,
     * transport_secret_from_file): TRANSPORT_KEY_BYTES bytes, or NULL. */
    const uint8_t *cluster_secret;
    /* The host's placement fingerprint (transport_config.placement), 0: none. */
    uint64_t placement;
};

/* What the node asks of its host (the state machine's owner). Each may be
 * NULL. `data` is the pointer given to raft_node_start(). */
struct raft_node_callbacks {
    /* At start, before the group's core exists: open the group's state
     * machine in env (the state machine's MDB_env *, storage_sm_env) and
     * say what it has applied. */
    int (*open_group)(void *data, uint64_t group, void *env, raft_index *applied, char *err,
                      size_t errlen);
    /* On the apply thread, inside a state machine transaction (an
     * MDB_txn *): apply committed entries (every type, consecutive, in
     * order). *result is handed back to applied(). Touch nothing the loop
     * thread uses. Returns 0, or a STORAGE_ code with err filled (the
     * transaction is then aborted and the node stops). */
    int (*apply)(void *data, uint64_t group, void *txn, const struct raft_entry *e, size_t n,
                 void **result, char *err, size_t errlen);
    /* On the loop thread, once apply() is done but maybe before the
     * transaction is synced: the entries are committed in Raft, so their
     * results may be answered now (a crash would only replay them). */
    void (*results)(void *data, uint64_t group, const struct raft_entry *e, size_t n, void *result);
    /* Back on the loop thread: the transaction committed (or not); the
     * state machine now holds the entries (reads of them may be served). */
    void (*applied)(void *data, uint64_t group, const struct raft_entry *e, size_t n, void *result,
                    bool committed);
    /* A ReadIndex request became safe to serve once the state machine has
     * applied rd->index, or failed (raft.h, struct raft_read). */
    void (*read_done)(void *data, uint64_t group, const struct raft_read *rd);
    /* Role or leader changed. */
    void (*role_changed)(void *data, uint64_t group, enum raft_role role, raft_id leader);
    /* Snapshots (§7), all optional (without them, set the core's
     * snapshot thresholds to 0). The core asks for a snapshot as of index
     * (its applied index): take one of the state machine -- off the loop
     * thread, at whatever the state machine has committed by then -- and
     * report it with raft_node_snapshot_taken(). */
    void (*snapshot_wanted)(void *data, uint64_t group, raft_index index);
    /* The leader sends a chunk: read len bytes at offset of the snapshot
     * at index (the current one) into buf. 0, or -1 (the chunk is not sent;
     * the core tries again). */
    int (*snapshot_read)(void *data, uint64_t group, raft_index index, uint64_t offset, void *buf,
                         size_t len);
    /* A follower received a chunk: write it to the staging area. Returns 0
     * (more to come), 1 (the last one, and the whole snapshot checks out:
     * the node installs it through the storage thread) or -1 (the last
     * one, and it does not: the leader is asked to start over). */
    int (*snapshot_chunk)(void *data, uint64_t group, const struct raft_install_snapshot *is);
    /* On the apply thread, in a state machine transaction: replace the
     * state machine by the staged snapshot taken at index. 0 or a STORAGE_
     * code. The node has adjusted the log and recorded the snapshot's meta
     * already, in the log's commit before. */
    int (*snapshot_install)(void *data, uint64_t group, void *txn, raft_index index, char *err,
                            size_t errlen);
    /* Back on the loop thread, after that transaction (or snapshot_restore's). */
    void (*snapshot_installed)(void *data, uint64_t group, raft_index index, bool committed);
    /* At start, in a state machine transaction: the log records a snapshot
     * (meta) that the state machine does not hold -- a crash came between
     * the log's commit of an install and the state machine's. Install it
     * from wherever it was kept; then snapshot_installed(). */
    int (*snapshot_restore)(void *data, uint64_t group, void *txn,
                            const struct raft_snapshot_meta *meta, char *err, size_t errlen);
    /* The core refused this loop turn's proposals (RAFT_EBUSY: flow
     * control; RAFT_ENOTLEADER: leadership was lost meanwhile). */
    void (*proposals_dropped)(void *data, uint64_t group, int rv);
    /* A peer sent a message for a group this node does not host: its
     * leader added us, maybe before our host knew. The message is dropped;
     * the host may raft_node_add_group(..., join) it. */
    void (*group_unknown)(void *data, uint64_t group, raft_id from);
    /* Dropping a group (raft_node_remove_group): in a state machine
     * transaction (an MDB_txn *; the one that drops the node's record of it
     * when both share an environment), drop the state machine's databases;
     * 0 or a STORAGE_ code. Then group_dropped() says
     * whether it was done (the group is gone from the node either way; a
     * failed drop stops the node). */
    int (*group_drop)(void *data, uint64_t group, void *txn, char *err, size_t errlen);
    void (*group_dropped)(void *data, uint64_t group, bool ok);
    /* After raft_node_stop(): everything is closed and freed; no callback
     * comes after this one. */
    void (*stopped)(void *data);
    /* JSON tracing on (raft_node_set_trace_json): one record, a whole line
     * ending in a newline (docs/trace.md, JSON lines): the cores' rules,
     * messages sent and received, commits, and each group's state when it
     * changed. On the loop thread; line is valid during the call. */
    void (*trace_json)(void *data, uint64_t group, const char *line, size_t len);
};

struct raft_node;

int raft_node_start(struct raft_node **out, uv_loop_t *loop, const struct raft_node_config *cfg,
                    const struct raft_node_callbacks *cb, void *data, char *err, size_t errlen);
/* Propose data in group. The proposals of a loop turn are handed to the
 * core together at its end (one AppendEntries per follower for all of
 * them); errors then go to proposals_dropped(). Errors now: RAFT_ENOTLEADER
 * (raft_leader() is the hint), RAFT_ETOOBIG, RAFT_ECORRUPT (the node
 * stopped), RAFT_ENOMEM. */
int raft_node_propose(struct raft_node *n, uint64_t group, const void *data, size_t len);
/* Start a linearizable read (ReadIndex, or a lease read if configured);
 * read_done() reports it, possibly before this returns. */
int raft_node_read(struct raft_node *n, uint64_t group, uint64_t id);
/* Someone waits for the applied state (a read at an index the state
 * machine has staged but not committed): end a lingering commit now. */
void raft_node_flush(struct raft_node *n);
/* The snapshot asked for by snapshot_wanted() is durable: it captures the
 * state machine at index, has size bytes and this checksum. Returns a
 * RAFT_ code (RAFT_EINVAL: the core has a newer one, or the index is
 * unusable; the host may then delete the file). */
int raft_node_snapshot_taken(struct raft_node *n, uint64_t group, raft_index index, uint64_t size,
                             uint64_t checksum);
/* Membership change of a group this node leads (thesis §4.1, one server
 * at a time; raft.h enum raft_conf_op). RAFT_ECONFCHANGE: one is under way;
 * RAFT_ECATCHUP: the learner has not caught up. */
int raft_node_change_conf(struct raft_node *n, uint64_t group, enum raft_conf_op op, raft_id id);
/* Leadership transfer (thesis §3.10) to `to` (0: the most up-to-date). */
int raft_node_transfer(struct raft_node *n, uint64_t group, raft_id to);
struct raft *raft_node_raft(struct raft_node *n, uint64_t group);
/* Start or stop JSON trace records (callbacks.trace_json). Off, tracing
 * costs one test per event; on, sends carry a trace id on the wire. */
void raft_node_set_trace_json(struct raft_node *n, bool on);
/* Wall-clock milliseconds, the time of JSON trace records. */
uint64_t raft_node_wall_ms(void);
/* Host another group from now on (membership: this node was added to it).
 * Started at once, or, while a commit is in flight, when it is done --
 * opening its databases is a write transaction of the loop thread -- with
 * open_group() called first; until then raft_node_hosts() says false and
 * its messages are dropped. A group that cannot be started stops the node. The group's base
 * configuration is recorded at its first start here and kept (storage_set_base). A RAFT_ code. */
int raft_node_add_group(struct raft_node *n, const struct raft_node_group *gc);
bool raft_node_hosts(const struct raft_node *n, uint64_t group);
/* This node was removed from group (its leader said so, with the change
 * committed): stop its core now, and once no commit involves it, drop what
 * is stored of it but its term and vote (storage_drop_group), calling
 * group_drop() and group_dropped(). A RAFT_ code. */
int raft_node_remove_group(struct raft_node *n, uint64_t group);
/* Talk to one more peer (a node that joined). Known ones: RAFT_OK. */
int raft_node_add_peer(struct raft_node *n, raft_id id, const char *host, uint16_t port);
struct transport *raft_node_transport(struct raft_node *n);
/* The operator brings peer id back with an empty data dir: forget the
 * incarnation recorded for it, so that its new one is taken (node.c,
 * on_peer_check). replaced: it was removed from every group and joins
 * again as a new member -- refused (RAFT_EINVAL) while a configuration in
 * this node's log still counts it as a voter. Otherwise it comes back as
 * the voter it was: safe only while the other voters of every group it
 * belongs to are a majority and hold everything it ever acknowledged
 * (docs/kvd.md). A RAFT_ code; err filled. */
int raft_node_forget_peer(struct raft_node *n, raft_id id, bool replaced, char *err, size_t errlen);
/* Why the node stopped taking work, or NULL while it is healthy. */
const char *raft_node_error(const struct raft_node *n);

/* Durations of storage commits, in seconds: bucket i counts those up to
 * RAFT_NODE_COMMIT_BOUNDS[i], the last one the rest. */
enum { RAFT_NODE_COMMIT_BUCKETS = 12 };
extern const double RAFT_NODE_COMMIT_BOUNDS[RAFT_NODE_COMMIT_BUCKETS];
struct raft_node_stats {
    uint64_t commits;    /* storage transactions (fsyncs) */
    uint64_t writes;     /* updates whose writes they carried */
    uint64_t entries;    /* log entries they wrote */
    uint64_t applied;    /* entries applied */
    uint64_t apply_only; /* commits that only applied entries (a sync each, off the log) */
    uint64_t joined;     /* apply-only batches joined by the next writes (no sync of their own) */
    uint64_t on_loop;    /* apply-only commits made on the loop thread (apply_on_loop) */
    uint64_t commit_buckets[RAFT_NODE_COMMIT_BUCKETS + 1];
    double commit_seconds;
    /* The storage transactions of each thread ([0] the log's, [1] the
     * apply thread's): how many, the bytes their commits wrote, and where
     * their time went -- building them (log writes; applying) or in LMDB's
     * commit (pages and syncs). */
    struct raft_node_txn_stats {
        uint64_t txns, bytes_written;
        double build_seconds, sync_seconds;
    } txn[2];
};
void raft_node_stats(const struct raft_node *n, struct raft_node_stats *st);
/* Stop timers and close everything (after the storage thread finishes);
 * run the loop until it has no handles. */
void raft_node_stop(struct raft_node *n);

#endif /* RAFT_IO_NODE_H */
