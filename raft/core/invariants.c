/* invariants.c — what must hold inside one server after every step.
 *
 * Numbered as in SQLite's pager.c so a failure names its rule. The global
 * properties (Election Safety, Log Matching across servers, Leader
 * Completeness, State Machine Safety) need more than one server and are
 * checked by the simulator (raft/sim/check.c).
 *
 *  1. appliedIndex <= commitIndex <= lastIndex, persistedIndex <= lastIndex.
 *  2. Terms along the log never decrease and never exceed currentTerm.
 *  3. Only a leader has leaderId == self; a leader and a candidate voted for
 *     themselves in their term.
 *  4. A leader's progress is sane: matchIndex < nextIndex <= lastIndex + 1,
 *     inflight within its window, and nothing in flight that matchIndex
 *     already covers (else the window could stay full forever).
 *  5. Only a leader holds pending reads.
 *  6. No committed entry was ever asked to change (set when a leader tries:
 *     the cluster is broken, and the host must stop this server).
 */
#include "core.h"

const char *raft_check_invariants(const struct raft *r)
{
    if (r->fatal)
        return r->fatal;
    raft_index last = log_last_index(&r->log);
    if (r->applied_index > r->commit_index || r->commit_index > last)
        return "1: appliedIndex <= commitIndex <= lastIndex";
    if (r->persisted_index > last)
        return "1: persistedIndex <= lastIndex";

    /* Rule 2 over what changed since the last check (and the entry before
     * it): older entries were checked then, and a term that was <=
     * currentTerm stays so. */
    raft_index from = r->log.dirty_from ? r->log.dirty_from - 1 : last;
    if (from < r->log.offset)
        from = r->log.offset;
    raft_term prev = log_term_at(&r->log, from);
    for (raft_index i = from + 1; i <= last; i++) {
        raft_term t = log_term_at(&r->log, i);
        if (t < prev || t > r->current_term)
            return "2: log terms non-decreasing and <= currentTerm";
        prev = t;
    }

    if ((r->role == RAFT_LEADER) != (r->leader_id == r->cfg.id))
        return "3: leaderId == self exactly when leader";
    if ((r->role == RAFT_LEADER || r->role == RAFT_CANDIDATE) && r->voted_for != r->cfg.id)
        return "3: leaders and candidates voted for themselves";

    if (r->role == RAFT_LEADER) {
        for (unsigned i = 0; i < r->n_servers; i++) {
            const struct raft_server *s = &r->servers[i];
            if (s == r->self)
                continue;
            if (s->match_index >= s->next_index || s->next_index > last + 1)
                return "4: matchIndex < nextIndex <= lastIndex + 1";
            if (s->inflight_count > r->cfg.max_inflight)
                return "4: inflight within the window";
            for (uint32_t k = 0; k < s->inflight_count; k++)
                if (s->inflight[(s->inflight_head + k) % r->cfg.max_inflight] <= s->match_index)
                    return "4: nothing in flight at or below matchIndex";
        }
    } else if (r->reads_count != 0) {
        return "5: only a leader holds pending reads";
    }
    return NULL;
}
