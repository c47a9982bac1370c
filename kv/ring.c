/* ring.c — the two consistent-hashing rings of ring.h: keys -> shards and
 * shards -> nodes.
 *
 * Both rings are sorted arrays of points (position, owner) searched with a
 * binary search. A position is an XXH64 hash of a fixed little-endian
 * encoding of the owner and the virtual-node number, with a seed per ring,
 * so the same map gives the same rings on every node, every build and every
 * byte order. Changing an encoding or a seed moves every key of every
 * cluster: they are part of the on-disk and on-wire contract (the unit test
 * pins them).
 *
 * Why V points per owner (Karger et al. 1997, §4; Dynamo, DeCandia et al.
 * 2007, §4.2): with one point each, an owner's arc of the ring is the gap
 * to its neighbour, whose size varies by a factor of O(log n) from owner to
 * owner. With V points the arc is a sum of V gaps, so its relative spread
 * shrinks as 1/sqrt(V); Karger shows O(log n) points per owner are enough
 * for every load to be within a constant factor of the mean w.h.p.
 *
 * Why shards get a token on a node ring rather than nodes owning key arcs
 * directly: a shard is a Raft group, which needs a fixed list of voters
 * that changes by a membership change, one server at a time. Hashing the
 * shard (not the key) to nodes gives every shard such a list, and adding or
 * removing a node only changes the lists it enters or leaves (Dynamo §4.3's
 * preference list, here of distinct nodes).
 */
#include "ring.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ------------------------------------------------------------------------
 * Seeds and encodings (fixed forever: see the top of the file)
 */

/* Seeds of the three hashes, so that a shard's point, a node's point and a
 * shard's token never coincide by construction. */
enum {
    SEED_KEY_RING = 0x6b657972,    /* "keyr": points of shards on the key ring */
    SEED_NODE_RING = 0x6e6f6472,   /* "nodr": points of nodes on the node ring */
    SEED_SHARD_TOKEN = 0x746f6b6e, /* "tokn": a shard's token on the node ring */
    SEED_FINGERPRINT = 0x66707274, /* "fprt": the map's fingerprint */
};

/* The seed of ring_key_hash(): 0, as ring.h promises (a client can compute
 * it with any XXH64). */
#define KEY_HASH_SEED 0

static void put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Shard s's v-th point on the key ring: XXH64 of s (4 bytes LE) then v
 * (4 bytes LE). */
static uint64_t shard_point(uint32_t shard, uint32_t vnode)
{
    uint8_t buf[8];
    put_u32le(buf, shard);
    put_u32le(buf + 4, vnode);
    return XXH64(buf, sizeof(buf), SEED_KEY_RING);
}

/* Node id's v-th point on the node ring: XXH64 of id (8 bytes LE) then v
 * (4 bytes LE). */
static uint64_t node_point(uint64_t id, uint32_t vnode)
{
    uint8_t buf[12];
    put_u64le(buf, id);
    put_u32le(buf + 8, vnode);
    return XXH64(buf, sizeof(buf), SEED_NODE_RING);
}

/* Shard s's token on the node ring: XXH64 of s (4 bytes LE). */
static uint64_t shard_token(uint32_t shard)
{
    uint8_t buf[4];
    put_u32le(buf, shard);
    return XXH64(buf, sizeof(buf), SEED_SHARD_TOKEN);
}

/* ------------------------------------------------------------------------
 * The ring
 */

/* One point on a ring. Points are sorted by (pos, owner): two owners that
 * hash to the same position (rare, 2^-64 per pair) are ordered by owner, so
 * the order, and thus the placement, never depends on the input order. */
struct point {
    uint64_t pos;   /* position on the ring, 0 .. 2^64-1 */
    uint64_t owner; /* a shard number (key ring) or a node id (node ring) */
};

/* Invariants, established by ring_build and never changed (a ring is
 * immutable, so any thread may read it):
 *   1. key_points holds G*V points, V per shard, sorted by (pos, owner).
 *   2. node_points holds N*V points, V per node, sorted by (pos, owner).
 *   3. replicas[s*R .. s*R+R-1] are R distinct members: the first R
 *      distinct owners met walking node_points clockwise from tokens[s],
 *      or the placement given to ring_build_placed.
 *   4. shares[] sums to 1 (up to rounding) and shares[s] is the total
 *      length of the arcs ending at shard s's points, over 2^64. */
struct ring {
    struct ring_map map;  /* as given to ring_build (nodes in the caller's order) */
    uint64_t fingerprint; /* ring_fingerprint() */
    size_t n_key_points;  /* G*V */
    struct point *key_points;
    size_t n_node_points; /* N*V */
    struct point *node_points;
    uint64_t *tokens;   /* [G] each shard's token on the node ring */
    uint64_t *replicas; /* [G*R] each shard's replicas, preferred leader first */
    double *shares;     /* [G] fraction of the key ring each shard owns */
};

static int point_cmp(const void *a, const void *b)
{
    const struct point *x = a, *y = b;
    if (x->pos != y->pos)
        return x->pos < y->pos ? -1 : 1;
    if (x->owner != y->owner)
        return x->owner < y->owner ? -1 : 1;
    return 0;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The index of the first point at or after pos, wrapping to 0 past the
 * last one. n >= 1. Among points with equal positions the lowest owner
 * comes first, so it is the one found. */
static size_t successor(const struct point *pts, size_t n, uint64_t pos)
{
    /* LAB 6 BEGIN: the lookup on a consistent-hashing ring (docs/sharding.md,
     * "Two rings"; Karger and others, STOC 1997, §4). pts holds n >= 1
     * points sorted by (pos, owner); return the index of the first point
     * whose pos is at or after pos, and 0 when pos is past the last one (the
     * ring wraps around). Among points of equal pos the first in the array
     * is the answer. Every key's shard (ring_shard_of_hash) and every
     * shard's first replica go through here: a binary search, O(log n).
     * STUB: (void)pts; (void)n; (void)pos; return 0; */
    size_t lo = 0, hi = n; /* the answer is in [lo, hi] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pts[mid].pos < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == n ? 0 : lo;
    /* LAB 6 END */
}

/* ------------------------------------------------------------------------
 * Validation
 */

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Messages name each field by the flag that sets it, as kvring spells
 * them (--nodes, --shards, --replicas, --vnodes), and say what would do. */
static int validate(const struct ring_map *m, char *err, size_t errlen)
{
    if (m->n_nodes < 1)
        return fail(err, errlen, "no nodes: a ring needs at least one node (--nodes 1..%d)",
                    RING_MAX_NODES);
    if (m->n_nodes > RING_MAX_NODES)
        return fail(err, errlen, "--nodes %zu exceeds the limit of %d nodes in a map", m->n_nodes,
                    RING_MAX_NODES);
    if (m->shards < 1 || m->shards > RING_MAX_SHARDS)
        return fail(err, errlen, "--shards %" PRIu32 " is out of range: want 1..%d", m->shards,
                    RING_MAX_SHARDS);
    if (m->vnodes < 1 || m->vnodes > RING_MAX_VNODES)
        return fail(err, errlen, "--vnodes %" PRIu32 " is out of range: want 1..%d (default %d)",
                    m->vnodes, RING_MAX_VNODES, RING_DEFAULT_VNODES);
    if (m->replicas < 1)
        return fail(err, errlen, "--replicas 0: a shard needs at least one replica");
    if (m->replicas > RING_MAX_REPLICAS)
        return fail(err, errlen, "--replicas %" PRIu32 " exceeds the limit of %d voters per shard",
                    m->replicas, RING_MAX_REPLICAS);
    if (m->replicas > m->n_nodes)
        return fail(err, errlen,
                    "--replicas %" PRIu32 " exceeds the %zu node%s (a shard's replicas are "
                    "distinct nodes; add nodes or lower --replicas)",
                    m->replicas, m->n_nodes, m->n_nodes == 1 ? "" : "s");

    uint64_t sorted[RING_MAX_NODES];
    memcpy(sorted, m->nodes, m->n_nodes * sizeof(sorted[0]));
    qsort(sorted, m->n_nodes, sizeof(sorted[0]), u64_cmp);
    if (sorted[0] == 0)
        return fail(err, errlen, "node id 0 is not allowed: node ids start at 1");
    for (size_t i = 1; i < m->n_nodes; i++)
        if (sorted[i] == sorted[i - 1])
            return fail(err, errlen,
                        "node id %" PRIu64 " is listed twice: node ids must be distinct",
                        sorted[i]);
    return 0;
}

/* ------------------------------------------------------------------------
 * Building
 */

/* XXH64 of epoch, G, R, V, n_nodes and the sorted ids, each little-endian
 * (8 bytes for 64-bit fields, 4 for 32-bit ones). */
static uint64_t fingerprint_of(const struct ring_map *m)
{
    uint64_t sorted[RING_MAX_NODES];
    memcpy(sorted, m->nodes, m->n_nodes * sizeof(sorted[0]));
    qsort(sorted, m->n_nodes, sizeof(sorted[0]), u64_cmp);

    uint8_t buf[8 + 4 * 3 + 8 + 8 * RING_MAX_NODES];
    put_u64le(buf, m->epoch);
    put_u32le(buf + 8, m->shards);
    put_u32le(buf + 12, m->replicas);
    put_u32le(buf + 16, m->vnodes);
    put_u64le(buf + 20, (uint64_t)m->n_nodes);
    size_t n = 28;
    for (size_t i = 0; i < m->n_nodes; i++, n += 8)
        put_u64le(buf + n, sorted[i]);
    return XXH64(buf, n, SEED_FINGERPRINT);
}

/* Every point of the key ring, and each shard's share of it: the point at
 * index i owns the keys in (pos[i-1], pos[i]], an arc of pos[i] - pos[i-1]
 * modulo 2^64 (point 0's arc wraps around from the last point). */
static void build_key_ring(struct ring *r)
{
    uint32_t G = r->map.shards, V = r->map.vnodes;
    size_t n = 0;
    for (uint32_t s = 0; s < G; s++)
        for (uint32_t v = 0; v < V; v++)
            r->key_points[n++] = (struct point){shard_point(s, v), s};
    qsort(r->key_points, n, sizeof(r->key_points[0]), point_cmp);

    const double two64 = 18446744073709551616.0; /* 2^64 */
    const struct point *p = r->key_points;
    if (p[0].pos == p[n - 1].pos) {
        /* One position for all points (G*V == 1, or a 2^-64 accident): the
         * first owns the whole ring, an arc that does not fit in 64 bits. */
        r->shares[p[0].owner] = 1.0;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t prev = p[i == 0 ? n - 1 : i - 1].pos;
        r->shares[p[i].owner] += (double)(p[i].pos - prev) / two64;
    }
}

/* Every point of the node ring, each shard's token, and its replicas: the
 * first R distinct nodes clockwise from the token (Dynamo §4.3, skipping
 * further points of a node already chosen). Since R <= N and every node
 * has V >= 1 points, one lap of the ring always finds R of them. */
static void build_node_ring(struct ring *r)
{
    const struct ring_map *m = &r->map;
    size_t n = 0;
    for (size_t i = 0; i < m->n_nodes; i++)
        for (uint32_t v = 0; v < m->vnodes; v++)
            r->node_points[n++] = (struct point){node_point(m->nodes[i], v), m->nodes[i]};
    qsort(r->node_points, n, sizeof(r->node_points[0]), point_cmp);

    for (uint32_t s = 0; s < m->shards; s++) {
        r->tokens[s] = shard_token(s);
        uint64_t *reps = &r->replicas[(size_t)s * m->replicas];
        /* LAB 6 BEGIN: a shard's replicas, its preference list (Dynamo
         * §4.3; docs/sharding.md, "Two rings"). Walk the node ring
         * (r->node_points, n points) clockwise from the first point at or
         * after the shard's token r->tokens[s] (successor()), wrapping
         * around, and write to reps the owners of the points met, skipping
         * a node already chosen, until there are m->replicas of them. The
         * order met is the order kept: the first is the shard's preferred
         * leader. One lap always finds them (R <= N, each node has V >= 1
         * points).
         * STUB: for (uint32_t k = 0; k < m->replicas; k++) reps[k] = m->nodes[k]; */
        uint32_t found = 0;
        size_t i = successor(r->node_points, n, r->tokens[s]);
        for (size_t step = 0; step < n && found < m->replicas; step++, i = (i + 1) % n) {
            uint64_t id = r->node_points[i].owner;
            bool seen = false;
            for (uint32_t k = 0; k < found && !seen; k++)
                seen = reps[k] == id;
            if (!seen)
                reps[found++] = id;
        }
        /* LAB 6 END */
    }
}

int ring_build(const struct ring_map *map, struct ring **out, char *err, size_t errlen)
{
    if (!map || !out)
        return fail(err, errlen, "ring_build: no map or no place for the ring");
    *out = NULL;
    if (validate(map, err, errlen) != 0)
        return -1;

    struct ring *r = calloc(1, sizeof(*r));
    if (!r)
        return fail(err, errlen, "out of memory for the ring");
    r->map = *map;
    r->fingerprint = fingerprint_of(map);
    r->n_key_points = (size_t)map->shards * map->vnodes;
    r->n_node_points = map->n_nodes * map->vnodes;
    r->key_points = malloc(r->n_key_points * sizeof(r->key_points[0]));
    r->node_points = malloc(r->n_node_points * sizeof(r->node_points[0]));
    r->tokens = malloc(map->shards * sizeof(r->tokens[0]));
    r->replicas = malloc((size_t)map->shards * map->replicas * sizeof(r->replicas[0]));
    r->shares = calloc(map->shards, sizeof(r->shares[0]));
    if (!r->key_points || !r->node_points || !r->tokens || !r->replicas || !r->shares) {
        ring_free(r);
        return fail(err, errlen, "out of memory for a ring of %zu shard points and %zu node points",
                    (size_t)map->shards * map->vnodes, map->n_nodes * map->vnodes);
    }
    build_key_ring(r);
    build_node_ring(r);
    *out = r;
    return 0;
}

int ring_build_placed(const struct ring_map *map, const uint64_t *replicas, struct ring **out,
                      char *err, size_t errlen)
{
    if (ring_build(map, out, err, errlen))
        return -1;
    if (!replicas)
        return 0;
    uint32_t R = map->replicas;
    for (uint32_t s = 0; s < map->shards; s++) {
        const uint64_t *reps = &replicas[(size_t)s * R];
        for (uint32_t k = 0; k < R; k++) {
            bool member = false;
            for (size_t i = 0; i < map->n_nodes && !member; i++)
                member = map->nodes[i] == reps[k];
            bool twice = false;
            for (uint32_t j = 0; j < k && !twice; j++)
                twice = reps[j] == reps[k];
            if (!member || twice) {
                ring_free(*out);
                *out = NULL;
                return fail(err, errlen, "placement: shard %u lists node %llu %s", s,
                            (unsigned long long)reps[k], twice ? "twice" : "that is not a member");
            }
        }
    }
    struct ring *r = *out;
    memcpy(r->replicas, replicas, (size_t)map->shards * R * sizeof(r->replicas[0]));
    uint8_t buf[8];
    uint64_t h = XXH64(replicas, (size_t)map->shards * R * sizeof(replicas[0]), SEED_FINGERPRINT);
    put_u64le(buf, h);
    r->fingerprint = XXH64(buf, sizeof(buf), r->fingerprint);
    return 0;
}

/* Replica slots each node holds in reps (G*R), by the index of the node in
 * nodes[]. */
static void slot_loads(uint32_t G, uint32_t R, const uint64_t *reps, const uint64_t *nodes,
                       size_t n, uint32_t *load)
{
    memset(load, 0, n * sizeof(*load));
    for (size_t k = 0; k < (size_t)G * R; k++)
        for (size_t i = 0; i < n; i++)
            if (nodes[i] == reps[k])
                load[i]++;
}

static bool shard_has(const uint64_t *reps, uint32_t R, uint64_t id)
{
    for (uint32_t k = 0; k < R; k++)
        if (reps[k] == id)
            return true;
    return false;
}

int ring_placement_join(uint32_t G, uint32_t R, uint64_t *reps, const uint64_t *nodes, size_t n,
                        uint64_t joiner)
{
    uint32_t load[RING_MAX_NODES];
    if (n == 0 || n >= RING_MAX_NODES)
        return -1;
    /* LAB 6 BEGIN: a joiner's share of a stored placement, by the fewest
     * moves (ring.h; docs/sharding.md, "Once the members change, the
     * placement is stored"). The joiner takes want = floor(G*R/(n+1))
     * slots, one at a time: each time from the most loaded node (load[],
     * slot_loads(); the lowest id among equals) that holds a slot of a
     * shard the joiner is not in (shard_has()), in the lowest such shard,
     * changed in place (sr[k] = joiner: the other replicas keep their
     * order). Stop early when no node can give or the most loaded one
     * holds no more than the joiner already got (taking more would only
     * move the imbalance). Return the slots moved.
     * STUB: (void)G; (void)R; (void)reps; (void)nodes; (void)joiner; (void)load;
     * (void)slot_loads; (void)shard_has; return 0; */
    slot_loads(G, R, reps, nodes, n, load);
    uint32_t want = (uint32_t)(((size_t)G * R) / (n + 1)), got = 0;
    while (got < want) {
        /* The most loaded node (the lowest id among equals) that holds a
         * slot of a shard the joiner is not in gives its slot there (the
         * lowest such shard). */
        size_t best = n;
        for (size_t i = 0; i < n; i++) {
            bool can = false;
            for (uint32_t s = 0; s < G && !can; s++)
                can = shard_has(&reps[(size_t)s * R], R, nodes[i]) &&
                      !shard_has(&reps[(size_t)s * R], R, joiner);
            if (can && (best == n || load[i] > load[best] ||
                        (load[i] == load[best] && nodes[i] < nodes[best])))
                best = i;
        }
        if (best == n || load[best] <= got)
            break; /* taking more would only move the imbalance */
        for (uint32_t s = 0; s < G; s++) {
            uint64_t *sr = &reps[(size_t)s * R];
            if (shard_has(sr, R, joiner))
                continue;
            uint32_t k = 0;
            while (k < R && sr[k] != nodes[best])
                k++;
            if (k < R) {
                sr[k] = joiner; /* in place: the other replicas keep their order */
                load[best]--;
                got++;
                break;
            }
        }
    }
    return (int)got;
    /* LAB 6 END */
}

int ring_placement_leave(uint32_t G, uint32_t R, uint64_t *reps, const uint64_t *nodes, size_t n,
                         uint64_t leaver)
{
    uint32_t load[RING_MAX_NODES];
    if (n < R || n > RING_MAX_NODES)
        return -1;
    /* LAB 6 BEGIN: a leaver's slots, by the fewest moves (ring.h). Shard
     * by shard, in order, each slot of the leaver goes, in place, to the
     * least loaded of nodes[] (load[], slot_loads(); the lowest id among
     * equals) that is not already in that shard (shard_has()); its load
     * grows by one at once. Nothing else moves. Return the slots moved
     * (-1 if some shard has no node to take its slot).
     * STUB: (void)G; (void)R; (void)reps; (void)nodes; (void)leaver; (void)load;
     * (void)slot_loads; (void)shard_has; return 0; */
    slot_loads(G, R, reps, nodes, n, load);
    int moved = 0;
    for (uint32_t s = 0; s < G; s++) {
        uint64_t *sr = &reps[(size_t)s * R];
        for (uint32_t k = 0; k < R; k++) {
            if (sr[k] != leaver)
                continue;
            /* To the least loaded node not in the shard (the lowest id
             * among equals). */
            size_t best = n;
            for (size_t i = 0; i < n; i++)
                if (!shard_has(sr, R, nodes[i]) &&
                    (best == n || load[i] < load[best] ||
                     (load[i] == load[best] && nodes[i] < nodes[best])))
                    best = i;
            if (best == n)
                return -1; /* fewer nodes than R: the caller checked */
            sr[k] = nodes[best];
            load[best]++;
            moved++;
        }
    }
    return moved;
    /* LAB 6 END */
}

void ring_free(struct ring *r)
{
    if (!r)
        return;
    free(r->key_points);
    free(r->node_points);
    free(r->tokens);
    free(r->replicas);
    free(r->shares);
    free(r);
}

/* ------------------------------------------------------------------------
 * Queries
 */

const struct ring_map *ring_map(const struct ring *r)
{
    return &r->map;
}

uint64_t ring_fingerprint(const struct ring *r)
{
    return r->fingerprint;
}

uint64_t ring_keys_fingerprint_of(uint32_t shards, uint32_t vnodes)
{
    uint8_t buf[8];
    put_u32le(buf, shards);
    put_u32le(buf + 4, vnodes);
    return XXH64(buf, sizeof(buf), SEED_FINGERPRINT);
}

uint64_t ring_keys_fingerprint(const struct ring *r)
{
    return ring_keys_fingerprint_of(r->map.shards, r->map.vnodes);
}

uint64_t ring_key_hash(const void *key, size_t len)
{
    return XXH64(key, len, KEY_HASH_SEED);
}

uint32_t ring_shard_of_hash(const struct ring *r, uint64_t hash)
{
    return (uint32_t)r->key_points[successor(r->key_points, r->n_key_points, hash)].owner;
}

uint32_t ring_shard_of(const struct ring *r, const void *key, size_t len)
{
    return ring_shard_of_hash(r, ring_key_hash(key, len));
}

/* Out-of-range shards get NULL, false, 0 and 0.0 below rather than a read
 * past the arrays. */

const uint64_t *ring_replicas(const struct ring *r, uint32_t shard)
{
    if (shard >= r->map.shards)
        return NULL;
    return &r->replicas[(size_t)shard * r->map.replicas];
}

bool ring_hosts(const struct ring *r, uint32_t shard, uint64_t node)
{
    const uint64_t *reps = ring_replicas(r, shard);
    for (uint32_t i = 0; reps && i < r->map.replicas; i++)
        if (reps[i] == node)
            return true;
    return false;
}

uint64_t ring_shard_token(const struct ring *r, uint32_t shard)
{
    return shard < r->map.shards ? r->tokens[shard] : 0;
}

double ring_shard_share(const struct ring *r, uint32_t shard)
{
    return shard < r->map.shards ? r->shares[shard] : 0.0;
}
