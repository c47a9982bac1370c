/* progress.c — the leader's view of one follower, and flow control.
 *
 * Figure 2 keeps nextIndex and matchIndex per follower. To replicate fast the
 * leader does not wait for each AppendEntries to be answered: in the
 * REPLICATE state it sends ahead ("pipelining"), advancing nextIndex
 * optimistically, with at most max_inflight messages unacknowledged (host
 * contract 4). When a follower rejects, the leader no longer knows where the
 * logs agree and falls back to PROBE: one message at a time until a success
 * tells it. Every new leader starts all followers in PROBE.
 *
 *      success covering the probe          rejection (not stale)
 *   PROBE  -------------------------->  REPLICATE  -------------------->  PROBE
 *
 * Stale and duplicated answers are common on a network that duplicates and
 * reorders: none may move nextIndex or matchIndex back, and none but the
 * answer to the probe in flight may start a window (progress_answers_probe).
 */
#include "core.h"

void progress_reset(struct raft *r, struct raft_server *s)
{
    s->next_index = log_last_index(&r->log) + 1;
    s->match_index = 0;
    s->state = PROGRESS_PROBE;
    s->probe_sent = false;
    s->probe_last = s->next_index - 1;
    s->recent_active = false;
    s->read_seq_acked = 0;
    s->acked_sent_ms = 0;
    s->match_sent_ms = 0;
    s->inflight_head = 0;
    s->inflight_count = 0;
}

bool progress_inflight_full(const struct raft *r, const struct raft_server *s)
{
    return s->inflight_count >= r->cfg.max_inflight;
}

void progress_sent(struct raft *r, struct raft_server *s, raft_index last_sent)
{
    if (s->state == PROGRESS_PROBE) {
        s->probe_sent = true;
        s->probe_last = last_sent;
        return;
    }
    uint32_t slot = (s->inflight_head + s->inflight_count) % r->cfg.max_inflight;
    s->inflight[slot] = last_sent;
    s->inflight_count++;
    s->next_index = last_sent + 1;
}

/* The follower holds everything up to index: free the messages it covers. */
void progress_acked(const struct raft *r, struct raft_server *s, raft_index index)
{
    while (s->inflight_count > 0 && s->inflight[s->inflight_head] <= index) {
        s->inflight_head = (s->inflight_head + 1) % r->cfg.max_inflight;
        s->inflight_count--;
    }
}

void progress_become_probe(struct raft_server *s, raft_index next_index)
{
    s->state = PROGRESS_PROBE;
    s->next_index = next_index;
    s->probe_sent = false;
    s->probe_last = next_index - 1;
    s->inflight_head = 0;
    s->inflight_count = 0;
}

void progress_become_replicate(struct raft_server *s)
{
    s->state = PROGRESS_REPLICATE;
    s->next_index = s->match_index + 1;
    s->probe_sent = false;
    s->inflight_head = 0;
    s->inflight_count = 0;
}

/* Does a success acknowledging match_index answer the probe in flight? Only
 * then may the leader start a window (thesis §10.2.1: pipelining resumes once
 * the logs are known to agree where it starts). Under duplication and
 * reordering, answers to older messages keep arriving in PROBE: an old window
 * whose messages reached the follower out of order, or a second copy of the
 * success that ended the last probe. They may raise matchIndex (the follower
 * does not lose in our term what it acknowledged), but if each one started a
 * full window, the windows would multiply while the older ones are still in
 * flight, their out-of-order arrivals would be rejected, and each rejection
 * would send the leader back to PROBE: the leader would back up nextIndex
 * forever and the follower never catch up. The probe's own answer covers
 * everything the probe carried (its matchIndex is prevLogIndex plus its
 * entries), so an answer that covers less is not it. */
bool progress_answers_probe(const struct raft_server *s, raft_index match_index)
{
    return s->state == PROGRESS_PROBE && match_index >= s->probe_last;
}
