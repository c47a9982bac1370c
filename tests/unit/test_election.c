/* Leader election: raft/core/election.c (Raft §5.2, §5.4.1; thesis §9.6, §4.2.3, §6.2). */
#include "fixture.h"

/* §5.2: a follower that hears nothing within the randomized timeout
 * [T, 2T) stands; with pre-vote it first asks without raising its term. */
static void test_timeout_starts_pre_vote(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_tick(&f, 0);
    fx_tick(&f, 99);
    CHECK_EQ(raft_role_of(f.r), RAFT_FOLLOWER);
    for (int i = 0; i < 100 && raft_role_of(f.r) == RAFT_FOLLOWER; i++)
        fx_tick(&f, 1);
    CHECK_EQ(raft_role_of(f.r), RAFT_PRE_CANDIDATE);
    CHECK_EQ(raft_current_term(f.r), 0); /* thesis §9.6: nothing changes yet */
    const struct raft_message *m = fx_msg(&f, RAFT_MSG_REQUEST_VOTE, 2);
    CHECK(m && m->request_vote.pre_vote && m->term == 1 && !m->after_persist);
    CHECK(fx_msg(&f, RAFT_MSG_REQUEST_VOTE, 3));
    raft_close(f.r);
}

/* Timeouts are random in [T, 2T) and differ between servers (§5.2). */
static void test_timeouts_are_randomized(void)
{
    uint64_t fired[3];
    for (raft_id id = 1; id <= 3; id++) {
        struct fx f;
        fx_new(&f, id, 3);
        fx_tick(&f, 0);
        uint64_t start = f.now;
        while (raft_role_of(f.r) == RAFT_FOLLOWER)
            fx_tick(&f, 1);
        fired[id - 1] = f.now - start;
        CHECK(fired[id - 1] >= 100 && fired[id - 1] < 200);
        raft_close(f.r);
    }
    CHECK(fired[0] != fired[1] || fired[1] != fired[2]);
}

static void test_pre_vote_majority_starts_real_election(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_campaign(&f);
    struct raft_message g = fx_vote_result(2, 1, 1, true, true);
    fx_recv(&f, &g);
    CHECK_EQ(raft_role_of(f.r), RAFT_CANDIDATE);
    CHECK_EQ(raft_current_term(f.r), 1);
    CHECK_EQ(raft_voted_for(f.r), 1);
    /* Host contract 1: the vote for ourselves is persisted before asking. */
    CHECK(f.u.hard_state_changed && f.u.current_term == 1 && f.u.voted_for == 1);
    const struct raft_message *m = fx_msg(&f, RAFT_MSG_REQUEST_VOTE, 3);
    CHECK(m && !m->request_vote.pre_vote && m->after_persist);
    raft_close(f.r);
}

static void test_candidate_wins_with_majority(void)
{
    struct fx f;
    fx_new(&f, 1, 5);
    fx_elect(&f, 5);
    CHECK_EQ(raft_leader(f.r), 1);
    raft_close(f.r);
}

static void test_candidate_steps_down_when_majority_refuses(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_campaign(&f);
    struct raft_message g = fx_vote_result(2, 1, 1, true, true);
    fx_recv(&f, &g);
    CHECK_EQ(raft_role_of(f.r), RAFT_CANDIDATE);
    struct raft_message d2 = fx_vote_result(2, 1, 1, false, false);
    struct raft_message d3 = fx_vote_result(3, 1, 1, false, false);
    fx_recv(&f, &d2);
    CHECK_EQ(raft_role_of(f.r), RAFT_CANDIDATE);
    fx_recv(&f, &d3);
    CHECK_EQ(raft_role_of(f.r), RAFT_FOLLOWER);
    /* docs/trace.md: the line shows the state after the decision, and the
     * tally it rests on (only our own vote among voters 1, 2, 3). */
    const struct raft_trace *t = fx_trace(&f, "election lost");
    CHECK(t && t->role == RAFT_FOLLOWER && t->term == 1 && t->value == 2);
    CHECK(t && (t->vote & RAFT_TRACE_VOTERS) && t->n_voters == 3 && t->n_granted == 1 &&
          t->granted[0] == 1 && t->voters[2] == 3);
    raft_close(f.r);
}

/* Figure 2, RequestVote receiver 2: at most one vote per term. */
static void test_one_vote_per_term(void)
{
    struct fx f;
    fx_new(&f, 3, 3);
    fx_tick(&f, 0);
    struct raft_message rv1 = fx_request_vote(1, 3, 1, 0, 0, false);
    fx_recv(&f, &rv1);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 1);
    CHECK(res && res->request_vote_result.vote_granted && res->after_persist);
    CHECK(f.u.hard_state_changed && f.u.voted_for == 1);
    struct raft_message rv2 = fx_request_vote(2, 3, 1, 0, 0, false);
    fx_recv(&f, &rv2);
    res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 2);
    CHECK(res && !res->request_vote_result.vote_granted);
    CHECK(fx_traced(&f, "already voted"));
    /* The same candidate asking again gets the same answer. */
    fx_recv(&f, &rv1);
    res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 1);
    CHECK(res && res->request_vote_result.vote_granted);
    raft_close(f.r);
}

/* §5.4.1: a candidate whose log is behind ours cannot get our vote. */
static void test_stale_log_candidate_denied(void)
{
    raft_id voters[] = {1, 2, 3};
    struct raft_entry log[] = {{.term = 1}, {.term = 2}};
    struct raft_config cfg;
    fx_config(&cfg, 3);
    struct raft_persisted st = {
        .current_term = 2, .entries = log, .n_entries = 2, .voters = voters, .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_tick(&f, 0);
    /* Lower last term, longer log: denied. */
    struct raft_message rv = fx_request_vote(1, 3, 3, 5, 1, false);
    fx_recv(&f, &rv);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 1);
    CHECK(res && !res->request_vote_result.vote_granted);
    /* The line carries both last entries that §5.4.1 compared. */
    const struct raft_trace *t = fx_trace(&f, "§5.4.1 vote denied: candidate log not up-to-date");
    CHECK(t && t->vote == (RAFT_TRACE_CANDIDATE_LOG | RAFT_TRACE_OUR_LOG));
    CHECK(t && t->cand_last_index == 5 && t->cand_last_term == 1 && t->our_last_index == 2 &&
          t->our_last_term == 2);
    /* Same last term, shorter log: denied. */
    struct raft_message rv2 = fx_request_vote(2, 3, 3, 1, 2, false);
    fx_recv(&f, &rv2);
    res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 2);
    CHECK(res && !res->request_vote_result.vote_granted);
    /* Same last term, same length: granted. */
    struct raft_message rv3 = fx_request_vote(2, 3, 4, 2, 2, false);
    fx_recv(&f, &rv3);
    res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 2);
    CHECK(res && res->request_vote_result.vote_granted);
    raft_close(f.r);
}

/* Figure 2, all servers: a higher term turns anyone into a follower. */
static void test_higher_term_makes_leader_follower(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_elect(&f, 3);
    struct raft_message m = fx_append_ok(2, 1, 7, 0);
    m.append_entries_result.success = false;
    fx_recv(&f, &m);
    CHECK_EQ(raft_role_of(f.r), RAFT_FOLLOWER);
    CHECK_EQ(raft_current_term(f.r), 7);
    CHECK(f.u.hard_state_changed && f.u.current_term == 7 && f.u.voted_for == 0);
    /* The trace line shows the term adopted and the role taken. */
    const struct raft_trace *t = fx_trace(&f, "higher term seen");
    CHECK(t && t->term == 7 && t->role == RAFT_FOLLOWER);
    raft_close(f.r);
}

/* thesis §9.6: no pre-vote while we hear from a leader; a pre-vote never
 * changes the receiver's term. */
static void test_pre_vote_denied_while_leader_alive(void)
{
    struct fx f;
    fx_follower_of_1(&f, 3, 3); /* checks that it follows leader 1 */
    fx_tick(&f, 10);
    struct raft_message pv = fx_request_vote(2, 3, 2, 0, 0, true);
    fx_recv(&f, &pv);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 2);
    CHECK(res && !res->request_vote_result.vote_granted && res->request_vote_result.pre_vote);
    CHECK_EQ(raft_current_term(f.r), 1);
    CHECK(!f.u.hard_state_changed);
    /* Once the leader has been silent for an election timeout, granted. */
    f.now += 150;
    fx_recv(&f, &pv);
    res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 2);
    CHECK(res && res->request_vote_result.vote_granted && res->term == 2);
    CHECK_EQ(raft_current_term(f.r), 1);
    raft_close(f.r);
}

/* thesis §4.2.3: with check-quorum, a real vote request that arrives while
 * the leader is alive is ignored, so a rejoining server cannot depose it. */
static void test_vote_request_ignored_in_leader_lease(void)
{
    struct fx f;
    fx_follower_of_1(&f, 3, 3);
    struct raft_message rv = fx_request_vote(2, 3, 9, 0, 0, false);
    fx_recv(&f, &rv);
    CHECK_EQ(raft_current_term(f.r), 1);
    CHECK(fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 2) == NULL);
    CHECK(fx_traced(&f, "thesis §4.2.3"));
    raft_close(f.r);
}

/* Without pre-vote (a teaching knob), a timeout raises the term at once. */
static void test_prevote_off_raises_term(void)
{
    raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    cfg.prevote_off = true;
    struct raft_persisted st = {.voters = voters, .n_voters = 3};
    struct raft *r;
    CHECK_EQ(raft_init(&r, &cfg, &st), RAFT_EUNSAFE);
    cfg.allow_unsafe = true;
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_campaign(&f);
    CHECK_EQ(raft_role_of(f.r), RAFT_CANDIDATE);
    CHECK_EQ(raft_current_term(f.r), 1);
    raft_close(f.r);
}

/* thesis §6.2: a leader that hears from no majority within an election
 * timeout steps down. */
static void test_check_quorum_step_down(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_elect(&f, 3);
    for (int i = 0; i < 12 && raft_role_of(f.r) == RAFT_LEADER; i++)
        fx_tick(&f, 10);
    CHECK_EQ(raft_role_of(f.r), RAFT_FOLLOWER);
    const struct raft_trace *t = fx_trace(&f, "check-quorum");
    CHECK(t && t->role == RAFT_FOLLOWER); /* the state after stepping down */
    raft_close(f.r);
}

static void test_check_quorum_keeps_leader_that_hears_majority(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_elect(&f, 3);
    for (int i = 0; i < 50; i++) {
        fx_tick(&f, 10);
        struct raft_message ok = fx_append_ok(2, 1, 1, 0);
        fx_recv(&f, &ok);
    }
    CHECK_EQ(raft_role_of(f.r), RAFT_LEADER);
    raft_close(f.r);
}

/* A single-server cluster elects itself at once. */
static void test_single_server_elects_itself(void)
{
    struct fx f;
    fx_new(&f, 1, 1);
    fx_campaign(&f);
    CHECK_EQ(raft_role_of(f.r), RAFT_LEADER);
    CHECK_EQ(raft_current_term(f.r), 1);
    raft_close(f.r);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_timeout_starts_pre_vote),
        HARNESS_TEST(test_timeouts_are_randomized),
        HARNESS_TEST(test_pre_vote_majority_starts_real_election),
        HARNESS_TEST(test_candidate_wins_with_majority),
        HARNESS_TEST(test_candidate_steps_down_when_majority_refuses),
        HARNESS_TEST(test_one_vote_per_term),
        HARNESS_TEST(test_stale_log_candidate_denied),
        HARNESS_TEST(test_higher_term_makes_leader_follower),
        HARNESS_TEST(test_pre_vote_denied_while_leader_alive),
        HARNESS_TEST(test_vote_request_ignored_in_leader_lease),
        HARNESS_TEST(test_prevote_off_raises_term),
        HARNESS_TEST(test_check_quorum_step_down),
        HARNESS_TEST(test_check_quorum_keeps_leader_that_hears_majority),
        HARNESS_TEST(test_single_server_elects_itself),
    };
    return harness_main(argc, argv, "election", tests, sizeof(tests) / sizeof(tests[0]));
}
