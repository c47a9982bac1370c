/* rebalance.h — the next step of a group's move to its target replicas
 * (docs/membership.md).
 *
 * When the members change, the ring (ring.h) gives a shard new replicas. Its
 * group gets there by single-server changes (thesis §4.1), one at a time,
 * each committed before the next starts:
 *
 *   add       a wanted node that is not a member joins as a learner: it
 *             receives the log (or a snapshot) but counts in no quorum
 *             (thesis §4.2.1), so the group never waits for a newcomer;
 *   promote   a learner that has caught up becomes a voter;
 *   remove    a member no longer wanted leaves -- only once every wanted
 *             node is a voter, so the group keeps at least R voters; when
 *             the leader itself is to leave, it first hands leadership to a
 *             wanted voter that holds the whole log (thesis §3.10).
 *
 * The planner is a pure function of what the group's leader knows now: its
 * configuration, each member's progress and the target. It keeps no memory,
 * so a move interrupted by a crash, a partition or a change of leader is
 * resumed by whoever leads next (members.c asks it every 100 ms and acts on
 * its answer). Lab 7 (labs/lab7.md) is written here.
 */
#ifndef KV_REBALANCE_H
#define KV_REBALANCE_H

#include <stdbool.h>
#include <stddef.h>

#include "raft.h"

enum rebalance_action {
    REBALANCE_DONE = 0,    /* the voters are the target, and no one else is a member */
    REBALANCE_WAIT,        /* a step is due but not possible yet (see the step's why) */
    REBALANCE_ADD_LEARNER, /* add node as a learner (RAFT_ADD_LEARNER) */
    REBALANCE_PROMOTE,     /* promote node, a learner that caught up (RAFT_PROMOTE) */
    REBALANCE_TRANSFER,    /* hand leadership to node: the leader is the one to leave */
    REBALANCE_REMOVE,      /* remove node from the configuration (RAFT_REMOVE) */
};

/* One member of the group's configuration, as its leader sees it. */
struct rebalance_member {
    raft_id id;
    bool is_voter;
    bool caught_up; /* a learner that kept up for a whole round (thesis §4.2.1); voters: true */
    bool has_log;   /* its matchIndex is the leader's last index: it could lead at once */
};

/* What the group's leader knows (all of it read from its core). */
struct rebalance_group {
    raft_id self;             /* the leader that plans */
    raft_id preferred_leader; /* the shard's preferred leader (route.c), 0 for none */
    bool config_committed;    /* the newest configuration in the log is committed */
    const raft_id *want;      /* the target: the ring's replicas of the shard */
    size_t n_want;
    const struct rebalance_member *members; /* the configuration in force */
    size_t n_members;
};

/* The step and the node it is about (0 for DONE and WAIT); why says, for
 * WAIT, what it waits for (a static string, NULL otherwise). */
struct rebalance_step {
    enum rebalance_action action;
    raft_id node;
    const char *why;
};

/* The next step of group g toward its target. Deterministic: among several
 * candidates, the first in g->want (for adds and promotions) or in
 * g->members (for removals). */
struct rebalance_step rebalance_next(const struct rebalance_group *g);

/* Whom the leader (g->self), about to leave, hands leadership to: a wanted
 * voter other than itself that holds the whole log -- the preferred leader
 * if it is one (else the leader balance would move leadership a second
 * time), else the first such member. 0 if there is none yet. */
raft_id rebalance_handoff_target(const struct rebalance_group *g);

#endif /* KV_REBALANCE_H */
