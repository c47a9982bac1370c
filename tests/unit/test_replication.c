/* Log replication: raft/core/replication.c and progress.c (Raft §5.3). */
#include "fixture.h"

static const struct raft_entry E1 = {.term = 1, .data = "a", .len = 1};

/* A follower with log [1:t1, 2:t1, 3:t2] in term 2. */
static void follower_with_log(struct fx *f)
{
    static raft_id voters[] = {1, 2, 3};
    static struct raft_entry log[] = {{.term = 1}, {.term = 1}, {.term = 2}};
    struct raft_config cfg;
    fx_config(&cfg, 2);
    struct raft_persisted st = {
        .current_term = 2, .entries = log, .n_entries = 3, .voters = voters, .n_voters = 3};
    fx_start(f, &cfg, &st);
    fx_tick(f, 0);
}

/* Figure 2, AppendEntries receiver 2, with the hint of §5.3: a log too short
 * answers with its length. */
static void test_reject_too_short_with_hint(void)
{
    struct fx f;
    follower_with_log(&f);
    struct raft_message ae = fx_append(1, 2, 2, 7, 2, NULL, 0, 0);
    fx_recv(&f, &ae);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && !res->append_entries_result.success && res->after_persist);
    CHECK_EQ(res->append_entries_result.rejected_index, 7);
    CHECK_EQ(res->append_entries_result.conflict_term, 0);
    CHECK_EQ(res->append_entries_result.conflict_index, 4);
    raft_close(f.r);
}

/* A mismatching term answers with that term and its first index. */
static void test_reject_conflict_with_term_hint(void)
{
    struct fx f;
    follower_with_log(&f);
    struct raft_message ae = fx_append(1, 2, 3, 3, 3, NULL, 0, 0);
    fx_recv(&f, &ae);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && !res->append_entries_result.success);
    CHECK_EQ(res->append_entries_result.conflict_term, 2);
    CHECK_EQ(res->append_entries_result.conflict_index, 3);
    raft_close(f.r);
}

/* Figure 2, AppendEntries receiver 3 and 4: conflicting entries are deleted,
 * new ones appended, and the update says what to truncate and persist. */
static void test_conflicting_entries_replaced(void)
{
    struct fx f;
    follower_with_log(&f);
    struct raft_entry news[] = {{.term = 3, .data = "x", .len = 1},
                                {.term = 3, .data = "y", .len = 1}};
    struct raft_message ae = fx_append(1, 2, 3, 2, 1, news, 2, 0);
    fx_recv(&f, &ae);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && res->append_entries_result.success);
    CHECK_EQ(res->append_entries_result.match_index, 4);
    CHECK_EQ(f.u.truncate_from, 3);
    CHECK_EQ(f.u.n_entries, 2);
    CHECK_EQ(f.u.entries[0].index, 3);
    CHECK_EQ(f.u.entries[0].term, 3);
    CHECK(memcmp(f.u.entries[1].data, "y", 1) == 0);
    CHECK_EQ(raft_last_index(f.r), 4);
    CHECK(fx_traced(&f, "conflicting entries deleted"));
    raft_close(f.r);
}

/* A duplicate AppendEntries changes nothing and is acknowledged again. */
static void test_duplicate_append_is_idempotent(void)
{
    struct fx f;
    follower_with_log(&f);
    struct raft_entry same[] = {{.term = 1}, {.term = 2}};
    struct raft_message ae = fx_append(1, 2, 2, 1, 1, same, 2, 0);
    fx_recv(&f, &ae);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && res->append_entries_result.success);
    CHECK_EQ(res->append_entries_result.match_index, 3);
    CHECK_EQ(f.u.truncate_from, 0);
    CHECK_EQ(f.u.n_entries, 0);
    raft_close(f.r);
}

/* Figure 2, receiver 5: commitIndex = min(leaderCommit, last new entry). */
static void test_follower_commit_bounded_by_match(void)
{
    struct fx f;
    follower_with_log(&f);
    struct raft_message ae = fx_append(1, 2, 2, 1, 1, NULL, 0, 3);
    fx_recv(&f, &ae);
    CHECK_EQ(raft_commit_index(f.r), 1);
    raft_close(f.r);
}

/* Figure 2, receiver 1: a stale leader is told the current term. */
static void test_stale_leader_rejected(void)
{
    struct fx f;
    follower_with_log(&f);
    struct raft_message ae = fx_append(1, 2, 1, 3, 2, NULL, 0, 0);
    fx_recv(&f, &ae);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && !res->append_entries_result.success && res->term == 2);
    raft_close(f.r);
}

/* §5.3: the leader backs nextIndex up past the follower's conflicting term
 * in one step, using the hint. */
static void test_leader_backtracks_with_hint(void)
{
    static raft_id voters[] = {1, 2, 3};
    static struct raft_entry log[] = {{.term = 1}, {.term = 1}, {.term = 4}, {.term = 4}};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    struct raft_persisted st = {
        .current_term = 4, .entries = log, .n_entries = 4, .voters = voters, .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_elect(&f, 3); /* term 5, no-op at 5 */
    struct raft_message rej = {
        .type = RAFT_MSG_APPEND_ENTRIES_RESULT, .from = 3, .to = 1, .term = 5};
    /* The follower holds term 2 at index 4, from index 3 on: we have no
     * term 2, so resume at its first index of that term. */
    rej.append_entries_result.rejected_index = 4;
    rej.append_entries_result.conflict_term = 2;
    rej.append_entries_result.conflict_index = 3;
    fx_recv(&f, &rej);
    struct raft_peer_status ps;
    CHECK(raft_peer_status(f.r, 3, &ps));
    CHECK_EQ(ps.next_index, 3);
    CHECK(!ps.is_replicating);
    const struct raft_message *m = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 3);
    CHECK(m && m->append_entries.prev_log_index == 2 && m->append_entries.prev_log_term == 1);
    /* A second rejection of the same probe is stale and ignored. */
    fx_recv(&f, &rej);
    CHECK(raft_peer_status(f.r, 3, &ps));
    CHECK_EQ(ps.next_index, 3);
    raft_close(f.r);
}

/* A follower that acknowledged entries and then lost them (its disk was
 * replaced and the operator took it back empty) refuses a message sent
 * after its acknowledgement: the leader probes it again from its hint
 * instead of taking the refusal for stale forever. A refusal of a message
 * from before the acknowledgement is still stale. */
static void test_follower_that_lost_its_log_is_probed_again(void)
{
    static raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    struct raft_persisted st = {.voters = voters, .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_elect(&f, 3); /* no-op at index 1 */
    fx_propose(&f, "a");
    fx_propose(&f, "b"); /* log 1..3 */
    fx_tick(&f, 10);
    struct raft_message ok = fx_append_ok(2, 1, 1, 3);
    ok.append_entries_result.echo_sent_ms = f.now - 5;
    fx_recv(&f, &ok);
    struct raft_peer_status ps;
    CHECK(raft_peer_status(f.r, 2, &ps) && ps.is_replicating);
    CHECK_EQ(ps.match_index, 3);
    /* Stale: it answers a probe sent before the acknowledgement. */
    struct raft_message stale = {
        .type = RAFT_MSG_APPEND_ENTRIES_RESULT, .from = 2, .to = 1, .term = 1};
    stale.append_entries_result.rejected_index = 1;
    stale.append_entries_result.conflict_index = 1;
    stale.append_entries_result.echo_sent_ms = f.now - 8;
    fx_recv(&f, &stale);
    CHECK(raft_peer_status(f.r, 2, &ps) && ps.is_replicating);
    CHECK_EQ(ps.match_index, 3);
    /* Fresh: a heartbeat sent after it, refused by an empty log. */
    fx_tick(&f, 10);
    struct raft_message lost = stale;
    lost.append_entries_result.rejected_index = 3;
    lost.append_entries_result.conflict_index = 1; /* its log is empty */
    lost.append_entries_result.echo_sent_ms = f.now;
    fx_recv(&f, &lost);
    CHECK(raft_peer_status(f.r, 2, &ps));
    CHECK(!ps.is_replicating);
    CHECK_EQ(ps.match_index, 0);
    CHECK_EQ(ps.next_index, 1);
    const struct raft_message *m = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 2);
    CHECK(m && m->append_entries.prev_log_index == 0 && m->append_entries.n_entries >= 1);
    CHECK(fx_traced(&f, "follower's log is shorter than its matchIndex"));
    raft_close(f.r);
}

/* Probing sends one message at a time; after a success the leader
 * pipelines up to max_inflight messages without waiting. */
static void test_probe_then_pipeline(void)
{
    static raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    cfg.max_append_entries = 1;
    cfg.max_inflight = 3;
    struct raft_persisted st = {.voters = voters, .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_elect(&f, 3); /* no-op at index 1 */
    fx_propose(&f, "a");
    CHECK(fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 2) == NULL); /* probe outstanding */
    struct raft_message ok = fx_append_ok(2, 1, 1, 1);
    fx_recv(&f, &ok);
    struct raft_peer_status ps;
    CHECK(raft_peer_status(f.r, 2, &ps) && ps.is_replicating);
    for (int i = 0; i < 5; i++)
        fx_propose(&f, "b");
    CHECK(raft_peer_status(f.r, 2, &ps));
    CHECK_EQ(ps.inflight, 3);       /* the window is full */
    CHECK_EQ(ps.next_index, 2 + 3); /* indices 2, 3, 4 are in flight */
    struct raft_message ok2 = fx_append_ok(2, 1, 1, 3);
    fx_recv(&f, &ok2);
    CHECK(raft_peer_status(f.r, 2, &ps));
    CHECK_EQ(ps.match_index, 3);
    CHECK_EQ(ps.inflight, 3); /* 4 still in flight, 5 and 6 sent now */
    CHECK_EQ(ps.next_index, 7);
    raft_close(f.r);
}

/* Thesis §10.2.1, pipelining under duplication and reordering (the livelock
 * of raftsim seed 15551, 5 nodes, all faults): the follower rejects a
 * message of the window that overtook its predecessor, and the leader goes
 * back to probing. A second copy of the success that ended the last probe
 * then arrives. It answers nothing in flight: it must not start a new full
 * window while the old one is still in flight (the windows multiplied, their
 * overtaking messages were rejected, and the leader backed nextIndex up
 * forever), nor move matchIndex back. The probe's own answer starts it. */
static void test_stale_success_does_not_restart_window(void)
{
    static raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    cfg.max_append_entries = 1;
    cfg.max_inflight = 3;
    struct raft_persisted st = {.voters = voters, .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_elect(&f, 3); /* no-op at index 1, probed */
    struct raft_message ok1 = fx_append_ok(2, 1, 1, 1);
    fx_recv(&f, &ok1);
    for (int i = 0; i < 5; i++)
        fx_propose(&f, "b"); /* log 1..6; 2, 3 and 4 in flight to n2 */
    struct raft_peer_status ps;
    CHECK(raft_peer_status(f.r, 2, &ps) && ps.is_replicating);
    CHECK_EQ(ps.next_index, 5);

    /* The message with prevLogIndex 3 overtook the one with 2. */
    struct raft_message rej = {
        .type = RAFT_MSG_APPEND_ENTRIES_RESULT, .from = 2, .to = 1, .term = 1};
    rej.append_entries_result.rejected_index = 3;
    rej.append_entries_result.conflict_index = 2; /* its log ends at 1 */
    rej.append_entries_result.last_log_index = 1;
    fx_recv(&f, &rej);
    CHECK(raft_peer_status(f.r, 2, &ps) && !ps.is_replicating);
    CHECK_EQ(ps.next_index, 2);
    const struct raft_message *probe = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 2);
    CHECK(probe && probe->append_entries.prev_log_index == 1 &&
          probe->append_entries.n_entries == 1);

    /* The duplicate of the success at 1: still probing, nothing sent. */
    fx_recv(&f, &ok1);
    CHECK(raft_peer_status(f.r, 2, &ps) && !ps.is_replicating);
    CHECK_EQ(ps.match_index, 1);
    CHECK_EQ(ps.next_index, 2);
    CHECK_EQ(fx_count(&f, RAFT_MSG_APPEND_ENTRIES), 0);

    /* The probe's answer (index 2) starts the window: 3, 4 and 5. */
    struct raft_message ok2 = fx_append_ok(2, 1, 1, 2);
    fx_recv(&f, &ok2);
    CHECK(raft_peer_status(f.r, 2, &ps) && ps.is_replicating);
    CHECK_EQ(ps.match_index, 2);
    CHECK_EQ(ps.next_index, 6);
    CHECK_EQ(fx_count(&f, RAFT_MSG_APPEND_ENTRIES), 3);

    /* Late copies of either success change nothing and send nothing. */
    fx_recv(&f, &ok1);
    fx_recv(&f, &ok2);
    CHECK(raft_peer_status(f.r, 2, &ps) && ps.is_replicating);
    CHECK_EQ(ps.match_index, 2);
    CHECK_EQ(ps.next_index, 6);
    CHECK_EQ(ps.inflight, 3);
    CHECK_EQ(fx_count(&f, RAFT_MSG_APPEND_ENTRIES), 0);
    raft_close(f.r);
}

/* Batching: one AppendEntries carries many entries, bounded in bytes. */
/* A heartbeat's answer leaves at once, claiming only what is durable: a
 * write in flight (a large entry syncing) must not hold the answers the
 * leader's check-quorum waits for. In a term not yet durable it waits. */
static void test_heartbeat_answer_claims_only_durable(void)
{
    struct fx f;
    fx_follower_of_1(&f, 2, 3); /* adopted term 1 in that step: not durable yet */
    struct raft_message hb = fx_append(1, 2, 1, 0, 0, NULL, 0, 0);
    fx_recv(&f, &hb);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && res->after_persist);
    struct raft_event ev = {.type = RAFT_PERSISTED};
    ev.persisted.current_term = 1; /* the host made the term durable */
    fx_step(&f, &ev);

    struct raft_entry e = {.term = 1, .data = "big", .len = 3};
    struct raft_message a = fx_append(1, 2, 1, 0, 0, &e, 1, 0);
    fx_recv(&f, &a);
    res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && res->after_persist); /* it reports entry 1: once durable */
    CHECK_EQ(res->append_entries_result.match_index, 1);
    /* Entry 1 still syncing: the heartbeat's answer goes now, claiming 0. */
    struct raft_message hb1 = fx_append(1, 2, 1, 1, 1, NULL, 0, 0);
    fx_recv(&f, &hb1);
    res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && !res->after_persist && res->append_entries_result.success);
    CHECK_EQ(res->append_entries_result.match_index, 0);
    fx_persisted(&f, 1, 1);
    fx_recv(&f, &hb1);
    res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    CHECK(res && !res->after_persist);
    CHECK_EQ(res->append_entries_result.match_index, 1);
    /* A heartbeat of a new term: the term must be durable first. */
    struct raft_message hb2 = fx_append(3, 2, 2, 1, 1, NULL, 0, 0);
    fx_recv(&f, &hb2);
    res = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 3);
    CHECK(res && res->after_persist);
    raft_close(f.r);
}

static void test_batch_bounded_by_bytes(void)
{
    static raft_id voters[] = {1, 2};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    cfg.max_append_bytes = 10;
    struct raft_persisted st = {.voters = voters, .n_voters = 2};
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_campaign(&f);
    struct raft_message g = fx_vote_result(2, 1, 1, true, true);
    fx_recv(&f, &g);
    g = fx_vote_result(2, 1, 1, true, false);
    fx_recv(&f, &g);
    CHECK_EQ(raft_role_of(f.r), RAFT_LEADER);
    struct raft_message ok = fx_append_ok(2, 1, 1, 1);
    fx_recv(&f, &ok); /* now replicating from index 2 */
    struct raft_entry big[4] = {{.data = "12345", .len = 5},
                                {.data = "12345", .len = 5},
                                {.data = "12345", .len = 5},
                                {.data = "12345", .len = 5}};
    struct raft_event ev = {.type = RAFT_PROPOSE};
    ev.propose.entries = big;
    ev.propose.n_entries = 4;
    fx_step(&f, &ev);
    CHECK_EQ(f.u.proposed_first, 2);
    CHECK_EQ(f.u.proposed_last, 5);
    size_t msgs = 0, entries = 0;
    for (size_t i = 0; i < f.u.n_messages; i++) {
        const struct raft_message *m = &f.u.messages[i];
        if (m->type != RAFT_MSG_APPEND_ENTRIES)
            continue;
        msgs++;
        entries += m->append_entries.n_entries;
        CHECK(m->append_entries.n_entries <= 2); /* 10 bytes = two entries */
    }
    CHECK_EQ(msgs, 2);
    CHECK_EQ(entries, 4);
    raft_close(f.r);
}

/* A heartbeat carries no entries and goes to every follower. */
static void test_heartbeats(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_elect(&f, 3);
    struct raft_message ok2 = fx_append_ok(2, 1, 1, 1), ok3 = fx_append_ok(3, 1, 1, 1);
    fx_recv(&f, &ok2);
    fx_recv(&f, &ok3);
    fx_tick(&f, 25);
    CHECK_EQ(fx_count(&f, RAFT_MSG_APPEND_ENTRIES), 2);
    const struct raft_message *m = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 3);
    CHECK(m && m->append_entries.n_entries == 0 && !m->after_persist);
    raft_close(f.r);
}

/* Host contract 4: proposals beyond the uncommitted bound are refused. */
static void test_uncommitted_bound(void)
{
    static raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    cfg.max_uncommitted_bytes = 3;
    struct raft_persisted st = {.voters = voters, .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_elect(&f, 3);
    CHECK_EQ(fx_propose(&f, "ab"), RAFT_OK);
    CHECK_EQ(fx_propose(&f, "cd"), RAFT_EBUSY);
    CHECK_EQ(f.u.n_entries, 0); /* a refused proposal changes nothing */
    CHECK_EQ(raft_last_index(f.r), 2);
    raft_close(f.r);
}

static void test_propose_on_follower_gives_leader_hint(void)
{
    struct fx f;
    follower_with_log(&f);
    struct raft_message hb = fx_append(3, 2, 2, 3, 2, NULL, 0, 0);
    fx_recv(&f, &hb);
    CHECK_EQ(fx_propose(&f, "x"), RAFT_ENOTLEADER);
    CHECK_EQ(f.u.leader_id, 3);
    (void)E1;
    raft_close(f.r);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_reject_too_short_with_hint),
        HARNESS_TEST(test_reject_conflict_with_term_hint),
        HARNESS_TEST(test_conflicting_entries_replaced),
        HARNESS_TEST(test_duplicate_append_is_idempotent),
        HARNESS_TEST(test_follower_commit_bounded_by_match),
        HARNESS_TEST(test_stale_leader_rejected),
        HARNESS_TEST(test_leader_backtracks_with_hint),
        HARNESS_TEST(test_follower_that_lost_its_log_is_probed_again),
        HARNESS_TEST(test_probe_then_pipeline),
        HARNESS_TEST(test_stale_success_does_not_restart_window),
        HARNESS_TEST(test_batch_bounded_by_bytes),
        HARNESS_TEST(test_heartbeats),
        HARNESS_TEST(test_heartbeat_answer_claims_only_durable),
        HARNESS_TEST(test_uncommitted_bound),
        HARNESS_TEST(test_propose_on_follower_gives_leader_hint),
    };
    return harness_main(argc, argv, "replication", tests, sizeof(tests) / sizeof(tests[0]));
}
