/* Snapshots, compaction and InstallSnapshot: raft/core/snapshot.c (§7). */
#include "fixture.h"

static int fx_taken(struct fx *f, raft_index index, uint64_t size)
{
    struct raft_event ev = {.type = RAFT_SNAPSHOT_TAKEN};
    ev.snapshot_taken.index = index;
    ev.snapshot_taken.size = size;
    ev.snapshot_taken.checksum = 0xc0ffee;
    return fx_step(f, &ev);
}

static int fx_installed(struct fx *f, raft_index index, raft_term term, bool ok)
{
    struct raft_event ev = {.type = RAFT_SNAPSHOT_INSTALLED};
    ev.snapshot_installed.index = index;
    ev.snapshot_installed.term = term;
    ev.snapshot_installed.ok = ok;
    return fx_step(f, &ev);
}

/* A leader of 3 with snapshots every 4 entries, a tail of 1, chunks of 10
 * bytes; followers 2 acknowledge everything, 3 is gone. */
static void snapshotting_leader(struct fx *f)
{
    static raft_id voters[] = {1, 2, 3};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    cfg.snapshot_threshold_entries = 4;
    cfg.snapshot_trailing_entries = 1;
    cfg.snapshot_chunk_bytes = 10;
    struct raft_persisted st = {.voters = voters, .n_voters = 3};
    fx_start(f, &cfg, &st);
    fx_elect(f, 3);
}

static void commit_at_leader(struct fx *f, raft_index index)
{
    struct raft_message ok = fx_append_ok(2, 1, raft_current_term(f->r), index);
    fx_recv(f, &ok);
}

/* A leader whose log up to 4 is committed, snapshotted and compacted to 3;
 * follower 3 never answered. */
static void leader_with_snapshot(struct fx *f)
{
    snapshotting_leader(f);
    commit_at_leader(f, 1);
    for (int i = 0; i < 3; i++) {
        fx_propose(f, "abc");
        fx_persist_last(f);
    }
    commit_at_leader(f, 4);
    CHECK(f->u.snapshot_wanted);
    CHECK_EQ(fx_taken(f, 4, 25), RAFT_OK);
}

/* §7: past the threshold the host is asked for a snapshot of what it has
 * applied; once taken, the log keeps only the trailing tail. */
static void test_snapshot_asked_then_log_compacted(void)
{
    struct fx f;
    snapshotting_leader(&f);
    commit_at_leader(&f, 1);
    for (int i = 0; i < 3; i++) {
        fx_propose(&f, "abc");
        fx_persist_last(&f);
    }
    commit_at_leader(&f, 3);
    CHECK(!f.u.snapshot_wanted);
    commit_at_leader(&f, 4);
    CHECK(f.u.snapshot_wanted);
    CHECK_EQ(f.u.snapshot_index, 4);
    CHECK(fx_traced(&f, "asking the host for a snapshot"));
    CHECK_EQ(fx_taken(&f, 4, 25), RAFT_OK);
    CHECK_EQ(f.u.compact_index, 3);
    CHECK_EQ(f.u.compact_term, 1);
    struct raft_entry e;
    CHECK(!raft_entry_at(f.r, 3, &e));
    CHECK(raft_entry_at(f.r, 4, &e));
    CHECK_EQ(raft_term_at(f.r, 3), 1); /* the offset's term is kept */
    struct raft_snapshot_meta meta;
    CHECK(raft_snapshot(f.r, &meta) && meta.index == 4 && meta.size == 25 && meta.n_members == 3);
    /* A report the core did not ask for, or for what is not applied, is refused. */
    CHECK_EQ(fx_taken(&f, 9, 1), RAFT_EINVAL);
    raft_close(f.r);
}

/* A follower whose next entry was compacted gets the snapshot, in chunks,
 * one at a time; its answers say where to go on. */
static void test_leader_sends_snapshot_in_chunks(void)
{
    struct fx f;
    leader_with_snapshot(&f);
    /* Follower 3 never answered: it still needs index 1, compacted away. */
    fx_tick(&f, 25);
    const struct raft_message *is = fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT, 3);
    CHECK(is != NULL);
    CHECK_EQ(is->install_snapshot.last_index, 4);
    CHECK_EQ(is->install_snapshot.offset, 0);
    CHECK_EQ(is->install_snapshot.len, 10);
    CHECK(is->install_snapshot.data == NULL && !is->install_snapshot.done);
    CHECK_EQ(is->install_snapshot.total_size, 25);
    CHECK(fx_traced(&f, "sending the snapshot"));
    struct raft_message res = {
        .type = RAFT_MSG_INSTALL_SNAPSHOT_RESULT, .from = 3, .to = 1, .term = 1};
    res.install_snapshot_result.last_index = 4;
    res.install_snapshot_result.last_term = 1;
    res.install_snapshot_result.next_offset = 10;
    fx_recv(&f, &res);
    is = fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT, 3);
    CHECK(is && is->install_snapshot.offset == 10 && is->install_snapshot.len == 10);
    /* A duplicate of the first answer does not send anything more. */
    fx_recv(&f, &res);
    CHECK(fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT, 3) == NULL);
    res.install_snapshot_result.next_offset = 20;
    fx_recv(&f, &res);
    is = fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT, 3);
    CHECK(is && is->install_snapshot.len == 5 && is->install_snapshot.done);
    res.install_snapshot_result.done = true;
    fx_recv(&f, &res);
    struct raft_peer_status ps;
    CHECK(raft_peer_status(f.r, 3, &ps));
    CHECK_EQ(ps.match_index, 4);
    CHECK(fx_traced(&f, "replicating from it"));
    raft_close(f.r);
}

/* A lost chunk is sent again with the next heartbeat. */
static void test_lost_chunk_resent_by_heartbeat(void)
{
    struct fx f;
    leader_with_snapshot(&f);
    fx_tick(&f, 25); /* the first chunk goes out, and is lost */
    CHECK(fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT, 3) != NULL);
    fx_tick(&f, 25);
    const struct raft_message *is = fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT, 3);
    CHECK(is && is->install_snapshot.offset == 0);
    raft_close(f.r);
}

/* etcd's story: the answer to the last chunk is lost, but an append
 * answer shows the follower has everything the snapshot covers. */
static void test_snapshot_succeeds_via_append_answer(void)
{
    struct fx f;
    leader_with_snapshot(&f);
    fx_tick(&f, 25);
    CHECK(fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT, 3) != NULL);
    struct raft_peer_status ps;
    CHECK(raft_peer_status(f.r, 3, &ps) && !ps.is_replicating);
    struct raft_message ok = fx_append_ok(3, 1, 1, 4);
    fx_recv(&f, &ok);
    CHECK(fx_traced(&f, "snapshot succeeded, as an AppendEntries answer shows"));
    CHECK(raft_peer_status(f.r, 3, &ps) && ps.match_index == 4);
    CHECK(fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT, 3) == NULL);
    raft_close(f.r);
}

static struct raft_message chunk(raft_index index, raft_term term, uint64_t offset,
                                 const char *data, size_t len, uint64_t total)
{
    static const struct raft_member members[] = {{1, true}, {2, true}, {3, true}};
    struct raft_message m = {.type = RAFT_MSG_INSTALL_SNAPSHOT, .from = 1, .to = 2, .term = term};
    m.install_snapshot.last_index = index;
    m.install_snapshot.last_term = term;
    m.install_snapshot.offset = offset;
    m.install_snapshot.data = data;
    m.install_snapshot.len = len;
    m.install_snapshot.done = offset + len == total;
    m.install_snapshot.total_size = total;
    m.install_snapshot.checksum = 7;
    m.install_snapshot.members = members;
    m.install_snapshot.n_members = 3;
    return m;
}

/* Figure 13, receiver: chunks are staged in order, a gap is answered with
 * the offset wanted, and the switch happens only when the host installed. */
static void test_follower_stages_and_installs(void)
{
    struct fx f;
    fx_new(&f, 2, 3);
    fx_tick(&f, 0);
    struct raft_message c0 = chunk(10, 2, 0, "0123456789", 10, 15);
    fx_recv(&f, &c0);
    CHECK(f.u.snapshot_chunk && f.u.snapshot_chunk->offset == 0 && f.u.snapshot_chunk->len == 10);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT_RESULT, 1);
    CHECK(res && res->after_persist && res->install_snapshot_result.next_offset == 10);
    /* A duplicate or a gap: nothing to stage, the answer says 10. */
    fx_recv(&f, &c0);
    CHECK(f.u.snapshot_chunk == NULL);
    CHECK_EQ(fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT_RESULT, 1)->install_snapshot_result.next_offset,
             10);
    struct raft_message c1 = chunk(10, 2, 10, "abcde", 5, 15);
    fx_recv(&f, &c1);
    CHECK(f.u.snapshot_chunk && f.u.snapshot_chunk->done);
    CHECK(fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT_RESULT, 1) == NULL); /* waits for the host */
    CHECK_EQ(raft_commit_index(f.r), 0);
    CHECK_EQ(fx_installed(&f, 10, 2, true), RAFT_OK);
    CHECK_EQ(raft_commit_index(f.r), 10);
    CHECK_EQ(raft_applied_index(f.r), 10);
    CHECK_EQ(raft_last_index(f.r), 10);
    CHECK_EQ(f.u.compact_index, 10);
    res = fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT_RESULT, 1);
    CHECK(res && res->install_snapshot_result.done);
    /* The log continues after the snapshot. */
    struct raft_entry e = {.term = 2, .data = "x", .len = 1};
    struct raft_message ae = fx_append(1, 2, 2, 10, 2, &e, 1, 11);
    fx_recv(&f, &ae);
    CHECK(fx_msg(&f, RAFT_MSG_APPEND_ENTRIES_RESULT, 1)->append_entries_result.success);
    /* An old snapshot is refused as stale. */
    struct raft_message old = chunk(8, 2, 0, "0123456789", 10, 10);
    fx_recv(&f, &old);
    CHECK(fx_traced(&f, "refused as stale"));
    CHECK(fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT_RESULT, 1)->install_snapshot_result.done);
    raft_close(f.r);
}

/* Nothing is handed out to apply while the host installs a snapshot:
 * entries committed before it arrived become durable meanwhile, but the
 * snapshot covers them, and a host installing asynchronously would apply
 * them after the state was replaced (kvd did: "entry 3 after applied 99"). */
static void test_no_apply_while_installing(void)
{
    struct fx f;
    fx_new(&f, 2, 3);
    fx_tick(&f, 0);
    struct raft_entry es[3] = {{.term = 2, .data = "a", .len = 1},
                               {.term = 2, .data = "b", .len = 1},
                               {.term = 2, .data = "c", .len = 1}};
    struct raft_message ae = fx_append(1, 2, 2, 0, 0, es, 3, 3);
    fx_recv(&f, &ae);
    CHECK_EQ(f.u.n_entries, 3);
    CHECK_EQ(f.u.n_apply, 0); /* committed, not yet durable here */
    struct raft_message c = chunk(10, 2, 0, "0123456789", 10, 10);
    fx_recv(&f, &c);
    CHECK(f.u.snapshot_chunk && f.u.snapshot_chunk->done);
    CHECK_EQ(fx_persisted(&f, 3, 2), RAFT_OK);
    CHECK_EQ(f.u.n_apply, 0);
    CHECK_EQ(raft_applied_index(f.r), 0);
    CHECK_EQ(fx_installed(&f, 10, 2, true), RAFT_OK);
    CHECK_EQ(f.u.n_apply, 0);
    CHECK_EQ(raft_applied_index(f.r), 10);
    raft_close(f.r);
}

/* A snapshot the host took of its own state is refused while the leader's
 * is being installed: the leader's is newer, and recording the older one's
 * meta after it left storage with a log that starts after its snapshot (a
 * node that could not start again, found by the kill -9 soak). */
static void test_own_snapshot_refused_while_installing(void)
{
    struct fx f;
    fx_new(&f, 2, 3);
    fx_tick(&f, 0);
    struct raft_entry es[3] = {{.term = 2, .data = "a", .len = 1},
                               {.term = 2, .data = "b", .len = 1},
                               {.term = 2, .data = "c", .len = 1}};
    struct raft_message ae = fx_append(1, 2, 2, 0, 0, es, 3, 3);
    fx_recv(&f, &ae);
    CHECK_EQ(fx_persisted(&f, 3, 2), RAFT_OK);
    CHECK_EQ(raft_applied_index(f.r), 3); /* handed out: the host may snapshot at 3 */
    struct raft_message c = chunk(10, 2, 0, "0123456789", 10, 10);
    fx_recv(&f, &c);
    CHECK(f.u.snapshot_chunk && f.u.snapshot_chunk->done);
    CHECK_EQ(fx_taken(&f, 3, 5), RAFT_EINVAL);
    CHECK_EQ(f.u.compact_index, 0);
    struct raft_snapshot_meta meta;
    CHECK(!raft_snapshot(f.r, &meta));
    CHECK_EQ(fx_installed(&f, 10, 2, true), RAFT_OK);
    CHECK(raft_snapshot(f.r, &meta) && meta.index == 10);
    CHECK_EQ(fx_taken(&f, 3, 5), RAFT_EINVAL); /* and after it, as older than it */
    raft_close(f.r);
}

/* A checksum failure starts the transfer over. */
static void test_checksum_failure_starts_over(void)
{
    struct fx f;
    fx_new(&f, 2, 3);
    fx_tick(&f, 0);
    struct raft_message c = chunk(10, 2, 0, "0123456789", 10, 10);
    fx_recv(&f, &c);
    CHECK(f.u.snapshot_chunk && f.u.snapshot_chunk->done);
    CHECK_EQ(fx_installed(&f, 10, 2, false), RAFT_OK);
    const struct raft_message *res = fx_msg(&f, RAFT_MSG_INSTALL_SNAPSHOT_RESULT, 1);
    CHECK(res && res->install_snapshot_result.rejected);
    CHECK_EQ(raft_commit_index(f.r), 0);
    fx_recv(&f, &c); /* from the start again */
    CHECK(f.u.snapshot_chunk && f.u.snapshot_chunk->offset == 0);
    raft_close(f.r);
}

/* A restart from a snapshot and a compacted log. */
static void test_restart_from_snapshot(void)
{
    raft_id voters[] = {1, 2, 3};
    struct raft_member members[] = {{1, true}, {2, true}, {3, true}, {4, false}};
    struct raft_snapshot_meta snap = {
        .index = 10, .term = 2, .size = 100, .checksum = 1, .members = members, .n_members = 4};
    struct raft_entry log[] = {
        {.term = 2, .index = 9}, {.term = 2, .index = 10}, {.term = 3, .index = 11}};
    struct raft_config cfg;
    fx_config(&cfg, 1);
    struct raft_persisted st = {.current_term = 3,
                                .snapshot = &snap,
                                .first_index = 9,
                                .prev_term = 2,
                                .entries = log,
                                .n_entries = 3,
                                .applied_index = 10,
                                .voters = voters,
                                .n_voters = 3};
    struct fx f;
    fx_start(&f, &cfg, &st);
    CHECK_EQ(raft_last_index(f.r), 11);
    CHECK_EQ(raft_commit_index(f.r), 10);
    CHECK_EQ(raft_term_at(f.r, 8), 2);
    struct raft_member got[8];
    CHECK_EQ(raft_configuration(f.r, got, 8), 4); /* the snapshot's, not the bootstrap's */
    /* A log that does not reach the snapshot is refused. */
    st.first_index = 12;
    struct raft *r;
    CHECK_EQ(raft_init(&r, &cfg, &st), RAFT_ECORRUPT);
    raft_close(f.r);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_snapshot_asked_then_log_compacted),
        HARNESS_TEST(test_leader_sends_snapshot_in_chunks),
        HARNESS_TEST(test_lost_chunk_resent_by_heartbeat),
        HARNESS_TEST(test_snapshot_succeeds_via_append_answer),
        HARNESS_TEST(test_follower_stages_and_installs),
        HARNESS_TEST(test_no_apply_while_installing),
        HARNESS_TEST(test_checksum_failure_starts_over),
        HARNESS_TEST(test_own_snapshot_refused_while_installing),
        HARNESS_TEST(test_restart_from_snapshot),
    };
    return harness_main(argc, argv, "snapshot", tests, sizeof(tests) / sizeof(tests[0]));
}
