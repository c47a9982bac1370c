/* node.c — a Raft node: cores, storage and transport; see node.h. */
#include "node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iolog.h"
#include "node_testing.h"
#include "storage.h"
#include "tracejson.h"

const double RAFT_NODE_COMMIT_BOUNDS[RAFT_NODE_COMMIT_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0};

/* Proposals of this loop turn, proposed together at its end: one
 * AppendEntries per follower carries them all. */
struct proposals {
    size_t *lens;
    size_t n, cap;
    uint8_t *bytes;
    size_t used, bytes_cap;
};

struct group {
    uint64_t id;
    struct raft *r;
    struct proposals props;
    bool removing; /* raft_node_remove_group: stepped no more, dropped when idle */
    /* Its pendings in the log queue or on the log thread, not finished:
     * while there are none, everything it asked to persist is durable. */
    size_t unreleased;
    uint64_t json_sig; /* what its last JSON "state" record said (a hash) */
};

/* Entries copied out of a core's update (its pointers live only until the
 * next step), their data in one block. */
struct entries {
    struct raft_entry *e;
    size_t n;
    uint8_t *data;
};

/* What one update left for the storage threads. Its log part -- writes,
 * the messages that may leave only once they are durable (no pointers:
 * votes, answers; shallow copies do), a snapshot's meta -- goes to the log
 * thread; its apply part -- entries to apply, or a received snapshot to
 * install in the state machine -- to the apply thread, as a pending of its
 * own in the node's other queue. */
struct pending {
    struct group *g;
    struct storage_group_write w;
    struct entries log;
    struct entries apply;
    void *apply_result;
    struct raft_message *msgs;
    size_t n_msgs;
    bool counted; /* in its group's unreleased */
    /* A snapshot's meta to record (taken here, or installed from the
     * leader: install), or a received one that failed its check. */
    struct raft_snapshot_meta snap;
    struct raft_member *snap_members;
    bool install, install_bad;
};

/* One group commit: taken by a storage thread (the log's, or the state
 * machine's: apply), finished on the loop. */
struct batch {
    struct raft_node *n;
    bool apply;
    uv_work_t req;
    struct pending *p;
    size_t count;
    struct storage_group_write *ws;
    size_t nw;
    int rc;
    char err[512];
    uint64_t ns, linger_ns;
    struct storage_cost cost;
    /* Applied in this batch's transaction while it lingered (see
     * linger()); finished together with it. */
    struct batch *joined;
    bool sync_sm; /* a log batch that compacts: make the state machine durable first */
    bool on_loop; /* an apply batch run on the loop thread (start_apply) */
};

struct raft_node {
    uv_loop_t *loop;
    struct raft_node_config cfg;
    struct raft_node_callbacks cb;
    void *data;
    struct storage *st;
    struct transport *tr;
    uv_timer_t tick;
    struct group **groups; /* pointers: pending batches keep theirs as groups are added */
    size_t n_groups, cap_groups;
    /* Groups to add once no commit is in flight (raft_node_add_group):
     * opening a group's databases is a write transaction of the loop's. */
    struct raft_node_group *adding;
    size_t n_adding;
    bool stopping;
    int fatal; /* a storage error or a corrupt core: the node stops taking work */
    char error[600];
    uv_prepare_t flush;
    struct pending *pending; /* the next log batch, growing during the loop turn */
    size_t n_pending, cap_pending;
    struct pending *applying; /* the next apply batch */
    size_t n_applying, cap_applying;
    struct batch *in_flight;       /* at most one batch on the log thread */
    struct batch *apply_in_flight; /* and one on the apply thread */
    /* Results staged by the apply thread, announced before its sync: the
     * in-flight batch's and the one that joined it. */
    uv_async_t early;
    uv_mutex_t early_lock;
    struct batch *early_batch[2];
    /* An apply batch waiting, transaction open, for the next one to join
     * (linger()); all three under linger_lock. */
    uv_mutex_t linger_lock;
    uv_cond_t linger_cond;
    struct batch *lingering, *join;
    bool flush_now;
    struct raft_node_stats stats;
    int closing_handles;
    bool json;              /* JSON trace records on (raft_node_set_trace_json) */
    uint64_t next_trace_id; /* numbers the messages sent while they are */
};

static struct group *find_group(struct raft_node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_groups; i++)
        if (n->groups[i]->id == id)
            return n->groups[i];
    return NULL;
}

static void fail(struct raft_node *n, int rc, const char *fmt, const char *why)
{
    if (n->fatal)
        return;
    n->fatal = rc ? rc : RAFT_ECORRUPT;
    snprintf(n->error, sizeof(n->error), fmt, why);
    iolog("raft node %llu: %s; refusing all work until restarted\n", (unsigned long long)n->cfg.id,
          n->error);
}

static int step(struct raft_node *n, struct group *g, struct raft_event *ev);

static int entries_copy(struct entries *to, const struct raft_entry *from, size_t n)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += from[i].len;
    to->n = n;
    to->e = n ? malloc(n * sizeof(*to->e)) : NULL;
    to->data = bytes ? malloc(bytes) : NULL;
    if ((n && !to->e) || (bytes && !to->data))
        return RAFT_ENOMEM;
    uint8_t *at = to->data;
    for (size_t i = 0; i < n; i++) {
        to->e[i] = from[i];
        if (from[i].len)
            memcpy(at, from[i].data, from[i].len);
        to->e[i].data = from[i].len ? at : NULL;
        at += from[i].len;
    }
    return 0;
}

static void pending_free(struct pending *p)
{
    if (p->counted)
        p->g->unreleased--;
    free(p->log.e);
    free(p->log.data);
    free(p->apply.e);
    free(p->apply.data);
    free(p->msgs);
    free(p->snap_members);
}

/* A fresh pending for group g at the end of queue q (NULL: no memory). */
static struct pending *pending_add(struct pending **q, size_t *n, size_t *cap, struct group *g)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        struct pending *p = realloc(*q, c * sizeof(*p));
        if (!p)
            return NULL;
        *q = p;
        *cap = c;
    }
    struct pending *p = &(*q)[(*n)++];
    memset(p, 0, sizeof(*p));
    p->g = g;
    return p;
}

/* Keep what an update asks to persist for the next log batch. */
static int defer(struct raft_node *n, struct group *g, const struct raft_update *u, size_t n_after)
{
    struct pending *p = pending_add(&n->pending, &n->n_pending, &n->cap_pending, g);
    if (!p)
        return RAFT_ENOMEM;
    p->msgs = n_after ? malloc(n_after * sizeof(*p->msgs)) : NULL;
    if ((n_after && !p->msgs) || entries_copy(&p->log, u->entries, u->n_entries)) {
        pending_free(p);
        n->n_pending--;
        return RAFT_ENOMEM;
    }
    p->counted = true;
    g->unreleased++;
    for (size_t i = 0; i < u->n_messages; i++)
        if (u->messages[i].after_persist)
            p->msgs[p->n_msgs++] = u->messages[i];
    p->w = (struct storage_group_write){.group = g->id,
                                        .hard_state = u->hard_state_changed,
                                        .term = u->current_term,
                                        .vote = u->voted_for,
                                        .truncate_from = u->truncate_from,
                                        .entries = p->log.e,
                                        .n_entries = p->log.n,
                                        .compact_index = u->compact_index,
                                        .compact_term = u->compact_term};
    return 0;
}

/* Keep the entries an update hands out for the next apply batch. They are
 * committed and durable here already (host contract 2), so they need
 * nothing of the log batch the same update may have started. */
static int defer_apply(struct raft_node *n, struct group *g, const struct raft_update *u)
{
    struct pending *p = pending_add(&n->applying, &n->n_applying, &n->cap_applying, g);
    if (!p)
        return RAFT_ENOMEM;
    if (entries_copy(&p->apply, u->apply, u->n_apply)) {
        pending_free(p);
        n->n_applying--;
        return RAFT_ENOMEM;
    }
    return 0;
}

static void log_trace(struct raft_node *n, struct group *g, const struct raft_update *u)
{
    char line[512]; /* election lines carry id lists */
    for (size_t i = 0; i < u->n_trace; i++) {
        raft_trace_format(&u->trace[i], line, sizeof(line));
        iolog("node %llu group %llu: %s\n", (unsigned long long)n->cfg.id,
              (unsigned long long)g->id, line);
    }
}

/* ------------------------------------------------------------------------
 * JSON trace records (docs/trace.md), written by raft/sim/tracejson.c
 * ------------------------------------------------------------------------ */

enum { JSON_LINE = 4096 };

uint64_t raft_node_wall_ms(void)
{
    uv_timeval64_t tv;
    return uv_gettimeofday(&tv) == 0 ? (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000 : 0;
}

void raft_node_set_trace_json(struct raft_node *n, bool on)
{
    /* A restarted node must not reuse the ids of its previous life, or a
     * receipt could match a send of it: start from the clock, in 2^20 steps
     * of milliseconds, below 2^53 (a JavaScript number stays exact). */
    if (!n->next_trace_id)
        n->next_trace_id = (raft_node_wall_ms() % (1ULL << 31)) << 20;
    n->json = on && n->cb.trace_json;
    for (size_t i = 0; i < n->n_groups; i++)
        n->groups[i]->json_sig = 0; /* the first record of each is a state */
}

static void json_emit(struct raft_node *n, uint64_t group, struct tj *j)
{
    size_t len = tj_end(j);
    if (len)
        n->cb.trace_json(n->data, group, j->buf, len);
}

static void json_message(struct raft_node *n, struct group *g, const char *kind,
                         const struct raft_message *m)
{
    char buf[JSON_LINE];
    struct tj j;
    tj_begin(&j, buf, sizeof(buf), raft_node_wall_ms(), kind, n->cfg.id, g->id);
    tj_message(&j, m->trace_id, m);
    json_emit(n, g->id, &j);
}

/* A group's state when it changed: what a viewer draws. The log is a
 * window of its newest entries, as runs of one term. */
static uint64_t term_at(const void *r, uint64_t i)
{
    return raft_term_at(r, i);
}

static void json_state(struct raft_node *n, struct group *g)
{
    struct raft *r = g->r;
    raft_index last = raft_last_index(r), commit = raft_commit_index(r);
    struct raft_snapshot_meta snap;
    raft_index snap_index = raft_snapshot(r, &snap) ? snap.index : 0;
    struct raft_election_timer et;
    raft_election_timer(r, &et);
    uint64_t parts[] = {raft_current_term(r),
                        raft_role_of(r),
                        raft_voted_for(r),
                        raft_leader(r),
                        commit,
                        raft_applied_index(r),
                        last,
                        raft_term_at(r, last),
                        snap_index};
    uint64_t sig = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        sig = (sig ^ parts[i]) * 0x100000001b3ULL;
    sig |= 1; /* 0 means "never said" */
    if (sig == g->json_sig)
        return;
    g->json_sig = sig;
    char buf[JSON_LINE];
    struct tj j;
    tj_begin(&j, buf, sizeof(buf), raft_node_wall_ms(), "state", n->cfg.id, g->id);
    tj_bool(&j, "up", true);
    tj_bool(&j, "paused", false);
    tj_u64(&j, "term", raft_current_term(r));
    tj_str(&j, "role", raft_role_name(raft_role_of(r)));
    tj_u64(&j, "vote", raft_voted_for(r));
    tj_u64(&j, "leader", raft_leader(r));
    tj_u64(&j, "commit", commit);
    tj_u64(&j, "applied", raft_applied_index(r));
    tj_u64(&j, "last", last);
    tj_u64(&j, "snapshot", snap_index);
    if (et.deadline_ms) {
        tj_u64(&j, "election_elapsed_ms", et.now_ms - et.started_ms);
        tj_u64(&j, "election_timeout_ms", et.deadline_ms - et.started_ms);
    }
    enum { WINDOW = 64 };
    raft_index from = last > WINDOW ? last - WINDOW + 1 : 1;
    if (from <= snap_index)
        from = snap_index + 1;
    tj_log_runs(&j, from, last, term_at, r);
    json_emit(n, g->id, &j);
}

/* After a step: its rules, a commit the leader made, and the new state. */
static void json_step(struct raft_node *n, struct group *g, const struct raft_update *u,
                      raft_index commit_before)
{
    char buf[JSON_LINE];
    struct tj j;
    for (size_t i = 0; i < u->n_trace; i++) {
        tj_begin(&j, buf, sizeof(buf), raft_node_wall_ms(), "rule", n->cfg.id, g->id);
        tj_rule(&j, &u->trace[i]);
        json_emit(n, g->id, &j);
    }
    if (u->role == RAFT_LEADER && u->commit_index > commit_before) {
        tj_begin(&j, buf, sizeof(buf), raft_node_wall_ms(), "commit", n->cfg.id, g->id);
        tj_u64(&j, "term", raft_current_term(g->r));
        tj_u64(&j, "index", u->commit_index);
        tj_u64(&j, "from", commit_before + 1);
        json_emit(n, g->id, &j);
    }
    json_state(n, g);
}

/* Send m; an InstallSnapshot chunk comes from the core without its data,
 * which the host reads from its snapshot now (raft.h). */
static void send_message(struct raft_node *n, struct group *g, const struct raft_message *m)
{
    struct raft_message numbered;
    if (n->json) {
        numbered = *m;
        numbered.trace_id = ++n->next_trace_id;
        m = &numbered;
        json_message(n, g, "send", m);
    }
    const struct raft_install_snapshot *is = &m->install_snapshot;
    if (m->type != RAFT_MSG_INSTALL_SNAPSHOT || is->data || !is->len) {
        transport_send(n->tr, g->id, m);
        return;
    }
    void *buf = malloc(is->len);
    if (!buf || !n->cb.snapshot_read ||
        n->cb.snapshot_read(n->data, g->id, is->last_index, is->offset, buf, is->len) != 0) {
        free(buf); /* not sent: the core sends it again */
        return;
    }
    struct raft_message filled = *m;
    filled.install_snapshot.data = buf;
    transport_send(n->tr, g->id, &filled);
    free(buf);
}

/* The pending entry just deferred also carries a snapshot meta. */
static int attach_snapshot(struct pending *p, const struct raft_snapshot_meta *meta)
{
    p->snap = *meta;
    p->snap_members = malloc((meta->n_members ? meta->n_members : 1) * sizeof(*p->snap_members));
    if (!p->snap_members)
        return RAFT_ENOMEM;
    if (meta->n_members)
        memcpy(p->snap_members, meta->members, meta->n_members * sizeof(*p->snap_members));
    p->snap.members = p->snap_members;
    p->w.snapshot = &p->snap;
    return RAFT_OK;
}

/* A received snapshot is complete: install it with the next batch (ok), or
 * tell the core it failed its check once that batch is done. */
static int defer_install(struct raft_node *n, const struct raft_install_snapshot *is, bool ok)
{
    struct pending *p = &n->pending[n->n_pending - 1];
    if (!ok) {
        p->install_bad = true;
        p->snap.index = is->last_index;
        p->snap.term = is->last_term;
        return RAFT_OK;
    }
    struct raft_snapshot_meta meta = {is->last_index, is->last_term, is->total_size,
                                      is->checksum,   is->members,   is->n_members};
    p->install = true;
    p->w.install = true;
    return attach_snapshot(p, &meta);
}

/* The host contract of raft.h for one update. */
static int process(struct raft_node *n, struct group *g, const struct raft_update *u)
{
    if (n->cfg.trace)
        log_trace(n, g, u);
    size_t n_after = 0;
    for (size_t i = 0; i < u->n_messages; i++) {
        if (u->messages[i].after_persist)
            n_after++;
        else
            send_message(n, g, &u->messages[i]);
    }
    /* A received chunk is staged now; a complete snapshot is installed by
     * the storage thread (state, log and meta in one transaction). */
    int chunk = 0;
    if (u->snapshot_chunk && n->cb.snapshot_chunk)
        chunk = n->cb.snapshot_chunk(n->data, g->id, u->snapshot_chunk);
    bool persist = u->hard_state_changed || u->n_entries || u->truncate_from || u->compact_index;
    /* Host contract 1 holds an answer until what it reports is durable.
     * An update that persists nothing (a heartbeat's answer, most often)
     * reports what earlier updates of its group wrote: once none of them
     * is still queued or on the log thread, that is durable, and the
     * answer leaves now: not after the next commit, which may carry other
     * groups' writes (a large one delays every heartbeat answer behind
     * it), and without a trip through the log thread for nothing. With one
     * still out, it waits behind it, so the group's answers keep their
     * order. */
    if (!persist && !chunk && n_after && g->unreleased == 0) {
        for (size_t i = 0; i < u->n_messages; i++)
            if (u->messages[i].after_persist)
                send_message(n, g, &u->messages[i]);
        n_after = 0;
    }
    int rv = 0;
    if (persist || n_after || chunk)
        rv = defer(n, g, u, n_after);
    if (!rv && chunk)
        rv = defer_install(n, u->snapshot_chunk, chunk > 0);
    if (!rv && u->n_apply)
        rv = defer_apply(n, g, u);
    if (rv) {
        fail(n, rv, "%s", "out of memory");
        return rv;
    }
    if (u->snapshot_wanted && n->cb.snapshot_wanted)
        n->cb.snapshot_wanted(n->data, g->id, u->snapshot_index);
    if (u->role_changed && n->cb.role_changed)
        n->cb.role_changed(n->data, g->id, u->role, u->leader_id);
    for (size_t i = 0; i < u->n_reads; i++)
        if (n->cb.read_done)
            n->cb.read_done(n->data, g->id, &u->reads[i]);
    return 0;
}

/* ------------------------------------------------------------------------
 * Group commit: the log's thread and the state machine's
 *
 * Two batches may be out at once, each on a thread of the pool: the log
 * batch (what the cores asked to persist; its sync is what
 * acknowledgements wait for) and the apply batch (committed entries into
 * the state machine's environment, storage.h). They touch different
 * environments, so neither waits for the other's sync. What orders them:
 * an entry is handed out to apply only once it is durable in the log
 * (RAFT_PERSISTED of an earlier log batch; host contract 2); a received
 * snapshot is recorded in the log first and installed in the state
 * machine after, by the apply queue, behind the entries handed out before
 * it (start_group() finishes an install a crash interrupted); the log
 * forgets entries (compaction) only after the state machine's
 * environment is synced.
 * ------------------------------------------------------------------------ */

static int apply_batch(struct batch *b, void *txn, char *err, size_t errlen)
{
    struct raft_node *n = b->n;
    bool any = false;
    for (size_t i = 0; i < b->count; i++) {
        struct pending *p = &b->p[i];
        if (p->apply.n && n->cb.apply) {
            int rc = n->cb.apply(n->data, p->g->id, txn, p->apply.e, p->apply.n, &p->apply_result,
                                 err, errlen);
            if (rc)
                return rc;
            any = true;
        }
        if (p->install && n->cb.snapshot_install) {
            int rc = n->cb.snapshot_install(n->data, p->g->id, txn, p->snap.index, err, errlen);
            if (rc)
                return rc;
        }
    }
    /* The entries are committed -- durable on a majority -- and their
     * results are what any replay would compute: the host may answer
     * clients now, without waiting for this transaction's sync (which
     * only spares a replay after a crash). On the loop they are handed
     * out once the transaction is closed (the host may read then). */
    if (any && n->cb.results && !b->on_loop) {
        uv_mutex_lock(&n->early_lock);
        n->early_batch[n->early_batch[0] ? 1 : 0] = b;
        uv_mutex_unlock(&n->early_lock);
        uv_async_send(&n->early);
    }
    return STORAGE_OK;
}

/* An apply batch has answered its clients already (results are out
 * before the commit) and its own sync is worth nothing but a shorter
 * replay after a crash -- yet the next apply batch would wait for it: the
 * clients it answered send their next commands right away, and those
 * are answered only once applied. So it waits, its transaction open, up
 * to apply_linger_us for the next apply batch to join it, and the two
 * commit with one sync. The loop ends the wait early when a read needs
 * the applied state (raft_node_flush) or the node stops. Not when the
 * state machine shares the log's environment (a data directory from
 * before the split): its open transaction would hold the log's writes. */
static int linger(struct batch *b, void *txn, char *err, size_t errlen)
{
    struct raft_node *n = b->n;
    uint64_t t0 = uv_hrtime(), until = t0 + (uint64_t)n->cfg.apply_linger_us * 1000;
    uv_mutex_lock(&n->linger_lock);
    n->lingering = b;
    for (uint64_t now = t0; !n->join && !n->flush_now && now < until; now = uv_hrtime())
        if (uv_cond_timedwait(&n->linger_cond, &n->linger_lock, until - now) == UV_ETIMEDOUT)
            break;
    struct batch *j = n->join;
    n->join = n->lingering = NULL;
    n->flush_now = false;
    uv_mutex_unlock(&n->linger_lock);
    b->linger_ns = uv_hrtime() - t0;
    if (!j)
        return STORAGE_OK;
    b->joined = j;
    return apply_batch(j, txn, err, errlen);
}

static int apply_hook(void *arg, void *txn, char *err, size_t errlen)
{
    struct batch *b = arg;
    int rc = apply_batch(b, txn, err, errlen);
    if (rc == STORAGE_OK && !b->on_loop && b->n->cfg.apply_linger_us &&
        storage_sm_separate(b->n->st))
        rc = linger(b, txn, err, errlen);
    return rc;
}

/* On the loop thread: hand out staged results, once per batch (only the
 * batch in flight and the one that joined it can have any). */
static void deliver_early(struct raft_node *n)
{
    uv_mutex_lock(&n->early_lock);
    struct batch *bs[2] = {n->early_batch[0], n->early_batch[1]};
    n->early_batch[0] = n->early_batch[1] = NULL;
    uv_mutex_unlock(&n->early_lock);
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; bs[k] && i < bs[k]->count; i++) {
            struct pending *p = &bs[k]->p[i];
            if (p->apply.n && p->apply_result)
                n->cb.results(n->data, p->g->id, p->apply.e, p->apply.n, p->apply_result);
        }
}

static void on_early(uv_async_t *h)
{
    deliver_early(h->data);
}

static void commit_work(uv_work_t *req)
{
    struct batch *b = req->data;
    struct raft_node *n = b->n;
    uint64_t t0 = uv_hrtime();
    if (b->apply) {
        b->rc = storage_commit_sm(n->st, apply_hook, b, b->err, sizeof(b->err));
        b->ns = uv_hrtime() - t0 - b->linger_ns;
        storage_last_sm_cost(n->st, &b->cost);
    } else {
        b->rc = b->sync_sm ? storage_sync_sm(n->st, b->err, sizeof(b->err)) : STORAGE_OK;
        if (b->rc == STORAGE_OK)
            b->rc = storage_commit(n->st, b->ws, b->nw, b->err, sizeof(b->err));
        b->ns = uv_hrtime() - t0;
        storage_last_cost(n->st, &b->cost);
    }
    b->cost.build_ns -= b->cost.build_ns > b->linger_ns ? b->linger_ns : b->cost.build_ns;
}

static void start_commit(struct raft_node *n);
static void start_apply(struct raft_node *n);
static void close_handles(struct raft_node *n);
static void add_queued_groups(struct raft_node *n);
static void drop_removed_groups(struct raft_node *n);

static bool idle(const struct raft_node *n)
{
    return !n->in_flight && !n->apply_in_flight;
}

/* A snapshot the log has recorded goes to the apply queue, to be
 * installed in the state machine after what was handed out before it. */
static void queue_install(struct raft_node *n, struct pending *p)
{
    struct pending *q = pending_add(&n->applying, &n->n_applying, &n->cap_applying, p->g);
    if (!q) {
        fail(n, RAFT_ENOMEM, "%s", "out of memory");
        return;
    }
    q->install = true;
    q->snap = p->snap; /* its members are not needed past here */
    q->snap.members = NULL;
    q->snap.n_members = 0;
}

/* After the commit, on the loop: what waited for it. */
static void finish_batch(struct raft_node *n, struct batch *b, bool ok)
{
    for (size_t i = 0; i < b->count; i++) {
        struct pending *p = &b->p[i];
        if (ok) {
            n->stats.writes += !b->apply;
            n->stats.entries += p->log.n;
            n->stats.applied += p->apply.n;
        }
        if (p->apply.n && n->cb.applied)
            n->cb.applied(n->data, p->g->id, p->apply.e, p->apply.n, p->apply_result, ok);
        if (b->apply && p->install && n->cb.snapshot_installed)
            n->cb.snapshot_installed(n->data, p->g->id, p->snap.index, ok);
        if (!b->apply && p->install && ok && !n->stopping)
            queue_install(n, p);
        /* The core learns of an install once the state machine holds it
         * (or, for one that failed its check, at once). */
        bool installed = b->apply ? p->install : p->install_bad;
        if (installed && ok && !n->stopping) {
            struct raft_event ev = {.type = RAFT_SNAPSHOT_INSTALLED};
            ev.snapshot_installed.index = p->snap.index;
            ev.snapshot_installed.term = p->snap.term;
            ev.snapshot_installed.ok = b->apply;
            step(n, p->g, &ev);
        }
        if (ok && !n->stopping) {
            for (size_t k = 0; k < p->n_msgs; k++)
                send_message(n, p->g, &p->msgs[k]);
            if (p->log.n || p->w.hard_state) {
                struct raft_event ev = {.type = RAFT_PERSISTED};
                if (p->log.n) {
                    ev.persisted.index = p->log.e[p->log.n - 1].index;
                    ev.persisted.term = p->log.e[p->log.n - 1].term;
                }
                if (p->w.hard_state)
                    ev.persisted.current_term = p->w.term;
                step(n, p->g, &ev);
            }
        }
        pending_free(p);
    }
    free(b->p);
    free(b->ws);
    free(b);
}

static void commit_done(uv_work_t *req, int status)
{
    struct batch *b = req->data, *joined = b->joined;
    struct raft_node *n = b->n;
    if (b->apply)
        n->apply_in_flight = NULL;
    else
        n->in_flight = NULL;
    if (b->apply && n->cb.results)
        deliver_early(n); /* if the async wake-up has not come yet */
    /* The storage layer and the state machine name themselves in their
     * messages ("storage: ...", "state machine: ..."). */
    if (status == 0 && b->rc != STORAGE_OK)
        fail(n, b->rc, "%s", b->err[0] ? b->err : "storage: a commit failed");
    bool ok = status == 0 && b->rc == STORAGE_OK;
    if (ok && !b->apply) {
        n->stats.commits++;
        double s = (double)b->ns / 1e9;
        n->stats.commit_seconds += s;
        size_t k = 0;
        while (k < RAFT_NODE_COMMIT_BUCKETS && s > RAFT_NODE_COMMIT_BOUNDS[k])
            k++;
        n->stats.commit_buckets[k]++;
    }
    if (ok) {
        struct raft_node_txn_stats *t = &n->stats.txn[b->apply];
        t->txns++;
        t->bytes_written += b->cost.bytes;
        t->build_seconds += (double)b->cost.build_ns / 1e9;
        t->sync_seconds += (double)b->cost.commit_ns / 1e9;
        if (b->apply && b->on_loop)
            n->stats.on_loop++;
        else if (b->apply && joined)
            n->stats.joined++;
        else if (b->apply)
            n->stats.apply_only++;
    }
    finish_batch(n, b, ok);
    if (joined)
        finish_batch(n, joined, ok);
    if (n->stopping) {
        if (idle(n))
            close_handles(n);
        return;
    }
    add_queued_groups(n);
    drop_removed_groups(n);
    if (n->n_pending)
        start_commit(n);
    if (n->n_applying)
        start_apply(n);
}

/* A batch of the pending records of queue q (NULL and the node failed: no
 * memory). The queue starts anew. */
static struct batch *take(struct raft_node *n, struct pending **q, size_t *count, size_t *cap,
                          bool apply)
{
    struct batch *b = calloc(1, sizeof(*b));
    struct storage_group_write *ws = apply ? NULL : malloc(*count * sizeof(*ws));
    if (!b || (!apply && !ws)) {
        free(b);
        free(ws);
        fail(n, RAFT_ENOMEM, "%s", "out of memory");
        return NULL;
    }
    b->n = n;
    b->apply = apply;
    b->p = *q;
    b->count = *count;
    b->ws = ws;
    b->req.data = b;
    *q = NULL;
    *count = *cap = 0;
    for (size_t i = 0; !apply && i < b->count; i++) {
        struct storage_group_write *w = &b->p[i].w;
        /* A snapshot's meta lives in its pending record, which the array's
         * growth (pending_add's realloc) may have moved since
         * attach_snapshot(): point at where it is now, in the array the
         * batch owns. */
        if (w->snapshot)
            w->snapshot = &b->p[i].snap;
        if (w->hard_state || w->n_entries || w->truncate_from || w->compact_index || w->snapshot)
            b->ws[b->nw++] = *w;
        b->sync_sm |= w->compact_index != 0;
    }
    return b;
}

static void queue_batch(struct raft_node *n, struct batch *b)
{
    int rc = uv_queue_work(n->loop, &b->req, commit_work, commit_done);
    if (rc) {
        /* No thread pool: commit here. */
        commit_work(&b->req);
        commit_done(&b->req, 0);
    }
}

/* Hand the log writes kept so far to the log thread; while a batch is
 * there, this one waits, and grows, until it is done. */
static void start_commit(struct raft_node *n)
{
    if (!n->n_pending || n->fatal || n->in_flight)
        return;
    struct batch *b = take(n, &n->pending, &n->n_pending, &n->cap_pending, false);
    if (!b)
        return;
    n->in_flight = b;
    queue_batch(n, b);
}

/* The most an apply batch run on the loop carries (start_apply): about a
 * millisecond of applying here. */
enum { APPLY_ON_LOOP_MAX_ENTRIES = 512, APPLY_ON_LOOP_MAX_BYTES = 1 << 20 };

/* The same for entries to apply -- or, while an apply batch lingers on
 * the apply thread, hand them to it: they commit together. */
static void start_apply(struct raft_node *n)
{
    if (!n->n_applying || n->fatal)
        return;
    if (n->apply_in_flight) {
        uv_mutex_lock(&n->linger_lock);
        bool joinable = n->lingering == n->apply_in_flight && !n->join;
        struct batch *j =
            joinable ? take(n, &n->applying, &n->n_applying, &n->cap_applying, true) : NULL;
        if (j) {
            n->join = j;
            uv_cond_signal(&n->linger_cond);
        }
        uv_mutex_unlock(&n->linger_lock);
        return;
    }
    /* On the loop, unless the batch would hold it up: a snapshot to
     * install, or a backlog (a restart replaying its log, a follower
     * catching up), which the pool applies while the loop goes on
     * answering heartbeats. */
    bool here = n->cfg.apply_on_loop && storage_sm_separate(n->st);
    size_t entries = 0, bytes = 0;
    for (size_t i = 0; here && i < n->n_applying; i++) {
        const struct pending *p = &n->applying[i];
        here = !p->install;
        entries += p->apply.n;
        for (size_t k = 0; k < p->apply.n; k++)
            bytes += p->apply.e[k].len;
    }
    here = here && entries <= APPLY_ON_LOOP_MAX_ENTRIES && bytes <= APPLY_ON_LOOP_MAX_BYTES;
    struct batch *b = take(n, &n->applying, &n->n_applying, &n->cap_applying, true);
    if (!b)
        return;
    n->apply_in_flight = b;
    if (!here) {
        queue_batch(n, b);
        return;
    }
    /* Here: one unsynced commit, then the results (the host may read the
     * state machine once the transaction is closed), then what waited. */
    b->on_loop = true;
    commit_work(&b->req);
    if (b->rc == STORAGE_OK && n->cb.results)
        for (size_t i = 0; i < b->count; i++) {
            struct pending *p = &b->p[i];
            if (p->apply.n && p->apply_result)
                n->cb.results(n->data, p->g->id, p->apply.e, p->apply.n, p->apply_result);
        }
    commit_done(&b->req, 0);
}

void raft_node_flush(struct raft_node *n)
{
    uv_mutex_lock(&n->linger_lock);
    if (n->lingering) {
        n->flush_now = true;
        uv_cond_signal(&n->linger_cond);
    }
    uv_mutex_unlock(&n->linger_lock);
}

static int queue_proposal(struct proposals *q, const void *data, size_t len)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        size_t *lens = realloc(q->lens, cap * sizeof(*lens));
        if (!lens)
            return RAFT_ENOMEM;
        q->lens = lens;
        q->cap = cap;
    }
    if (q->used + len > q->bytes_cap) {
        size_t cap = q->bytes_cap ? q->bytes_cap : 4096;
        while (cap < q->used + len)
            cap *= 2;
        uint8_t *b = realloc(q->bytes, cap);
        if (!b)
            return RAFT_ENOMEM;
        q->bytes = b;
        q->bytes_cap = cap;
    }
    if (len)
        memcpy(q->bytes + q->used, data, len);
    q->used += len;
    q->lens[q->n++] = len;
    return RAFT_OK;
}

static void proposals_free(struct proposals *q)
{
    free(q->lens);
    free(q->bytes);
    memset(q, 0, sizeof(*q));
}

/* Propose what the loop turn gathered, one event per group. */
static void propose_queued(struct raft_node *n)
{
    for (size_t i = 0; i < n->n_groups && !n->fatal; i++) {
        struct group *g = n->groups[i];
        struct proposals *q = &g->props;
        if (!q->n)
            continue;
        struct raft_entry *e = malloc(q->n * sizeof(*e));
        int rv = RAFT_ENOMEM;
        if (e) {
            size_t at = 0;
            for (size_t k = 0; k < q->n; k++) {
                e[k] = (struct raft_entry){.data = q->bytes + at, .len = q->lens[k]};
                at += q->lens[k];
            }
            struct raft_event ev = {.type = RAFT_PROPOSE};
            ev.propose.entries = e;
            ev.propose.n_entries = q->n;
            rv = step(n, g, &ev);
            free(e);
        }
        q->n = q->used = 0;
        if (rv != RAFT_OK && n->cb.proposals_dropped)
            n->cb.proposals_dropped(n->data, g->id, rv);
    }
}

static void on_flush(uv_prepare_t *h)
{
    add_queued_groups(h->data);
    drop_removed_groups(h->data);
    propose_queued(h->data);
    start_commit(h->data);
    start_apply(h->data);
}

/* ------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------ */

static int step(struct raft_node *n, struct group *g, struct raft_event *ev)
{
    if (n->fatal)
        return RAFT_ECORRUPT;
    if (g->removing)
        return RAFT_EINVAL;
    struct raft_update u;
    ev->now_ms = uv_now(n->loop);
    raft_index commit_before = raft_commit_index(g->r);
    int rv = raft_step(g->r, ev, &u);
    if (n->json)
        json_step(n, g, &u, commit_before);
    if (rv == RAFT_ENOMEM || rv == RAFT_ECORRUPT) {
        if (n->cfg.trace)
            log_trace(n, g, &u);
        const char *why = raft_check_invariants(g->r);
        fail(n, rv, "raft core: %s", why ? why : raft_strerror(rv));
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
        step(n, n->groups[i], &ev);
    }
}

static void on_recv(void *data, uint64_t group, const struct raft_message *m)
{
    struct raft_node *n = data;
    struct group *g = find_group(n, group);
    if (n->stopping)
        return;
    if (!g) {
        /* A leader replicates a group to us that we do not host (yet): we
         * were added to it. The host decides; the message is dropped (the
         * leader sends again). */
        if (n->cb.group_unknown && !n->fatal)
            n->cb.group_unknown(n->data, group, m->from);
        return;
    }
    if (n->json)
        json_message(n, g, "recv", m);
    struct raft_event ev = {.type = RAFT_RECEIVE};
    ev.receive = m;
    step(n, g, &ev);
}

static void on_log(void *data, const char *line)
{
    struct raft_node *n = data;
    iolog("raft node %llu: %s\n", (unsigned long long)n->cfg.id, line);
}

/* A peer proved itself: take its messages only if its data is the data we
 * knew (storage.h, incarnations). A server that lost its log and its vote
 * and came back empty could otherwise vote for a candidate missing a
 * committed entry, or count toward a commit it does not hold: with three
 * servers, an entry on A and B is lost if B is wiped and B and C then
 * elect C (Raft §5.4 assumes stable storage survives). The first
 * incarnation heard from a peer is recorded, durably, before its first
 * message is taken. */
static bool on_peer_check(void *data, uint64_t peer, uint64_t incarnation, char *why, size_t len)
{
    struct raft_node *n = data;
    if (!incarnation)
        return true; /* a build without incarnations: nothing to compare */
    uint64_t known = storage_peer_incarnation(n->st, peer);
    if (known == incarnation)
        return true;
    if (known) {
        snprintf(why, len,
                 "its data dir was replaced (incarnation %016llx; we knew %016llx): a node that "
                 "lost its data must not vote or count toward a quorum, or an acknowledged write "
                 "could be lost. Bring its data back, or replace the node (docs/kvd.md, "
                 "\"A node that lost its data\")",
                 (unsigned long long)incarnation, (unsigned long long)known);
        return false;
    }
    char err[256];
    if (storage_set_peer_incarnation(n->st, peer, incarnation, err, sizeof(err)) != STORAGE_OK) {
        snprintf(why, len, "cannot record its incarnation: %s", err);
        return false; /* it retries; taking it unrecorded would forget it */
    }
    return true;
}

int raft_node_forget_peer(struct raft_node *n, raft_id id, bool replaced, char *err, size_t errlen)
{
    if (id == n->cfg.id) {
        snprintf(err, errlen, "a node does not record its own incarnation");
        return RAFT_EINVAL;
    }
    /* Replaced: its new, empty self may come back only as a new member (a
     * learner first). While a configuration in this node's log still
     * counts it as a voter -- this node missed its removal (thesis §4.2.3)
     * -- its empty vote could elect this node with a stale log. Checked
     * now, not at its next handshake: by then the new member may be a
     * voter again, rightly. */
    for (size_t i = 0; replaced && i < n->n_groups; i++) {
        struct raft_member m[64];
        size_t k = raft_configuration(n->groups[i]->r, m, 64);
        for (size_t j = 0; j < k && j < 64; j++)
            if (m[j].id == id && m[j].is_voter) {
                snprintf(err, errlen,
                         "node %llu is still a voter of group %llu in this node's log: its removal "
                         "has not reached this node yet (try again shortly)",
                         (unsigned long long)id, (unsigned long long)n->groups[i]->id);
                return RAFT_EINVAL;
            }
    }
    int rc = storage_forget_peer_incarnation(n->st, id, err, errlen);
    if (rc == STORAGE_OK)
        iolog("raft node %llu: forgot node %llu's incarnation (the operator brings it back "
              "empty); its next one is recorded\n",
              (unsigned long long)n->cfg.id, (unsigned long long)id);
    return rc == STORAGE_OK ? RAFT_OK : RAFT_EINVAL;
}

struct restore {
    struct raft_node *n;
    uint64_t group;
    const struct raft_snapshot_meta *meta;
};

static int restore_hook(void *arg, void *txn, char *err, size_t errlen)
{
    struct restore *r = arg;
    if (!r->n->cb.snapshot_restore) {
        snprintf(err, errlen, "the host cannot restore a snapshot");
        return STORAGE_EIO;
    }
    return r->n->cb.snapshot_restore(r->n->data, r->group, txn, r->meta, err, errlen);
}

static int drop_hook(void *arg, void *txn, char *err, size_t errlen);
struct drop_hook {
    struct raft_node *n;
    uint64_t group;
};

/* The state machine and the log commit separately (Group commit, above);
 * a crash between two commits that belong together leaves one ahead of
 * the other, and this finishes the job: a snapshot the log recorded and
 * the state machine does not hold is installed now; a state machine whose
 * group's log was dropped is dropped too. *applied is what the state
 * machine holds after. */
static int reconcile(struct raft_node *n, struct group *g, const struct storage_loaded *l,
                     raft_index *applied, char *err, size_t errlen)
{
    const struct raft_snapshot_meta *snap = l->persisted.snapshot;
    int rc;
    if (snap && *applied < snap->index) {
        struct restore r = {n, g->id, snap};
        rc = storage_commit_sm(n->st, restore_hook, &r, err, errlen);
        if (n->cb.snapshot_installed)
            n->cb.snapshot_installed(n->data, g->id, snap->index, rc == STORAGE_OK);
        if (rc)
            return rc;
        iolog("raft node %llu: group %llu: its state machine (at %llu) caught up with the "
              "snapshot its log records (at %llu): the install a crash interrupted is done\n",
              (unsigned long long)n->cfg.id, (unsigned long long)g->id,
              (unsigned long long)*applied, (unsigned long long)snap->index);
        *applied = snap->index;
        return 0;
    }
    bool dropped = !snap && !l->persisted.n_entries && l->has_base && !l->n_base;
    if (!*applied || !dropped)
        return 0;
    struct drop_hook h = {n, g->id};
    rc = storage_commit_sm(n->st, drop_hook, &h, err, errlen);
    if (n->cb.group_dropped)
        n->cb.group_dropped(n->data, g->id, rc == STORAGE_OK);
    if (rc)
        return rc;
    iolog("raft node %llu: group %llu: its log was dropped and its state machine (at %llu) "
          "was not: dropped now\n",
          (unsigned long long)n->cfg.id, (unsigned long long)g->id, (unsigned long long)*applied);
    *applied = 0;
    return n->cb.open_group
               ? n->cb.open_group(n->data, g->id, storage_sm_env(n->st), applied, err, errlen)
               : 0;
}

static int start_group(struct raft_node *n, struct group *g, const struct raft_node_group *gc,
                       char *err, size_t errlen)
{
    raft_index applied = 0;
    if (n->cb.open_group) {
        int rc = n->cb.open_group(n->data, g->id, storage_sm_env(n->st), &applied, err, errlen);
        if (rc)
            return rc;
    }
    struct storage_loaded l;
    int rc = storage_load(n->st, g->id, &l, err, errlen);
    if (rc != STORAGE_OK)
        return rc;
    if ((rc = reconcile(n, g, &l, &applied, err, errlen))) {
        storage_loaded_free(&l);
        return rc;
    }
    enum { MAX_VOTERS = 64 };
    raft_id voters[MAX_VOTERS];
    size_t nv = 0;
    if (l.has_base)
        for (size_t i = 0; i < l.n_base && nv < MAX_VOTERS; i++)
            voters[nv++] = l.base[i];
    else if (gc->voters)
        for (size_t i = 0; i < gc->n_voters && nv < MAX_VOTERS; i++)
            voters[nv++] = gc->voters[i];
    else if (!gc->join)
        for (size_t i = 0; i < n->cfg.n_peers && nv < MAX_VOTERS; i++)
            voters[nv++] = n->cfg.peers[i].id;
    /* The first start of the group here fixes its base for good
     * (storage_set_base); a data dir from before the record takes the
     * host's list once more, and keeps it. */
    if (!l.has_base && (rc = storage_set_base(n->st, g->id, voters, nv, err, errlen))) {
        storage_loaded_free(&l);
        return rc;
    }
    if (!l.persisted.snapshot) {
        l.persisted.voters = voters;
        l.persisted.n_voters = nv;
    }
    l.persisted.applied_index = applied;
    struct raft_config cfg = n->cfg.raft;
    cfg.id = n->cfg.id;
    cfg.seed = n->cfg.cluster_id ^ (g->id * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)uv_hrtime();
    rc = raft_init(&g->r, &cfg, &l.persisted);
    storage_loaded_free(&l);
    if (rc != RAFT_OK)
        snprintf(err, errlen, "group %llu: raft_init: %s (applied index %llu)",
                 (unsigned long long)g->id, raft_strerror(rc), (unsigned long long)applied);
    return rc;
}

/* Start group gc now (from the loop thread, no commit in flight). */
static int add_group(struct raft_node *n, const struct raft_node_group *gc, char *err,
                     size_t errlen)
{
    if (find_group(n, gc->id))
        return 0;
    if (n->n_groups == n->cap_groups) {
        size_t cap = n->cap_groups ? 2 * n->cap_groups : 8;
        struct group **gs = realloc(n->groups, cap * sizeof(*gs));
        if (!gs)
            return RAFT_ENOMEM;
        n->groups = gs;
        n->cap_groups = cap;
    }
    struct group *g = calloc(1, sizeof(*g));
    if (!g)
        return RAFT_ENOMEM;
    g->id = gc->id;
    int rc = start_group(n, g, gc, err, errlen);
    if (rc) {
        raft_close(g->r);
        free(g);
        return rc;
    }
    n->groups[n->n_groups++] = g;
    return 0;
}

static void free_groups(struct raft_node *n)
{
    for (size_t i = 0; i < n->n_groups; i++) {
        raft_close(n->groups[i]->r);
        proposals_free(&n->groups[i]->props);
        free(n->groups[i]);
    }
    free(n->groups);
    for (size_t i = 0; i < n->n_adding; i++)
        free((raft_id *)n->adding[i].voters);
    free(n->adding);
}

/* Start gc now and say so; a group that cannot be started stops the
 * node (its storage failed: nothing else would go better). */
static void add_group_now(struct raft_node *n, const struct raft_node_group *gc)
{
    char err[256];
    int rc = add_group(n, gc, err, sizeof(err));
    if (rc) {
        char why[320];
        snprintf(why, sizeof(why), "group %llu: %s", (unsigned long long)gc->id,
                 rc == RAFT_ENOMEM ? "out of memory" : err);
        fail(n, rc, "cannot host %s", why);
        return;
    }
    iolog("raft node %llu: hosts group %llu from now on (%s)\n", (unsigned long long)n->cfg.id,
          (unsigned long long)gc->id,
          gc->n_voters ? "bootstrap voters"
                       : "joining: it learns its configuration from the leader");
}

/* The groups asked for while a commit was in flight: the storage thread
 * is idle now. */
static void add_queued_groups(struct raft_node *n)
{
    while (n->n_adding && idle(n) && !n->stopping && !n->fatal) {
        struct raft_node_group gc = n->adding[--n->n_adding];
        add_group_now(n, &gc);
        free((raft_id *)gc.voters);
    }
}

static int drop_hook(void *arg, void *txn, char *err, size_t errlen)
{
    struct drop_hook *h = arg;
    return h->n->cb.group_drop ? h->n->cb.group_drop(h->n->data, h->group, txn, err, errlen)
                               : STORAGE_OK;
}

/* Drop a group's log (keeping term and vote) and its state machine: in
 * one transaction when they share an environment; otherwise the log
 * first, so that a crash in between leaves a state machine whose log is
 * gone, which start_group() recognises and drops. */
static int drop_group(struct raft_node *n, uint64_t group, char *err, size_t errlen)
{
    struct drop_hook h = {n, group};
    if (!storage_sm_separate(n->st))
        return storage_drop_group(n->st, group, drop_hook, &h, err, errlen);
    int rc = storage_drop_group(n->st, group, NULL, NULL, err, errlen);
    return rc ? rc : storage_commit_sm(n->st, drop_hook, &h, err, errlen);
}

static bool queued(const struct pending *q, size_t count, const struct group *g)
{
    for (size_t k = 0; k < count; k++)
        if (q[k].g == g)
            return true;
    return false;
}

/* Drop the groups being removed that no pending write involves (the
 * storage threads are idle). */
static void drop_removed_groups(struct raft_node *n)
{
    for (size_t i = 0; i < n->n_groups && idle(n) && !n->stopping && !n->fatal;) {
        struct group *g = n->groups[i];
        if (!g->removing || queued(n->pending, n->n_pending, g) ||
            queued(n->applying, n->n_applying, g)) {
            i++;
            continue;
        }
        char err[256];
        int rc = drop_group(n, g->id, err, sizeof(err));
        n->groups[i] = n->groups[--n->n_groups];
        raft_close(g->r);
        proposals_free(&g->props);
        uint64_t id = g->id;
        free(g);
        if (rc != STORAGE_OK)
            fail(n, rc, "cannot drop a group it left: %s", err);
        else
            iolog("raft node %llu: left group %llu: its log and state dropped (term and vote "
                  "kept)\n",
                  (unsigned long long)n->cfg.id, (unsigned long long)id);
        if (n->cb.group_dropped)
            n->cb.group_dropped(n->data, id, rc == STORAGE_OK);
    }
}

int raft_node_remove_group(struct raft_node *n, uint64_t group)
{
    struct group *g = find_group(n, group);
    if (!g)
        return RAFT_OK;
    if (n->stopping || n->fatal)
        return RAFT_ECORRUPT;
    g->removing = true;
    drop_removed_groups(n);
    return RAFT_OK;
}

int raft_node_add_group(struct raft_node *n, const struct raft_node_group *gc)
{
    if (n->stopping || n->fatal)
        return RAFT_ECORRUPT;
    if (find_group(n, gc->id))
        return RAFT_OK;
    if (idle(n)) {
        add_group_now(n, gc);
        return n->fatal ? n->fatal : RAFT_OK;
    }
    for (size_t i = 0; i < n->n_adding; i++)
        if (n->adding[i].id == gc->id)
            return RAFT_OK;
    struct raft_node_group *a = realloc(n->adding, (n->n_adding + 1) * sizeof(*a));
    if (!a)
        return RAFT_ENOMEM;
    n->adding = a;
    raft_id *voters = NULL;
    if (gc->n_voters) {
        if (!(voters = malloc(gc->n_voters * sizeof(*voters))))
            return RAFT_ENOMEM;
        memcpy(voters, gc->voters, gc->n_voters * sizeof(*voters));
    }
    a[n->n_adding++] = (struct raft_node_group){
        .id = gc->id, .voters = voters, .n_voters = gc->n_voters, .join = !gc->n_voters};
    return RAFT_OK; /* the loop turn's end (on_flush) or the commit in flight adds it */
}

bool raft_node_hosts(const struct raft_node *n, uint64_t group)
{
    return find_group((struct raft_node *)n, group) != NULL;
}

int raft_node_add_peer(struct raft_node *n, raft_id id, const char *host, uint16_t port)
{
    if (id == n->cfg.id || transport_has_peer(n->tr, id))
        return RAFT_OK;
    return transport_add_peer(n->tr, id, host, port) == 0 ? RAFT_OK : RAFT_EINVAL;
}

int raft_node_start(struct raft_node **out, uv_loop_t *loop, const struct raft_node_config *cfg,
                    const struct raft_node_callbacks *cb, void *data, char *err, size_t errlen)
{
    int rc;
    struct raft_node *n = calloc(1, sizeof(*n));
    if (!n)
        return RAFT_ENOMEM;
    n->loop = loop;
    n->cfg = *cfg;
    if (cb)
        n->cb = *cb;
    n->data = data;
    if ((rc = storage_open(cfg->data_dir, cfg->cluster_id, cfg->id, cfg->map_size_bytes, &n->st,
                           err, errlen)) != STORAGE_OK)
        goto err_after_alloc;
    for (size_t i = 0; i < cfg->n_groups; i++)
        if ((rc = add_group(n, &cfg->groups[i], err, errlen)) != 0)
            goto err_after_groups;
    struct transport_config tc;
    transport_config_default(&tc);
    tc.cluster_id = cfg->cluster_id;
    tc.node_id = cfg->id;
    tc.host = cfg->host;
    tc.port = cfg->port;
    if (cfg->cluster_secret)
        memcpy(tc.secret, cfg->cluster_secret, sizeof(tc.secret));
    tc.placement = cfg->placement;
    tc.incarnation = storage_incarnation(n->st);
    if ((rc = transport_init(&n->tr, loop, &tc, on_recv, on_log, n)) != 0) {
        snprintf(err, errlen, "listening on %s:%u: %s", cfg->host, cfg->port, uv_strerror(rc));
        goto err_after_groups;
    }
    transport_on_peer_check(n->tr, on_peer_check, n);
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (cfg->peers[i].id != cfg->id)
            transport_add_peer(n->tr, cfg->peers[i].id, cfg->peers[i].host, cfg->peers[i].port);
    uv_timer_init(loop, &n->tick);
    n->tick.data = n;
    uv_timer_start(&n->tick, on_tick, cfg->tick_ms, cfg->tick_ms);
    uv_prepare_init(loop, &n->flush);
    n->flush.data = n;
    uv_prepare_start(&n->flush, on_flush);
    uv_mutex_init(&n->early_lock);
    uv_mutex_init(&n->linger_lock);
    uv_cond_init(&n->linger_cond);
    uv_async_init(loop, &n->early, on_early);
    n->early.data = n;
    *out = n;
    return 0;

err_after_groups:
    free_groups(n);
    storage_close(n->st);
err_after_alloc:
    free(n);
    return rc;
}

int raft_node_propose(struct raft_node *n, uint64_t group, const void *data, size_t len)
{
    struct group *g = find_group(n, group);
    if (!g)
        return RAFT_EINVAL;
    if (n->fatal || n->stopping)
        return RAFT_ECORRUPT;
    if (raft_role_of(g->r) != RAFT_LEADER)
        return RAFT_ENOTLEADER;
    if (len > n->cfg.raft.max_entry_bytes)
        return RAFT_ETOOBIG;
    return queue_proposal(&g->props, data, len);
}

int raft_node_read(struct raft_node *n, uint64_t group, uint64_t id)
{
    struct group *g = find_group(n, group);
    if (!g)
        return RAFT_EINVAL;
    if (n->fatal || n->stopping)
        return RAFT_ECORRUPT;
    struct raft_event ev = {.type = RAFT_READ};
    ev.read.id = id;
    return step(n, g, &ev);
}

/* The meta of a snapshot taken here, into the batch of the update that
 * compacts the log for it (or a batch of its own, if none was made since
 * `before`). */
static int record_snapshot(struct raft_node *n, struct group *g, size_t before,
                           const struct raft_snapshot_meta *meta)
{
    if (n->n_pending == before) {
        struct raft_update none = {0};
        int rv = defer(n, g, &none, 0);
        if (rv != RAFT_OK)
            return rv;
    }
    return attach_snapshot(&n->pending[n->n_pending - 1], meta);
}

int raft_node_snapshot_taken(struct raft_node *n, uint64_t group, raft_index index, uint64_t size,
                             uint64_t checksum)
{
    struct group *g = find_group(n, group);
    if (!g)
        return RAFT_EINVAL;
    if (n->fatal || n->stopping)
        return RAFT_ECORRUPT;
    struct raft_event ev = {.type = RAFT_SNAPSHOT_TAKEN};
    ev.snapshot_taken.index = index;
    ev.snapshot_taken.size = size;
    ev.snapshot_taken.checksum = checksum;
    size_t before = n->n_pending;
    int rv = step(n, g, &ev);
    if (rv != RAFT_OK)
        return rv;
    /* Record the snapshot's meta with the compaction it allows, in the
     * same batch: storage never holds a log that starts after its
     * snapshot without the snapshot's meta. */
    struct raft_snapshot_meta meta;
    if (!raft_snapshot(g->r, &meta) || meta.index != index)
        return RAFT_EINVAL;
    return record_snapshot(n, g, before, &meta);
}

int raft_node_change_conf(struct raft_node *n, uint64_t group, enum raft_conf_op op, raft_id id)
{
    struct group *g = find_group(n, group);
    if (!g)
        return RAFT_EINVAL;
    struct raft_event ev = {.type = RAFT_CHANGE_CONF};
    ev.change_conf.op = op;
    ev.change_conf.id = id;
    return step(n, g, &ev);
}

int raft_node_transfer(struct raft_node *n, uint64_t group, raft_id to)
{
    struct group *g = find_group(n, group);
    if (!g)
        return RAFT_EINVAL;
    if (n->fatal || n->stopping)
        return RAFT_ECORRUPT;
    struct raft_event ev = {.type = RAFT_TRANSFER};
    ev.transfer.to = to;
    return step(n, g, &ev);
}

void raft_node_stats(const struct raft_node *n, struct raft_node_stats *st)
{
    *st = n->stats;
}

struct raft *raft_node_raft(struct raft_node *n, uint64_t group)
{
    struct group *g = find_group(n, group);
    return g ? g->r : NULL;
}

struct transport *raft_node_transport(struct raft_node *n)
{
    return n->tr;
}

const char *raft_node_error(const struct raft_node *n)
{
    return n->fatal ? n->error : NULL;
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
    for (size_t i = 0; i < n->n_applying; i++)
        pending_free(&n->applying[i]);
    free(n->applying);
    free_groups(n);
    storage_close(n->st);
    uv_mutex_destroy(&n->early_lock);
    uv_mutex_destroy(&n->linger_lock);
    uv_cond_destroy(&n->linger_cond);
    void (*stopped)(void *) = n->cb.stopped;
    void *data = n->data;
    free(n);
    if (stopped)
        stopped(data);
}

static void close_handles(struct raft_node *n)
{
    n->closing_handles = 3;
    uv_close((uv_handle_t *)&n->early, on_handle_close);
    uv_close((uv_handle_t *)&n->flush, on_handle_close);
    uv_close((uv_handle_t *)&n->tick, on_handle_close);
}

/* What is still pending was never acknowledged to anyone (messages and
 * answers wait for the commit), so dropping it is a crash Raft tolerates;
 * a batch on the storage thread is let finish. */
void raft_node_stop(struct raft_node *n)
{
    n->stopping = true;
    uv_prepare_stop(&n->flush);
    uv_timer_stop(&n->tick);
    transport_close(n->tr);
    raft_node_flush(n);
    if (idle(n))
        close_handles(n);
}

/* ------------------------------------------------------------------------
 * Test hooks (node_testing.h)
 * ------------------------------------------------------------------------ */

int raft_node_testing_inject(struct raft_node *n, uint64_t group, const struct raft_update *u,
                             const struct raft_snapshot_meta *taken)
{
    struct group *g = find_group(n, group);
    if (!g)
        return RAFT_EINVAL;
    if (n->fatal)
        return RAFT_ECORRUPT;
    size_t before = n->n_pending;
    int rv = process(n, g, u);
    return rv || !taken ? rv : record_snapshot(n, g, before, taken);
}

bool raft_node_testing_idle(const struct raft_node *n)
{
    return idle(n) && !n->n_pending && !n->n_applying;
}

int raft_node_testing_load(struct raft_node *n, uint64_t group, struct storage_loaded *out,
                           char *err, size_t errlen)
{
    return storage_load(n->st, group, out, err, errlen);
}

bool raft_node_testing_lingering(struct raft_node *n)
{
    uv_mutex_lock(&n->linger_lock);
    bool lingering = n->lingering && n->lingering == n->apply_in_flight && !n->join;
    uv_mutex_unlock(&n->linger_lock);
    return lingering;
}
