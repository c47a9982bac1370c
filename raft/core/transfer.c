/* transfer.c — leadership transfer (thesis §3.10).
 *
 * To hand leadership to another voter (planned maintenance, rebalancing),
 * the leader:
 *  1. stops accepting proposals (RAFT_ETRANSFER), so the target can catch up;
 *  2. replicates until the target's log matches its own;
 *  3. sends TimeoutNow, and the target starts an election at once, without
 *     pre-vote and flagged so that other servers ignore their leader lease;
 *  4. gives up after an election timeout, and takes proposals again.
 * The target's higher term ends the old leader's reign like any election.
 */
#include "core.h"

/* The voter with the highest matchIndex, for a transfer to "anyone". */
static raft_id most_up_to_date(const struct raft *r)
{
    raft_id best = 0;
    raft_index best_match = 0;
    for (unsigned i = 0; i < r->n_servers; i++) {
        const struct raft_server *s = &r->servers[i];
        if (s != r->self && s->is_voter && (best == 0 || s->match_index > best_match)) {
            best = s->id;
            best_match = s->match_index;
        }
    }
    return best;
}

int transfer_start(struct raft *r, raft_id to)
{
    if (r->role != RAFT_LEADER)
        return RAFT_ENOTLEADER;
    if (r->transfer_to)
        return RAFT_ETRANSFER;
    if (to == 0)
        to = most_up_to_date(r);
    struct raft_server *s = server_find(r, to);
    if (!s || s == r->self || !s->is_voter)
        return RAFT_EINVAL;
    r->transfer_to = to;
    r->transfer_deadline_ms = r->now_ms + r->cfg.election_timeout_ms;
    r->transfer_timeout_now_sent = false;
    update_trace(r, "thesis §3.10 leadership transfer started: proposals paused", to, 0, NULL, 0);
    transfer_progress(r, s);
    return RAFT_OK;
}

/* Called when the target's progress may have changed. */
void transfer_progress(struct raft *r, struct raft_server *s)
{
    if (r->role != RAFT_LEADER || r->transfer_to != s->id || r->transfer_timeout_now_sent)
        return;
    if (s->match_index < log_last_index(&r->log)) {
        replication_send_append(r, s, false); /* step 2: catch it up first */
        return;
    }
    update_trace(r, "thesis §3.10 transfer target is up to date: sending TimeoutNow", s->id,
                 s->match_index, NULL, 0);
    update_message(r, RAFT_MSG_TIMEOUT_NOW, s->id);
    r->transfer_timeout_now_sent = true;
}

void transfer_tick(struct raft *r)
{
    if (r->role != RAFT_LEADER || !r->transfer_to || r->now_ms < r->transfer_deadline_ms)
        return;
    update_trace(r, "thesis §3.10 leadership transfer gave up after an election timeout",
                 r->transfer_to, 0, NULL, 0);
    r->transfer_to = 0;
}

void transfer_receive_timeout_now(struct raft *r, const struct raft_message *m)
{
    if (r->role == RAFT_LEADER || !election_may_stand(r) || r->leader_id != m->from)
        return;
    size_t why = r->n_trace;
    update_trace(r, "thesis §3.10 TimeoutNow from the leader: starting an election at once",
                 m->from, 0, NULL, 0);
    election_start(r, true);
    update_trace_restamp(r, why); /* a candidate of the next term */
}
