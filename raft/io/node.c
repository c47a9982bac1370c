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

/* What one update asked to persist, waiting for the end of the loop turn,
 * and the messages that may leave only after it is durable. Those carry
 * no pointers (votes, answers), so shallow copies do. */
struct pending {
    struct group *g;
    struct storage_group_write w;
    struct raft_entry *entries; /* copies, data in one block */
    uint8_t *data;
    struct raft_message *msgs;
    size_t n_msgs;
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
    /* Group commit: every write of a loop turn, all groups, one fsync. */
    uv_prepare_t flush;
    struct pending *pending;
    size_t n_pending, cap_pending;
    uint64_t commits, writes;
    int closing_handles;
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

static void pending_free(struct pending *p)
{
    free(p->entries);
    free(p->data);
    free(p->msgs);
}

/* Keep what an update asks to persist until the end of the loop turn. */
static int defer(struct raft_node *n, struct group *g, const struct raft_update *u, size_t n_after)
{
    if (n->n_pending == n->cap_pending) {
        size_t cap = n->cap_pending ? n->cap_pending * 2 : 16;
        struct pending *p = realloc(n->pending, cap * sizeof(*p));
        if (!p)
            return RAFT_ENOMEM;
        n->pending = p;
        n->cap_pending = cap;
    }
    struct pending *p = &n->pending[n->n_pending];
    memset(p, 0, sizeof(*p));
    p->g = g;
    size_t bytes = 0;
    for (size_t i = 0; i < u->n_entries; i++)
        bytes += u->entries[i].len;
    p->entries = malloc((u->n_entries ? u->n_entries : 1) * sizeof(*p->entries));
    p->data = malloc(bytes ? bytes : 1);
    p->msgs = malloc((n_after ? n_after : 1) * sizeof(*p->msgs));
    if (!p->entries || !p->data || !p->msgs) {
        pending_free(p);
        return RAFT_ENOMEM;
    }
    uint8_t *at = p->data;
    for (size_t i = 0; i < u->n_entries; i++) {
        p->entries[i] = u->entries[i];
        if (u->entries[i].len)
            memcpy(at, u->entries[i].data, u->entries[i].len);
        p->entries[i].data = at;
        at += u->entries[i].len;
    }
    for (size_t i = 0; i < u->n_messages; i++)
        if (u->messages[i].after_persist)
            p->msgs[p->n_msgs++] = u->messages[i];
    p->w = (struct storage_group_write){.group = g->id,
                                        .hard_state = u->hard_state_changed,
                                        .term = u->current_term,
                                        .vote = u->voted_for,
                                        .truncate_from = u->truncate_from,
                                        .entries = p->entries,
                                        .n_entries = u->n_entries,
                                        .compact_index = u->compact_index,
                                        .compact_term = u->compact_term};
    n->n_pending++;
    n->writes++;
    return 0;
}

/* The host contract of raft.h. Messages that need no persist leave at once
 * -- the leader's AppendEntries go out while its own write waits for the
 * group commit (thesis §10.2.1) -- and committed entries are applied (the
 * core hands out only what is durable here). What must be persisted, and
 * the messages waiting for it, go to the end of the loop turn. */
static int process(struct raft_node *n, struct group *g, const struct raft_update *u)
{
    size_t n_after = 0;
    for (size_t i = 0; i < u->n_messages; i++) {
        if (u->messages[i].after_persist)
            n_after++;
        else
            transport_send(n->tr, g->id, &u->messages[i]);
    }
    for (size_t i = 0; i < u->n_apply; i++)
        if (u->apply[i].type == RAFT_ENTRY_NORMAL && n->apply)
            n->apply(n->data, g->id, &u->apply[i]);
    bool persist = u->hard_state_changed || u->n_entries || u->truncate_from || u->compact_index;
    if (!persist && n_after == 0)
        return 0;
    int rv = defer(n, g, u, n_after);
    if (rv)
        n->fatal = rv;
    return rv;
}

/* End of a loop turn: one transaction (one fsync) for every write of every
 * group, then the messages that waited for it, then RAFT_PERSISTED. */
static void flush(struct raft_node *n)
{
    for (int round = 0; round < 16 && n->n_pending && !n->fatal; round++) {
        struct pending *batch = n->pending;
        size_t count = n->n_pending;
        n->pending = NULL;
        n->n_pending = n->cap_pending = 0;
        struct storage_group_write *ws = malloc(count * sizeof(*ws));
        char err[256];
        int rc = ws ? STORAGE_OK : STORAGE_ENOMEM;
        size_t nw = 0;
        for (size_t i = 0; ws && i < count; i++)
            if (batch[i].w.hard_state || batch[i].w.n_entries || batch[i].w.truncate_from ||
                batch[i].w.compact_index)
                ws[nw++] = batch[i].w;
        if (rc == STORAGE_OK && nw)
            rc = storage_commit(n->st, ws, nw, err, sizeof(err));
        free(ws);
        if (rc != STORAGE_OK) {
            fprintf(stderr, "raft node %llu: %s; stopping\n", (unsigned long long)n->cfg.id,
                    rc == STORAGE_ENOMEM ? "out of memory" : err);
            n->fatal = rc;
        }
        if (nw)
            n->commits++;
        for (size_t i = 0; i < count; i++) {
            struct pending *p = &batch[i];
            if (!n->fatal) {
                for (size_t k = 0; k < p->n_msgs; k++)
                    transport_send(n->tr, p->g->id, &p->msgs[k]);
                if (p->w.n_entries) {
                    struct raft_event ev = {.type = RAFT_PERSISTED};
                    ev.persisted.index = p->entries[p->w.n_entries - 1].index;
                    ev.persisted.term = p->entries[p->w.n_entries - 1].term;
                    step(n, p->g, &ev);
                }
            }
            pending_free(p);
        }
        free(batch);
    }
}

static void on_flush(uv_prepare_t *h)
{
    flush(h->data);
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
    uv_prepare_init(loop, &n->flush);
    n->flush.data = n;
    uv_prepare_start(&n->flush, on_flush);
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

void raft_node_stats(const struct raft_node *n, uint64_t *commits, uint64_t *writes)
{
    *commits = n->commits;
    *writes = n->writes;
}

struct raft *raft_node_raft(struct raft_node *n, uint64_t group)
{
    struct group *g = find_group(n, group);
    return g ? g->r : NULL;
}

/* Both handles closed: free the node. */
static void on_handle_close(uv_handle_t *h)
{
    struct raft_node *n = h->data;
    if (--n->closing_handles > 0)
        return;
    for (size_t i = 0; i < n->n_pending; i++)
        pending_free(&n->pending[i]);
    free(n->pending);
    for (size_t i = 0; i < n->n_groups; i++)
        raft_close(n->groups[i].r);
    free(n->groups);
    storage_close(n->st);
    free(n);
}

void raft_node_stop(struct raft_node *n)
{
    flush(n); /* what was acknowledged inside must reach the disk */
    n->stopping = true;
    uv_prepare_stop(&n->flush);
    uv_timer_stop(&n->tick);
    transport_close(n->tr);
    n->closing_handles = 2;
    uv_close((uv_handle_t *)&n->flush, on_handle_close);
    uv_close((uv_handle_t *)&n->tick, on_handle_close);
}
