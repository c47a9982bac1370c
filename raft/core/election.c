/* election.c — leader election: timeouts, pre-vote, RequestVote, and the
 * changes of role they cause (Raft §5.2, §5.4.1; thesis §9.6, §6.2, §4.2.3).
 *
 *                    timeout                  pre-vote majority
 *   FOLLOWER  ----------------> PRE_CANDIDATE -----------------> CANDIDATE
 *      ^   ^                         |                            |  |
 *      |   +---- higher term, or ----+                            |  | vote majority
 *      |         a current leader                                 |  v
 *      +------------------- higher term / current leader ---- LEADER
 *
 * With pre-vote off (a teaching knob) a timeout goes straight to CANDIDATE.
 */
#include "core.h"

void election_reset_timer(struct raft *r)
{
    /* LAB 1 BEGIN: randomized election timeouts (§5.2). Set
     * r->election_deadline_ms to r->now_ms plus a random time in [T, 2T), T
     * being r->cfg.election_timeout_ms; raft_random(r) draws the numbers (the
     * core has no other source of randomness: runs must replay).
     * STUB: r->election_deadline_ms = r->now_ms + r->cfg.election_timeout_ms; */
    /* Raft §5.2: randomized timeouts in [T, 2T) make split votes rare. */
    uint64_t t = r->cfg.election_timeout_ms;
    r->election_deadline_ms = r->now_ms + t + raft_random(r) % t;
    /* LAB 1 END */
    r->election_started_ms = r->now_ms; /* for raft_election_timer() */
}

void raft_election_timer(const struct raft *r, struct raft_election_timer *out)
{
    out->now_ms = r->now_ms;
    bool running = r->role != RAFT_LEADER && r->election_deadline_ms != 0;
    out->started_ms = running ? r->election_started_ms : 0;
    out->deadline_ms = running ? r->election_deadline_ms : 0;
}

bool election_in_leader_lease(const struct raft *r)
{
    /* thesis §4.2.3 and §9.6: a server that heard from a current leader within
     * the minimum election timeout believes that leader is alive. */
    if (r->role == RAFT_LEADER)
        return true;
    /* With lease reads, a server that just started may have acknowledged a
     * leader right before it went down, extending that leader's lease; until
     * an election timeout has passed it cannot tell, so it treats that
     * leader as alive. (Set on every server of a cluster with lease reads.) */
    if (r->now_ms < r->boot_lease_until_ms)
        return true;
    return r->leader_id != 0 && r->now_ms - r->leader_contact_ms < r->cfg.election_timeout_ms;
}

static void set_role(struct raft *r, enum raft_role role, raft_id leader)
{
    if (r->role != role || r->leader_id != leader)
        r->role_dirty = true;
    if (r->role == RAFT_LEADER && role != RAFT_LEADER) {
        readindex_fail_all(r);
        r->transfer_to = 0;
    }
    r->role = role;
    r->leader_id = leader;
}

void election_become_follower(struct raft *r, raft_term term, raft_id leader)
{
    bool was_follower = r->role == RAFT_FOLLOWER;
    if (term > r->current_term) {
        /* Figure 2, rules for all servers: a higher term makes us a follower. */
        r->current_term = term;
        r->voted_for = 0;
        /* LAB 3 BEGIN: currentTerm and votedFor are persistent state (Figure
         * 2): a server that forgot the term it saw could vote twice in it.
         * Ask the host to persist them (update_hard_state). */
        update_hard_state(r);
        /* LAB 3 END */
    }
    set_role(r, RAFT_FOLLOWER, leader);
    if (leader)
        r->leader_contact_ms = r->now_ms;
    if (!was_follower)
        update_trace(r, "§5.2 became follower", leader, 0, NULL, 0);
    election_reset_timer(r);
}

static void reset_votes(struct raft *r)
{
    for (unsigned i = 0; i < r->n_servers; i++) {
        r->servers[i].vote_responded = false;
        r->servers[i].vote_granted = false;
    }
    r->self->vote_responded = true;
    r->self->vote_granted = true;
}

static void become_leader(struct raft *r)
{
    set_role(r, RAFT_LEADER, r->cfg.id);
    update_trace(r, "§5.2 won election: votes from a majority", 0, 0, "votes",
                 quorum_votes_granted(r));
    update_trace_tally(r);
    for (unsigned i = 0; i < r->n_servers; i++)
        progress_reset(r, &r->servers[i]);
    membership_leader_start(r);
    r->self->match_index = log_last_index(&r->log);
    r->term_start_index = log_last_index(&r->log) + 1;
    r->uncommitted_bytes = 0;
    r->read_seq = 0;
    r->read_round_wanted = false;
    r->heartbeat_deadline_ms = r->now_ms + r->cfg.heartbeat_interval_ms;
    r->check_quorum_deadline_ms = r->now_ms + r->cfg.election_timeout_ms;
    /* Raft §8 / thesis §6.4: a no-op of our own term lets us learn which
     * entries are committed (Figure 8 forbids counting older ones). The
     * Figure-8 teaching knob leaves it out as well, as first implementations
     * do: with the no-op riding in the same message as the old entries, the
     * unsafe counting rule almost never shows (docs/figure8.md). */
    if (!r->cfg.unsafe_commit_old_term && !r->cfg.unsafe_no_noop &&
        replication_append_noop(r) != RAFT_OK)
        r->oom = 1;
    replication_broadcast(r, false);
    commit_maybe_advance(r);
}

static void send_request_votes(struct raft *r, bool pre_vote, bool transfer)
{
    for (unsigned i = 0; i < r->n_servers; i++) {
        struct raft_server *s = &r->servers[i];
        if (s == r->self || !s->is_voter)
            continue;
        struct raft_message *m = update_message(r, RAFT_MSG_REQUEST_VOTE, s->id);
        /* thesis §9.6: a pre-vote asks about the term we would use. */
        m->term = pre_vote ? r->current_term + 1 : r->current_term;
        /* LAB 3 BEGIN: may this vote request leave before our own vote for
         * ourselves (this step's hard state) is durable? A pre-vote changes
         * nothing on disk (thesis §9.6).
         * STUB: m->after_persist = false; */
        /* Host contract 1: our vote for ourselves must be durable first. */
        m->after_persist = !pre_vote;
        /* LAB 3 END */
        m->request_vote.last_log_index = log_last_index(&r->log);
        m->request_vote.last_log_term = log_last_term(&r->log);
        m->request_vote.pre_vote = pre_vote;
        m->request_vote.leadership_transfer = transfer;
    }
}

void election_start(struct raft *r, bool leadership_transfer)
{
    /* LAB 1 BEGIN: become a candidate (§5.2, Figure 2 "Rules for Servers",
     * Candidates): increment currentTerm, vote for yourself (both are hard
     * state: update_hard_state(r) asks the host to persist them), set the
     * role (set_role), reset the votes (reset_votes) and the election timer,
     * and ask every other voter with send_request_votes(r, false,
     * leadership_transfer). A single-voter cluster wins at once: check the
     * votes (quorum_votes_granted, quorum_size) and call become_leader.
     * STUB: (void)r; (void)leadership_transfer; (void)send_request_votes;
     * (void)become_leader; */
    /* Raft §5.2: increment currentTerm, vote for self, send RequestVote. */
    r->current_term++;
    r->voted_for = r->cfg.id;
    update_hard_state(r);
    set_role(r, RAFT_CANDIDATE, 0);
    reset_votes(r);
    election_reset_timer(r);
    update_trace(r, "§5.2 became candidate: starting election", 0, 0, "term", r->current_term);
    update_trace_tally(r);
    if (quorum_votes_granted(r) >= quorum_size(r)) {
        become_leader(r);
        return;
    }
    send_request_votes(r, false, leadership_transfer);
    /* LAB 1 END */
}

static void start_pre_vote(struct raft *r)
{
    /* LAB 1 BEGIN: pre-vote (thesis §9.6). Become RAFT_PRE_CANDIDATE
     * without touching currentTerm or votedFor, reset the votes and the
     * timer, and ask the voters whether they would vote for you in term
     * currentTerm + 1: send_request_votes(r, true, false). With a majority
     * already (a single voter), start the real election (election_start).
     * STUB: (void)r; (void)reset_votes; */
    set_role(r, RAFT_PRE_CANDIDATE, 0);
    reset_votes(r);
    election_reset_timer(r);
    update_trace(r, "thesis §9.6 became pre-candidate: asking whether we could win", 0, 0, "term",
                 r->current_term + 1);
    update_trace_tally(r);
    if (quorum_votes_granted(r) >= quorum_size(r)) {
        election_start(r, false);
        return;
    }
    send_request_votes(r, true, false);
    /* LAB 1 END */
}

/* Voters stand for election; learners never do. A server that its own
 * latest configuration removed still stands until it knows that
 * configuration is committed (thesis §4.2.2): it may hold the newest log,
 * and the cluster may need it to lead once more to commit its removal. It
 * does not count its own vote. Nobody stands while its host is installing
 * a snapshot: a leader's commitIndex could move under the install. */
bool election_may_stand(const struct raft *r)
{
    if (r->staging.awaiting_install) /* §7: not while switching to a snapshot */
        return false;
    if (r->self->is_voter)
        return true;
    return !r->self->is_member && r->conf_index > r->commit_index;
}

void election_tick(struct raft *r)
{
    /* LAB 1 BEGIN: the election timeout (§5.2). A leader never times out.
     * Once r->now_ms reaches r->election_deadline_ms, a server that may
     * stand (election_may_stand; otherwise just reset the timer) starts a
     * pre-vote (start_pre_vote), or a real election (election_start) when
     * r->cfg.prevote_off is set.
     * STUB: (void)r; (void)start_pre_vote; */
    if (r->role == RAFT_LEADER || r->now_ms < r->election_deadline_ms)
        return;
    if (!election_may_stand(r)) {
        election_reset_timer(r);
        return;
    }
    update_trace(r, "§5.2 election timeout: no leader heard", 0, 0, NULL, 0);
    if (r->cfg.prevote_off)
        election_start(r, false);
    else
        start_pre_vote(r);
    /* LAB 1 END */
}

/* Raft §5.4.1: the candidate's log is at least as up-to-date as ours when
 * its last term is higher, or equal with an index at least as high. */
static bool log_up_to_date(const struct raft *r, const struct raft_request_vote *rv)
{
    /* Planted bug (raftsim mutants): without this check a candidate that
     * lacks committed entries can win, and Leader Completeness (§5.4) fails. */
    if (r->cfg.unsafe_vote_any_log)
        return true;
    /* LAB 1 BEGIN: the election restriction (§5.4.1). Compare the
     * candidate's last log term and index (rv->last_log_term,
     * rv->last_log_index) with ours (log_last_term, log_last_index): the
     * later term wins; with equal terms, the longer log.
     * STUB: (void)rv; return false; */
    raft_term our_term = log_last_term(&r->log);
    if (rv->last_log_term != our_term)
        return rv->last_log_term > our_term;
    return rv->last_log_index >= log_last_index(&r->log);
    /* LAB 1 END */
}

static void reply_vote(struct raft *r, const struct raft_message *m, bool granted, raft_term term)
{
    struct raft_message *res = update_message(r, RAFT_MSG_REQUEST_VOTE_RESULT, m->from);
    res->term = term;
    /* LAB 3 BEGIN: a vote must not leave before votedFor is durable
     * (Figure 2, persistent state), or a crash lets us vote twice in a term;
     * a pre-vote answer promises nothing (thesis §9.6).
     * STUB: res->after_persist = false; */
    res->after_persist = !m->request_vote.pre_vote;
    /* LAB 3 END */
    res->request_vote_result.vote_granted = granted;
    res->request_vote_result.pre_vote = m->request_vote.pre_vote;
}

static void receive_pre_vote(struct raft *r, const struct raft_message *m)
{
    /* LAB 1 BEGIN: answer a pre-vote (thesis §9.6). Nothing changes here:
     * no term, no vote. Refuse when the candidate's term (m->term) is not
     * ahead of ours, when we heard from a leader within the election timeout
     * (election_in_leader_lease), or when its log is not up-to-date
     * (log_up_to_date); otherwise grant. Answer with reply_vote(): a refusal
     * carries our term, a grant the candidate's m->term.
     * STUB: reply_vote(r, m, false, r->current_term); */
    const char *why = NULL;
    if (m->term <= r->current_term)
        why = "thesis §9.6 pre-vote denied: candidate's term is not ahead of ours";
    else if (election_in_leader_lease(r))
        why = "thesis §9.6 pre-vote denied: we heard from a leader within the election timeout";
    else if (!log_up_to_date(r, &m->request_vote))
        why = "§5.4.1 pre-vote denied: candidate log not up-to-date";
    if (why) {
        update_trace(r, why, m->from, 0, "term", m->term);
        update_trace_vote_request(r, m);
        reply_vote(r, m, false, r->current_term);
        return;
    }
    update_trace(r, "thesis §9.6 pre-vote granted", m->from, 0, "term", m->term);
    update_trace_vote_request(r, m);
    /* A granted pre-vote carries the candidate's proposed term. */
    reply_vote(r, m, true, m->term);
    /* LAB 1 END */
}

void election_receive_request_vote(struct raft *r, const struct raft_message *m)
{
    if (m->request_vote.pre_vote) {
        receive_pre_vote(r, m);
        return;
    }
    /* LAB 1 BEGIN: grant or refuse a vote (Figure 2, RequestVote receiver
     * 2; §5.2, §5.4.1). The term was checked already (raft.c, check_term).
     * Grant if we have not voted in this term, or voted for this
     * candidate (r->voted_for), and its log is at least as up-to-date as
     * ours; a new vote is hard state (update_hard_state). Granting resets
     * the election timer. Answer with reply_vote(r, m, granted,
     * r->current_term).
     * STUB: reply_vote(r, m, false, r->current_term); (void)log_up_to_date; */
    /* Figure 2, RequestVote receiver 2: one vote per term, first come first
     * served, and only for a log at least as up-to-date as ours. */
    const char *why = NULL;
    if (r->voted_for != 0 && r->voted_for != m->from)
        why = "§5.2 vote denied: already voted in this term";
    else if (!log_up_to_date(r, &m->request_vote))
        why = "§5.4.1 vote denied: candidate log not up-to-date";
    if (why) {
        update_trace(r, why, m->from, 0, "voted_for", r->voted_for);
        update_trace_vote_request(r, m);
        reply_vote(r, m, false, r->current_term);
        return;
    }
    if (r->voted_for != m->from) {
        r->voted_for = m->from;
        update_hard_state(r);
    }
    /* Figure 2, rules for followers: granting a vote resets the timer. */
    election_reset_timer(r);
    update_trace(r, "§5.2 vote granted", m->from, 0, NULL, 0);
    update_trace_vote_request(r, m);
    reply_vote(r, m, true, r->current_term);
    /* LAB 1 END */
}

void election_reject_stale_vote(struct raft *r, const struct raft_message *m)
{
    /* Figure 2, RequestVote receiver 1: reply false if term < currentTerm;
     * our term in the reply ends the stale candidacy. */
    update_trace(r, "§5.1 vote request from a stale term denied", m->from, 0, "term", m->term);
    update_trace_vote_request(r, m);
    reply_vote(r, m, false, r->current_term);
}

void election_receive_request_vote_result(struct raft *r, const struct raft_message *m)
{
    /* LAB 1 BEGIN: count the votes (§5.2; thesis §9.6 for pre-votes).
     * Count an answer only if it is of the kind we are collecting (a
     * pre-vote answer as RAFT_PRE_CANDIDATE, a vote as RAFT_CANDIDATE), from
     * a voter (server_find, s->is_voter), once per server (vote_responded,
     * vote_granted). A majority of grants (quorum_votes_granted >=
     * quorum_size) moves a pre-candidate to election_start and makes a
     * candidate become_leader; a majority of refusals
     * (quorum_votes_denied) sends us back to follower.
     * STUB: (void)r; (void)m; */
    const struct raft_request_vote_result *res = &m->request_vote_result;
    bool counting = (r->role == RAFT_PRE_CANDIDATE && res->pre_vote) ||
                    (r->role == RAFT_CANDIDATE && !res->pre_vote);
    struct raft_server *s = server_find(r, m->from);
    if (!counting || !s || !s->is_voter || s->vote_responded)
        return;
    s->vote_responded = true;
    s->vote_granted = res->vote_granted;
    if (quorum_votes_granted(r) >= quorum_size(r)) {
        if (r->role == RAFT_PRE_CANDIDATE)
            election_start(r, false);
        else
            become_leader(r);
    } else if (quorum_votes_denied(r) >= quorum_size(r)) {
        size_t why = r->n_trace;
        update_trace(r, "§5.2 election lost: a majority refused", 0, 0, "refusals",
                     quorum_votes_denied(r));
        update_trace_tally(r);
        election_become_follower(r, r->current_term, 0);
        update_trace_restamp(r, why); /* a follower again, same term */
    }
    /* LAB 1 END */
}
