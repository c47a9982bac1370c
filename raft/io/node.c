/* node.c — a Raft node: cores, storage and transport; see node.h. */
#include "node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"
#include "transport.h"

struct group {
    uint64_t id;
    struct raft *r;
};

struct raft_node {
    uv_loop_t *loop;
    struct raft_node_config cfg;
    struct storage *st;
    struct transport *tr;
    uv_timer_t tick;
    struct group *groups;
    size_t n_groups;
    raft_node_apply_cb apply;
    void *data;
    bool stopping;
    int fatal; /* a storage error or a corrupt core: the node stops taking work */
};

static uint64_t now_ms(struct raft_node *n)
{
    return uv_now(n->loop);
}

static struct group *find_group(struct raft_node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_groups; i++)
        if (n->groups[i].id == id)
            return &n->groups[i];
    return NULL;
}

static int step(struct raft_node *n, struct group *g, struct raft_event *ev);

/* The host contract of raft.h, in its order. */
static int process(struct raft_node *n, struct group *g, const struct raft_update *u)
{
    char err[256];
    /* 1. Persist, durably, before anything marked after_persist leaves. */
    bool persist = u->hard_state_changed || u->n_entries || u->truncate_from || u->compact_index;
    if (persist) {
        struct storage_group_write w = {.group = g->id,
                                        .hard_state = u->hard_state_changed,
                                        .term = u->current_term,
                                        .vote = u->voted_for,
                                        .truncate_from = u->truncate_from,
                                        .entries = u->entries,
                                        .n_entries = u->n_entries,
                                        .compact_index = u->compact_index,
                                        .compact_term = u->compact_term};
        int rc = storage_commit(n->st, &w, 1, err, sizeof(err));
        if (rc != STORAGE_OK) {
            fprintf(stderr, "raft node %llu: %s\n", (unsigned long long)n->cfg.id, err);
            n->fatal = rc;
            return rc;
        }
    }
    /* 2. Send. */
    for (size_t i = 0; i < u->n_messages; i++)
        transport_send(n->tr, g->id, &u->messages[i]);
    /* 3. Apply, in order. */
    for (size_t i = 0; i < u->n_apply; i++)
        if (u->apply[i].type == RAFT_ENTRY_NORMAL && n->apply)
            n->apply(n->data, g->id, &u->apply[i]);
    /* 4. Tell the core what is durable now (this invalidates u). */
    if (u->n_entries) {
        struct raft_event ev = {.type = RAFT_PERSISTED};
        ev.persisted.index = u->entries[u->n_entries - 1].index;
        ev.persisted.term = u->entries[u->n_entries - 1].term;
        return step(n, g, &ev);
    }
    return 0;
}

static int step(struct raft_node *n, struct group *g, struct raft_event *ev)
{
    if (n->fatal)
        return RAFT_ECORRUPT;
    struct raft_update u;
    ev->now_ms = now_ms(n);
    int rv = raft_step(g->r, ev, &u);
    if (rv == RAFT_ENOMEM || rv == RAFT_ECORRUPT) {
        const char *why = raft_check_invariants(g->r);
        fprintf(stderr, "raft node %llu group %llu: %s%s%s; stopping\n",
                (unsigned long long)n->cfg.id, (unsigned long long)g->id, raft_strerror(rv),
                why ? ": " : "", why ? why : "");
        n->fatal = rv;
        return rv;
    }
    int prv = process(n, g, &u);
    return prv ? prv : rv;
}

static void on_tick(uv_timer_t *timer)
{
    struct raft_node *n = timer->data;
    for (size_t i = 0; i < n->n_groups; i++) {
        struct raft_event ev = {.type = RAFT_TICK};
        step(n, &n->groups[i], &ev);
    }
}

static void on_recv(void *data, uint64_t group, const struct raft_message *m)
{
    struct raft_node *n = data;
    struct group *g = find_group(n, group);
    if (!g || n->stopping)
        return;
    struct raft_event ev = {.type = RAFT_RECEIVE};
    ev.receive = m;
    step(n, g, &ev);
}

static void on_log(void *data, const char *line)
{
    struct raft_node *n = data;
    fprintf(stderr, "raft node %llu: %s\n", (unsigned long long)n->cfg.id, line);
}

static int start_group(struct raft_node *n, struct group *g, char *err, size_t errlen)
{
    struct storage_loaded l;
    int rc = storage_load(n->st, g->id, &l, err, errlen);
    if (rc != STORAGE_OK)
        return rc;
    raft_id voters[64];
    size_t nv = n->cfg.n_peers < 64 ? n->cfg.n_peers : 64;
    for (size_t i = 0; i < nv; i++)
        voters[i] = n->cfg.peers[i].id;
    if (!l.persisted.snapshot) {
        l.persisted.voters = voters;
        l.persisted.n_voters = nv;
    }
    struct raft_config cfg = n->cfg.raft;
    cfg.id = n->cfg.id;
    cfg.seed = n->cfg.cluster_id ^ (g->id * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)uv_hrtime();
    rc = raft_init(&g->r, &cfg, &l.persisted);
    storage_loaded_free(&l);
    if (rc != RAFT_OK)
        snprintf(err, errlen, "group %llu: raft_init: %s", (unsigned long long)g->id,
                 raft_strerror(rc));
    return rc;
}

int raft_node_start(struct raft_node **out, uv_loop_t *loop, const struct raft_node_config *cfg,
                    raft_node_apply_cb apply, void *data, char *err, size_t errlen)
{
    int rc;
    struct raft_node *n = calloc(1, sizeof(*n));
    if (!n)
        return RAFT_ENOMEM;
    n->loop = loop;
    n->cfg = *cfg;
    n->apply = apply;
    n->data = data;
    if ((rc = storage_open(cfg->data_dir, cfg->cluster_id, cfg->id, cfg->map_size_bytes, &n->st,
                           err, errlen)) != STORAGE_OK)
        goto err_after_alloc;
    n->groups = calloc(cfg->n_groups ? cfg->n_groups : 1, sizeof(*n->groups));
    if (!n->groups) {
        rc = RAFT_ENOMEM;
        goto err_after_storage;
    }
    for (size_t i = 0; i < cfg->n_groups; i++) {
        n->groups[i].id = cfg->groups[i];
        n->n_groups++;
        if ((rc = start_group(n, &n->groups[i], err, errlen)) != 0)
            goto err_after_groups;
    }
    struct transport_config tc;
    transport_config_default(&tc);
    tc.cluster_id = cfg->cluster_id;
    tc.node_id = cfg->id;
    tc.host = cfg->host;
    tc.port = cfg->port;
    if ((rc = transport_init(&n->tr, loop, &tc, on_recv, on_log, n)) != 0) {
        snprintf(err, errlen, "listening on %s:%u: %s", cfg->host, cfg->port, uv_strerror(rc));
        goto err_after_groups;
    }
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (cfg->peers[i].id != cfg->id)
            transport_add_peer(n->tr, cfg->peers[i].id, cfg->peers[i].host, cfg->peers[i].port);
    uv_timer_init(loop, &n->tick);
    n->tick.data = n;
    uv_timer_start(&n->tick, on_tick, cfg->tick_ms, cfg->tick_ms);
    *out = n;
    return 0;

err_after_groups:
    for (size_t i = 0; i < n->n_groups; i++)
        raft_close(n->groups[i].r);
    free(n->groups);
err_after_storage:
    storage_close(n->st);
err_after_alloc:
    free(n);
    return rc;
}

int raft_node_propose(struct raft_node *n, uint64_t group, const void *data, size_t len,
                      raft_index *index)
{
    struct group *g = find_group(n, group);
    if (!g)
        return RAFT_EINVAL;
    if (n->fatal)
        return RAFT_ECORRUPT;
    struct raft_entry e = {.data = data, .len = len};
    struct raft_event ev = {.type = RAFT_PROPOSE, .now_ms = now_ms(n)};
    ev.propose.entries = &e;
    ev.propose.n_entries = 1;
    struct raft_update u;
    int rv = raft_step(g->r, &ev, &u);
    if (rv == RAFT_OK && index)
        *index = u.proposed_first;
    int prv = process(n, g, &u);
    return rv ? rv : prv;
}

struct raft *raft_node_raft(struct raft_node *n, uint64_t group)
{
    struct group *g = find_group(n, group);
    return g ? g->r : NULL;
}

static void on_tick_close(uv_handle_t *h)
{
    struct raft_node *n = h->data;
    for (size_t i = 0; i < n->n_groups; i++)
        raft_close(n->groups[i].r);
    free(n->groups);
    storage_close(n->st);
    free(n);
}

void raft_node_stop(struct raft_node *n)
{
    n->stopping = true;
    uv_timer_stop(&n->tick);
    transport_close(n->tr);
    uv_close((uv_handle_t *)&n->tick, on_tick_close);
}
