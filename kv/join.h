/* join.h — kvd --join: ask a member to add this node, and take the
 * cluster's members table from its answer (join.c, docs/membership.md). */
#ifndef KV_JOIN_H
#define KV_JOIN_H

#include "server.h"

/* Ask the member at HOST:HTTP-PORT to add this node (cfg->id, its address
 * in cfg->peers), under token (the admin token, or NULL); on success cfg
 * holds the cluster's members, shards, replicas and vnodes, and join. Asks
 * again while the member cannot answer (up to a minute), calling progress
 * with a line now and then. 0, or -1 with err. */
int kv_join(struct kv_server_config *cfg, const char *member, const char *token,
            void (*progress)(const char *line), char *err, size_t errlen);

#endif /* KV_JOIN_H */
