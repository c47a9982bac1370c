/* replication.c — log replication with AppendEntries (Raft §5.3), on both
 * sides, with batching (many entries per message, bounded in bytes) and
 * pipelining (progress.c), and fast backtracking of nextIndex from the
 * follower's conflict hint (§5.3, the paragraphs after Figure 7).
 */
#include "core.h"

/* ------------------------------------------------------------------------
 * Leader side
 * ------------------------------------------------------------------------ */

/* Send one AppendEntries with the entries from nextIndex (as many as one
 * message may carry), or an empty heartbeat. Returns whether it sent. */
static bool send_one(struct raft *r, struct raft_server *s, bool heartbeat)
{
    /* §7: what it needs next was compacted away: it gets the snapshot. */
    if (s->state == PROGRESS_SNAPSHOT || s->next_index <= r->log.offset)
        return snapshot_send(r, s, heartbeat);
    if (heartbeat && s->state == PROGRESS_PROBE) {
        /* The heartbeat doubles as a retry of a probe that may be lost. */
        s->probe_sent = false;
        heartbeat = false;
    }
    raft_index last = log_last_index(&r->log);
    if (!heartbeat) {
        if (s->state == PROGRESS_PROBE && s->probe_sent)
            return false;
        if (s->state == PROGRESS_REPLICATE &&
            (progress_inflight_full(r, s) || s->next_index > last))
            return false;
    }

    raft_index prev = s->next_index - 1;
    size_t n = 0, bytes = 0;
    if (!heartbeat) {
        while (s->next_index + n <= last && n < r->cfg.max_append_entries) {
            size_t len = log_entry_len(&r->log, s->next_index + n);
            if (n > 0 && bytes + len > r->cfg.max_append_bytes)
                break;
            bytes += len;
            n++;
        }
    }

    struct raft_message *m = update_message(r, RAFT_MSG_APPEND_ENTRIES, s->id);
    m->append_entries.prev_log_index = prev;
    m->append_entries.prev_log_term = log_term_at(&r->log, prev);
    m->append_entries.leader_commit = r->commit_index;
    m->append_entries.read_seq = r->read_seq;
    m->append_entries.sent_ms = r->now_ms;
    update_message_entries(r, m, prev + 1, n);
    if (!heartbeat && (n > 0 || s->state == PROGRESS_PROBE))
        progress_sent(r, s, prev + n);
    return !heartbeat && n > 0 && s->state == PROGRESS_REPLICATE;
}

/* A PROBE follower gets one message at a time; a REPLICATE follower as many
 * as its inflight window allows (pipelining). */
void replication_send_append(struct raft *r, struct raft_server *s, bool heartbeat)
{
    if (s == r->self)
        return;
    if (heartbeat) {
        send_one(r, s, true);
        return;
    }
    while (send_one(r, s, false))
        ;
}

void replication_broadcast(struct raft *r, bool heartbeat)
{
    for (unsigned i = 0; i < r->n_servers; i++)
        replication_send_append(r, &r->servers[i], heartbeat);
}

void replication_tick(struct raft *r)
{
    if (r->role != RAFT_LEADER)
        return;
    if (r->now_ms >= r->heartbeat_deadline_ms) {
        /* Figure 2, rules for leaders: heartbeats during idle periods. */
        r->heartbeat_deadline_ms = r->now_ms + r->cfg.heartbeat_interval_ms;
        replication_broadcast(r, true);
    }
    if (r->cfg.check_quorum_off || r->now_ms < r->check_quorum_deadline_ms)
        return;
    /* thesis §6.2: a leader that has not heard from a majority within an
     * election timeout steps down, so clients can find the real leader. */
    unsigned active = 0;
    for (unsigned i = 0; i < r->n_servers; i++) {
        struct raft_server *s = &r->servers[i];
        if (s->is_voter && (s == r->self || s->recent_active))
            active++;
        s->recent_active = false;
    }
    r->check_quorum_deadline_ms = r->now_ms + r->cfg.election_timeout_ms;
    if (active < quorum_size(r)) {
        size_t why = r->n_trace;
        update_trace(r,
                     "thesis §6.2 check-quorum: no majority heard within an election timeout, "
                     "stepping down",
                     0, 0, "heard", active);
        election_become_follower(r, r->current_term, 0);
        update_trace_restamp(r, why);
    }
}

/* Append one entry of our term to our own log and schedule it for persist. */
static int leader_append(struct raft *r, enum raft_entry_type type, const void *data, size_t len)
{
    int rv = log_append(&r->log, r->current_term, (uint8_t)type, data, len);
    if (rv != RAFT_OK)
        return rv;
    update_persist_entries_from(r, log_last_index(&r->log));
    r->self->match_index = log_last_index(&r->log);
    r->self->next_index = r->self->match_index + 1;
    return RAFT_OK;
}

int replication_append_noop(struct raft *r)
{
    return leader_append(r, RAFT_ENTRY_NOOP, NULL, 0);
}

int replication_append(struct raft *r, enum raft_entry_type type, const void *data, size_t len)
{
    return leader_append(r, type, data, len);
}

int replication_propose(struct raft *r, const struct raft_event *ev)
{
    if (r->role != RAFT_LEADER)
        return RAFT_ENOTLEADER;
    if (r->transfer_to)
        return RAFT_ETRANSFER; /* thesis §3.10: the old leader stops taking proposals */
    size_t bytes = 0;
    for (size_t i = 0; i < ev->propose.n_entries; i++) {
        size_t len = ev->propose.entries[i].len;
        if (len > r->cfg.max_entry_bytes)
            return RAFT_ETOOBIG;
        bytes += len;
    }
    /* Host contract 4: refuse rather than grow without bound. */
    if (r->uncommitted_bytes + bytes > r->cfg.max_uncommitted_bytes)
        return RAFT_EBUSY;
    raft_index first = log_last_index(&r->log) + 1;
    for (size_t i = 0; i < ev->propose.n_entries; i++) {
        const struct raft_entry *e = &ev->propose.entries[i];
        int rv = leader_append(r, RAFT_ENTRY_NORMAL, e->data, e->len);
        if (rv != RAFT_OK) {
            log_truncate(&r->log, first);
            r->self->match_index = first - 1;
            return rv;
        }
    }
    r->uncommitted_bytes += bytes;
    r->out->proposed_first = first;
    r->out->proposed_last = log_last_index(&r->log);
    replication_broadcast(r, false);
    return RAFT_OK;
}

/* Where to resume after a rejection (§5.3 fast backtracking): past our last
 * entry of the follower's conflicting term if we have that term, otherwise at
 * the first index the follower holds of it. */
static raft_index backtrack(const struct raft *r, const struct raft_append_entries_result *res)
{
    /* LAB 2 BEGIN: fast backtracking (§5.3, the paragraphs after Figure 7).
     * The follower's rejection says where its log and ours may part:
     * res->conflict_term (0 if its log is too short) and res->conflict_index
     * (the first index it holds of that term, or its last index + 1). If our
     * log has entries of conflict_term, resume right after our last one
     * (log_last_index_with_term_le, log_term_at; entries at or below
     * r->log.offset are in the snapshot); otherwise at conflict_index.
     * Never return more than res->rejected_index: probing must move back.
     * STUB: (void)r; (void)res; return 0; */
    raft_index next = res->conflict_index;
    if (res->conflict_term != 0) {
        raft_index i =
            log_last_index_with_term_le(&r->log, res->rejected_index, res->conflict_term);
        if (i > r->log.offset && log_term_at(&r->log, i) == res->conflict_term)
            next = i + 1;
    }
    if (next > res->rejected_index)
        next = res->rejected_index; /* always move back, so probing ends */
    return next;
    /* LAB 2 END */
}

/* A rejection below matchIndex is normally stale: the answer to a probe
 * from before the success that raised matchIndex. But one that answers a
 * message sent after that success (its echo of our send time says so)
 * cannot be: in our term a follower's log keeps what it acknowledged
 * (§5.3, host contract 1) -- unless it lost its storage and was taken back
 * empty (docs/kvd.md, A node that lost its data). Left alone, such a
 * follower would be ignored forever; it is probed again from what it has,
 * one message per heartbeat like any probe. */
static bool lost_its_log(const struct raft *r, const struct raft_server *s,
                         const struct raft_append_entries_result *res)
{
    (void)r;
    return s->state != PROGRESS_SNAPSHOT && res->rejected_index <= s->match_index &&
           res->conflict_index <= s->match_index && s->match_sent_ms &&
           res->echo_sent_ms > s->match_sent_ms;
}

void replication_receive_append_result(struct raft *r, const struct raft_message *m)
{
    const struct raft_append_entries_result *res = &m->append_entries_result;
    struct raft_server *s = server_find(r, m->from);
    if (r->role != RAFT_LEADER || !s || s == r->self)
        return;
    if ((res->success ? res->match_index : res->rejected_index) > log_last_index(&r->log)) {
        /* A follower of this term can only acknowledge what we sent. */
        update_trace(r, "§5.3 malformed AppendEntries result ignored: index beyond our log", s->id,
                     res->success ? res->match_index : res->rejected_index, NULL, 0);
        return;
    }
    s->recent_active = true;
    if (res->read_seq > s->read_seq_acked && res->read_seq <= r->read_seq)
        s->read_seq_acked = res->read_seq;
    if (res->echo_sent_ms > s->acked_sent_ms && res->echo_sent_ms <= r->now_ms)
        s->acked_sent_ms = res->echo_sent_ms;

    if (res->success) {
        if (res->echo_sent_ms > s->match_sent_ms && res->echo_sent_ms <= r->now_ms)
            s->match_sent_ms = res->echo_sent_ms;
        /* Whatever moved matchIndex, messages it covers are no longer in flight. */
        progress_acked(r, s, s->match_index);
        /* A stale or duplicated success may raise matchIndex, never lower it;
         * only the probe's own answer starts a window (progress.c). */
        bool answers_probe = progress_answers_probe(s, res->match_index);
        if (res->match_index > s->match_index || answers_probe) {
            if (res->match_index > s->match_index)
                s->match_index = res->match_index;
            if (s->next_index <= s->match_index)
                s->next_index = s->match_index + 1;
            progress_acked(r, s, s->match_index);
            if (answers_probe)
                progress_become_replicate(s);
            if (s->state == PROGRESS_SNAPSHOT && s->match_index >= s->snapshot_index) {
                /* The snapshot's answer was lost, but the follower's log
                 * says it has everything it covered (etcd's story). */
                update_trace(r, "§7 snapshot succeeded, as an AppendEntries answer shows", s->id,
                             s->match_index, NULL, 0);
                progress_become_probe(s, s->match_index + 1);
            }
            commit_maybe_advance(r);
        }
        replication_send_append(r, s, false);
        transfer_progress(r, s);
        membership_progress(r, s);
        return;
    }

    if (lost_its_log(r, s, res)) {
        update_trace(r,
                     "§5.3 follower's log is shorter than its matchIndex (it lost entries): "
                     "probing it again",
                     s->id, res->conflict_index, "match", s->match_index);
        s->match_index = 0;
        progress_become_probe(s, backtrack(r, res) ? backtrack(r, res) : 1);
        replication_send_append(r, s, false);
        return;
    }
    /* A rejection of a message we no longer care about is stale. */
    if (s->state == PROGRESS_SNAPSHOT)
        return;
    /* LAB 2 BEGIN: the leader backs nextIndex up after a rejection (§5.3,
     * Figure 2 "Rules for Servers", Leaders: "If AppendEntries fails because
     * of log inconsistency: decrement nextIndex and retry"). First drop a
     * stale rejection: in PROGRESS_REPLICATE one of an index at or below
     * s->match_index, in PROGRESS_PROBE one that does not answer the probe
     * in flight (res->rejected_index + 1 != s->next_index). Then compute
     * where to resume (backtrack(), never at or below s->match_index), go
     * back to PROGRESS_PROBE there (progress_become_probe) and send
     * (replication_send_append(r, s, false)). */
    if (s->state == PROGRESS_REPLICATE ? res->rejected_index <= s->match_index
                                       : res->rejected_index + 1 != s->next_index)
        return;
    raft_index next = backtrack(r, res);
    if (next <= s->match_index)
        next = s->match_index + 1;
    update_trace(r, "§5.3 AppendEntries rejected: backing up nextIndex", s->id, next, NULL, 0);
    progress_become_probe(s, next);
    replication_send_append(r, s, false);
    /* LAB 2 END */
}

/* ------------------------------------------------------------------------
 * Follower side
 * ------------------------------------------------------------------------ */

static struct raft_message *reply(struct raft *r, const struct raft_message *m)
{
    struct raft_message *res = update_message(r, RAFT_MSG_APPEND_ENTRIES_RESULT, m->from);
    /* LAB 3 BEGIN: when may this answer leave (Figure 2: "updated on stable
     * storage before responding to RPCs")? A message with after_persist set
     * leaves only once the host has made this step's writes durable (host
     * contract 1 in raft.h). Decide for an AppendEntries answer, which the
     * leader counts toward a majority.
     * STUB: res->after_persist = false; */
    /* Host contract 1: what we acknowledge must be durable first (Figure 2:
     * "updated on stable storage before responding"). The planted bug
     * (raftsim mutants) answers at once, and a crash can then lose an entry
     * the leader counted toward a majority. */
    res->after_persist = !r->cfg.unsafe_ack_before_persist;
    /* LAB 3 END */
    res->append_entries_result.read_seq = m->append_entries.read_seq;
    res->append_entries_result.echo_sent_ms = m->append_entries.sent_ms;
    return res;
}

void replication_reject_stale_append(struct raft *r, const struct raft_message *m)
{
    /* Figure 2, AppendEntries receiver 1: reply false if term < currentTerm;
     * our term in the reply makes the stale leader step down. */
    update_trace(r, "§5.1 AppendEntries from a stale term rejected", m->from, 0, "term", m->term);
    struct raft_message *res = reply(r, m);
    res->append_entries_result.rejected_index = m->append_entries.prev_log_index;
    res->append_entries_result.last_log_index = log_last_index(&r->log);
}

static void reject(struct raft *r, const struct raft_message *m, raft_index prev,
                   raft_term conflict_term)
{
    struct raft_message *res = reply(r, m);
    struct raft_append_entries_result *out = &res->append_entries_result;
    out->rejected_index = prev;
    out->conflict_term = conflict_term;
    out->last_log_index = log_last_index(&r->log);
    if (conflict_term == 0) {
        out->conflict_index = log_last_index(&r->log) + 1;
        update_trace(r, "§5.3 AppendEntries rejected: log too short for prevLogIndex", m->from,
                     prev, NULL, 0);
    } else {
        raft_index first = log_first_index_with_term_ge(&r->log, conflict_term);
        out->conflict_index = first > r->commit_index ? first : r->commit_index + 1;
        update_trace(r, "§5.3 AppendEntries rejected: term at prevLogIndex does not match", m->from,
                     prev, "conflict_term", conflict_term);
    }
}

/* State Machine Safety (§5.4.3) says a committed entry is never replaced.
 * A leader asking for it is broken (or running the unsafe Figure 8 knob):
 * refuse, and report the instance corrupt, as etcd and canonical/raft stop. */
static void refuse_overwrite(struct raft *r, const struct raft_message *m, raft_index index,
                             raft_term term)
{
    update_trace(r, "§5.4.3 State Machine Safety: leader asked to overwrite a committed entry",
                 m->from, index, "term", term);
    r->fatal = "6: State Machine Safety: a leader asked us to overwrite a committed entry";
}

/* A leader's log has non-decreasing terms, none above its own (§5.3): a
 * message that says otherwise comes from a broken or hostile peer. */
static bool well_formed(const struct raft_append_entries *ae, raft_term term)
{
    raft_term t = ae->prev_log_term;
    if (ae->prev_log_index == 0 && t != 0)
        return false;
    for (size_t i = 0; i < ae->n_entries; i++) {
        if (ae->entries[i].term < t || ae->entries[i].term > term || ae->entries[i].term == 0)
            return false;
        t = ae->entries[i].term;
    }
    return t <= term;
}

void replication_receive_append(struct raft *r, const struct raft_message *m)
{
    const struct raft_append_entries *ae = &m->append_entries;
    if (r->role == RAFT_LEADER) /* two leaders in one term: impossible (§5.2) */
        return;
    if (r->role != RAFT_FOLLOWER || r->leader_id != m->from) {
        /* §5.2: a candidate that hears from the current leader steps down. */
        election_become_follower(r, r->current_term, m->from);
        update_trace(r, "§5.2 leader discovered", m->from, 0, NULL, 0);
    }
    r->leader_contact_ms = r->now_ms;
    election_reset_timer(r);
    if (r->staging.awaiting_install) {
        /* §7: the host is switching to a snapshot; entries now would race
         * with it (they could advance commit and apply past the snapshot
         * it installs). The leader resends after the install. */
        update_trace(r, "§7 AppendEntries ignored while a snapshot is being installed", m->from,
                     ae->prev_log_index, NULL, 0);
        return;
    }

    raft_index prev = ae->prev_log_index;
    raft_term prev_term = ae->prev_log_term;
    const struct raft_entry *entries = ae->entries;
    size_t n = ae->n_entries;
    if (!well_formed(ae, m->term)) {
        update_trace(r, "§5.3 malformed AppendEntries ignored: entry terms out of order", m->from,
                     prev, NULL, 0);
        return;
    }
    /* Entries up to our commitIndex are committed, so they match the
     * leader's (Leader Completeness, §5.4); skip them. */
    if (prev < r->commit_index) {
        size_t skip = r->commit_index - prev < n ? (size_t)(r->commit_index - prev) : n;
        /* By Log Matching, checking the last skipped entry checks them all
         * (unless our snapshot covers it: it holds only committed entries). */
        if (skip > 0 && prev + skip >= r->log.offset &&
            entries[skip - 1].term != log_term_at(&r->log, prev + skip)) {
            refuse_overwrite(r, m, prev + skip, entries[skip - 1].term);
            return;
        }
        entries += skip;
        n -= skip;
        prev += skip;
        prev_term = log_term_at(&r->log, prev);
    }
    /* LAB 2 BEGIN: the AppendEntries receiver (Figure 2, receiver rules 2
     * to 5; §5.3). prev, prev_term, entries and n are the message's, moved
     * past what we know is committed. Reply false when our log has no entry
     * at prev with term prev_term (reject(): it sends the conflict hint the
     * leader's backtrack() uses). Otherwise walk the entries: skip one we
     * hold with the same term; an entry that conflicts (same index, other
     * term) is deleted with all that follow it (log_truncate; record the
     * truncation in r->truncate_from and lower r->persisted_index; never
     * below r->commit_index: refuse_overwrite()); append the new ones
     * (log_append, update_persist_entries_from, and
     * membership_apply_entry for RAFT_ENTRY_CONF). Then commitIndex =
     * min(leaderCommit, index of the last new entry) (commit_set), and
     * answer success with match_index = prev + n (reply()).
     * STUB: (void)prev_term; (void)entries; (void)n; (void)reject; */
    /* Figure 2, AppendEntries receiver 2: reply false if the log has no
     * entry at prevLogIndex whose term matches prevLogTerm. */
    if (prev > log_last_index(&r->log)) {
        reject(r, m, prev, 0);
        return;
    }
    if (log_term_at(&r->log, prev) != prev_term) {
        reject(r, m, prev, log_term_at(&r->log, prev));
        return;
    }

    for (size_t i = 0; i < n; i++) {
        raft_index index = prev + 1 + i;
        const struct raft_entry *e = &entries[i];
        if (index <= log_last_index(&r->log)) {
            if (log_term_at(&r->log, index) == e->term)
                continue;
            /* Figure 2, AppendEntries receiver 3: an existing entry conflicts
             * with a new one: delete it and all that follow. Committed
             * entries can never conflict (State Machine Safety). */
            if (index <= r->commit_index) {
                refuse_overwrite(r, m, index, e->term);
                return;
            }
            update_trace(r, "§5.3 conflicting entries deleted", m->from, index, "count",
                         log_last_index(&r->log) - index + 1);
            log_truncate(&r->log, index);
            if (r->truncate_from == 0 || index < r->truncate_from)
                r->truncate_from = index;
            if (r->persisted_index >= index)
                r->persisted_index = index - 1;
            membership_after_truncate(r);
        }
        /* Figure 2, AppendEntries receiver 4: append new entries. */
        if (log_append(&r->log, e->term, (uint8_t)e->type, e->data, e->len) != RAFT_OK) {
            r->oom = 1;
            return;
        }
        update_persist_entries_from(r, index);
        /* thesis §4.1: a configuration is in force as soon as it is in the log. */
        if (e->type == RAFT_ENTRY_CONF && membership_apply_entry(r, index) != RAFT_OK) {
            r->oom = 1;
            return;
        }
    }

    raft_index match = prev + n;
    /* Figure 2, AppendEntries receiver 5: commitIndex = min(leaderCommit,
     * index of last new entry). */
    if (ae->leader_commit > r->commit_index) {
        raft_index c = ae->leader_commit < match ? ae->leader_commit : match;
        if (c > r->commit_index)
            commit_set(r, c);
    }
    struct raft_message *res = reply(r, m);
    res->append_entries_result.success = true;
    res->append_entries_result.match_index = match;
    res->append_entries_result.last_log_index = log_last_index(&r->log);
    /* A heartbeat's answer need not wait for a write in flight (a large
     * entry can take longer than an election timeout to sync, and a leader
     * that hears no answers steps down: check-quorum). It claims only what
     * is durable -- the entries up to persisted_index, in a term the host
     * reported durable -- so Figure 2's "updated on stable storage before
     * responding" holds for all it says; the answer to the AppendEntries
     * that carried the entries still reports them once they are durable. */
    if (n == 0 && r->durable_term >= r->current_term && !r->cfg.unsafe_ack_before_persist) {
        if (res->append_entries_result.match_index > r->persisted_index)
            res->append_entries_result.match_index = r->persisted_index;
        res->after_persist = false;
    }
    /* LAB 2 END */
}
