/* Membership changes with learners: raft/core/membership.c (thesis §4). */
#include "fixture.h"

static int fx_change(struct fx *f, enum raft_conf_op op, raft_id id)
{
    struct raft_event ev = {.type = RAFT_CHANGE_CONF};
    ev.change_conf.op = op;
    ev.change_conf.id = id;
    return fx_step(f, &ev);
}

static bool is_member(const struct raft *r, raft_id id, bool *voter)
{
    struct raft_member m[16];
    size_t n = raft_configuration(r, m, 16);
    for (size_t i = 0; i < n; i++)
        if (m[i].id == id) {
            *voter = m[i].is_voter;
            return true;
        }
    return false;
}

/* A leader of voters {1,2,3} with its no-op committed (index 1). */
static void ready_leader(struct fx *f)
{
    fx_new(f, 1, 3);
    fx_elect(f, 3);
    struct raft_message a = fx_append_ok(2, 1, 1, 1);
    fx_recv(f, &a);
    CHECK_EQ(raft_commit_index(f->r), 1);
}

static void ack(struct fx *f, raft_id from, raft_index match)
{
    struct raft_message m = fx_append_ok(from, 1, raft_current_term(f->r), match);
    fx_recv(f, &m);
}

/* The configuration entry a leader of {1,2,3} appends to add learner 4,
 * with its data copied into buf (it outlives the leader's next step). */
static struct raft_entry learner_conf_entry(struct fx *leader, uint8_t buf[64])
{
    ready_leader(leader);
    CHECK_EQ(fx_change(leader, RAFT_ADD_LEARNER, 4), RAFT_OK);
    struct raft_entry conf = leader->u.entries[0];
    CHECK(conf.len <= 64);
    memcpy(buf, conf.data, conf.len);
    conf.data = buf;
    return conf;
}

/* A learner replicates but counts in no quorum. */
static void test_learner_replicates_without_voting(void)
{
    struct fx f;
    ready_leader(&f);
    CHECK_EQ(fx_change(&f, RAFT_ADD_LEARNER, 4), RAFT_OK);
    bool voter;
    CHECK(is_member(f.r, 4, &voter) && !voter);
    CHECK_EQ(raft_configuration_index(f.r), 2);
    CHECK_EQ(f.u.n_entries, 1);
    CHECK_EQ(f.u.entries[0].type, RAFT_ENTRY_CONF);
    CHECK(fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 4) != NULL);
    fx_persist_last(&f);
    ack(&f, 4, 2); /* the learner alone does not make a majority */
    CHECK_EQ(raft_commit_index(f.r), 1);
    ack(&f, 2, 2);
    CHECK_EQ(raft_commit_index(f.r), 2);
    raft_close(f.r);
}

/* One change at a time; and not before the leader's no-op commits. */
static void test_one_change_at_a_time(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_elect(&f, 3);
    CHECK_EQ(fx_change(&f, RAFT_ADD_LEARNER, 4), RAFT_ECONFCHANGE); /* no-op not committed */
    CHECK(fx_traced(&f, "no entry of this term committed yet"));
    ack(&f, 2, 1);
    CHECK_EQ(fx_change(&f, RAFT_ADD_LEARNER, 4), RAFT_OK);
    CHECK_EQ(fx_change(&f, RAFT_ADD_LEARNER, 5), RAFT_ECONFCHANGE);
    CHECK(fx_traced(&f, "the previous one is not committed yet"));
    fx_persisted(&f, 2, 1);
    ack(&f, 2, 2);
    CHECK_EQ(fx_change(&f, RAFT_ADD_LEARNER, 5), RAFT_OK);
    raft_close(f.r);
}

/* thesis §4.2.1: promotion waits until the learner has caught up. */
static void test_promote_only_when_caught_up(void)
{
    struct fx f;
    ready_leader(&f);
    fx_change(&f, RAFT_ADD_LEARNER, 4);
    fx_persist_last(&f);
    ack(&f, 2, 2);
    CHECK_EQ(fx_change(&f, RAFT_PROMOTE, 4), RAFT_ECATCHUP);
    ack(&f, 4, 2); /* reaches the leader's last index in time */
    CHECK(fx_traced(&f, "learner caught up"));
    CHECK_EQ(fx_change(&f, RAFT_PROMOTE, 4), RAFT_OK);
    bool voter;
    CHECK(is_member(f.r, 4, &voter) && voter);
    /* Now four voters: a commit needs three. */
    fx_persist_last(&f);
    ack(&f, 2, 3);
    CHECK_EQ(raft_commit_index(f.r), 2);
    ack(&f, 4, 3);
    CHECK_EQ(raft_commit_index(f.r), 3);
    raft_close(f.r);
}

static void test_slow_learner_not_caught_up(void)
{
    struct fx f;
    ready_leader(&f);
    fx_change(&f, RAFT_ADD_LEARNER, 4);
    fx_persist_last(&f);
    ack(&f, 2, 2);
    for (int i = 0; i < 15; i++) { /* 150 ms > the 100 ms election timeout */
        fx_tick(&f, 10);
        ack(&f, 2, 2);
    }
    ack(&f, 4, 2); /* a round that took too long */
    CHECK_EQ(fx_change(&f, RAFT_PROMOTE, 4), RAFT_ECATCHUP);
    raft_close(f.r);
}

static void test_refusals(void)
{
    struct fx f;
    ready_leader(&f);
    CHECK_EQ(fx_change(&f, RAFT_ADD_LEARNER, 2), RAFT_EINVAL);
    CHECK_EQ(fx_change(&f, RAFT_PROMOTE, 3), RAFT_EINVAL);
    CHECK_EQ(fx_change(&f, RAFT_REMOVE, 9), RAFT_EINVAL);
    raft_close(f.r);
    struct fx g;
    fx_new(&g, 2, 3);
    CHECK_EQ(fx_change(&g, RAFT_ADD_LEARNER, 4), RAFT_ENOTLEADER);
    raft_close(g.r);
    struct fx one;
    fx_new(&one, 1, 1);
    fx_campaign(&one);
    fx_persist_last(&one);
    CHECK_EQ(fx_change(&one, RAFT_REMOVE, 1), RAFT_EINVAL); /* the last voter */
    raft_close(one.r);
}

/* Removing a voter shrinks the majority at once (newest config in force). */
static void test_remove_voter_shrinks_majority(void)
{
    struct fx f;
    fx_new(&f, 1, 5);
    fx_elect(&f, 5);
    ack(&f, 2, 1);
    ack(&f, 3, 1);
    CHECK_EQ(raft_commit_index(f.r), 1);
    CHECK_EQ(fx_change(&f, RAFT_REMOVE, 5), RAFT_OK);
    CHECK_EQ(fx_change(&f, RAFT_REMOVE, 4), RAFT_ECONFCHANGE);
    fx_persisted(&f, 2, 1);
    ack(&f, 2, 2);
    ack(&f, 3, 2); /* 3 of the 4 remaining voters */
    CHECK_EQ(raft_commit_index(f.r), 2);
    CHECK(fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 5) == NULL);
    raft_close(f.r);
}

/* thesis §4.2.2: a leader removing itself leads until the change commits,
 * without counting itself, then steps down. */
static void test_leader_removes_itself(void)
{
    struct fx f;
    ready_leader(&f);
    CHECK_EQ(fx_change(&f, RAFT_REMOVE, 1), RAFT_OK);
    CHECK_EQ(raft_role_of(f.r), RAFT_LEADER);
    fx_persist_last(&f);
    ack(&f, 2, 2); /* leader + 2 would be a majority of {1,2,3}, not of {2,3} */
    CHECK_EQ(raft_commit_index(f.r), 1);
    CHECK_EQ(raft_role_of(f.r), RAFT_LEADER);
    ack(&f, 3, 2);
    CHECK_EQ(raft_commit_index(f.r), 2);
    CHECK_EQ(raft_role_of(f.r), RAFT_FOLLOWER);
    CHECK(fx_traced(&f, "leader removed from the configuration"));
    /* A server outside the configuration never stands for election. */
    for (int i = 0; i < 40; i++)
        fx_tick(&f, 10);
    CHECK_EQ(raft_role_of(f.r), RAFT_FOLLOWER);
    raft_close(f.r);
}

/* A follower uses a configuration as soon as it is in its log, and falls
 * back when the entry is truncated. */
static void test_follower_applies_and_reverts(void)
{
    struct fx leader;
    uint8_t copy[64];
    struct raft_entry conf = learner_conf_entry(&leader, copy);

    struct fx f;
    fx_new(&f, 2, 3);
    fx_tick(&f, 0);
    struct raft_entry noop = {.term = 1, .type = RAFT_ENTRY_NOOP};
    struct raft_message a1 = fx_append(1, 2, 1, 0, 0, &noop, 1, 0);
    fx_recv(&f, &a1);
    struct raft_message a2 = fx_append(1, 2, 1, 1, 1, &conf, 1, 1);
    fx_recv(&f, &a2);
    bool voter;
    CHECK(is_member(f.r, 4, &voter) && !voter);
    CHECK_EQ(raft_configuration_index(f.r), 2);
    /* A leader of term 2 overwrites index 2: the base configuration is back. */
    struct raft_entry other = {.term = 2, .data = "x", .len = 1};
    struct raft_message a3 = fx_append(3, 2, 2, 1, 1, &other, 1, 1);
    fx_recv(&f, &a3);
    CHECK(!is_member(f.r, 4, &voter));
    CHECK_EQ(raft_configuration_index(f.r), 0);
    CHECK(fx_traced(&f, "configuration entry truncated"));

    /* After a restart, the configuration comes from the log. */
    struct raft_entry log[] = {noop, conf};
    raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 2);
    struct raft_persisted st = {
        .current_term = 1, .entries = log, .n_entries = 2, .voters = voters, .n_voters = 3};
    struct fx g;
    fx_start(&g, &cfg, &st);
    CHECK(is_member(g.r, 4, &voter) && !voter);
    raft_close(g.r);
    raft_close(f.r);
    raft_close(leader.r);
}

/* thesis §4.2.1: a learner's catch-up rounds are the leader's. A server
 * that starts from its log times a round to the end of that log; when the
 * end is truncated before the server leads, a round kept from then could
 * never be finished, and the learner never be promoted (raftsim seed 3429,
 * the replacement of a node that lost its disk). A new leader starts every
 * learner's round afresh. */
static void test_new_leader_starts_learner_rounds_afresh(void)
{
    struct fx leader;
    uint8_t copy[64];
    struct raft_entry conf = learner_conf_entry(&leader, copy);
    struct raft_entry noop = {.term = 1, .type = RAFT_ENTRY_NOOP};
    struct raft_entry old = {.term = 1, .data = "x", .len = 1};
    struct raft_entry log[] = {noop, conf, old, old, old}; /* 1..5 */
    raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 3);
    struct raft_persisted st = {
        .current_term = 1, .entries = log, .n_entries = 5, .voters = voters, .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_tick(&f, 0);
    /* Leader 2 of term 2 replaces 3..5 with one entry: the log ends at 3. */
    struct raft_entry other = {.term = 2, .data = "y", .len = 1};
    struct raft_message a = fx_append(2, 3, 2, 2, 1, &other, 1, 2);
    fx_recv(&f, &a);
    fx_persist_last(&f);
    CHECK_EQ(raft_last_index(f.r), 3);
    /* Server 3 leads term 3 (its no-op at 4). */
    fx_campaign(&f);
    struct raft_message pv = fx_vote_result(1, 3, 3, true, true);
    fx_recv(&f, &pv);
    struct raft_message v = fx_vote_result(1, 3, 3, true, false);
    fx_recv(&f, &v);
    CHECK_EQ(raft_role_of(f.r), RAFT_LEADER);
    fx_persist_last(&f);
    CHECK_EQ(raft_current_term(f.r), 3);
    CHECK_EQ(raft_last_index(f.r), 4);
    struct raft_message ok1 = fx_append_ok(1, 3, 3, 4);
    fx_recv(&f, &ok1);
    CHECK_EQ(raft_commit_index(f.r), 4);
    /* The learner holds all of it, in time: it can be promoted. */
    struct raft_message ok4 = fx_append_ok(4, 3, 3, 4);
    fx_recv(&f, &ok4);
    CHECK(fx_traced(&f, "learner caught up"));
    CHECK_EQ(fx_change(&f, RAFT_PROMOTE, 4), RAFT_OK);
    raft_close(f.r);
    raft_close(leader.r);
}

/* A server joining with no configuration learns it from the leader, and a
 * learner never campaigns. */
static void test_joining_server_learns_configuration(void)
{
    struct fx leader;
    uint8_t copy[64];
    struct raft_entry conf = learner_conf_entry(&leader, copy);

    struct raft_config cfg;
    fx_config(&cfg, 4);
    struct raft_persisted st = {0};
    struct fx f;
    fx_start(&f, &cfg, &st);
    CHECK_EQ(raft_configuration(f.r, NULL, 0), 0);
    struct raft_entry entries[] = {{.term = 1, .type = RAFT_ENTRY_NOOP}, conf};
    struct raft_message ae = fx_append(1, 4, 1, 0, 0, entries, 2, 1);
    fx_recv(&f, &ae);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && res->append_entries_result.success);
    bool voter;
    CHECK(is_member(f.r, 4, &voter) && !voter);
    for (int i = 0; i < 40; i++)
        fx_tick(&f, 10);
    CHECK_EQ(raft_role_of(f.r), RAFT_FOLLOWER);
    CHECK(!fx_traced(&f, "pre-candidate"));
    raft_close(f.r);
    raft_close(leader.r);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_learner_replicates_without_voting),
        HARNESS_TEST(test_one_change_at_a_time),
        HARNESS_TEST(test_promote_only_when_caught_up),
        HARNESS_TEST(test_slow_learner_not_caught_up),
        HARNESS_TEST(test_refusals),
        HARNESS_TEST(test_remove_voter_shrinks_majority),
        HARNESS_TEST(test_leader_removes_itself),
        HARNESS_TEST(test_follower_applies_and_reverts),
        HARNESS_TEST(test_new_leader_starts_learner_rounds_afresh),
        HARNESS_TEST(test_joining_server_learns_configuration),
    };
    return harness_main(argc, argv, "membership", tests, sizeof(tests) / sizeof(tests[0]));
}
