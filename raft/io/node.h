/* node.h — a Raft node on a libuv loop: the cores of its groups, their
 * storage (storage.h) and the transport to its peers (transport.h), wired
 * together by the host contract of raft.h.
 *
 * For every update a core returns, the node sends at once the messages
 * that need no persist (the leader's AppendEntries), applies what is
 * committed, and keeps what must be persisted. At the end of the loop turn
 * (a uv_prepare handle) one LMDB transaction -- one fsync -- stores the
 * writes of every group: group commit. Then the messages that waited for
 * it leave, and the cores learn what is durable (RAFT_PERSISTED). The
 * commit still runs on the loop thread; a worker thread comes next
 * (docs/architecture.md).
 */
#ifndef RAFT_IO_NODE_H
#define RAFT_IO_NODE_H

#include <stdint.h>
#include <uv.h>

#include "raft.h"

struct raft_node_peer {
    raft_id id;
    const char *host;
    uint16_t port;
};

struct raft_node_config {
    uint64_t cluster_id;
    raft_id id;
    const char *data_dir;
    size_t map_size_bytes;
    const char *host; /* our address */
    uint16_t port;
    const struct raft_node_peer *peers; /* every voter, ourselves included */
    size_t n_peers;
    const uint64_t *groups; /* the groups this node hosts */
    size_t n_groups;
    struct raft_config raft; /* id and seed are set per group */
    uint32_t tick_ms;
};

/* Called for every committed NORMAL entry, in order, exactly once per
 * run (the state machine is the caller's; replay after restart starts
 * from the applied index the caller returns at start). */
typedef void (*raft_node_apply_cb)(void *data, uint64_t group, const struct raft_entry *e);

struct raft_node;

int raft_node_start(struct raft_node **out, uv_loop_t *loop, const struct raft_node_config *cfg,
                    raft_node_apply_cb apply, void *data, char *err, size_t errlen);
/* Propose data in group; *index gets its log index. Errors: raft codes. */
int raft_node_propose(struct raft_node *n, uint64_t group, const void *data, size_t len,
                      raft_index *index);
struct raft *raft_node_raft(struct raft_node *n, uint64_t group);
/* Storage commits (fsyncs) so far, and the updates whose writes they carried. */
void raft_node_stats(const struct raft_node *n, uint64_t *commits, uint64_t *writes);
/* Stop timers and close everything; run the loop until it has no handles. */
void raft_node_stop(struct raft_node *n);

#endif /* RAFT_IO_NODE_H */
