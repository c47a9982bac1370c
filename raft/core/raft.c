/* raft.c — creating an instance, the event dispatcher, and queries.
 *
 * raft_step() is the whole interface: one event in, one update out. Message
 * handling follows etcd's shape: check the term first (Figure 2, rules for
 * all servers), then switch on the message type; each handler lives in the
 * file of its rule.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

void raft_config_default(struct raft_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->election_timeout_ms = 1000;
    cfg->heartbeat_interval_ms = 100;
    cfg->max_append_entries = 1024;
    cfg->max_append_bytes = 1 << 20;
    cfg->max_inflight = 64;
    cfg->max_uncommitted_bytes = (size_t)64 << 20;
    cfg->max_entry_bytes = (size_t)8 << 20;
    cfg->max_pending_reads = 4096;
    cfg->clock_drift_bound_pct = 10;
    cfg->snapshot_threshold_entries = 8192;
    cfg->snapshot_threshold_bytes = (size_t)64 << 20;
    cfg->snapshot_trailing_entries = 1024;
    cfg->snapshot_chunk_bytes = (size_t)1 << 20;
}

uint64_t raft_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Small, fast, and good enough for timeouts (host contract 3). */
uint64_t raft_random(struct raft *r)
{
    return raft_splitmix64(&r->prng);
}

static int check_config(const struct raft_config *cfg)
{
    if (cfg->id == 0 || cfg->election_timeout_ms == 0 || cfg->heartbeat_interval_ms == 0 ||
        cfg->heartbeat_interval_ms >= cfg->election_timeout_ms || cfg->max_append_entries == 0 ||
        cfg->max_inflight == 0 || cfg->max_pending_reads == 0 || cfg->max_entry_bytes == 0 ||
        cfg->max_entry_bytes > UINT32_MAX)
        return RAFT_EINVAL;
    if (cfg->clock_drift_bound_pct >= 100 || (cfg->lease_reads && cfg->check_quorum_off) ||
        cfg->snapshot_chunk_bytes == 0)
        return RAFT_EINVAL;
    bool unsafe = cfg->prevote_off || cfg->check_quorum_off || cfg->unsafe_commit_old_term ||
                  cfg->unsafe_vote_any_log || cfg->unsafe_quorum_minus_one ||
                  cfg->unsafe_lease_too_long || cfg->unsafe_read_before_round ||
                  cfg->unsafe_no_noop || cfg->unsafe_ack_before_persist ||
                  cfg->unsafe_snapshot_drops_term;
    if (unsafe && !cfg->allow_unsafe)
        return RAFT_EUNSAFE;
    return RAFT_OK;
}

static int check_ids(const raft_id *ids, size_t n, const raft_id *others, size_t n_others)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == 0)
            return RAFT_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (ids[j] == ids[i])
                return RAFT_EINVAL;
        for (size_t j = 0; j < n_others; j++)
            if (others[j] == ids[i])
                return RAFT_EINVAL;
    }
    return RAFT_OK;
}

static int check_persisted(const struct raft_persisted *st)
{
    if ((st->n_voters && !st->voters) || (st->n_learners && !st->learners) ||
        check_ids(st->voters, st->n_voters, NULL, 0) != RAFT_OK ||
        check_ids(st->learners, st->n_learners, st->voters, st->n_voters) != RAFT_OK)
        return RAFT_EINVAL;
    const struct raft_snapshot_meta *snap = st->snapshot;
    raft_index first = st->first_index ? st->first_index : 1;
    if (snap && (snap->index == 0 || snap->term == 0 || snap->term > st->current_term ||
                 first - 1 > snap->index || st->applied_index < snap->index ||
                 (snap->n_members && !snap->members)))
        return RAFT_ECORRUPT;
    if (!snap && first != 1)
        return RAFT_ECORRUPT;
    raft_term prev = first > 1 ? st->prev_term : 0;
    for (size_t i = 0; i < st->n_entries; i++) {
        const struct raft_entry *e = &st->entries[i];
        if (e->term < prev || e->term > st->current_term || e->term == 0 ||
            (e->index != 0 && e->index != first + i))
            return RAFT_ECORRUPT;
        prev = e->term;
    }
    if (st->applied_index > first - 1 + st->n_entries)
        return RAFT_ECORRUPT;
    return RAFT_OK;
}

int raft_init(struct raft **out, const struct raft_config *cfg, const struct raft_persisted *st)
{
    int rv;
    *out = NULL;
    if ((rv = check_config(cfg)) != RAFT_OK || (rv = check_persisted(st)) != RAFT_OK)
        return rv;

    struct raft *r = raft_calloc(1, sizeof(*r));
    if (!r)
        return RAFT_ENOMEM;
    r->cfg = *cfg;
    r->current_term = st->current_term;
    r->voted_for = st->voted_for;
    log_init(&r->log);
    if (st->first_index > 1) { /* a compacted log continues after its prev entry */
        r->log.offset = st->first_index - 1;
        r->log.offset_term = st->prev_term;
    }
    r->prng = cfg->seed ^ (cfg->id * 0x9e3779b97f4a7c15ULL);

    rv = RAFT_ENOMEM;
    r->reads = raft_calloc(cfg->max_pending_reads, sizeof(*r->reads));
    if (!r->reads)
        goto err_after_alloc;
    for (size_t i = 0; i < st->n_entries; i++) {
        const struct raft_entry *e = &st->entries[i];
        if ((rv = log_append(&r->log, e->term, (uint8_t)e->type, e->data, e->len)) != RAFT_OK)
            goto err_after_alloc;
    }
    /* The configuration: the snapshot's (or the bootstrap one), unless the
     * log holds a newer one. */
    if (st->snapshot) {
        if ((rv = snapshot_set(&r->snap, st->snapshot)) != RAFT_OK ||
            (rv = membership_set_base_members(r, st->snapshot->members, st->snapshot->n_members)) !=
                RAFT_OK ||
            (rv = membership_recompute(r, st->snapshot->index)) != RAFT_OK)
            goto err_after_alloc;
    } else if ((rv = membership_set_base(r, st)) != RAFT_OK ||
               (rv = membership_recompute(r, 0)) != RAFT_OK) {
        goto err_after_alloc;
    }
    /* What the host loaded is durable by definition; what it applied is
     * committed (host contract 2). */
    r->persisted_index = log_last_index(&r->log);
    r->durable_term = st->current_term;
    r->commit_index = st->applied_index;
    r->applied_index = st->applied_index;
    r->role = RAFT_FOLLOWER;
    *out = r;
    return RAFT_OK;

err_after_alloc:
    raft_close(r);
    return rv;
}

void raft_close(struct raft *r)
{
    if (!r)
        return;
    membership_free(r);
    snapshot_free(r);
    raft_free(r->staging.members);
    raft_free(r->reads);
    log_free(&r->log);
    raft_free(r->msgs);
    raft_free(r->msg_ents);
    raft_free(r->done_reads);
    raft_free(r->trace);
    raft_free(r->trace_ids);
    raft_free(r->trace_ids_at);
    raft_free(r->ents);
    raft_free(r);
}

/* Figure 2, rules for all servers: "If RPC request or response contains term
 * T > currentTerm: set currentTerm = T, convert to follower." Returns false
 * when the message must not be handled further. */
static bool check_term(struct raft *r, const struct raft_message *m)
{
    if (m->term > r->current_term) {
        switch (m->type) {
        case RAFT_MSG_REQUEST_VOTE:
            if (m->request_vote.pre_vote)
                return true; /* thesis §9.6: a pre-vote changes nothing */
            if (!r->cfg.check_quorum_off && !m->request_vote.leadership_transfer &&
                election_in_leader_lease(r)) {
                /* thesis §4.2.3: while we believe a leader is alive, a
                 * vote request must not depose it. */
                update_trace(r, "thesis §4.2.3 vote request ignored: current leader is alive",
                             m->from, 0, "term", m->term);
                update_trace_vote_request(r, m);
                return false;
            }
            break;
        case RAFT_MSG_REQUEST_VOTE_RESULT:
            if (m->request_vote_result.pre_vote && m->request_vote_result.vote_granted)
                return true; /* carries the term we asked about */
            break;
        default:
            break;
        }
        size_t why = r->n_trace;
        update_trace(r, "§5.1 higher term seen: adopting it", m->from, 0, "term", m->term);
        raft_id leader = m->type == RAFT_MSG_APPEND_ENTRIES || m->type == RAFT_MSG_INSTALL_SNAPSHOT
                             ? m->from
                             : 0;
        election_become_follower(r, m->term, leader);
        update_trace_restamp(r, why); /* the term adopted, as a follower */
        return true;
    }
    if (m->term < r->current_term) {
        /* A request from a stale term is answered with ours, so that its
         * sender learns it is behind (Figure 2, "reply false if term <
         * currentTerm"; Figure 13, InstallSnapshot receiver 1). With
         * pre-vote and check-quorum this answer is the only way a stale
         * leader learns of a follower's higher term: the follower's
         * pre-votes fail while the others still hear the leader, and its
         * vote requests would be ignored (thesis §4.2.3). A leader sending
         * a snapshot sends that follower nothing but chunks, so the chunk
         * must be answered too (etcd answers a stale heartbeat or append for
         * the same reason; its leader keeps heartbeating a follower that
         * receives a snapshot). Responses from a stale term are dropped,
         * and so is TimeoutNow: it asks for nothing back, and the stale
         * leader's next AppendEntries is answered. */
        switch (m->type) {
        case RAFT_MSG_APPEND_ENTRIES:
            replication_reject_stale_append(r, m);
            break;
        case RAFT_MSG_INSTALL_SNAPSHOT:
            snapshot_reject_stale(r, m);
            break;
        case RAFT_MSG_REQUEST_VOTE:
            if (m->request_vote.pre_vote)
                election_receive_request_vote(r, m); /* denies, telling our term */
            else
                election_reject_stale_vote(r, m);
            break;
        default:
            break;
        }
        return false;
    }
    return true;
}

static void receive(struct raft *r, const struct raft_message *m)
{
    /* thesis §4.1: servers handle requests without consulting their
     * configuration (a new voter may not know it is one yet); handlers of
     * responses look their sender up and ignore strangers. */
    if (m->to != r->cfg.id || m->from == 0 || m->from == r->cfg.id)
        return;
    if (!check_term(r, m))
        return;
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE:
        election_receive_request_vote(r, m);
        break;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        election_receive_request_vote_result(r, m);
        break;
    case RAFT_MSG_APPEND_ENTRIES:
        replication_receive_append(r, m);
        break;
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        replication_receive_append_result(r, m);
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        transfer_receive_timeout_now(r, m);
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT:
        snapshot_receive(r, m);
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT_RESULT:
        snapshot_receive_result(r, m);
        break;
    }
}

static void persisted(struct raft *r, raft_index index, raft_term term)
{
    /* LAB 3 BEGIN: the host reports its write up to (index, term) durable
     * (RAFT_PERSISTED). Record it in r->persisted_index, unless a later
     * step replaced those entries meanwhile (the term at index differs, or
     * the log is shorter now) or it is old news; a leader may now count
     * itself toward a commit (commit_maybe_advance).
     * STUB: (void)r; (void)index; (void)term; */
    /* A report for entries that a later step replaced is ignored: the term
     * at that index no longer matches. */
    if (index <= r->persisted_index || index > log_last_index(&r->log) ||
        log_term_at(&r->log, index) != term)
        return;
    r->persisted_index = index;
    commit_maybe_advance(r);
    /* LAB 3 END */
}

int raft_step(struct raft *r, const struct raft_event *ev, struct raft_update *out)
{
    int rv = RAFT_OK;
    update_begin(r, out);
    if (r->election_deadline_ms == 0) { /* the first event starts the clock */
        r->now_ms = ev->now_ms;
        if (r->cfg.lease_reads) /* see election_in_leader_lease() */
            r->boot_lease_until_ms = ev->now_ms + r->cfg.election_timeout_ms;
        election_reset_timer(r);
    }
    if (ev->now_ms > r->now_ms)
        r->now_ms = ev->now_ms;

    switch (ev->type) {
    case RAFT_TICK:
        election_tick(r);
        replication_tick(r);
        transfer_tick(r);
        break;
    case RAFT_RECEIVE:
        receive(r, ev->receive);
        break;
    case RAFT_PERSISTED:
        if (ev->persisted.current_term > r->durable_term)
            r->durable_term = ev->persisted.current_term;
        if (ev->persisted.index)
            persisted(r, ev->persisted.index, ev->persisted.term);
        break;
    case RAFT_PROPOSE:
        rv = replication_propose(r, ev);
        break;
    case RAFT_READ:
        rv = readindex_request(r, ev->read.id);
        break;
    case RAFT_CHANGE_CONF:
        rv = membership_change(r, ev->change_conf.op, ev->change_conf.id);
        break;
    case RAFT_SNAPSHOT_TAKEN:
        rv = snapshot_taken(r, ev->snapshot_taken.index, ev->snapshot_taken.size,
                            ev->snapshot_taken.checksum);
        break;
    case RAFT_SNAPSHOT_INSTALLED:
        rv = snapshot_installed(r, ev->snapshot_installed.index, ev->snapshot_installed.term,
                                ev->snapshot_installed.ok);
        break;
    case RAFT_TRANSFER:
        rv = transfer_start(r, ev->transfer.to);
        break;
    case RAFT_TIMEOUT:
        r->election_deadline_ms = r->now_ms;
        election_tick(r);
        break;
    default:
        rv = RAFT_EINVAL;
        break;
    }
    commit_hand_out(r);
    readindex_end_of_step(r);
    snapshot_maybe_ask(r);
    int frv = update_finish(r);
    if (frv != RAFT_OK)
        return frv;
    if (r->fatal)
        return RAFT_ECORRUPT;
#ifndef NDEBUG
    if (raft_check_invariants(r) != NULL)
        return RAFT_ECORRUPT;
#endif
    r->log.dirty_from = 0;
    return rv;
}

/* ------------------------------------------------------------------------
 * Queries
 * ------------------------------------------------------------------------ */

raft_id raft_id_of(const struct raft *r)
{
    return r->cfg.id;
}

enum raft_role raft_role_of(const struct raft *r)
{
    return r->role;
}

raft_term raft_current_term(const struct raft *r)
{
    return r->current_term;
}

raft_id raft_voted_for(const struct raft *r)
{
    return r->voted_for;
}

raft_id raft_leader(const struct raft *r)
{
    return r->leader_id;
}

raft_index raft_commit_index(const struct raft *r)
{
    return r->commit_index;
}

raft_index raft_applied_index(const struct raft *r)
{
    return r->applied_index;
}

raft_index raft_last_index(const struct raft *r)
{
    return log_last_index(&r->log);
}

raft_term raft_term_at(const struct raft *r, raft_index index)
{
    return index == 0 ? 0 : log_term_at(&r->log, index);
}

bool raft_entry_at(const struct raft *r, raft_index index, struct raft_entry *e)
{
    if (index <= r->log.offset || index > log_last_index(&r->log))
        return false;
    log_get(&r->log, index, e);
    return true;
}

bool raft_snapshot(const struct raft *r, struct raft_snapshot_meta *out)
{
    if (!r->snap.index)
        return false;
    *out = (struct raft_snapshot_meta){r->snap.index,    r->snap.term,    r->snap.size,
                                       r->snap.checksum, r->snap.members, r->snap.n_members};
    return true;
}

bool raft_lease_valid(const struct raft *r)
{
    return readindex_lease_valid(r);
}

bool raft_peer_status(const struct raft *r, raft_id id, struct raft_peer_status *st)
{
    const struct raft_server *s = server_find_const(r, id);
    if (r->role != RAFT_LEADER || !s)
        return false;
    st->id = id;
    st->match_index = s == r->self ? r->persisted_index : s->match_index;
    st->next_index = s->next_index;
    st->is_replicating = s->state == PROGRESS_REPLICATE;
    st->inflight = s->inflight_count;
    st->is_voter = s->is_voter;
    st->caught_up = s->is_voter || s->caught_up;
    st->sending_snapshot = s->state == PROGRESS_SNAPSHOT;
    return true;
}
