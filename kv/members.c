/* members.c — the cluster's members, and shards moved by membership change
 * (docs/membership.md).
 *
 * The members table lives in the metadata group, group 0, which every
 * member hosts: the value of the key "nodes" there, a kv.proto NodeTable
 * (ids and addresses, and an epoch bumped by every change). Until the first
 * change it is not stored, and the table is the nodes of --peers at epoch
 * 1 -- the same on every node the cluster was created with. A change (kvctl
 * node add/remove, POST/DELETE /v1/nodes) reads the table at group 0's
 * leader (a linearizable read) and writes the changed one with a CAS
 * against what it read: two changes started from the same table cannot
 * both take effect, and the loser reads again.
 *
 * Every node applies group 0's log; when the table it holds changes, it
 * builds the ring (ring.h) from the new members -- keys stay on their
 * shards (the key ring depends on G and V only), shards get new replica
 * sets -- starts the groups it now hosts (empty, as a joining server that
 * learns the configuration from the leader) and talks to new nodes.
 *
 * The leader of each group then moves the group's configuration to the
 * ring's replica set, one single-server change at a time (thesis §4.1):
 * add a missing replica as a learner, promote it once it has caught up
 * (§4.2.1: a learner counts in no quorum until it holds the log, so the
 * group never waits for a newcomer), and only then remove a replica that
 * is no longer wanted -- handing leadership over first when that is the
 * leader itself (§3.10; a leader may also remove itself, §4.2.2, but its
 * successor would then be chosen by timeouts). The group keeps at least R
 * voters throughout. The plan (rebalance.c, a pure function) is
 * recomputed from the group's log every time, so a move interrupted by a
 * crash, a partition or a change of leader is resumed by whoever leads
 * next. Group 0 follows the table
 * itself: every member is a voter of it.
 */
#include "server_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "iolog.h"
#include "rebalance.h"
#include "storage.h"

enum {
    RECONCILE_MS = 100,   /* how often a leader looks at its groups' members */
    STEP_RETRY_MS = 200,  /* a step refused (no catch-up yet, a change pending) */
    CHANGE_TRIES = 5,     /* CAS retries of one table change */
    GONE_QUERY_MS = 1000, /* a replica not placed here asks its leader this often */
    MAX_MEMBERS = 64,     /* of a group's configuration (the core's bound) */
};

static const char NODES_KEY[] = "nodes";

static void left_behind(struct kv_server *s, uint64_t now);

/* ------------------------------------------------------------------------
 * The table
 * ------------------------------------------------------------------------ */

static const Kvpb__NodeInfo *table_find(const Kvpb__NodeTable *t, raft_id id)
{
    for (size_t i = 0; t && i < t->n_nodes; i++)
        if (t->nodes[i]->id == id)
            return t->nodes[i];
    return NULL;
}

bool members_has(const struct kv_server *s, raft_id id)
{
    return table_find(s->table, id) != NULL;
}

/* The table a cluster starts from: --peers (or, for a node that joined,
 * what the member it asked sent back), packed. */
static int initial_table(const struct kv_server *s, uint8_t **out, size_t *len)
{
    const struct kv_server_config *cfg = &s->cfg;
    Kvpb__NodeInfo infos[KV_MAX_PEERS], *ptrs[KV_MAX_PEERS];
    for (size_t i = 0; i < cfg->n_peers; i++) {
        const struct kv_peer *p = &cfg->peers[i];
        kvpb__node_info__init(&infos[i]);
        infos[i].id = p->id;
        infos[i].host = (char *)p->host;
        infos[i].client_host = (char *)(strcmp(p->client_host, p->host) ? p->client_host : "");
        infos[i].raft_port = p->raft_port;
        infos[i].resp_port = p->resp_port;
        infos[i].http_port = p->http_port;
        ptrs[i] = &infos[i];
    }
    Kvpb__NodeTable t = KVPB__NODE_TABLE__INIT;
    t.epoch = cfg->table_epoch ? cfg->table_epoch : 1;
    t.n_nodes = cfg->n_peers;
    t.nodes = ptrs;
    *len = kvpb__node_table__get_packed_size(&t);
    if (!(*out = malloc(*len ? *len : 1)))
        return -1;
    kvpb__node_table__pack(&t, *out);
    return 0;
}

/* The ring of table t's members: with its stored placement (placed, when
 * it has one), or the consistent-hashing ring's. 0, or -1 with err. */
static int table_ring(const struct kv_server *s, const Kvpb__NodeTable *t, bool placed,
                      struct ring **out, char *err, size_t errlen)
{
    size_t slots = (size_t)s->cfg.shards * s->cfg.replicas;
    if (placed && t->n_placement && t->n_placement != slots) {
        snprintf(err, errlen,
                 "members table (epoch %" PRIu64 "): a placement of %zu slots, not %zu", t->epoch,
                 t->n_placement, slots);
        return -1;
    }
    if (t->n_nodes > RING_MAX_NODES) {
        snprintf(err, errlen, "members table (epoch %" PRIu64 "): %zu nodes", t->epoch, t->n_nodes);
        return -1;
    }
    struct ring_map map = {.epoch = t->epoch,
                           .shards = s->cfg.shards,
                           .replicas = s->cfg.replicas,
                           .vnodes = s->cfg.vnodes,
                           .n_nodes = t->n_nodes};
    for (size_t i = 0; i < t->n_nodes; i++)
        map.nodes[i] = t->nodes[i]->id;
    return ring_build_placed(&map, placed && t->n_placement ? t->placement : NULL, out, err,
                             errlen);
}

/* What is wrong with table t as a placement, or NULL. */
static const char *table_invalid(const Kvpb__NodeTable *t, char *buf, size_t len)
{
    if (t->n_nodes == 0)
        return "a cluster needs at least one node";
    if (t->n_nodes > KV_MAX_PEERS) {
        snprintf(buf, len, "%zu nodes: at most %d", t->n_nodes, KV_MAX_PEERS);
        return buf;
    }
    for (size_t i = 0; i < t->n_nodes; i++) {
        const Kvpb__NodeInfo *a = t->nodes[i];
        if (!a->id || !a->raft_port || !a->host || !*a->host) {
            snprintf(buf, len, "node %" PRIu64 ": needs an id, a host and a Raft port", a->id);
            return buf;
        }
        for (size_t k = 0; k < i; k++) {
            const Kvpb__NodeInfo *b = t->nodes[k];
            if (a->id == b->id) {
                snprintf(buf, len, "node %" PRIu64 " is listed twice", a->id);
                return buf;
            }
            if (!strcmp(a->host, b->host) && a->raft_port == b->raft_port) {
                snprintf(buf, len, "nodes %" PRIu64 " and %" PRIu64 " both use %s:%u", b->id, a->id,
                         a->host, a->raft_port);
                return buf;
            }
        }
    }
    return NULL;
}

static void peer_from_info(struct kv_peer *p, const Kvpb__NodeInfo *n)
{
    memset(p, 0, sizeof(*p));
    p->id = n->id;
    snprintf(p->host, sizeof(p->host), "%s", n->host);
    snprintf(p->client_host, sizeof(p->client_host), "%s",
             n->client_host && *n->client_host ? n->client_host : n->host);
    p->raft_port = (uint16_t)n->raft_port;
    p->resp_port = (uint16_t)n->resp_port;
    p->http_port = (uint16_t)n->http_port;
}

/* A group this node now hosts. Its voters only when the cluster is being
 * created (the table of --peers, never changed, on a node that did not
 * join): a group started later joins, empty, and the leader sends it the
 * configuration -- started from the ring's list instead, new replicas with
 * empty logs could elect a leader among themselves. */
static void host_group(struct kv_server *s, struct shard *sh)
{
    if (raft_node_hosts(s->node, sh->group))
        return;
    struct raft_node_group gc = {.id = sh->group, .join = true};
    if (s->bootstrap) {
        gc.join = false;
        gc.voters = sh == s->meta ? s->ring_nodes : ring_replicas(s->ring, sh->index);
        gc.n_voters = sh == s->meta ? s->n_ring_nodes : ring_map(s->ring)->replicas;
    }
    int rc = raft_node_add_group(s->node, &gc);
    if (rc != RAFT_OK)
        iolog("kvd %" PRIu64 ": cannot host group %" PRIu64 ": %s\n", s->cfg.id, sh->group,
              raft_strerror(rc));
}

/* Put table (packed: raw, len; owned from now on) in force. */
static int install_table(struct kv_server *s, uint8_t *raw, size_t len, bool stored, char *err,
                         size_t errlen)
{
    Kvpb__NodeTable *t = kvpb__node_table__unpack(NULL, len, raw);
    char why[200];
    const char *bad = t ? table_invalid(t, why, sizeof(why)) : "it does not decode";
    if (bad) {
        snprintf(err, errlen, "members table (epoch %" PRIu64 "): %s", t ? t->epoch : 0, bad);
        if (t)
            kvpb__node_table__free_unpacked(t, NULL);
        free(raw);
        return -1;
    }
    struct ring *ring;
    if (table_ring(s, t, true, &ring, err, errlen)) {
        kvpb__node_table__free_unpacked(t, NULL);
        free(raw);
        return -1;
    }
    /* Addresses: every node ever heard of stays (a leaving node is still
     * reached until its groups have let it go). */
    for (size_t i = 0; i < t->n_nodes; i++) {
        const Kvpb__NodeInfo *n = t->nodes[i];
        struct kv_peer *p = (struct kv_peer *)peer_of(s, n->id);
        if (!p && s->cfg.n_peers < KV_MAX_PEERS)
            p = &s->cfg.peers[s->cfg.n_peers++];
        if (!p)
            continue;
        peer_from_info(p, n);
        if (s->node && n->id != s->cfg.id)
            raft_node_add_peer(s->node, n->id, p->host, p->raft_port);
    }
    if (s->table)
        kvpb__node_table__free_unpacked(s->table, NULL);
    free(s->table_raw);
    s->table = t;
    s->table_raw = raw;
    s->table_len = len;
    s->table_stored = stored;
    if (stored)
        s->bootstrap = false; /* the table changed: every group from now on joins */
    s->n_ring_nodes = t->n_nodes;
    for (size_t i = 0; i < t->n_nodes; i++)
        s->ring_nodes[i] = t->nodes[i]->id;
    struct ring *old = s->ring;
    s->ring = ring;
    ring_free(old);
    preferred_leaders(s);
    if (!s->node)
        return 0;
    char hosts[256] = "";
    size_t at = 0;
    /* A node that joined places shards by the table group 0 holds (its
     * answer from --join has no placement): until it has it, it hosts only
     * what a leader sends it. */
    bool placed = stored || !s->cfg.join;
    for (uint32_t i = 0; placed && i < s->n_shards; i++)
        if (ring_hosts(s->ring, i, s->cfg.id)) {
            host_group(s, &s->shards[i]);
            if (at < sizeof(hosts) - 16)
                at += (size_t)snprintf(hosts + at, sizeof(hosts) - at, "%s%u", at ? "," : "", i);
        }
    if (table_find(t, s->cfg.id))
        host_group(s, s->meta);
    iolog("kvd %" PRIu64 ": members (epoch %" PRIu64 "): %zu node%s; this node %s%s\n", s->cfg.id,
          t->epoch, t->n_nodes, t->n_nodes == 1 ? "" : "s",
          table_find(t, s->cfg.id) ? "hosts shards " : "was removed: its shards move away",
          table_find(t, s->cfg.id) ? (at ? hosts : "(none)") : "");
    return 0;
}

/* The table stored in group 0 here, if any: *raw (malloc'd), *len. */
static bool stored_table(struct kv_server *s, uint8_t **raw, size_t *len)
{
    if (!s->meta->hosted || !s->meta->sm)
        return false;
    Kvpb__Command get = KVPB__COMMAND__INIT;
    ProtobufCBinaryData key = {sizeof(NODES_KEY) - 1, (uint8_t *)NODES_KEY};
    get.op = KVPB__OP__OP_GET;
    get.n_keys = 1;
    get.keys = &key;
    struct kv_result r = {0};
    bool found =
        kv_sm_read(s->meta->sm, &get, &r) == KV_OK && r.n_values == 1 && r.values[0].present;
    if (found) {
        *len = r.values[0].len;
        *raw = malloc(*len ? *len : 1);
        if (*raw)
            memcpy(*raw, r.values[0].data, *len);
        found = *raw != NULL;
    }
    kv_result_free(&r);
    return found;
}

int members_start(struct kv_server *s, char *err, size_t errlen)
{
    uint8_t *raw;
    size_t len;
    if (stored_table(s, &raw, &len))
        return install_table(s, raw, len, true, err, errlen);
    if (initial_table(s, &raw, &len)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return install_table(s, raw, len, false, err, errlen);
}

void members_applied(struct kv_server *s)
{
    uint8_t *raw;
    size_t len;
    if (!stored_table(s, &raw, &len))
        return;
    if (s->table_raw && len == s->table_len && !memcmp(raw, s->table_raw, len)) {
        free(raw);
        return;
    }
    char err[256];
    if (install_table(s, raw, len, true, err, sizeof(err)))
        iolog("kvd %" PRIu64 ": ignoring the members table group 0 applied: %s\n", s->cfg.id, err);
}

void cb_group_unknown(void *data, uint64_t group, raft_id from)
{
    struct kv_server *s = data;
    /* Its leader added this node (our table may lag behind its). */
    if (group > s->n_shards || s->stopping)
        return;
    struct shard *sh = group ? &s->shards[group - 1] : s->meta;
    if (!sh->hosted) {
        iolog("kvd %" PRIu64 ": node %" PRIu64 " replicates group %" PRIu64
              " to this node: hosting it\n",
              s->cfg.id, from, group);
        bool bootstrap = s->bootstrap;
        s->bootstrap = false; /* a group a leader brings us always joins */
        host_group(s, sh);
        s->bootstrap = bootstrap;
    }
}

/* ------------------------------------------------------------------------
 * Changing the table
 * ------------------------------------------------------------------------ */

struct change {
    struct kv_server *s;
    bool add;
    struct kv_peer node; /* add: who; remove: id */
    int tries;
    kv_members_cb cb;
    void *ctx;
    uint8_t *next_raw; /* the table written */
    size_t next_len;
};

static void change_read(struct change *c);

/* Table t's placement (G*R ids, malloc'd): the stored one, or the ring's. */
static uint64_t *current_placement(struct kv_server *s, const Kvpb__NodeTable *t)
{
    size_t slots = (size_t)s->cfg.shards * s->cfg.replicas;
    uint64_t *p = malloc(slots * sizeof(*p));
    if (!p)
        return NULL;
    if (t->n_placement == slots) {
        memcpy(p, t->placement, slots * sizeof(*p));
        return p;
    }
    struct ring *ring;
    char err[160];
    if (table_ring(s, t, false, &ring, err, sizeof(err))) {
        free(p);
        return NULL;
    }
    for (uint32_t sh = 0; sh < s->cfg.shards; sh++)
        memcpy(&p[(size_t)sh * s->cfg.replicas], ring_replicas(ring, sh),
               s->cfg.replicas * sizeof(*p));
    ring_free(ring);
    return p;
}

static json_t *table_json(struct kv_server *s, const Kvpb__NodeTable *t, bool stored);

/* The change ends; on success the table (table: packed) goes with it. */
static void change_end(struct change *c, enum kv_code code, const char *message,
                       const uint8_t *table, size_t len)
{
    Kvpb__NodeTable *t = table ? kvpb__node_table__unpack(NULL, len, table) : NULL;
    json_t *o = t ? table_json(c->s, t, true) : NULL;
    if (code == KV_DONE && !o) {
        code = KV_UNAVAILABLE;
        message = "out of memory";
    }
    c->cb(c->ctx, code, message, o);
    json_decref(o);
    if (t)
        kvpb__node_table__free_unpacked(t, NULL);
    free(c->next_raw);
    free(c);
}

static void on_cas(void *ctx, const struct kv_reply *reply)
{
    struct change *c = ctx;
    if (reply->code != KV_DONE) {
        change_end(c, reply->code, reply->message, NULL, 0);
        return;
    }
    if (reply->result && reply->result->status == KVPB__STATUS__STATUS_CAS_MISMATCH) {
        if (++c->tries < CHANGE_TRIES) { /* another change went first: read again */
            change_read(c);
            return;
        }
        change_end(c, KV_TIMEOUT, "the members table kept changing under this change; try again",
                   NULL, 0);
        return;
    }
    iolog("kvd %" PRIu64 ": members: node %" PRIu64 " %s\n", c->s->cfg.id, c->node.id,
          c->add ? "added" : "removed");
    change_end(c, KV_DONE, NULL, c->next_raw, c->next_len);
}

/* The table read at the leader (or absent: the one of --peers): change it
 * and write it back with a CAS against what was read. */
static void on_read(void *ctx, const struct kv_reply *reply)
{
    struct change *c = ctx;
    struct kv_server *s = c->s;
    if (reply->code != KV_DONE) {
        change_end(c, reply->code, reply->message, NULL, 0);
        return;
    }
    const struct kv_value *v =
        reply->result && reply->result->n_values == 1 ? &reply->result->values[0] : NULL;
    bool present = v && v->present;
    uint8_t *cur_raw = NULL;
    size_t cur_len = 0;
    if (present) {
        cur_raw = v->data;
        cur_len = v->len;
    } else if (initial_table(s, &cur_raw, &cur_len)) {
        change_end(c, KV_UNAVAILABLE, "out of memory", NULL, 0);
        return;
    }
    Kvpb__NodeTable *t = kvpb__node_table__unpack(NULL, cur_len, cur_raw);
    if (!t) {
        if (!present)
            free(cur_raw);
        change_end(c, KV_UNAVAILABLE, "the stored members table does not decode", NULL, 0);
        return;
    }
    char msg[300];
    const char *bad = NULL;
    Kvpb__NodeInfo added = KVPB__NODE_INFO__INIT, **nodes = NULL;
    size_t n = 0;
    const Kvpb__NodeInfo *have = table_find(t, c->node.id);
    if (c->add && have) {
        if (!strcmp(have->host, c->node.host) && have->raft_port == c->node.raft_port) {
            /* Asked again (a retry, a restart with --join): done already. */
            kvpb__node_table__free_unpacked(t, NULL);
            change_end(c, KV_DONE, NULL, cur_raw, cur_len);
            if (!present)
                free(cur_raw);
            return;
        }
        snprintf(msg, sizeof(msg),
                 "node %" PRIu64 " is already a member, at %s:%u; remove it first (kvctl node "
                 "remove %" PRIu64 ")",
                 c->node.id, have->host, have->raft_port, c->node.id);
        bad = msg;
    } else if (!c->add && !have) {
        snprintf(msg, sizeof(msg), "node %" PRIu64 " is not a member", c->node.id);
        bad = msg;
    } else if (!(nodes = calloc(t->n_nodes + 1, sizeof(*nodes)))) {
        bad = "out of memory";
    } else {
        for (size_t i = 0; i < t->n_nodes; i++)
            if (t->nodes[i]->id != c->node.id)
                nodes[n++] = t->nodes[i];
        if (c->add) {
            added.id = c->node.id;
            added.host = c->node.host;
            added.client_host =
                strcmp(c->node.client_host, c->node.host) ? c->node.client_host : (char *)"";
            added.raft_port = c->node.raft_port;
            added.resp_port = c->node.resp_port;
            added.http_port = c->node.http_port;
            nodes[n++] = &added;
        }
    }
    uint64_t *placement = NULL;
    if (!bad && !(placement = current_placement(s, t)))
        bad = "out of memory";
    if (!bad) {
        uint64_t ids[KV_MAX_PEERS + 1];
        size_t before = 0, after = 0;
        for (size_t i = 0; i < t->n_nodes; i++)
            ids[before++] = t->nodes[i]->id;
        if (c->add) {
            ring_placement_join(s->cfg.shards, s->cfg.replicas, placement, ids, before, c->node.id);
        } else {
            for (size_t i = 0; i < before; i++)
                if (ids[i] != c->node.id)
                    ids[after++] = ids[i];
            if (after >= s->cfg.replicas)
                ring_placement_leave(s->cfg.shards, s->cfg.replicas, placement, ids, after,
                                     c->node.id);
        }
    }
    if (!bad) {
        Kvpb__NodeTable next = KVPB__NODE_TABLE__INIT;
        next.epoch = t->epoch + 1;
        next.nodes = nodes;
        next.n_nodes = n;
        next.placement = placement;
        next.n_placement = (size_t)s->cfg.shards * s->cfg.replicas;
        char why[200];
        bad = table_invalid(&next, why, sizeof(why));
        if (!bad && next.n_nodes < s->cfg.replicas) {
            snprintf(why, sizeof(why),
                     "%zu nodes cannot hold %u replicas of every shard (--replicas, fixed when "
                     "the cluster was created): add a node first",
                     next.n_nodes, s->cfg.replicas);
            bad = why;
        }
        if (bad) {
            snprintf(msg, sizeof(msg), "refused: %s", why);
            bad = msg;
        } else {
            free(c->next_raw);
            c->next_len = kvpb__node_table__get_packed_size(&next);
            if ((c->next_raw = malloc(c->next_len)))
                kvpb__node_table__pack(&next, c->next_raw);
            else
                bad = "out of memory";
        }
    }
    free(nodes);
    free(placement);
    kvpb__node_table__free_unpacked(t, NULL);
    if (bad) {
        if (!present)
            free(cur_raw);
        change_end(c, bad == msg ? KV_BAD : KV_UNAVAILABLE, bad, NULL, 0);
        return;
    }
    Kvpb__Command cas = KVPB__COMMAND__INIT;
    ProtobufCBinaryData key = {sizeof(NODES_KEY) - 1, (uint8_t *)NODES_KEY};
    cas.op = KVPB__OP__OP_CAS;
    cas.client_id = kv_server_new_client(s);
    cas.seq = 1;
    cas.n_keys = 1;
    cas.keys = &key;
    cas.value = (ProtobufCBinaryData){c->next_len, c->next_raw};
    if (present)
        cas.expected = (ProtobufCBinaryData){cur_len, cur_raw};
    else
        cas.expect_absent = true;
    request_start(s, s->meta, &cas, NULL, 0, now_ms(s) + s->cfg.request_timeout_ms, on_cas, c);
    if (!present)
        free(cur_raw);
}

static void change_read(struct change *c)
{
    struct kv_server *s = c->s;
    Kvpb__Command get = KVPB__COMMAND__INIT;
    ProtobufCBinaryData key = {sizeof(NODES_KEY) - 1, (uint8_t *)NODES_KEY};
    get.op = KVPB__OP__OP_GET;
    get.n_keys = 1;
    get.keys = &key;
    request_start(s, s->meta, &get, NULL, 0, now_ms(s) + s->cfg.request_timeout_ms, on_read, c);
}

void kv_server_members_change(struct kv_server *s, bool add, const struct kv_peer *node,
                              kv_members_cb cb, void *ctx)
{
    struct change *c = calloc(1, sizeof(*c));
    if (!c) {
        cb(ctx, KV_UNAVAILABLE, "out of memory", NULL);
        return;
    }
    c->s = s;
    c->add = add;
    c->node = *node;
    if (!c->node.client_host[0])
        snprintf(c->node.client_host, sizeof(c->node.client_host), "%s", c->node.host);
    c->cb = cb;
    c->ctx = ctx;
    change_read(c);
}

/* ------------------------------------------------------------------------
 * Moving groups to their replica sets
 * ------------------------------------------------------------------------ */

size_t shard_targets(struct kv_server *s, const struct shard *sh, const raft_id **ids)
{
    if (sh == s->meta) {
        *ids = s->ring_nodes;
        return s->n_ring_nodes;
    }
    *ids = ring_replicas(s->ring, sh->index);
    return ring_map(s->ring)->replicas;
}

static bool listed(const raft_id *ids, size_t n, raft_id id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

const char *shard_name(struct kv_server *s, const struct shard *sh, char *buf, size_t len)
{
    if (sh == s->meta)
        snprintf(buf, len, "group 0 (members)");
    else
        snprintf(buf, len, "shard %u (group %" PRIu64 ")", sh->index, sh->group);
    return buf;
}

/* What sh's leader knows of the move (rebalance.h): its configuration, each
 * member's progress, the target. m holds MAX_MEMBERS. */
static struct rebalance_group move_view(struct kv_server *s, struct shard *sh,
                                        struct rebalance_member *m)
{
    struct raft *r = core(s, sh);
    struct raft_member conf[MAX_MEMBERS];
    size_t n = raft_configuration(r, conf, MAX_MEMBERS);
    for (size_t k = 0; k < n; k++) {
        struct raft_peer_status ps;
        bool known = conf[k].id != s->cfg.id && raft_peer_status(r, conf[k].id, &ps);
        m[k] = (struct rebalance_member){
            .id = conf[k].id,
            .is_voter = conf[k].is_voter,
            .caught_up = conf[k].is_voter || (known && ps.caught_up),
            .has_log = conf[k].id == s->cfg.id || (known && ps.match_index == raft_last_index(r)),
        };
    }
    struct rebalance_group g = {
        .self = s->cfg.id,
        .preferred_leader = sh == s->meta ? 0 : sh->preferred_leader,
        .config_committed = raft_configuration_index(r) <= raft_commit_index(r),
        .members = m,
        .n_members = n,
    };
    g.n_want = shard_targets(s, sh, &g.want);
    return g;
}

/* One step of sh toward its wanted members, as its leader; true if the
 * group is not there yet. */
static bool move_step(struct kv_server *s, struct shard *sh, bool may_start, uint64_t now)
{
    struct rebalance_member m[MAX_MEMBERS];
    struct rebalance_group g = move_view(s, sh, m);
    struct rebalance_step next = rebalance_next(&g);
    char name[48];
    shard_name(s, sh, name, sizeof(name));
    if (next.action == REBALANCE_DONE) {
        if (sh->moving) {
            sh->moving = false;
            s->moves_done++;
            iolog("kvd %" PRIu64 ": %s: move done in %" PRIu64 " ms (%" PRIu64
                  " snapshot bytes sent)\n",
                  s->cfg.id, name, now - sh->move_started_ms,
                  sh->snap_bytes_sent - sh->move_snap_bytes);
        }
        return false;
    }
    if (!sh->moving) {
        if (!may_start)
            return true; /* planned: waits for a move to end */
        sh->moving = true;
        sh->move_started_ms = now;
        sh->move_snap_bytes = sh->snap_bytes_sent;
        s->moves_started++;
    }
    if (next.action == REBALANCE_WAIT || now < sh->move_next_ms)
        return true;
    sh->move_next_ms = now + STEP_RETRY_MS;
    int rc = RAFT_OK;
    switch (next.action) {
    case REBALANCE_ADD_LEARNER:
        rc = raft_node_change_conf(s->node, sh->group, RAFT_ADD_LEARNER, next.node);
        if (rc == RAFT_OK)
            iolog("kvd %" PRIu64 ": %s: adding node %" PRIu64 " as a learner (§4.2.1: it "
                  "catches up before it counts in any quorum)\n",
                  s->cfg.id, name, next.node);
        break;
    case REBALANCE_PROMOTE:
        rc = raft_node_change_conf(s->node, sh->group, RAFT_PROMOTE, next.node);
        if (rc == RAFT_OK)
            iolog("kvd %" PRIu64 ": %s: node %" PRIu64 " caught up: promoting it to voter\n",
                  s->cfg.id, name, next.node);
        break;
    case REBALANCE_TRANSFER:
        rc = raft_node_transfer(s->node, sh->group, next.node);
        if (rc == RAFT_OK)
            iolog("kvd %" PRIu64 ": %s: this node leaves the group: handing leadership to node "
                  "%" PRIu64 " first (§3.10)\n",
                  s->cfg.id, name, next.node);
        break;
    case REBALANCE_REMOVE:
        rc = raft_node_change_conf(s->node, sh->group, RAFT_REMOVE, next.node);
        if (rc == RAFT_OK)
            iolog("kvd %" PRIu64 ": %s: removing node %" PRIu64 " (the others hold the log)\n",
                  s->cfg.id, name, next.node);
        break;
    case REBALANCE_DONE:
    case REBALANCE_WAIT:
        break;
    }
    (void)rc; /* refusals (a change pending, a leadership change) are tried again */
    return true;
}

void members_reconcile(struct kv_server *s)
{
    uint64_t now = now_ms(s);
    if (now < s->reconcile_at_ms || !s->table)
        return;
    s->reconcile_at_ms = now + RECONCILE_MS;
    uint32_t limit = s->cfg.rebalance_concurrency ? s->cfg.rebalance_concurrency : 1;
    uint32_t moving = 0;
    for (uint32_t i = 0; i < s->n_shards; i++) {
        struct shard *sh = &s->shards[i];
        if (!sh->hosted || raft_role_of(core(s, sh)) != RAFT_LEADER)
            sh->moving = false; /* whoever leads it now goes on */
        else
            moving += sh->moving;
    }
    if (s->meta->hosted && raft_role_of(core(s, s->meta)) == RAFT_LEADER)
        move_step(s, s->meta, true, now);
    else
        s->meta->moving = false;
    uint32_t planned = 0;
    for (uint32_t i = 0; i < s->n_shards; i++) {
        struct shard *sh = &s->shards[i];
        if (!sh->hosted || raft_role_of(core(s, sh)) != RAFT_LEADER)
            continue;
        bool was = sh->moving;
        bool behind = move_step(s, sh, moving < limit, now);
        if (!was && sh->moving)
            moving++;
        if (was && !sh->moving)
            moving--;
        planned += behind && !sh->moving;
    }
    s->moves_planned = planned;
    left_behind(s, now);
}

/* ------------------------------------------------------------------------
 * Replicas left behind
 *
 * A leader that removes a server stops replicating to it at once (it uses
 * the newest configuration in its log, §4.1), so the removed server may
 * never see the entry that removed it: it keeps its replica, and, its
 * election timer firing, asks for votes nobody gives it (pre-vote keeps it
 * from disturbing anyone, §9.6). A node holding a replica that the ring no
 * longer places on it asks the group's leader, now and then, whether it is
 * still a member; the leader says "gone" once the configuration without it
 * is committed, and the node drops its replica -- all but its term and
 * vote (storage_drop_group). A node the ring places a shard on again gets
 * it back through the leader, as a learner from nothing.
 * ------------------------------------------------------------------------ */

static bool placed_here(struct kv_server *s, const struct shard *sh)
{
    if (sh == s->meta)
        return table_find(s->table, s->cfg.id) != NULL;
    return ring_hosts(s->ring, sh->index, s->cfg.id);
}

static void ask_if_gone(struct kv_server *s, struct shard *sh, uint64_t now)
{
    if (now < sh->gone_query_ms)
        return;
    sh->gone_query_ms = now + GONE_QUERY_MS;
    Kvpb__MemberQuery mq = KVPB__MEMBER_QUERY__INIT;
    Kvpb__Relay relay = KVPB__RELAY__INIT;
    relay.member_query = &mq;
    /* The leader it knows of may be long gone (nobody talks to a replica
     * left behind): ask it and every replica the placement names; whichever
     * leads the group answers. */
    raft_id leader = raft_leader(core(s, sh));
    const raft_id *want;
    size_t n = shard_targets(s, sh, &want);
    if (leader && leader != s->cfg.id && !listed(want, n, leader))
        send_relay(s, sh->group, leader, &relay);
    for (size_t i = 0; i < n; i++)
        if (want[i] != s->cfg.id)
            send_relay(s, sh->group, want[i], &relay);
}

static void left_behind(struct kv_server *s, uint64_t now)
{
    for (uint32_t i = 0; i <= s->n_shards; i++) {
        struct shard *sh = &s->shards[i];
        if (sh->hosted && !placed_here(s, sh) && raft_role_of(core(s, sh)) != RAFT_LEADER)
            ask_if_gone(s, sh, now);
    }
}

void on_member_query(struct kv_server *s, uint64_t group, raft_id from)
{
    struct shard *sh = shard_of_group(s, group);
    if (!sh)
        return;
    struct raft *r = core(s, sh);
    if (raft_role_of(r) != RAFT_LEADER || raft_configuration_index(r) > raft_commit_index(r))
        return; /* only a leader knows, and only once its configuration is committed */
    struct raft_member m[MAX_MEMBERS];
    size_t n = raft_configuration(r, m, MAX_MEMBERS);
    for (size_t i = 0; i < n; i++)
        if (m[i].id == from)
            return; /* still a member: it hears from us */
    Kvpb__MemberGone mg = KVPB__MEMBER_GONE__INIT;
    mg.config_index = raft_configuration_index(r);
    Kvpb__Relay relay = KVPB__RELAY__INIT;
    relay.member_gone = &mg;
    send_relay(s, group, from, &relay);
}

void on_member_gone(struct kv_server *s, uint64_t group, raft_id from, raft_index config_index)
{
    struct shard *sh = shard_of_group(s, group);
    if (!sh || placed_here(s, sh) || sh->snap_busy)
        return; /* placed here again meanwhile, or a snapshot is being written: later */
    char name[48];
    iolog("kvd %" PRIu64 ": %s: its leader (node %" PRIu64 ") committed a configuration without "
          "this node (index %" PRIu64 "): dropping this replica\n",
          s->cfg.id, shard_name(s, sh, name, sizeof(name)), from, config_index);
    fail_execs(s, sh, KVPB__REPLY_CODE__REPLY_NOT_LEADER, "this node left the group");
    raft_node_remove_group(s->node, group);
}

int cb_group_drop(void *data, uint64_t group, void *txn, char *err, size_t errlen)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    if (!sh || !sh->sm)
        return 0;
    int rc = kv_sm_drop(sh->sm, txn, err, errlen);
    return rc == KV_OK ? 0 : rc == KV_EFULL ? STORAGE_EFULL : STORAGE_EIO;
}

void cb_group_dropped(void *data, uint64_t group, bool ok)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    if (!sh)
        return;
    (void)ok; /* a failed drop stopped the node; the group is gone either way */
    sh->hosted = false;
    kv_sm_close(sh->sm);
    sh->sm = NULL;
    if (sh->read_fd >= 0)
        close(sh->read_fd);
    if (sh->staging_fd >= 0)
        close(sh->staging_fd);
    sh->read_fd = sh->staging_fd = -1;
    sh->snap_index = 0;
    snap_cleanup(s, sh, true); /* every snapshot file of the group */
    sh->moving = false;
    sh->corrupt = false;
}

/* ------------------------------------------------------------------------
 * As JSON
 * ------------------------------------------------------------------------ */

static json_t *node_json(const Kvpb__NodeInfo *n)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)n->id));
    json_object_set_new(o, "host", json_string(n->host));
    json_object_set_new(o, "client_host",
                        json_string(n->client_host && *n->client_host ? n->client_host : n->host));
    json_object_set_new(o, "raft_port", json_integer(n->raft_port));
    json_object_set_new(o, "resp_port", json_integer(n->resp_port));
    json_object_set_new(o, "http_port", json_integer(n->http_port));
    return o;
}

/* The cluster's id is a hash of its name, beyond JSON's exact integers
 * (2^53): it goes as a string of hex digits. */
static json_t *table_json(struct kv_server *s, const Kvpb__NodeTable *t, bool stored)
{
    char cluster[24];
    snprintf(cluster, sizeof(cluster), "%016" PRIx64, s->cfg.cluster_id);
    json_t *o = json_object();
    json_object_set_new(o, "cluster_id", json_string(cluster));
    json_object_set_new(o, "epoch", json_integer((json_int_t)t->epoch));
    json_object_set_new(o, "stored", json_boolean(stored));
    json_object_set_new(o, "shards", json_integer(s->cfg.shards));
    json_object_set_new(o, "replicas", json_integer(s->cfg.replicas));
    json_object_set_new(o, "vnodes", json_integer(s->cfg.vnodes));
    json_t *nodes = json_array();
    char err[160];
    struct ring *ring = NULL;
    if (table_ring(s, t, true, &ring, err, sizeof(err)))
        ring = NULL;
    for (size_t i = 0; i < t->n_nodes; i++) {
        json_t *n = node_json(t->nodes[i]);
        uint32_t reps = 0;
        for (uint32_t k = 0; ring && k < s->n_shards; k++)
            reps += ring_hosts(ring, k, t->nodes[i]->id);
        json_object_set_new(n, "shards", json_integer(reps)); /* replicas it is to hold */
        json_array_append_new(nodes, n);
    }
    ring_free(ring);
    json_object_set_new(o, "nodes", nodes);
    return o;
}

bool kv_server_member_origin(struct kv_server *s, const char *origin)
{
    const Kvpb__NodeTable *t = s->table;
    for (size_t i = 0; t && i < t->n_nodes; i++) {
        const Kvpb__NodeInfo *n = t->nodes[i];
        const char *hosts[] = {n->client_host && *n->client_host ? n->client_host : n->host,
                               n->host, "127.0.0.1", "localhost"};
        for (size_t k = 0; k < sizeof(hosts) / sizeof(hosts[0]); k++) {
            char want[128];
            snprintf(want, sizeof(want), "http://%s:%u", hosts[k], (unsigned)n->http_port);
            if (!strcmp(origin, want))
                return true;
        }
    }
    return false;
}

json_t *kv_server_members(struct kv_server *s)
{
    return table_json(s, s->table, s->table_stored);
}

static json_t *ids_json(const raft_id *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((json_int_t)ids[i]));
    return a;
}

json_t *kv_server_rebalance(struct kv_server *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "node", json_integer((json_int_t)s->cfg.id));
    json_object_set_new(o, "epoch", json_integer((json_int_t)(s->table ? s->table->epoch : 0)));
    json_object_set_new(
        o, "concurrency",
        json_integer(s->cfg.rebalance_concurrency ? s->cfg.rebalance_concurrency : 1));
    json_object_set_new(o, "moves_started", json_integer((json_int_t)s->moves_started));
    json_object_set_new(o, "moves_done", json_integer((json_int_t)s->moves_done));
    json_t *groups = json_array();
    for (uint32_t i = 0; i <= s->n_shards; i++) {
        struct shard *sh = i < s->n_shards ? &s->shards[i] : s->meta;
        if (!sh->hosted || raft_role_of(core(s, sh)) != RAFT_LEADER)
            continue; /* the leader of a group tells its story */
        struct raft *r = core(s, sh);
        const raft_id *want;
        size_t n_want = shard_targets(s, sh, &want);
        struct raft_member m[MAX_MEMBERS];
        size_t n = raft_configuration(r, m, MAX_MEMBERS);
        raft_id voters[MAX_MEMBERS], learners[MAX_MEMBERS];
        size_t nv = 0, nl = 0;
        bool same = true;
        for (size_t k = 0; k < n; k++) {
            if (m[k].is_voter)
                voters[nv++] = m[k].id;
            else
                learners[nl++] = m[k].id;
            same = same && m[k].is_voter && listed(want, n_want, m[k].id);
        }
        /* Done only once committed: "rebalance wait" then means the
         * group's majority holds the configuration (kvctl forget relies
         * on it, docs/membership.md). */
        same = same && nv == n_want && raft_configuration_index(r) <= raft_commit_index(r);
        json_t *g = json_object();
        if (sh == s->meta)
            json_object_set_new(g, "shard", json_null());
        else
            json_object_set_new(g, "shard", json_integer(sh->index));
        json_object_set_new(g, "group", json_integer((json_int_t)sh->group));
        json_object_set_new(g, "state",
                            json_string(same         ? "done"
                                        : sh->moving ? "moving"
                                                     : "planned"));
        json_object_set_new(g, "voters", ids_json(voters, nv));
        json_object_set_new(g, "learners", ids_json(learners, nl));
        json_object_set_new(g, "target", ids_json(want, n_want));
        json_object_set_new(g, "leader", json_integer((json_int_t)s->cfg.id));
        json_object_set_new(g, "snapshot_bytes_sent",
                            json_integer((json_int_t)(sh->snap_bytes_sent - sh->move_snap_bytes)));
        if (sh->moving)
            json_object_set_new(g, "moving_ms",
                                json_integer((json_int_t)(now_ms(s) - sh->move_started_ms)));
        json_array_append_new(groups, g);
    }
    json_object_set_new(o, "groups", groups);
    return o;
}
