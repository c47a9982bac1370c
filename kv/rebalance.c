/* rebalance.c — the planner of rebalance.h: from a group's configuration
 * and its target, the next single-server change (thesis §4.1-4.2), or the
 * leadership transfer that must come before the leader removes itself
 * (thesis §3.10). No I/O: members.c reads the core, asks, and acts.
 */
#include "rebalance.h"

static bool wanted(const struct rebalance_group *g, raft_id id)
{
    for (size_t i = 0; i < g->n_want; i++)
        if (g->want[i] == id)
            return true;
    return false;
}

static const struct rebalance_member *member(const struct rebalance_group *g, raft_id id)
{
    for (size_t k = 0; k < g->n_members; k++)
        if (g->members[k].id == id)
            return &g->members[k];
    return NULL;
}

static struct rebalance_step step(enum rebalance_action action, raft_id node, const char *why)
{
    return (struct rebalance_step){action, node, why};
}

raft_id rebalance_handoff_target(const struct rebalance_group *g)
{
    /* LAB 7 BEGIN: whom a leader that must leave the group hands leadership
     * to (thesis §3.10). A member qualifies when it is not g->self, is a
     * voter, is wanted (in g->want) and holds the whole log (has_log: the
     * transfer would otherwise wait for it). The shard's preferred leader
     * (g->preferred_leader) if it qualifies, else the first qualifying
     * member of g->members; 0 if none does yet.
     * STUB: (void)g; (void)wanted; return 0; */
    raft_id first = 0;
    for (size_t k = 0; k < g->n_members; k++) {
        const struct rebalance_member *m = &g->members[k];
        if (m->id == g->self || !m->is_voter || !m->has_log || !wanted(g, m->id))
            continue;
        if (m->id == g->preferred_leader)
            return m->id;
        if (!first)
            first = m->id;
    }
    return first;
    /* LAB 7 END */
}

struct rebalance_step rebalance_next(const struct rebalance_group *g)
{
    /* LAB 7 BEGIN: the next step of the move (thesis §4.1, §4.2.1, §3.10;
     * the order is in rebalance.h). Find the first wanted node that is not
     * a member (to add), the first wanted learner (to promote) and the
     * first member that is not wanted (to remove). None of them: DONE.
     * Otherwise one change at a time: WAIT while the newest configuration
     * is not committed (g->config_committed). Then add a learner before
     * anything else; then promote, but only a learner that has caught up
     * (WAIT for it otherwise); remove only once no one is to be added or
     * promoted, so the group never has fewer voters than its target. When
     * the member to remove is the leader itself (g->self), TRANSFER to
     * rebalance_handoff_target() instead (WAIT if there is no one to hand
     * over to): the next leader removes it. Give every WAIT a why.
     * STUB: (void)g; (void)member; (void)step; return (struct rebalance_step){REBALANCE_DONE, 0,
     * NULL}; */
    raft_id add = 0, promote = 0, remove = 0;
    for (size_t i = 0; i < g->n_want && !add; i++) {
        const struct rebalance_member *m = member(g, g->want[i]);
        if (!m)
            add = g->want[i];
        else if (!m->is_voter && !promote)
            promote = m->id;
    }
    for (size_t k = 0; k < g->n_members && !remove; k++)
        if (!wanted(g, g->members[k].id))
            remove = g->members[k].id;
    if (!add && !promote && !remove)
        return step(REBALANCE_DONE, 0, NULL);
    /* thesis §4.1: a change starts only once the previous one is committed. */
    if (!g->config_committed)
        return step(REBALANCE_WAIT, 0, "the last configuration change is not committed yet");
    if (add)
        return step(REBALANCE_ADD_LEARNER, add, NULL);
    if (promote) {
        /* thesis §4.2.1: a voter that lags would stall every commit it is
         * needed for; it is promoted once it keeps up. */
        if (!member(g, promote)->caught_up)
            return step(REBALANCE_WAIT, 0, "the learner is catching up");
        return step(REBALANCE_PROMOTE, promote, NULL);
    }
    if (remove != g->self)
        return step(REBALANCE_REMOVE, remove, NULL);
    /* thesis §3.10: the leader leaves by handing over first, so that the
     * group's next leader is chosen, not left to timeouts (§4.2.2). */
    raft_id to = rebalance_handoff_target(g);
    if (!to)
        return step(REBALANCE_WAIT, 0, "no wanted voter holds the whole log to take leadership");
    return step(REBALANCE_TRANSFER, to, NULL);
    /* LAB 7 END */
}
