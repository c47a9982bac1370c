/* commit.c — when an entry is committed, and handing entries out to apply.
 *
 * Raft §5.3/§5.4.2: a leader commits an entry of its *current term* once a
 * majority stores it; everything before it is then committed too (Log
 * Matching). Counting replicas of an older term's entry is not enough:
 * Figure 8 shows such an entry overwritten after it was on a majority. The
 * teaching knob unsafe_commit_old_term removes exactly that check.
 */
#include "core.h"

void commit_set(struct raft *r, raft_index index)
{
    if (r->role == RAFT_LEADER) {
        /* Release the flow-control budget of what just committed. */
        for (raft_index i = r->commit_index + 1; i <= index; i++) {
            if (i < r->term_start_index)
                continue;
            size_t len = log_entry_len(&r->log, i);
            r->uncommitted_bytes -= len < r->uncommitted_bytes ? len : r->uncommitted_bytes;
        }
    }
    r->commit_index = index;
}

void commit_maybe_advance(struct raft *r)
{
    if (r->role != RAFT_LEADER)
        return;
    /* LAB 3 BEGIN: the commit rule (§5.3, §5.4.2; Figure 2, "Rules for
     * Servers", Leaders, last rule). The highest index stored by a majority
     * is quorum_match_index(r). It is committed only if its entry is of our
     * current term (log_term_at): Figure 8 shows an older term's entry on a
     * majority overwritten. Then commit_set(r, index), let the membership
     * rules see the commit (membership_after_commit; it may end our
     * leadership), and tell followers with nothing in flight at once
     * (replication_send_append). */
    raft_index index = quorum_match_index(r);
    if (index <= r->commit_index)
        return;
    if (log_term_at(&r->log, index) != r->current_term && !r->cfg.unsafe_commit_old_term)
        return; /* §5.4.2: wait for an entry of our own term to reach a majority */
    update_trace(r,
                 log_term_at(&r->log, index) == r->current_term
                     ? "§5.4.2 committed: an entry of this term is on a majority"
                     : "UNSAFE §5.4.2 committed an older term's entry by counting replicas",
                 0, index, NULL, 0);
    commit_set(r, index);
    membership_after_commit(r);
    if (r->role != RAFT_LEADER)
        return;
    /* Followers with nothing in flight would otherwise learn the new
     * commitIndex only at the next heartbeat. */
    for (unsigned i = 0; i < r->n_servers; i++) {
        struct raft_server *s = &r->servers[i];
        if (s != r->self && s->state == PROGRESS_REPLICATE && s->inflight_count == 0)
            replication_send_append(r, s, true);
    }
    /* LAB 3 END */
}

void commit_hand_out(struct raft *r)
{
    /* Host contract 2: apply what is committed and durable here, in order.
     * Nothing while the host installs a snapshot: the state is about to be
     * replaced by one that covers these entries, and a host that installs
     * asynchronously would otherwise apply them after it. */
    if (r->staging.awaiting_install)
        return;
    /* LAB 3 BEGIN: hand out what to apply (host contract 2 in raft.h).
     * Entries up to min(commitIndex, persisted index) are applied: committed
     * on a majority, and durable here too, so the host never applies an
     * entry its own log could still lose. Move r->applied_index there (the
     * update hands the entries to the host) and add their sizes
     * (log_entry_len) to r->applied_bytes_since_snapshot. */
    raft_index upto = r->commit_index < r->persisted_index ? r->commit_index : r->persisted_index;
    for (raft_index i = r->applied_index + 1; i <= upto; i++)
        r->applied_bytes_since_snapshot += log_entry_len(&r->log, i);
    if (upto > r->applied_index)
        r->applied_index = upto;
    /* LAB 3 END */
}
