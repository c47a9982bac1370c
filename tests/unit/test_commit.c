/* Commitment: raft/core/commit.c and quorum.c (Raft §5.3, §5.4.2, thesis §10.2.1). */
#include "fixture.h"

/* A leader of term 3 over a log from term 1 (indices 1..2), in a 5-server cluster. */
static void leader_over_old_log(struct fx *f, bool unsafe)
{
    static raft_id voters[] = {1, 2, 3, 4, 5};
    static struct raft_entry log[] = {{.term = 1}, {.term = 1}};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    cfg.unsafe_commit_old_term = unsafe;
    cfg.allow_unsafe = unsafe;
    struct raft_persisted st = {
        .current_term = 2, .entries = log, .n_entries = 2, .voters = voters, .n_voters = 5};
    fx_start(f, &cfg, &st);
    fx_elect(f, 5);
    CHECK_EQ(raft_current_term(f->r), 3);
}

/* §5.4.2 / Figure 8: replicas of an old term's entry on a majority do not
 * commit it; only an entry of the current term does, and then everything
 * before it with it. */
static void test_old_term_entries_not_committed_by_counting(void)
{
    struct fx f;
    leader_over_old_log(&f, false);
    CHECK_EQ(raft_last_index(f.r), 3); /* the no-op of term 3 */
    struct raft_message a2 = fx_append_ok(2, 1, 3, 2), a3 = fx_append_ok(3, 1, 3, 2);
    fx_recv(&f, &a2);
    fx_recv(&f, &a3);
    CHECK_EQ(raft_commit_index(f.r), 0);
    struct raft_message b2 = fx_append_ok(2, 1, 3, 3), b3 = fx_append_ok(3, 1, 3, 3);
    fx_recv(&f, &b2);
    CHECK_EQ(raft_commit_index(f.r), 0); /* 2 of 5 */
    fx_recv(&f, &b3);
    CHECK_EQ(raft_commit_index(f.r), 3);
    CHECK(fx_traced(&f, "§5.4.2 committed"));
    /* Everything up to 3 is handed out to apply, in order (host contract 2). */
    CHECK_EQ(f.u.n_apply, 3);
    CHECK_EQ(f.u.apply[0].index, 1);
    CHECK_EQ(f.u.apply[2].index, 3);
    raft_close(f.r);
}

/* The teaching knob commits by counting (and appends no no-op). */
static void test_unsafe_knob_commits_old_term(void)
{
    struct fx f;
    leader_over_old_log(&f, true);
    CHECK_EQ(raft_last_index(f.r), 2);
    struct raft_message a2 = fx_append_ok(2, 1, 3, 2), a3 = fx_append_ok(3, 1, 3, 2);
    fx_recv(&f, &a2);
    fx_recv(&f, &a3);
    CHECK_EQ(raft_commit_index(f.r), 2);
    CHECK(fx_traced(&f, "UNSAFE"));
    raft_close(f.r);
}

/* thesis §10.2.1: the leader counts itself only once its own write is
 * durable, even though it replicated in parallel. */
static void test_leader_counts_itself_after_persist(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_elect(&f, 3); /* the no-op (1) is persisted */
    struct raft_message probe_ok = fx_append_ok(2, 1, 1, 1);
    fx_recv(&f, &probe_ok);
    CHECK_EQ(raft_commit_index(f.r), 1);
    fx_propose(&f, "x");
    CHECK_EQ(f.u.n_entries, 1);
    CHECK(fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 2) != NULL); /* already on the wire */
    struct raft_message ok = fx_append_ok(2, 1, 1, 2);
    fx_recv(&f, &ok);
    /* 1 follower + leader = majority of 3, but the leader has not synced 2. */
    CHECK_EQ(raft_commit_index(f.r), 1);
    fx_persisted(&f, 2, 1);
    CHECK_EQ(raft_commit_index(f.r), 2);
    raft_close(f.r);
}

/* Entries are handed out to apply only once durable here (host contract 2). */
static void test_follower_applies_only_durable_entries(void)
{
    struct fx f;
    fx_new(&f, 2, 3);
    fx_tick(&f, 0);
    struct raft_entry es[] = {{.term = 1, .data = "a", .len = 1},
                              {.term = 1, .data = "b", .len = 1}};
    struct raft_message ae = fx_append(1, 2, 1, 0, 0, es, 2, 2);
    fx_recv(&f, &ae);
    CHECK_EQ(raft_commit_index(f.r), 2);
    CHECK_EQ(f.u.n_apply, 0);
    fx_persisted(&f, 2, 1);
    CHECK_EQ(f.u.n_apply, 2);
    CHECK_EQ(raft_applied_index(f.r), 2);
    /* A stale report for a replaced entry is ignored. */
    fx_persisted(&f, 2, 9);
    CHECK_EQ(f.u.n_apply, 0);
    raft_close(f.r);
}

/* The quorum is a majority of voters: 2 of 3, 3 of 4, 3 of 5. */
static void test_quorum_sizes(void)
{
    for (unsigned n = 3; n <= 5; n++) {
        struct fx f;
        fx_new(&f, 1, n);
        fx_elect(&f, n);
        unsigned need = n / 2 + 1;
        for (raft_id p = 2; p <= n; p++) {
            struct raft_message ok = fx_append_ok(p, 1, 1, 1);
            fx_recv(&f, &ok);
            CHECK_EQ(raft_commit_index(f.r), p >= need ? 1 : 0);
        }
        raft_close(f.r);
    }
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_old_term_entries_not_committed_by_counting),
        HARNESS_TEST(test_unsafe_knob_commits_old_term),
        HARNESS_TEST(test_leader_counts_itself_after_persist),
        HARNESS_TEST(test_follower_applies_only_durable_entries),
        HARNESS_TEST(test_quorum_sizes),
    };
    return harness_main(argc, argv, "commit", tests, sizeof(tests) / sizeof(tests[0]));
}
