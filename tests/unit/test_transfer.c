/* Leadership transfer: raft/core/transfer.c (thesis §3.10). */
#include "fixture.h"

static int fx_transfer(struct fx *f, raft_id to)
{
    struct raft_event ev = {.type = RAFT_TRANSFER};
    ev.transfer.to = to;
    return fx_step(f, &ev);
}

/* A leader of 3 whose followers have acknowledged everything. */
static void caught_up_leader(struct fx *f)
{
    fx_new(f, 1, 3);
    fx_elect(f, 3);
    struct raft_message a = fx_append_ok(2, 1, 1, 1), b = fx_append_ok(3, 1, 1, 1);
    fx_recv(f, &a);
    fx_recv(f, &b);
}

static void test_up_to_date_target_gets_timeout_now(void)
{
    struct fx f;
    caught_up_leader(&f);
    CHECK_EQ(fx_transfer(&f, 3), RAFT_OK);
    CHECK(fx_msg(&f, RAFT_MSG_TIMEOUT_NOW, 3) != NULL);
    /* Proposals pause until the transfer ends. */
    CHECK_EQ(fx_propose(&f, "x"), RAFT_ETRANSFER);
    CHECK_EQ(raft_last_index(f.r), 1);
    raft_close(f.r);
}

static void test_lagging_target_is_caught_up_first(void)
{
    struct fx f;
    caught_up_leader(&f);
    fx_propose(&f, "a");
    fx_propose(&f, "b");
    CHECK_EQ(fx_transfer(&f, 3), RAFT_OK);
    CHECK(fx_msg(&f, RAFT_MSG_TIMEOUT_NOW, 3) == NULL);
    struct raft_message part = fx_append_ok(3, 1, 1, 2);
    fx_recv(&f, &part);
    CHECK(fx_msg(&f, RAFT_MSG_TIMEOUT_NOW, 3) == NULL);
    struct raft_message all = fx_append_ok(3, 1, 1, 3);
    fx_recv(&f, &all);
    CHECK(fx_msg(&f, RAFT_MSG_TIMEOUT_NOW, 3) != NULL);
    raft_close(f.r);
}

static void test_transfer_gives_up_after_election_timeout(void)
{
    struct fx f;
    caught_up_leader(&f);
    fx_propose(&f, "a"); /* 3 lags now and never answers */
    CHECK_EQ(fx_transfer(&f, 3), RAFT_OK);
    for (int i = 0; i < 9; i++) {
        fx_tick(&f, 10);
        struct raft_message keep = fx_append_ok(2, 1, 1, 2); /* keeps check-quorum happy */
        fx_recv(&f, &keep);
    }
    CHECK_EQ(fx_propose(&f, "b"), RAFT_ETRANSFER);
    fx_tick(&f, 20);
    CHECK(fx_traced(&f, "gave up"));
    CHECK_EQ(fx_propose(&f, "b"), RAFT_OK);
    raft_close(f.r);
}

static void test_transfer_refusals(void)
{
    struct fx f;
    caught_up_leader(&f);
    CHECK_EQ(fx_transfer(&f, 1), RAFT_EINVAL); /* to itself */
    CHECK_EQ(fx_transfer(&f, 9), RAFT_EINVAL); /* not a member */
    CHECK_EQ(fx_transfer(&f, 0), RAFT_OK);     /* to the most up-to-date voter */
    CHECK_EQ(fx_transfer(&f, 2), RAFT_ETRANSFER);
    raft_close(f.r);
    struct fx g;
    fx_new(&g, 2, 3);
    CHECK_EQ(fx_transfer(&g, 3), RAFT_ENOTLEADER);
    raft_close(g.r);
}

/* The target skips pre-vote and flags its requests, so that voters who
 * still hear the old leader do not ignore it (thesis §4.2.3 exception). */
static void test_timeout_now_starts_flagged_election(void)
{
    struct fx f;
    fx_follower_of_1(&f, 3, 3);
    struct raft_message tn = {.type = RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 3, .term = 1};
    fx_recv(&f, &tn);
    CHECK_EQ(raft_role_of(f.r), RAFT_CANDIDATE);
    CHECK_EQ(raft_current_term(f.r), 2);
    const struct raft_message *rv = fx_msg(&f, RAFT_MSG_REQUEST_VOTE, 2);
    CHECK(rv && rv->request_vote.leadership_transfer && !rv->request_vote.pre_vote);
    raft_close(f.r);

    /* A voter that hears the old leader still grants a flagged request. */
    struct fx v;
    fx_follower_of_1(&v, 2, 3);
    struct raft_message req = fx_request_vote(3, 2, 2, 0, 0, false);
    fx_recv(&v, &req);
    CHECK(fx_msg(&v, RAFT_MSG_REQUEST_VOTE_RESULT, 3) == NULL); /* ignored: lease */
    req.request_vote.leadership_transfer = true;
    fx_recv(&v, &req);
    const struct raft_message *res = fx_msg(&v, RAFT_MSG_REQUEST_VOTE_RESULT, 3);
    CHECK(res && res->request_vote_result.vote_granted);
    raft_close(v.r);
}

/* TimeoutNow from anyone but our leader is ignored. */
static void test_timeout_now_from_non_leader_ignored(void)
{
    struct fx f;
    fx_follower_of_1(&f, 3, 3);
    struct raft_message tn = {.type = RAFT_MSG_TIMEOUT_NOW, .from = 2, .to = 3, .term = 1};
    fx_recv(&f, &tn);
    CHECK_EQ(raft_role_of(f.r), RAFT_FOLLOWER);
    raft_close(f.r);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_up_to_date_target_gets_timeout_now),
        HARNESS_TEST(test_lagging_target_is_caught_up_first),
        HARNESS_TEST(test_transfer_gives_up_after_election_timeout),
        HARNESS_TEST(test_transfer_refusals),
        HARNESS_TEST(test_timeout_now_starts_flagged_election),
        HARNESS_TEST(test_timeout_now_from_non_leader_ignored),
    };
    return harness_main(argc, argv, "transfer", tests, sizeof(tests) / sizeof(tests[0]));
}
