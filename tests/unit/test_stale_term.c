/* Messages from a stale term, one test per type. Every request is answered
 * with our term, so that its sender learns it is behind (Figure 2: "reply
 * false if term < currentTerm"; Figure 13, InstallSnapshot receiver 1);
 * responses are dropped. The InstallSnapshot case is the one that once
 * kept a follower behind for good: a leader sending a snapshot sends that
 * follower nothing else, so the chunk's answer is the only way it learns
 * of the follower's newer term (tests/scenario/StaleTermSnapshot*.txt). */
#include "fixture.h"

/* Server 2 of 3 at term 2, following leader 3. */
static void at_term_2(struct fx *f)
{
    fx_new(f, 2, 3);
    fx_tick(f, 0);
    struct raft_message hb = fx_append(3, 2, 2, 0, 0, NULL, 0, 0);
    fx_recv(f, &hb);
    CHECK_EQ(raft_current_term(f->r), 2);
    CHECK_EQ(raft_leader(f->r), 3);
}

/* Nothing changed by a stale message: term, leader, role. */
static void unchanged(const struct fx *f)
{
    CHECK_EQ(raft_current_term(f->r), 2);
    CHECK_EQ(raft_leader(f->r), 3);
    CHECK_EQ(raft_role_of(f->r), RAFT_FOLLOWER);
    CHECK(!f->u.hard_state_changed);
}

static void test_stale_append_entries_answered(void)
{
    struct fx f;
    at_term_2(&f);
    struct raft_message ae = fx_append(1, 2, 1, 0, 0, NULL, 0, 0);
    fx_recv(&f, &ae);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && !res->append_entries_result.success && res->term == 2);
    unchanged(&f);
    raft_close(f.r);
}

static void test_stale_install_snapshot_answered(void)
{
    struct fx f;
    at_term_2(&f);
    static const struct raft_member members[] = {{1, true}, {2, true}, {3, true}};
    struct raft_message is = {.type = RAFT_MSG_INSTALL_SNAPSHOT, .from = 1, .to = 2, .term = 1};
    is.install_snapshot = (struct raft_install_snapshot){.last_index = 40,
                                                         .last_term = 1,
                                                         .data = "chunk",
                                                         .len = 5,
                                                         .total_size = 100,
                                                         .members = members,
                                                         .n_members = 3};
    fx_recv(&f, &is);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT_RESULT, 1);
    CHECK(res != NULL);
    CHECK_EQ(res->term, 2);
    CHECK(res->install_snapshot_result.rejected);
    CHECK_EQ(res->install_snapshot_result.last_index, 40);
    CHECK(!res->after_persist);        /* nothing was written: it may leave at once */
    CHECK(f.u.snapshot_chunk == NULL); /* the chunk is not staged */
    CHECK(fx_traced(&f, "§7 InstallSnapshot from a stale term rejected"));
    unchanged(&f);
    raft_close(f.r);
}

static void test_stale_vote_request_denied(void)
{
    struct fx f;
    at_term_2(&f);
    struct raft_message rv = fx_request_vote(1, 2, 1, 100, 1, false);
    fx_recv(&f, &rv);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 1);
    CHECK(res && !res->request_vote_result.vote_granted && res->term == 2);
    CHECK(!res->request_vote_result.pre_vote);
    CHECK_EQ(raft_voted_for(f.r), 0);
    unchanged(&f);
    raft_close(f.r);
}

static void test_stale_pre_vote_denied(void)
{
    struct fx f;
    at_term_2(&f);
    struct raft_message rv = fx_request_vote(1, 2, 1, 100, 1, true);
    fx_recv(&f, &rv);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 1);
    CHECK(res && !res->request_vote_result.vote_granted && res->term == 2);
    CHECK(res->request_vote_result.pre_vote);
    unchanged(&f);
    raft_close(f.r);
}

/* TimeoutNow asks for nothing back: dropped, and no election starts (the
 * stale leader's next AppendEntries gets our term). */
static void test_stale_timeout_now_dropped(void)
{
    struct fx f;
    at_term_2(&f);
    struct raft_message tn = {.type = RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 2, .term = 1};
    fx_recv(&f, &tn);
    CHECK_EQ(f.u.n_messages, 0);
    unchanged(&f);
    raft_close(f.r);
}

/* Responses from a stale term answer something we asked in that term:
 * dropped without a reply. */
static void test_stale_responses_dropped(void)
{
    struct fx f;
    at_term_2(&f);
    struct raft_message rs[] = {
        fx_append_ok(1, 2, 1, 5),
        fx_vote_result(1, 2, 1, true, false),
        fx_vote_result(1, 2, 1, true, true),
        {.type = RAFT_MSG_INSTALL_SNAPSHOT_RESULT, .from = 1, .to = 2, .term = 1},
    };
    for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++) {
        fx_recv(&f, &rs[i]);
        CHECK_EQ(f.u.n_messages, 0);
        unchanged(&f);
    }
    raft_close(f.r);
}

/* The other end: a leader told by a snapshot's receiver that its term is
 * newer steps down (Figure 2, all servers). */
static void test_leader_steps_down_on_newer_term_from_snapshot_receiver(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_tick(&f, 0);
    fx_elect(&f, 3);
    CHECK_EQ(raft_role_of(f.r), RAFT_LEADER);
    raft_term t = raft_current_term(f.r);
    struct raft_message res = {
        .type = RAFT_MSG_INSTALL_SNAPSHOT_RESULT, .from = 3, .to = 1, .term = t + 3};
    res.install_snapshot_result.rejected = true;
    fx_recv(&f, &res);
    CHECK_EQ(raft_role_of(f.r), RAFT_FOLLOWER);
    CHECK_EQ(raft_current_term(f.r), t + 3);
    CHECK(f.u.hard_state_changed);
    raft_close(f.r);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_stale_append_entries_answered),
        HARNESS_TEST(test_stale_install_snapshot_answered),
        HARNESS_TEST(test_stale_vote_request_denied),
        HARNESS_TEST(test_stale_pre_vote_denied),
        HARNESS_TEST(test_stale_timeout_now_dropped),
        HARNESS_TEST(test_stale_responses_dropped),
        HARNESS_TEST(test_leader_steps_down_on_newer_term_from_snapshot_receiver),
    };
    return harness_main(argc, argv, "stale_term", tests, sizeof(tests) / sizeof(tests[0]));
}
