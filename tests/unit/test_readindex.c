/* ReadIndex: raft/core/readindex.c (thesis §6.4). */
#include "fixture.h"

static const struct raft_read *find_read(const struct fx *f, uint64_t id)
{
    for (size_t i = 0; i < f->u.n_reads; i++)
        if (f->u.reads[i].id == id)
            return &f->u.reads[i];
    return NULL;
}

/* A leader of 3 whose no-op (index 1) is committed and applied. */
static void ready_leader(struct fx *f)
{
    fx_new(f, 1, 3);
    fx_elect(f, 3);
    struct raft_message ok = fx_append_ok(2, 1, 1, 1);
    fx_recv(f, &ok);
    CHECK_EQ(raft_commit_index(f->r), 1);
    CHECK_EQ(raft_applied_index(f->r), 1);
}

static void test_read_on_follower_refused(void)
{
    struct fx f;
    fx_new(&f, 2, 3);
    CHECK_EQ(fx_read(&f, 1), RAFT_ENOTLEADER);
    raft_close(f.r);
}

/* The read waits for a majority to confirm leadership in a round sent
 * after it arrived; an acknowledgement of an older round does not count. */
static void test_read_waits_for_heartbeat_round(void)
{
    struct fx f;
    ready_leader(&f);
    CHECK_EQ(fx_read(&f, 42), RAFT_OK);
    CHECK_EQ(f.u.n_reads, 0);
    const struct raft_message *hb = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 2);
    CHECK(hb && hb->append_entries.read_seq == 1);
    CHECK(fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 3));
    struct raft_message old = fx_append_ok(3, 1, 1, 1);
    old.append_entries_result.read_seq = 0;
    fx_recv(&f, &old);
    CHECK(find_read(&f, 42) == NULL);
    struct raft_message ack = fx_append_ok(3, 1, 1, 1);
    ack.append_entries_result.read_seq = 1;
    fx_recv(&f, &ack);
    const struct raft_read *rd = find_read(&f, 42);
    CHECK(rd && rd->status == RAFT_OK && rd->index == 1);
    raft_close(f.r);
}

/* Up to four rounds in flight: each of the first reads starts its own; a
 * read that finds no room waits and shares the next round with the reads
 * that arrive meanwhile. A round never confirms a read that arrived after
 * it was sent, and an acknowledgement of a later round confirms the
 * earlier ones (acks only grow). */
static void test_reads_share_a_round(void)
{
    struct fx f;
    ready_leader(&f);
    for (uint64_t id = 1; id <= 4; id++) {
        fx_read(&f, id);
        CHECK_EQ(fx_count(&f, RAFT_MSG_APPEND_ENTRIES), 2); /* round `id`, to both followers */
        CHECK_EQ(fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 2)->append_entries.read_seq, id);
    }
    fx_read(&f, 5);
    CHECK_EQ(fx_count(&f, RAFT_MSG_APPEND_ENTRIES), 0); /* four in flight: waits */
    fx_read(&f, 6);
    CHECK_EQ(fx_count(&f, RAFT_MSG_APPEND_ENTRIES), 0);
    struct raft_message ack = fx_append_ok(2, 1, 1, 1);
    ack.append_entries_result.read_seq = 1;
    fx_recv(&f, &ack);
    /* Round 1 confirms read 1 only, and round 5 starts for reads 5 and 6. */
    CHECK_EQ(f.u.n_reads, 1);
    CHECK_EQ(f.u.reads[0].id, 1);
    CHECK_EQ(fx_count(&f, RAFT_MSG_APPEND_ENTRIES), 2);
    CHECK_EQ(fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 3)->append_entries.read_seq, 5);
    /* An ack of round 4 confirms rounds 2 to 4 too. */
    ack.append_entries_result.read_seq = 4;
    fx_recv(&f, &ack);
    CHECK_EQ(f.u.n_reads, 3);
    CHECK_EQ(f.u.reads[0].id, 2);
    CHECK_EQ(f.u.reads[2].id, 4);
    ack.append_entries_result.read_seq = 5;
    fx_recv(&f, &ack);
    CHECK_EQ(f.u.n_reads, 2);
    CHECK_EQ(f.u.reads[0].id, 5);
    CHECK_EQ(f.u.reads[1].id, 6);
    raft_close(f.r);
}

/* A round whose messages were lost is completed by the next heartbeat. */
static void test_lost_round_completed_by_heartbeat(void)
{
    struct fx f;
    ready_leader(&f);
    fx_read(&f, 1); /* round 1: pretend its messages are lost */
    fx_tick(&f, 25);
    const struct raft_message *hb = fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 3);
    CHECK(hb && hb->append_entries.read_seq == 1);
    struct raft_message ack = fx_append_ok(3, 1, 1, 1);
    ack.append_entries_result.read_seq = 1;
    fx_recv(&f, &ack);
    CHECK_EQ(f.u.n_reads, 1);
    raft_close(f.r);
}

/* thesis §6.4 step 1: before its no-op commits, a new leader does not know
 * the commit index; the read waits until it has applied the no-op. */
static void test_read_waits_for_noop_commit(void)
{
    struct fx f;
    fx_new(&f, 1, 3);
    fx_elect(&f, 3);
    fx_read(&f, 7);
    struct raft_message ack = fx_append_ok(2, 1, 1, 0);
    ack.append_entries_result.read_seq = 1;
    fx_recv(&f, &ack);
    CHECK(find_read(&f, 7) == NULL); /* confirmed leader, no-op not committed */
    struct raft_message ok = fx_append_ok(2, 1, 1, 1);
    ok.append_entries_result.read_seq = 1;
    fx_recv(&f, &ok);
    const struct raft_read *rd = find_read(&f, 7);
    CHECK(rd && rd->status == RAFT_OK && rd->index == 1);
    raft_close(f.r);
}

/* Losing leadership fails pending reads instead of leaving them hanging. */
static void test_step_down_fails_reads(void)
{
    struct fx f;
    ready_leader(&f);
    fx_read(&f, 9);
    struct raft_message higher = fx_append(2, 1, 5, 0, 0, NULL, 0, 0);
    fx_recv(&f, &higher);
    const struct raft_read *rd = find_read(&f, 9);
    CHECK(rd && rd->status == RAFT_ENOTLEADER);
    raft_close(f.r);
}

/* Host contract 4: the pending-read queue is bounded. */
static void test_pending_reads_bounded(void)
{
    static raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    cfg.max_pending_reads = 2;
    struct raft_persisted st = {.voters = voters, .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_elect(&f, 3);
    CHECK_EQ(fx_read(&f, 1), RAFT_OK);
    CHECK_EQ(fx_read(&f, 2), RAFT_OK);
    CHECK_EQ(fx_read(&f, 3), RAFT_EBUSY);
    raft_close(f.r);
}

/* A single-server cluster confirms a read by itself. */
static void test_single_server_read(void)
{
    struct fx f;
    fx_new(&f, 1, 1);
    fx_campaign(&f);
    fx_persist_last(&f);
    CHECK_EQ(fx_read(&f, 5), RAFT_OK);
    const struct raft_read *rd = find_read(&f, 5);
    CHECK(rd && rd->status == RAFT_OK && rd->index == 1);
    raft_close(f.r);
}

/* ------------------------------------------------------------------------
 * Lease reads (thesis §6.4.1)
 * ------------------------------------------------------------------------ */

static void lease_leader(struct fx *f, uint32_t drift_pct)
{
    static raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    cfg.lease_reads = true;
    cfg.clock_drift_bound_pct = drift_pct;
    struct raft_persisted st = {.voters = voters, .n_voters = 3};
    fx_start(f, &cfg, &st);
    fx_tick(f, 0);
    f->now += 100; /* past the boot lease */
    fx_elect(f, 3);
    struct raft_message ok = fx_append_ok(2, 1, 1, 1);
    ok.append_entries_result.echo_sent_ms = f->now; /* acknowledges what we sent now */
    fx_recv(f, &ok);
    CHECK_EQ(raft_commit_index(f->r), 1);
}

static void test_lease_read_needs_no_round(void)
{
    struct fx f;
    lease_leader(&f, 10);
    CHECK(raft_lease_valid(f.r));
    CHECK_EQ(fx_read(&f, 1), RAFT_OK);
    const struct raft_read *rd = find_read(&f, 1);
    CHECK(rd && rd->status == RAFT_OK && rd->index == 1);
    CHECK_EQ(f.u.n_messages, 0);
    raft_close(f.r);
}

/* The lease lasts the election timeout less the drift bound (100 ms less
 * 30% here), counted from when the acknowledged message was sent. */
static void test_lease_expires_then_readindex(void)
{
    struct fx f;
    lease_leader(&f, 30);
    fx_tick(&f, 69);
    CHECK(raft_lease_valid(f.r));
    fx_tick(&f, 1);
    CHECK(!raft_lease_valid(f.r));
    CHECK_EQ(fx_read(&f, 2), RAFT_OK);
    CHECK(find_read(&f, 2) == NULL);
    CHECK(fx_msg(&f, RAFT_MSG_APPEND_ENTRIES, 2) != NULL); /* a ReadIndex round */
    raft_close(f.r);
}

/* A transfer lets the target win at once, so the lease ends with it. */
static void test_transfer_ends_lease(void)
{
    struct fx f;
    lease_leader(&f, 10);
    struct raft_event ev = {.type = RAFT_TRANSFER};
    ev.transfer.to = 3;
    fx_step(&f, &ev);
    CHECK(!raft_lease_valid(f.r));
    raft_close(f.r);
}

static void test_lease_needs_check_quorum(void)
{
    raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    cfg.lease_reads = true;
    cfg.check_quorum_off = true;
    cfg.allow_unsafe = true;
    struct raft_persisted st = {.voters = voters, .n_voters = 3};
    struct raft *r;
    CHECK_EQ(raft_init(&r, &cfg, &st), RAFT_EINVAL);
}

/* A server with lease reads refuses votes for an election timeout after it
 * starts: before a crash it may have extended a leader's lease. */
static void test_boot_lease_refuses_votes(void)
{
    raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 2);
    cfg.lease_reads = true;
    struct raft_persisted st = {.voters = voters, .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    fx_tick(&f, 0);
    struct raft_message pv = fx_request_vote(3, 2, 1, 0, 0, true);
    fx_recv(&f, &pv);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 3);
    CHECK(res && !res->request_vote_result.vote_granted);
    f.now += 100;
    fx_recv(&f, &pv);
    res = fx_msg(&f, RAFT_MSG_REQUEST_VOTE_RESULT, 3);
    CHECK(res && res->request_vote_result.vote_granted);
    raft_close(f.r);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_read_on_follower_refused),
        HARNESS_TEST(test_read_waits_for_heartbeat_round),
        HARNESS_TEST(test_reads_share_a_round),
        HARNESS_TEST(test_lost_round_completed_by_heartbeat),
        HARNESS_TEST(test_read_waits_for_noop_commit),
        HARNESS_TEST(test_step_down_fails_reads),
        HARNESS_TEST(test_pending_reads_bounded),
        HARNESS_TEST(test_single_server_read),
        HARNESS_TEST(test_lease_read_needs_no_round),
        HARNESS_TEST(test_lease_expires_then_readindex),
        HARNESS_TEST(test_transfer_ends_lease),
        HARNESS_TEST(test_lease_needs_check_quorum),
        HARNESS_TEST(test_boot_lease_refuses_votes),
    };
    return harness_main(argc, argv, "readindex", tests, sizeof(tests) / sizeof(tests[0]));
}
