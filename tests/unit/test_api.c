/* The public API: raft_init/raft_close validation, restart, errors, strings,
 * the allocator hook, and random input that must never break an invariant. */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>

static const raft_id V3[] = {1, 2, 3};

static int init_with(struct raft_config *cfg, struct raft_persisted *st)
{
    struct raft *r = NULL;
    int rv = raft_init(&r, cfg, st);
    CHECK((rv == RAFT_OK) == (r != NULL));
    raft_close(r);
    return rv;
}

static void test_init_validates_config(void)
{
    struct raft_config cfg;
    struct raft_persisted st = {.voters = V3, .n_voters = 3};
    fx_config(&cfg, 1);
    CHECK_EQ(init_with(&cfg, &st), RAFT_OK);
    fx_config(&cfg, 0);
    CHECK_EQ(init_with(&cfg, &st), RAFT_EINVAL);
    fx_config(&cfg, 4); /* not a member: a server joining later, or one removed */
    CHECK_EQ(init_with(&cfg, &st), RAFT_OK);
    raft_id learner_too[] = {2};
    struct raft_persisted both = {
        .voters = V3, .n_voters = 3, .learners = learner_too, .n_learners = 1};
    CHECK_EQ(init_with(&cfg, &both), RAFT_EINVAL); /* a voter cannot also be a learner */
    fx_config(&cfg, 1);
    cfg.heartbeat_interval_ms = cfg.election_timeout_ms;
    CHECK_EQ(init_with(&cfg, &st), RAFT_EINVAL);
    fx_config(&cfg, 1);
    cfg.check_quorum_off = true;
    CHECK_EQ(init_with(&cfg, &st), RAFT_EUNSAFE);
    cfg.allow_unsafe = true;
    CHECK_EQ(init_with(&cfg, &st), RAFT_OK);
    raft_id dup[] = {1, 1, 2};
    struct raft_persisted bad = {.voters = dup, .n_voters = 3};
    fx_config(&cfg, 1);
    CHECK_EQ(init_with(&cfg, &bad), RAFT_EINVAL);
}

static void test_init_refuses_inconsistent_state(void)
{
    struct raft_config cfg;
    fx_config(&cfg, 1);
    struct raft_entry down[] = {{.term = 2}, {.term = 1}};
    struct raft_persisted st = {
        .current_term = 2, .entries = down, .n_entries = 2, .voters = V3, .n_voters = 3};
    CHECK_EQ(init_with(&cfg, &st), RAFT_ECORRUPT); /* terms decrease */
    struct raft_entry ahead[] = {{.term = 3}};
    st.entries = ahead;
    st.n_entries = 1;
    CHECK_EQ(init_with(&cfg, &st), RAFT_ECORRUPT); /* term above currentTerm */
    struct raft_entry ok[] = {{.term = 1}};
    st.entries = ok;
    st.applied_index = 2;
    CHECK_EQ(init_with(&cfg, &st), RAFT_ECORRUPT); /* applied beyond the log */
}

/* A restarted server keeps its term, vote and log (Figure 2, persistent
 * state) and does not vote twice in the same term. */
static void test_restart_keeps_term_vote_and_log(void)
{
    struct raft_config cfg;
    fx_config(&cfg, 3);
    struct raft_entry log[] = {{.term = 1, .data = "k", .len = 1}, {.term = 4}};
    struct raft_persisted st = {.current_term = 4,
                                .voted_for = 1,
                                .entries = log,
                                .n_entries = 2,
                                .applied_index = 1,
                                .voters = V3,
                                .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    CHECK_EQ(raft_current_term(f.r), 4);
    CHECK_EQ(raft_voted_for(f.r), 1);
    CHECK_EQ(raft_last_index(f.r), 2);
    CHECK_EQ(raft_term_at(f.r, 2), 4);
    CHECK_EQ(raft_commit_index(f.r), 1);
    struct raft_entry e;
    CHECK(raft_entry_at(f.r, 1, &e) && e.len == 1 && ((const char *)e.data)[0] == 'k');
    CHECK(!raft_entry_at(f.r, 3, &e));
    fx_tick(&f, 0);
    struct raft_message rv = fx_request_vote(2, 3, 4, 9, 4, false);
    fx_recv(&f, &rv);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 2);
    CHECK(res && !res->request_vote_result.vote_granted);
    raft_close(f.r);
}

static void test_strings(void)
{
    CHECK_STR(raft_strerror(RAFT_ENOTLEADER), "not the leader");
    CHECK_STR(raft_strerror(12345), "unknown error");
    CHECK_STR(raft_role_name(RAFT_PRE_CANDIDATE), "pre-candidate");
    CHECK_STR(raft_message_type_name(RAFT_MSG_APPEND_ENTRIES), "AppendEntries");
    struct raft_trace t = {
        .rule = "§5.2 vote granted", .peer = 2, .index = 0, .value_name = "term", .value = 3};
    char buf[128];
    raft_trace_format(&t, buf, sizeof(buf));
    CHECK_STR(buf, "§5.2 vote granted peer=2 term=3");
    char tiny[8];
    raft_trace_format(&t, tiny, sizeof(tiny)); /* truncates, never overflows */
    CHECK_EQ(strlen(tiny), 7);
    /* Election lines carry what the vote rests on (docs/trace.md). */
    raft_id voters[] = {1, 2, 3}, granted[] = {1, 3};
    struct raft_trace v = {.rule = "§5.2 won election: votes from a majority",
                           .value_name = "votes",
                           .value = 2,
                           .vote = RAFT_TRACE_CANDIDATE_LOG | RAFT_TRACE_VOTERS,
                           .cand_last_index = 7,
                           .cand_last_term = 2,
                           .voters = voters,
                           .n_voters = 3,
                           .granted = granted,
                           .n_granted = 2};
    char line[256];
    raft_trace_format(&v, line, sizeof(line));
    CHECK_STR(line, "§5.2 won election: votes from a majority votes=2 cand_last=7/t2 granted=1,3 "
                    "voters=1,2,3");
    v.vote = RAFT_TRACE_CANDIDATE_LOG | RAFT_TRACE_OUR_LOG;
    v.our_last_index = 9;
    v.our_last_term = 3;
    raft_trace_format(&v, line, sizeof(line));
    CHECK_STR(line,
              "§5.2 won election: votes from a majority votes=2 cand_last=7/t2 our_last=9/t3");
    raft_trace_format(&v, tiny, sizeof(tiny));
    CHECK_EQ(strlen(tiny), 7);
    v.vote = RAFT_TRACE_VOTERS;
    v.n_granted = 0;
    raft_trace_format(&v, line, sizeof(line));
    CHECK_STR(line, "§5.2 won election: votes from a majority votes=2 granted=- voters=1,2,3");
}

/* ------------------------------------------------------------------------
 * Allocation failures become RAFT_ENOMEM, never a crash.
 * ------------------------------------------------------------------------ */

static long allocs_left;

static void *failing_malloc(void *data, size_t size)
{
    (void)data;
    return allocs_left-- > 0 ? malloc(size) : NULL;
}

static void *failing_realloc(void *data, void *ptr, size_t size)
{
    (void)data;
    return allocs_left-- > 0 ? realloc(ptr, size) : NULL;
}

static void plain_free(void *data, void *ptr)
{
    (void)data;
    free(ptr);
}

static void test_allocation_failures(void)
{
    static const struct raft_heap heap = {NULL, failing_malloc, failing_realloc, plain_free};
    raft_heap_set(&heap);
    int init_failed = 0, step_failed = 0;
    for (long budget = 0; budget < 40; budget++) {
        allocs_left = budget;
        struct raft_config cfg;
        fx_config(&cfg, 1);
        struct raft_persisted st = {.voters = V3, .n_voters = 3};
        struct raft *r;
        int rv = raft_init(&r, &cfg, &st);
        if (rv != RAFT_OK) {
            CHECK_EQ(rv, RAFT_ENOMEM);
            init_failed++;
            continue;
        }
        struct raft_update u;
        struct raft_event ev = {.type = RAFT_TIMEOUT, .now_ms = 1};
        rv = raft_step(r, &ev, &u);
        CHECK(rv == RAFT_OK || rv == RAFT_ENOMEM);
        step_failed += rv == RAFT_ENOMEM;
        raft_close(r);
    }
    raft_heap_set(NULL);
    CHECK(init_failed > 0 && step_failed > 0);
}

/* ------------------------------------------------------------------------
 * Random input: whatever arrives, the invariants hold (raft_step would
 * return RAFT_ECORRUPT otherwise, and fx_step checks it never does).
 * ------------------------------------------------------------------------ */

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void test_random_messages_keep_invariants(void)
{
    uint64_t seed = harness_seed(20261123), s = seed;
    unsigned steps = 0;
    for (int server = 0; server < 20; server++) {
        struct fx f;
        fx_new(&f, 1 + rnd(&s) % 3, 3);
        for (int step = 0; step < 2000; step++, steps++) {
            raft_term term = rnd(&s) % 6;
            raft_id from = 1 + rnd(&s) % 3;
            raft_id me = raft_id_of(f.r);
            if (from == me)
                from = from % 3 + 1;
            struct raft_entry es[3];
            for (int k = 0; k < 3; k++)
                es[k] = (struct raft_entry){.term = 1 + rnd(&s) % (term ? term : 1)};
            /* Keep the entries' terms non-decreasing, as any real log's are. */
            if (es[1].term < es[0].term)
                es[1].term = es[0].term;
            if (es[2].term < es[1].term)
                es[2].term = es[1].term;
            struct raft_message m;
            switch (rnd(&s) % 8) {
            case 0:
                fx_tick(&f, rnd(&s) % 60);
                continue;
            case 1:
                m = fx_request_vote(from, me, term, rnd(&s) % 6, rnd(&s) % 6, rnd(&s) % 2);
                break;
            case 2:
                m = fx_vote_result(from, me, term, rnd(&s) % 2, rnd(&s) % 2);
                break;
            case 3: {
                raft_index prev = rnd(&s) % 5;
                raft_term pt = prev ? 1 + rnd(&s) % (term ? term : 1) : 0;
                if (pt > es[0].term)
                    pt = es[0].term;
                m = fx_append(from, me, term, prev, pt, es, rnd(&s) % 4, rnd(&s) % 8);
                break;
            }
            case 4:
                m = fx_append_ok(from, me, term, rnd(&s) % 8);
                m.append_entries_result.success = rnd(&s) % 2;
                m.append_entries_result.rejected_index = rnd(&s) % 8;
                m.append_entries_result.conflict_term = rnd(&s) % 4;
                m.append_entries_result.conflict_index = 1 + rnd(&s) % 8;
                break;
            case 5:
                fx_propose(&f, "p");
                continue;
            case 6:
                fx_read(&f, step);
                continue;
            default:
                fx_persisted(&f, raft_last_index(f.r), raft_term_at(f.r, raft_last_index(f.r)));
                continue;
            }
            struct raft_event ev = {.type = RAFT_RECEIVE, .now_ms = f.now};
            ev.receive = &m;
            if (raft_step(f.r, &ev, &f.u) == RAFT_ECORRUPT) {
                /* Only a hostile message may end a server: one that asks it
                 * to replace a committed entry (invariant 6). */
                const char *why = raft_check_invariants(f.r);
                CHECK(why && strncmp(why, "6:", 2) == 0);
                break;
            }
        }
        raft_close(f.r);
    }
    fprintf(stderr, "    %u random steps\n", steps);
    CHECK(steps > 10000); /* most servers survive long enough to matter */
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_init_validates_config),
        HARNESS_TEST(test_init_refuses_inconsistent_state),
        HARNESS_TEST(test_restart_keeps_term_vote_and_log),
        HARNESS_TEST(test_strings),
        HARNESS_TEST(test_allocation_failures),
        HARNESS_TEST(test_random_messages_keep_invariants),
    };
    return harness_main(argc, argv, "api", tests, sizeof(tests) / sizeof(tests[0]));
}
