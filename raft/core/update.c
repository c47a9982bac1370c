/* update.c — building the struct raft_update that a step returns.
 *
 * During a step the rules only record *what* to do: which index to persist
 * from, which log ranges a message carries, which reads finished. The
 * pointers the host sees are made at the very end (update_finish), once the
 * log can no longer move, so they stay valid until the next raft_step().
 * All arrays here are scratch space owned by the instance and reused from
 * step to step; they grow by doubling, so a steady state allocates nothing.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

/* Make room for `want` elements of `size` bytes in *arr (capacity *cap). */
static bool reserve(void **arr, size_t *cap, size_t want, size_t size)
{
    if (want <= *cap)
        return true;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < want)
        n *= 2;
    void *p = raft_realloc(*arr, n * size);
    if (!p)
        return false;
    *arr = p;
    *cap = n;
    return true;
}

void update_begin(struct raft *r, struct raft_update *out)
{
    memset(out, 0, sizeof(*out));
    r->out = out;
    r->hard_state_dirty = false;
    r->persist_from = 0;
    r->truncate_from = 0;
    r->role_dirty = false;
    r->n_msgs = 0;
    r->n_done_reads = 0;
    r->n_trace = 0;
    r->n_trace_ids = 0;
    r->apply_from = r->applied_index;
    r->chunk = NULL;
    r->compact_index = 0;
    r->compact_term = 0;
    r->oom = 0;
}

struct raft_message *update_message(struct raft *r, enum raft_message_type type, raft_id to)
{
    static struct raft_message sink; /* written to and ignored after an allocation failure */
    if (!reserve((void **)&r->msgs, &r->msgs_cap, r->n_msgs + 1, sizeof(*r->msgs)) ||
        !reserve((void **)&r->msg_ents, &r->msg_ents_cap, r->n_msgs + 1, sizeof(*r->msg_ents))) {
        r->oom = 1;
        return &sink;
    }
    struct raft_message *m = &r->msgs[r->n_msgs];
    memset(m, 0, sizeof(*m));
    r->msg_ents[r->n_msgs].first = 0;
    r->msg_ents[r->n_msgs].n = 0;
    r->n_msgs++;
    m->type = type;
    m->from = r->cfg.id;
    m->to = to;
    m->term = r->current_term;
    return m;
}

void update_message_entries(struct raft *r, struct raft_message *m, raft_index first, size_t n)
{
    if (r->oom || m < r->msgs || m >= r->msgs + r->n_msgs)
        return;
    struct msg_entries *me = &r->msg_ents[m - r->msgs];
    me->first = first;
    me->n = n;
}

void update_trace(struct raft *r, const char *rule, raft_id peer, raft_index index,
                  const char *value_name, uint64_t value)
{
    if (!reserve((void **)&r->trace, &r->trace_cap, r->n_trace + 1, sizeof(*r->trace))) {
        r->oom = 1;
        return;
    }
    struct raft_trace *t = &r->trace[r->n_trace++];
    memset(t, 0, sizeof(*t));
    t->rule = rule;
    t->term = r->current_term;
    t->role = r->role;
    t->peer = peer;
    t->index = index;
    t->value_name = value_name;
    t->value = value;
}

/* The record update_trace() just added, or NULL if it could not. */
static struct raft_trace *last_trace(struct raft *r)
{
    return r->oom || !r->n_trace ? NULL : &r->trace[r->n_trace - 1];
}

void update_trace_vote_request(struct raft *r, const struct raft_message *m)
{
    struct raft_trace *t = last_trace(r);
    if (!t)
        return;
    t->vote |= RAFT_TRACE_CANDIDATE_LOG | RAFT_TRACE_OUR_LOG;
    t->cand_last_index = m->request_vote.last_log_index;
    t->cand_last_term = m->request_vote.last_log_term;
    t->our_last_index = log_last_index(&r->log);
    t->our_last_term = log_last_term(&r->log);
}

void update_trace_tally(struct raft *r)
{
    struct raft_trace *t = last_trace(r);
    if (!t)
        return;
    size_t i = (size_t)(t - r->trace);
    if (!reserve((void **)&r->trace_ids_at, &r->trace_ids_at_cap, i + 1,
                 sizeof(*r->trace_ids_at)) ||
        !reserve((void **)&r->trace_ids, &r->trace_ids_cap, r->n_trace_ids + 2 * r->n_servers,
                 sizeof(*r->trace_ids))) {
        r->oom = 1;
        return;
    }
    /* A candidate's own last entry is what its RequestVotes carry. */
    t->vote |= RAFT_TRACE_CANDIDATE_LOG | RAFT_TRACE_VOTERS;
    t->cand_last_index = log_last_index(&r->log);
    t->cand_last_term = log_last_term(&r->log);
    /* Pointers are made in update_finish (the array may still grow); until
     * then the record holds counts and trace_ids_at[i] the offset. */
    r->trace_ids_at[i] = r->n_trace_ids;
    for (unsigned k = 0; k < r->n_servers; k++)
        if (r->servers[k].is_voter)
            r->trace_ids[r->n_trace_ids + t->n_voters++] = r->servers[k].id;
    for (unsigned k = 0; k < r->n_servers; k++)
        if (r->servers[k].is_voter && r->servers[k].vote_granted)
            r->trace_ids[r->n_trace_ids + t->n_voters + t->n_granted++] = r->servers[k].id;
    r->n_trace_ids += t->n_voters + t->n_granted;
}

void update_trace_restamp(struct raft *r, size_t which)
{
    if (which >= r->n_trace)
        return; /* the record was never added (no memory) */
    r->trace[which].term = r->current_term;
    r->trace[which].role = r->role;
}

void update_read_done(struct raft *r, uint64_t id, raft_index index, int status)
{
    if (!reserve((void **)&r->done_reads, &r->done_reads_cap, r->n_done_reads + 1,
                 sizeof(*r->done_reads))) {
        r->oom = 1;
        return;
    }
    struct raft_read *rd = &r->done_reads[r->n_done_reads++];
    rd->id = id;
    rd->index = index;
    rd->status = status;
}

void update_persist_entries_from(struct raft *r, raft_index index)
{
    if (r->persist_from == 0 || index < r->persist_from)
        r->persist_from = index;
}

void update_hard_state(struct raft *r)
{
    r->hard_state_dirty = true;
}

static void fill_entries(struct raft *r, struct raft_entry *dst, raft_index first, size_t n)
{
    for (size_t i = 0; i < n; i++)
        log_get(&r->log, first + i, &dst[i]);
}

int update_finish(struct raft *r)
{
    struct raft_update *out = r->out;
    raft_index last = log_last_index(&r->log);

    /* Entries to persist: from the first index this step wrote. */
    size_t n_persist = 0;
    if (r->persist_from && r->persist_from <= last)
        n_persist = (size_t)(last - r->persist_from + 1);

    /* Entries to apply were chosen by commit_hand_out(). */
    size_t n_apply = (size_t)(r->applied_index - r->apply_from);

    /* Drop a message whose entries are no longer in the log (a rule
     * changed its mind within the step); it would carry a lie. */
    size_t total = n_persist + n_apply, kept = 0;
    for (size_t i = 0; i < r->n_msgs; i++) {
        struct msg_entries *me = &r->msg_ents[i];
        if (me->n && (me->first <= r->log.offset || me->first + me->n - 1 > last))
            continue;
        r->msgs[kept] = r->msgs[i];
        r->msg_ents[kept] = *me;
        total += me->n;
        kept++;
    }
    r->n_msgs = kept;

    if (!reserve((void **)&r->ents, &r->ents_cap, total, sizeof(*r->ents)))
        r->oom = 1;
    if (r->oom)
        return RAFT_ENOMEM;

    struct raft_entry *e = r->ents;
    if (n_persist) {
        fill_entries(r, e, r->persist_from, n_persist);
        out->entries = e;
        out->n_entries = n_persist;
        e += n_persist;
    }
    out->truncate_from = r->truncate_from;
    if (n_apply) {
        fill_entries(r, e, r->apply_from + 1, n_apply);
        out->apply = e;
        out->n_apply = n_apply;
        e += n_apply;
    }
    for (size_t i = 0; i < r->n_msgs; i++) {
        struct msg_entries *me = &r->msg_ents[i];
        if (!me->n)
            continue;
        fill_entries(r, e, me->first, me->n);
        r->msgs[i].append_entries.entries = e;
        r->msgs[i].append_entries.n_entries = me->n;
        e += me->n;
    }

    out->snapshot_chunk = r->chunk;
    out->compact_index = r->compact_index;
    out->compact_term = r->compact_term;
    out->hard_state_changed = r->hard_state_dirty;
    out->current_term = r->current_term;
    out->voted_for = r->voted_for;
    out->messages = r->msgs;
    out->n_messages = r->n_msgs;
    out->commit_index = r->commit_index;
    out->reads = r->done_reads;
    out->n_reads = r->n_done_reads;
    out->role_changed = r->role_dirty;
    out->role = r->role;
    out->leader_id = r->leader_id;
    for (size_t i = 0; i < r->n_trace; i++) {
        struct raft_trace *t = &r->trace[i];
        if (!(t->vote & RAFT_TRACE_VOTERS))
            continue;
        t->voters = r->trace_ids + r->trace_ids_at[i];
        t->granted = t->voters + t->n_voters;
    }
    out->trace = r->trace;
    out->n_trace = r->n_trace;
    return RAFT_OK;
}
