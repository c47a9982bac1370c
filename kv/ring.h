/* ring.h — where keys live: two levels of consistent hashing (Karger et
 * al. 1997; Dynamo, DeCandia et al. 2007, §4.2-4.3).
 *
 *   keys -> shards   Each of G shards owns V points on a 64-bit ring (the
 *                    key ring). A key belongs to the shard owning the first
 *                    point at or after XXH64(key), wrapping around.
 *   shards -> nodes  Each node owns V points on a second ring (the node
 *                    ring). A shard has one token on it; its R replicas are
 *                    the first R distinct nodes clockwise from that token.
 *                    Adding or removing a node changes the replica sets of
 *                    about R*G/N shards, no more.
 *
 * A shard is a Raft group: shard s is group s + 1 (group 0 is kept for the
 * cluster's metadata). Every node that builds a ring from the same map
 * (struct ring_map) gets the same placement: points depend only on shard
 * numbers, node ids and V, hashed with XXH64 and fixed seeds, and ties on
 * the ring are broken by owner. A ring is immutable once built and may be
 * read from any thread.
 */
#ifndef KV_RING_H
#define KV_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    RING_MAX_NODES = 64, /* members of one map */
    RING_MAX_SHARDS = 4096,
    RING_MAX_REPLICAS = 7,  /* R: a shard's Raft group has at most this many voters */
    RING_MAX_VNODES = 4096, /* V: points per shard and per node */
    RING_DEFAULT_VNODES = 64,
};

/* The placement map: what the cluster agrees on. Every field is part of
 * the fingerprint. */
struct ring_map {
    uint64_t epoch;    /* bumped by every change of the map */
    uint32_t shards;   /* G >= 1 */
    uint32_t replicas; /* R, 1 <= R <= n_nodes and <= RING_MAX_REPLICAS */
    uint32_t vnodes;   /* V >= 1 */
    size_t n_nodes;
    uint64_t nodes[RING_MAX_NODES]; /* member ids, nonzero, distinct, any order */
};

struct ring;

/* Build the placement of map. Returns 0, or -1 with err saying what is
 * wrong with the map (a user can act on it: "--replicas 4 exceeds the 3
 * nodes"). *out is freed with ring_free(). */
int ring_build(const struct ring_map *map, struct ring **out, char *err, size_t errlen);
void ring_free(struct ring *r);

/* Placement after the cluster's creation (docs/membership.md). Hashing
 * alone places shards well on average, but a node that joins takes
 * whatever the ring gives it -- with 8 shards, 1 or 7 of the 24 replica
 * slots -- so once the members change, the placement is stored in the
 * members table and changed by these, moving the fewest slots:
 *
 *   join    the joiner takes floor(R*G/(N+1)) slots, one at a time from the
 *           most loaded node, of a shard it is not yet in (the joiner's
 *           fair share, and nothing else moves);
 *   leave   each of the leaver's slots goes to the least loaded node not in
 *           that shard (the leaver's slots, and nothing else moves).
 *
 * A slot changes in place, so a shard's other replicas keep their order
 * (the first is its preferred leader). Deterministic: ties go to the lower
 * node id and the lower shard. reps: G*R ids, shard-major, changed in
 * place. join: nodes are the members before (n of them); leave: the
 * members after, without the leaver (n >= R). Return the slots moved, or
 * -1 for arguments out of range. */
int ring_placement_join(uint32_t G, uint32_t R, uint64_t *reps, const uint64_t *nodes, size_t n,
                        uint64_t joiner);
int ring_placement_leave(uint32_t G, uint32_t R, uint64_t *reps, const uint64_t *nodes, size_t n,
                         uint64_t leaver);
/* ring_build, with each shard's replicas given (G*R ids, shard-major, R
 * distinct members each) instead of taken from the node ring; NULL: as
 * ring_build. They are part of the fingerprint. */
int ring_build_placed(const struct ring_map *map, const uint64_t *replicas, struct ring **out,
                      char *err, size_t errlen);

/* The map it was built from. */
const struct ring_map *ring_map(const struct ring *r);

/* XXH64 of every field of the map, in a fixed order with the node ids
 * sorted: equal on two nodes exactly when their maps are equal. */
uint64_t ring_fingerprint(const struct ring *r);
/* XXH64 of what puts keys on shards -- G and V, not the nodes: equal on
 * two nodes exactly when every key maps to the same shard on both, while
 * nodes come and go (Hello and every forwarded request carry it). */
uint64_t ring_keys_fingerprint(const struct ring *r);
uint64_t ring_keys_fingerprint_of(uint32_t shards, uint32_t vnodes);

/* The key's position on the key ring (XXH64, seed 0), and its shard. */
uint64_t ring_key_hash(const void *key, size_t len);
uint32_t ring_shard_of(const struct ring *r, const void *key, size_t len);
uint32_t ring_shard_of_hash(const struct ring *r, uint64_t hash);

/* The shard's replicas, in ring order (the first is its preferred leader):
 * ring_map(r)->replicas ids, valid as long as r. */
const uint64_t *ring_replicas(const struct ring *r, uint32_t shard);
/* Whether node is one of the shard's replicas. */
bool ring_hosts(const struct ring *r, uint32_t shard, uint64_t node);
/* The shard's token on the node ring. */
uint64_t ring_shard_token(const struct ring *r, uint32_t shard);

/* How much of the key ring (a fraction of 2^64, in [0, 1]) the shard owns:
 * the expected share of uniformly hashed keys. */
double ring_shard_share(const struct ring *r, uint32_t shard);

/* Group ids of shards. */
static inline uint64_t ring_group_of_shard(uint32_t shard)
{
    return (uint64_t)shard + 1;
}
static inline uint32_t ring_shard_of_group(uint64_t group)
{
    return (uint32_t)(group - 1);
}

#endif /* KV_RING_H */
