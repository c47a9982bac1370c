/* node_testing.h — hooks for tests of node.c's write path, not for hosts.
 *
 * tests/unit/test_node_model.c drives a node with updates of its own
 * making -- appends, truncations, compactions, snapshot installs, hard
 * states, entries to apply -- through the same batching, joining and
 * lingering as the core's, and compares what LMDB holds with a model.
 */
#ifndef RAFT_IO_NODE_TESTING_H
#define RAFT_IO_NODE_TESTING_H

#include "node.h"
#include "storage.h"

/* Handle u as if group's core had returned it from a step; with `taken`,
 * the step of a snapshot taken here, whose meta is recorded with it (as
 * raft_node_snapshot_taken does). */
int raft_node_testing_inject(struct raft_node *n, uint64_t group, const struct raft_update *u,
                             const struct raft_snapshot_meta *taken);
/* Nothing pending and nothing on the storage thread. */
bool raft_node_testing_idle(const struct raft_node *n);
/* An apply-only commit waits, transaction open, for writes to join it. */
bool raft_node_testing_lingering(struct raft_node *n);
/* What storage holds for group (call only when idle). */
int raft_node_testing_load(struct raft_node *n, uint64_t group, struct storage_loaded *out,
                           char *err, size_t errlen);

#endif /* RAFT_IO_NODE_TESTING_H */
