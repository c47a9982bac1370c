/* The rebalance planner: kv/rebalance.c (docs/membership.md). A group moves
 * to its target replicas by single-server changes, one at a time (thesis
 * §4.1): learners first, promoted once caught up (§4.2.1), removals last, and
 * a leader that leaves hands leadership over first (§3.10). The last test
 * plays a whole move, the planner's steps applied one after another to a
 * model of the configuration, and checks the invariant that matters: the
 * group never has fewer voters than its target, and never loses a voter it
 * keeps. */
#include "harness.h"
#include "rebalance.h"

#include <stdio.h>
#include <string.h>

enum { MAX = 16 };

/* A group as its leader sees it: configuration, target, progress. */
struct model {
    struct rebalance_member m[MAX];
    size_t n;
    raft_id want[MAX];
    size_t n_want;
    raft_id self;
    raft_id preferred;
    bool committed;
};

static void member(struct model *x, raft_id id, bool voter, bool caught_up, bool has_log)
{
    x->m[x->n++] = (struct rebalance_member){id, voter, voter || caught_up, has_log};
}

static struct rebalance_group view(const struct model *x)
{
    return (struct rebalance_group){.self = x->self,
                                    .preferred_leader = x->preferred,
                                    .config_committed = x->committed,
                                    .want = x->want,
                                    .n_want = x->n_want,
                                    .members = x->m,
                                    .n_members = x->n};
}

static struct rebalance_step next(const struct model *x)
{
    struct rebalance_group g = view(x);
    return rebalance_next(&g);
}

/* Voters 1, 2, 3 led by 1, a committed configuration; the target is set by
 * each test. */
static struct model group_123(void)
{
    struct model x = {.self = 1, .committed = true};
    member(&x, 1, true, true, true);
    member(&x, 2, true, true, true);
    member(&x, 3, true, true, true);
    return x;
}

static void want(struct model *x, raft_id a, raft_id b, raft_id c)
{
    x->want[0] = a;
    x->want[1] = b;
    x->want[2] = c;
    x->n_want = 3;
}

/* Nothing to do when the voters are the target, in any order. */
static void test_at_target_is_done(void)
{
    struct model x = group_123();
    want(&x, 3, 1, 2);
    struct rebalance_step s = next(&x);
    CHECK_EQ(s.action, REBALANCE_DONE);
    CHECK_EQ(s.node, 0);
    /* Even while a change is uncommitted: there is nothing left to start. */
    x.committed = false;
    CHECK_EQ(next(&x).action, REBALANCE_DONE);
}

/* thesis §4.2.1: a new replica joins as a learner, before anything is
 * removed (the group keeps its three voters while the newcomer catches up). */
static void test_missing_replica_added_as_learner_first(void)
{
    struct model x = group_123();
    want(&x, 1, 2, 4);
    struct rebalance_step s = next(&x);
    CHECK_EQ(s.action, REBALANCE_ADD_LEARNER);
    CHECK_EQ(s.node, 4);
}

/* thesis §4.1: one change at a time; the next waits for the last to commit. */
static void test_one_change_at_a_time(void)
{
    struct model x = group_123();
    want(&x, 1, 2, 4);
    x.committed = false;
    struct rebalance_step s = next(&x);
    CHECK_EQ(s.action, REBALANCE_WAIT);
    CHECK(s.why != NULL);
}

/* A learner is promoted only once it has caught up (thesis §4.2.1); until
 * then, nothing is removed either. */
static void test_learner_promoted_once_caught_up(void)
{
    struct model x = group_123();
    want(&x, 1, 2, 4);
    member(&x, 4, false, false, false);
    struct rebalance_step s = next(&x);
    CHECK_EQ(s.action, REBALANCE_WAIT);
    CHECK(s.why != NULL);
    x.m[3].caught_up = true;
    s = next(&x);
    CHECK_EQ(s.action, REBALANCE_PROMOTE);
    CHECK_EQ(s.node, 4);
}

/* Once every wanted node is a voter, a member no longer wanted is removed. */
static void test_unwanted_member_removed_last(void)
{
    struct model x = group_123();
    want(&x, 1, 2, 4);
    member(&x, 4, true, true, true);
    struct rebalance_step s = next(&x);
    CHECK_EQ(s.action, REBALANCE_REMOVE);
    CHECK_EQ(s.node, 3);
    /* A learner no longer wanted (an add the ring took back) goes too. */
    struct model y = group_123();
    want(&y, 1, 2, 3);
    member(&y, 5, false, false, false);
    s = next(&y);
    CHECK_EQ(s.action, REBALANCE_REMOVE);
    CHECK_EQ(s.node, 5);
}

/* thesis §3.10: the leader, to leave, first hands leadership to a wanted
 * voter that holds the whole log -- the preferred leader when it can. */
static void test_leaving_leader_hands_over_first(void)
{
    struct model x = group_123();
    want(&x, 2, 3, 4);
    member(&x, 4, true, true, true);
    x.preferred = 3;
    struct rebalance_step s = next(&x);
    CHECK_EQ(s.action, REBALANCE_TRANSFER);
    CHECK_EQ(s.node, 3);
    /* The preferred one lags: any other qualified voter. */
    x.m[2].has_log = false;
    s = next(&x);
    CHECK_EQ(s.action, REBALANCE_TRANSFER);
    CHECK_EQ(s.node, 2);
    /* No one holds the whole log: wait rather than hand over to a laggard. */
    x.m[1].has_log = false;
    x.m[3].has_log = false;
    s = next(&x);
    CHECK_EQ(s.action, REBALANCE_WAIT);
    CHECK(s.why != NULL);
}

/* The handoff target is never the leader itself, a learner, or a member
 * that is leaving too. */
static void test_handoff_target_is_a_wanted_voter(void)
{
    struct model x = {.self = 1, .committed = true, .preferred = 5};
    member(&x, 1, true, true, true);
    member(&x, 5, false, true, true); /* a learner: not yet */
    member(&x, 6, true, true, true);  /* leaving too */
    member(&x, 7, true, true, true);
    want(&x, 5, 7, 8);
    struct rebalance_group g = view(&x);
    CHECK_EQ(rebalance_handoff_target(&g), 7);
    x.m[3].is_voter = false;
    g = view(&x);
    CHECK_EQ(rebalance_handoff_target(&g), 0);
}

/* Apply a step to the model as the core would (the new member starts as a
 * learner that has not caught up; a transfer makes the target the leader). */
static void apply(struct model *x, struct rebalance_step s)
{
    switch (s.action) {
    case REBALANCE_ADD_LEARNER:
        member(x, s.node, false, false, false);
        break;
    case REBALANCE_PROMOTE:
        for (size_t k = 0; k < x->n; k++)
            if (x->m[k].id == s.node)
                x->m[k].is_voter = true;
        break;
    case REBALANCE_REMOVE:
        for (size_t k = 0; k < x->n; k++)
            if (x->m[k].id == s.node) {
                memmove(&x->m[k], &x->m[k + 1], (x->n - k - 1) * sizeof(x->m[0]));
                x->n--;
                break;
            }
        break;
    case REBALANCE_TRANSFER:
        x->self = s.node;
        break;
    case REBALANCE_DONE:
    case REBALANCE_WAIT:
        break;
    }
}

/* A whole move, 1 2 3 -> 3 4 5 with node 1 leading: the steps come in the
 * order of rebalance.h, the group keeps at least three voters and voter 3
 * throughout, the leader leaves by a transfer, and it ends DONE. */
static void test_whole_move_keeps_its_voters(void)
{
    struct model x = group_123();
    want(&x, 3, 4, 5);
    x.preferred = 4;
    char trail[64] = "";
    size_t at = 0;
    int steps = 0;
    for (; steps < 20; steps++) {
        struct rebalance_step s = next(&x);
        if (s.action == REBALANCE_DONE)
            break;
        if (s.action == REBALANCE_WAIT) {
            /* The only waits here: a learner catching up. It catches up. */
            for (size_t k = 0; k < x.n; k++) {
                x.m[k].caught_up = true;
                x.m[k].has_log = true;
            }
            continue;
        }
        static const char letter[] = {'D', 'W', 'A', 'P', 'T', 'R'};
        at += (size_t)snprintf(trail + at, sizeof(trail) - at, "%c%llu ", letter[s.action],
                               (unsigned long long)s.node);
        apply(&x, s);
        unsigned voters = 0;
        bool has3 = false;
        for (size_t k = 0; k < x.n; k++) {
            voters += x.m[k].is_voter;
            has3 |= x.m[k].id == 3 && x.m[k].is_voter;
        }
        CHECK(voters >= 3);
        CHECK(has3);
    }
    CHECK(steps < 20);
    /* Add 4 and 5 as learners, promote them once caught up, then the
     * removals in configuration order: node 1, the leader, hands over to
     * 4 (preferred), and 4, leading now, removes 1, then 2. */
    CHECK_STR(trail, "A4 A5 P4 P5 T4 R1 R2 ");
    CHECK_EQ(x.self, 4);
    CHECK_EQ(x.n, 3);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_at_target_is_done),
        HARNESS_TEST(test_missing_replica_added_as_learner_first),
        HARNESS_TEST(test_one_change_at_a_time),
        HARNESS_TEST(test_learner_promoted_once_caught_up),
        HARNESS_TEST(test_unwanted_member_removed_last),
        HARNESS_TEST(test_leaving_leader_hands_over_first),
        HARNESS_TEST(test_handoff_target_is_a_wanted_voter),
        HARNESS_TEST(test_whole_move_keeps_its_voters),
    };
    return harness_main(argc, argv, "rebalance", tests, sizeof(tests) / sizeof(tests[0]));
}
