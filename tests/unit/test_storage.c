/* Stable storage on LMDB: raft/io/storage.c. Including the claim that
 * matters most: after kill -9 at any moment, every write that
 * storage_commit() acknowledged is there. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "storage.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MAP = 64 << 20 };

static char dir[256];
static char err[512];

static void fresh_dir(void)
{
    char cmd[300];
    unsetenv("RAFTKV_LOG_STORE");
    snprintf(dir, sizeof(dir), "/tmp/raftkv-test-storage-%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

static void remove_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* A fresh directory whose log is in LMDB, as every directory made before
 * the append-only log (wal.h; tests/unit/test_wal.c tests that one): the
 * tests of LMDB's own failure modes need it. */
static void fresh_lmdb_dir(void)
{
    fresh_dir();
    setenv("RAFTKV_LOG_STORE", "lmdb", 1);
}

static struct storage *open_ok(uint64_t cluster, uint64_t node, size_t map)
{
    struct storage *st;
    int rv = storage_open(dir, cluster, node, map, &st, err, sizeof(err));
    if (rv != STORAGE_OK)
        harness_fail(__FILE__, __LINE__, "storage_open: %s", err);
    return st;
}

/* A data directory records its cluster and node; another is refused with a
 * message that says what to do. */
static void test_identity_recorded_and_checked(void)
{
    fresh_dir();
    storage_close(open_ok(0xabc, 1, MAP));
    storage_close(open_ok(0xabc, 1, MAP));
    struct storage *st;
    CHECK_EQ(storage_open(dir, 0xdef, 1, MAP, &st, err, sizeof(err)), STORAGE_EMISMATCH);
    CHECK(strstr(err, "belongs to cluster") && strstr(err, "use a fresh --data"));
    CHECK_EQ(storage_open(dir, 0xabc, 2, MAP, &st, err, sizeof(err)), STORAGE_EMISMATCH);
    remove_dir();
}

/* A data directory draws an incarnation when it is made and keeps it; the
 * peers' recorded incarnations survive a reopen; a wiped directory draws a
 * new one (which is how its peers tell it lost its data). */
static void test_incarnations_recorded(void)
{
    fresh_dir();
    struct storage *st = open_ok(0xabc, 1, MAP);
    uint64_t mine = storage_incarnation(st);
    CHECK(mine != 0);
    CHECK_EQ(storage_peer_incarnation(st, 2), 0);
    CHECK_EQ(storage_set_peer_incarnation(st, 2, 0x2222, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(storage_set_peer_incarnation(st, 3, 0x3333, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(storage_peer_incarnation(st, 2), 0x2222);
    storage_close(st);
    st = open_ok(0xabc, 1, MAP);
    CHECK_EQ(storage_incarnation(st), mine);
    CHECK_EQ(storage_peer_incarnation(st, 2), 0x2222);
    CHECK_EQ(storage_peer_incarnation(st, 3), 0x3333);
    CHECK_EQ(storage_peer_incarnation(st, 4), 0);
    storage_close(st);
    remove_dir();
    st = open_ok(0xabc, 1, MAP);
    CHECK(storage_incarnation(st) != mine);
    CHECK_EQ(storage_peer_incarnation(st, 2), 0);
    /* Forgetting is durable; the next incarnation heard is recorded. */
    CHECK_EQ(storage_set_peer_incarnation(st, 2, 0x2222, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(storage_forget_peer_incarnation(st, 2, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(storage_peer_incarnation(st, 2), 0);
    storage_close(st);
    st = open_ok(0xabc, 1, MAP);
    CHECK_EQ(storage_peer_incarnation(st, 2), 0);
    CHECK_EQ(storage_set_peer_incarnation(st, 2, 0x4444, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(storage_peer_incarnation(st, 2), 0x4444);
    storage_close(st);
    remove_dir();
}

/* A group's base configuration is recorded once; dropping a group keeps
 * only its term and vote, and a later start of it joins (no voters). */
static void test_group_base_and_drop(void)
{
    fresh_dir();
    struct storage *st = open_ok(1, 1, MAP);
    struct storage_loaded l;
    CHECK_EQ(storage_load(st, 5, &l, err, sizeof(err)), STORAGE_OK);
    CHECK(!l.has_base);
    storage_loaded_free(&l);
    const raft_id voters[] = {1, 2, 3};
    CHECK_EQ(storage_set_base(st, 5, voters, 3, err, sizeof(err)), STORAGE_OK);
    struct raft_entry es[] = {{.term = 4, .index = 1, .type = RAFT_ENTRY_NOOP},
                              {.term = 4, .index = 2, .data = "x", .len = 1}};
    struct storage_group_write w = {
        .group = 5, .hard_state = true, .term = 4, .vote = 2, .entries = es, .n_entries = 2};
    CHECK_EQ(storage_commit(st, &w, 1, err, sizeof(err)), STORAGE_OK);
    storage_close(st);

    st = open_ok(1, 1, MAP);
    CHECK_EQ(storage_load(st, 5, &l, err, sizeof(err)), STORAGE_OK);
    CHECK(l.has_base);
    CHECK_EQ(l.n_base, 3);
    CHECK_EQ(l.base[2], 3);
    CHECK_EQ(l.persisted.n_entries, 2);
    storage_loaded_free(&l);
    CHECK_EQ(storage_drop_group(st, 5, NULL, NULL, err, sizeof(err)), STORAGE_OK);
    storage_close(st);

    st = open_ok(1, 1, MAP);
    CHECK_EQ(storage_load(st, 5, &l, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(l.persisted.n_entries, 0);
    CHECK_EQ(l.persisted.current_term, 4); /* a vote in term 4 is not given twice */
    CHECK_EQ(l.persisted.voted_for, 2);
    CHECK(l.has_base);
    CHECK_EQ(l.n_base, 0); /* hosted again, it joins: the leader sends the configuration */
    CHECK(l.persisted.snapshot == NULL);
    storage_loaded_free(&l);
    storage_close(st);
    remove_dir();
}

static void test_hard_state_and_log_round_trip(void)
{
    fresh_dir();
    struct storage *st = open_ok(1, 1, MAP);
    struct raft_entry es[] = {{.term = 1, .index = 1, .type = RAFT_ENTRY_NOOP},
                              {.term = 1, .index = 2, .data = "hello", .len = 5},
                              {.term = 2, .index = 3, .data = "world", .len = 5}};
    struct storage_group_write w = {
        .group = 7, .hard_state = true, .term = 2, .vote = 3, .entries = es, .n_entries = 3};
    CHECK_EQ(storage_commit(st, &w, 1, err, sizeof(err)), STORAGE_OK);
    storage_close(st);

    st = open_ok(1, 1, MAP);
    struct storage_loaded l;
    CHECK_EQ(storage_load(st, 7, &l, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(l.persisted.current_term, 2);
    CHECK_EQ(l.persisted.voted_for, 3);
    CHECK_EQ(l.persisted.first_index, 1);
    CHECK_EQ(l.persisted.n_entries, 3);
    CHECK_EQ(l.persisted.entries[0].type, RAFT_ENTRY_NOOP);
    CHECK_EQ(l.persisted.entries[2].term, 2);
    CHECK(memcmp(l.persisted.entries[1].data, "hello", 5) == 0);
    CHECK(l.persisted.snapshot == NULL);
    storage_loaded_free(&l);
    /* Another group is separate, and empty. */
    CHECK_EQ(storage_load(st, 8, &l, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(l.persisted.n_entries, 0);
    CHECK_EQ(l.persisted.current_term, 0);
    storage_loaded_free(&l);
    storage_close(st);
    remove_dir();
}

/* What a commit cost (make profile reads it from /metrics): the bytes it
 * wrote grow with what it carried, and LMDB's commit took time. */
static void test_commit_cost_reported(void)
{
    fresh_dir();
    struct storage *st = open_ok(1, 1, MAP);
    static char big[64 * 1024];
    memset(big, 'v', sizeof(big));
    struct raft_entry small = {.term = 1, .index = 1, .data = "x", .len = 1};
    struct storage_group_write w = {.group = 3, .entries = &small, .n_entries = 1};
    CHECK_EQ(storage_commit(st, &w, 1, err, sizeof(err)), STORAGE_OK);
    struct storage_cost one;
    storage_last_cost(st, &one);
    CHECK(one.commit_ns > 0);
    /* Linux counts bytes written only where pages are written back to a
     * device: not on tmpfs, where /tmp may be. */
    struct statfs fs;
    if (statfs(dir, &fs) == 0 && fs.f_type == TMPFS_MAGIC) {
        printf("    (bytes not checked: %s is on tmpfs)\n", dir);
        storage_close(st);
        remove_dir();
        return;
    }
    CHECK(one.bytes >= 4096); /* at least a page, and the meta page */
    struct raft_entry large = {.term = 1, .index = 2, .data = big, .len = sizeof(big)};
    w.entries = &large;
    CHECK_EQ(storage_commit(st, &w, 1, err, sizeof(err)), STORAGE_OK);
    struct storage_cost two;
    storage_last_cost(st, &two);
    CHECK(two.bytes >= sizeof(big)); /* the entry's overflow pages */
    CHECK(two.bytes > one.bytes);
    storage_close(st);
    remove_dir();
}

/* Truncation (§5.3), compaction and a snapshot's meta (§7). */
static void test_truncate_compact_snapshot(void)
{
    fresh_dir();
    struct storage *st = open_ok(1, 1, MAP);
    struct raft_entry es[10];
    for (int i = 0; i < 10; i++)
        es[i] = (struct raft_entry){.term = 1, .index = (raft_index)i + 1, .data = "x", .len = 1};
    struct storage_group_write w = {.group = 1, .entries = es, .n_entries = 10};
    CHECK_EQ(storage_commit(st, &w, 1, err, sizeof(err)), STORAGE_OK);
    struct raft_entry repl[] = {{.term = 3, .index = 8, .data = "y", .len = 1}};
    struct storage_group_write t = {
        .group = 1, .truncate_from = 8, .entries = repl, .n_entries = 1};
    CHECK_EQ(storage_commit(st, &t, 1, err, sizeof(err)), STORAGE_OK);
    struct raft_member members[] = {{1, true}, {2, true}, {4, false}};
    struct raft_snapshot_meta snap = {6, 1, 1234, 99, members, 3};
    struct storage_group_write c = {
        .group = 1, .compact_index = 5, .compact_term = 1, .snapshot = &snap};
    CHECK_EQ(storage_commit(st, &c, 1, err, sizeof(err)), STORAGE_OK);
    struct storage_loaded l;
    CHECK_EQ(storage_load(st, 1, &l, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(l.persisted.first_index, 6);
    CHECK_EQ(l.persisted.prev_term, 1);
    CHECK_EQ(l.persisted.n_entries, 3); /* 6, 7 and the new 8 */
    CHECK_EQ(l.persisted.entries[2].index, 8);
    CHECK_EQ(l.persisted.entries[2].term, 3);
    CHECK(l.persisted.snapshot != NULL);
    CHECK_EQ(l.snapshot.index, 6);
    CHECK_EQ(l.snapshot.size, 1234);
    CHECK_EQ(l.snapshot.n_members, 3);
    CHECK(!l.snapshot.members[2].is_voter);
    CHECK_EQ(l.persisted.applied_index, 6);
    storage_loaded_free(&l);
    storage_close(st);
    remove_dir();
}

/* Group commit: several groups in one transaction. */
static void test_group_commit_many_groups(void)
{
    fresh_dir();
    struct storage *st = open_ok(1, 1, MAP);
    struct raft_entry e = {.term = 1, .index = 1, .data = "g", .len = 1};
    struct storage_group_write ws[20];
    for (int g = 0; g < 20; g++)
        ws[g] = (struct storage_group_write){.group = (uint64_t)g,
                                             .hard_state = true,
                                             .term = (raft_term)g + 1,
                                             .entries = &e,
                                             .n_entries = 1};
    CHECK_EQ(storage_commit(st, ws, 20, err, sizeof(err)), STORAGE_OK);
    for (int g = 0; g < 20; g++) {
        struct storage_loaded l;
        CHECK_EQ(storage_load(st, (uint64_t)g, &l, err, sizeof(err)), STORAGE_OK);
        CHECK_EQ(l.persisted.current_term, (raft_term)g + 1);
        CHECK_EQ(l.persisted.n_entries, 1);
        storage_loaded_free(&l);
    }
    storage_close(st);
    remove_dir();
}

/* A full map is an error that stores nothing of the batch; with a larger
 * map the node goes on where it stopped. */
static void test_map_full_then_recover(void)
{
    fresh_lmdb_dir();
    struct storage *st = open_ok(1, 1, 1 << 20); /* 1 MiB */
    static char big[64 * 1024];
    memset(big, 'b', sizeof(big));
    raft_index next = 1;
    int rv = STORAGE_OK;
    for (int i = 0; i < 100 && rv == STORAGE_OK; i++) {
        struct raft_entry e = {.term = 1, .index = next, .data = big, .len = sizeof(big)};
        struct storage_group_write w = {.group = 1, .entries = &e, .n_entries = 1};
        rv = storage_commit(st, &w, 1, err, sizeof(err));
        if (rv == STORAGE_OK)
            next++;
    }
    CHECK_EQ(rv, STORAGE_EFULL);
    CHECK(strstr(err, "nothing of this write was stored"));
    storage_close(st);
    st = open_ok(1, 1, 64 << 20);
    struct storage_loaded l;
    CHECK_EQ(storage_load(st, 1, &l, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(l.persisted.n_entries, next - 1); /* every acknowledged entry, no more */
    storage_loaded_free(&l);
    struct raft_entry e = {.term = 1, .index = next, .data = big, .len = sizeof(big)};
    struct storage_group_write w = {.group = 1, .entries = &e, .n_entries = 1};
    CHECK_EQ(storage_commit(st, &w, 1, err, sizeof(err)), STORAGE_OK);
    storage_close(st);
    remove_dir();
}

/* kill -9 at a random moment: every acknowledged commit survives. The
 * child commits entries one batch at a time and reports each acknowledged
 * index through a pipe; the parent kills it mid-stream, reopens the
 * directory, and checks. */
static void test_kill9_loses_no_acknowledged_write(void)
{
    uint64_t seed = harness_seed((uint64_t)time(NULL));
    for (int round = 0; round < 3; round++) {
        fresh_dir();
        int fds[2];
        CHECK(pipe(fds) == 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            struct storage *st;
            if (storage_open(dir, 1, 1, MAP, &st, err, sizeof(err)) != STORAGE_OK)
                _exit(2);
            char data[100];
            memset(data, 'k', sizeof(data));
            for (raft_index i = 1; i < 1000000; i += 8) {
                struct raft_entry es[8];
                for (int k = 0; k < 8; k++)
                    es[k] = (struct raft_entry){
                        .term = 1, .index = i + (raft_index)k, .data = data, .len = sizeof(data)};
                struct storage_group_write w = {
                    .group = 1, .hard_state = true, .term = i, .entries = es, .n_entries = 8};
                if (storage_commit(st, &w, 1, err, sizeof(err)) != STORAGE_OK)
                    _exit(3);
                raft_index acked = i + 7;
                if (write(fds[1], &acked, sizeof(acked)) != sizeof(acked))
                    _exit(4);
            }
            _exit(0);
        }
        close(fds[1]);
        /* Once it acknowledged its first commit (a loaded machine may take a
         * while to get there), let it run 30-150 ms more, then kill -9. */
        raft_index acked = 0, v;
        if (read(fds[0], &v, sizeof(v)) == sizeof(v))
            acked = v;
        struct timespec pause = {0, (long)(30 + (seed + (uint64_t)round * 7919) % 120) * 1000000L};
        nanosleep(&pause, NULL);
        kill(pid, SIGKILL);
        while (read(fds[0], &v, sizeof(v)) == sizeof(v))
            acked = v;
        close(fds[0]);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        CHECK(acked > 0);
        struct storage *st = open_ok(1, 1, MAP);
        struct storage_loaded l;
        CHECK_EQ(storage_load(st, 1, &l, err, sizeof(err)), STORAGE_OK);
        CHECK(l.persisted.n_entries >= acked);
        CHECK(l.persisted.n_entries % 8 == 0); /* whole batches: all or nothing */
        CHECK(l.persisted.current_term + 7 == l.persisted.n_entries); /* same transaction */
        for (size_t i = 0; i < l.persisted.n_entries; i++)
            CHECK_EQ(l.persisted.entries[i].index, i + 1);
        storage_loaded_free(&l);
        storage_close(st);
        remove_dir();
    }
}

/* ------------------------------------------------------------------------
 * Logs of many LMDB pages. Truncation and compaction walk a cursor over
 * the log while deleting from it; a log that fits in one page hides a
 * cursor used after an update (the bug of an earlier delete_from: it
 * searched again with a key that pointed into the page it had just
 * rewritten, and deleted entries it had to keep while keeping ones it had
 * to delete). These logs span hundreds of pages.
 * ------------------------------------------------------------------------ */

enum { BIG_LOG = 6000 };

static char payload[120];

/* Write entries lo..hi of `term` in one commit (batches of 512). */
static void append_range(struct storage *st, uint64_t group, raft_index lo, raft_index hi,
                         raft_term term)
{
    static struct raft_entry es[512];
    while (lo <= hi) {
        size_t n = 0;
        for (; lo <= hi && n < 512; lo++, n++)
            es[n] = (struct raft_entry){
                .term = term, .index = lo, .data = payload, .len = sizeof(payload)};
        struct storage_group_write w = {.group = group, .entries = es, .n_entries = n};
        if (storage_commit(st, &w, 1, err, sizeof(err)) != STORAGE_OK)
            harness_fail(__FILE__, __LINE__, "storage_commit: %s", err);
    }
}

/* The stored log is exactly first..last, each entry of `term_at(i)`. */
static void expect_log(struct storage *st, uint64_t group, raft_index first, raft_index last,
                       raft_term (*term_at)(raft_index))
{
    struct storage_loaded l;
    if (storage_load(st, group, &l, err, sizeof(err)) != STORAGE_OK)
        harness_fail(__FILE__, __LINE__, "storage_load: %s", err);
    size_t want = last >= first ? (size_t)(last - first + 1) : 0;
    if (l.persisted.n_entries != want) {
        size_t n = l.persisted.n_entries;
        raft_index lo = n ? l.persisted.entries[0].index : 0;
        raft_index hi = n ? l.persisted.entries[n - 1].index : 0;
        storage_loaded_free(&l);
        harness_fail(__FILE__, __LINE__, "log holds %zu entries (%llu..%llu), want %llu..%llu", n,
                     (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)first,
                     (unsigned long long)last);
    }
    for (size_t i = 0; i < want; i++) {
        const struct raft_entry *e = &l.persisted.entries[i];
        if (e->index != first + i || (term_at && e->term != term_at(e->index))) {
            storage_loaded_free(&l);
            harness_fail(__FILE__, __LINE__, "entry %zu is %llu/%llu", i,
                         (unsigned long long)e->index, (unsigned long long)e->term);
        }
    }
    storage_loaded_free(&l);
}

static raft_term term_one(raft_index i)
{
    (void)i;
    return 1;
}

/* Truncate a log of BIG_LOG entries at many points, each from a fresh
 * copy: exactly the prefix stays. */
static void test_truncate_many_pages(void)
{
    memset(payload, 'p', sizeof(payload));
    static const raft_index at[] = {BIG_LOG, BIG_LOG - 1, 5000, 4097, 3001, 2048,
                                    1500,    777,         100,  2,    1};
    fresh_dir();
    struct storage *st = open_ok(1, 1, MAP);
    for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
        uint64_t group = 100 + k;
        append_range(st, group, 1, BIG_LOG, 1);
        struct storage_group_write t = {.group = group, .truncate_from = at[k]};
        CHECK_EQ(storage_commit(st, &t, 1, err, sizeof(err)), STORAGE_OK);
        expect_log(st, group, 1, at[k] - 1, term_one);
    }
    storage_close(st);
    remove_dir();
}

/* Compaction of a long log at many points, then truncation of what is
 * left, then an install that disagrees (the whole log goes) and one that
 * agrees (the tail after the snapshot stays). */
static void test_compact_and_install_many_pages(void)
{
    memset(payload, 'q', sizeof(payload));
    fresh_dir();
    struct storage *st = open_ok(1, 1, MAP);
    append_range(st, 1, 1, BIG_LOG, 1);
    raft_index first = 1;
    struct raft_member one[] = {{1, true}};
    for (raft_index c = 700; c < 4000; c += 911) {
        /* A compaction comes with the snapshot that covers what it drops. */
        struct raft_snapshot_meta at = {c + 10, 1, 10, 1, one, 1};
        struct storage_group_write w = {
            .group = 1, .compact_index = c, .compact_term = 1, .snapshot = &at};
        CHECK_EQ(storage_commit(st, &w, 1, err, sizeof(err)), STORAGE_OK);
        first = c + 1;
        expect_log(st, 1, first, BIG_LOG, term_one);
    }
    struct storage_group_write t = {.group = 1, .truncate_from = 5123};
    CHECK_EQ(storage_commit(st, &t, 1, err, sizeof(err)), STORAGE_OK);
    expect_log(st, 1, first, 5122, term_one);

    /* A snapshot at 9000 of term 3: nothing of the log agrees, all goes. */
    struct raft_member members[] = {{1, true}, {2, true}, {3, true}};
    struct raft_snapshot_meta snap = {9000, 3, 10, 1, members, 3};
    struct storage_group_write i1 = {.group = 1, .snapshot = &snap, .install = true};
    CHECK_EQ(storage_commit(st, &i1, 1, err, sizeof(err)), STORAGE_OK);
    expect_log(st, 1, 9001, 9000, NULL);

    /* A new log after it; then a snapshot inside it that agrees: its tail stays. */
    append_range(st, 1, 9001, 9000 + BIG_LOG, 3);
    struct raft_snapshot_meta snap2 = {11500, 3, 10, 1, members, 3};
    struct storage_group_write i2 = {.group = 1, .snapshot = &snap2, .install = true};
    CHECK_EQ(storage_commit(st, &i2, 1, err, sizeof(err)), STORAGE_OK);
    expect_log(st, 1, 11501, 9000 + BIG_LOG, NULL);
    storage_close(st);
    remove_dir();
}

/* A write that would leave the log with a hole, or without the entry it
 * wrote, is refused in its transaction: nothing of the batch is stored
 * and the error says what broke (the check after every write). */
static void test_write_breaking_the_log_is_refused(void)
{
    fresh_lmdb_dir();
    struct storage *st = open_ok(1, 1, MAP);
    append_range(st, 1, 1, 10, 1);
    struct raft_entry gap[] = {{.term = 2, .index = 12, .data = "g", .len = 1}};
    struct storage_group_write w = {
        .group = 1, .hard_state = true, .term = 2, .entries = gap, .n_entries = 1};
    CHECK_EQ(storage_commit(st, &w, 1, err, sizeof(err)), STORAGE_ECORRUPT);
    CHECK(strstr(err, "a hole") && strstr(err, "nothing of it was stored"));
    /* An empty log starts at its first index, not after it. */
    struct storage_group_write late = {.group = 2, .entries = gap, .n_entries = 1};
    CHECK_EQ(storage_commit(st, &late, 1, err, sizeof(err)), STORAGE_ECORRUPT);
    CHECK(strstr(err, "its first entries missing"));
    struct storage_loaded l;
    CHECK_EQ(storage_load(st, 1, &l, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(l.persisted.n_entries, 10);
    CHECK_EQ(l.persisted.current_term, 0); /* the hard state of the refused batch is not there */
    storage_loaded_free(&l);
    storage_close(st);
    remove_dir();
}

/* Two data directories that real nodes could no longer start from (the
 * old delete_from): the start names what is wrong and what to do, never
 * "does not decode". tests/fixtures/README.md tells their stories. */
static void expect_damaged(const char *fixture, uint64_t node, const char *what)
{
    char cmd[600];
    fresh_dir();
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cp tests/fixtures/%s/data.mdb '%s'/", dir, fixture,
             dir);
    CHECK(system(cmd) == 0);
    struct storage *st = open_ok(0x8c656a6f66221d70ULL, node, 1ULL << 30);
    struct storage_loaded l;
    CHECK_EQ(storage_load(st, 1, &l, err, sizeof(err)), STORAGE_ECORRUPT);
    if (!strstr(err, what))
        harness_fail(__FILE__, __LINE__, "want \"%s\" in: %s", what, err);
    CHECK(strstr(err, "must not rejoin with this log"));
    CHECK(!strstr(err, "does not decode"));
    storage_close(st);
    remove_dir();
}

static void test_fixture_log_hole_named(void)
{
    expect_damaged("log-hole", 3,
                   "log of group 1 has a hole at 90701 (first index 88516, stored "
                   "88516..91704)");
}

/* A byte of a stored log record changed on disk (format 2 checksums every
 * record): the start names the entry instead of handing the core a log it
 * would trust. Format 1 directories (the fixtures) are still read. */
static void test_flipped_byte_in_log_named(void)
{
    fresh_lmdb_dir();
    struct storage *st = open_ok(1, 1, MAP);
    append_range(st, 1, 1, 10, 1);
    storage_close(st);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi log;
    CHECK_EQ(mdb_env_create(&env), 0);
    CHECK_EQ(mdb_env_set_maxdbs(env, 16), 0);
    CHECK_EQ(mdb_env_open(env, dir, 0, 0644), 0);
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ(mdb_dbi_open(txn, "g1.log", MDB_INTEGERKEY, &log), 0);
    size_t key = 7;
    MDB_val k = {sizeof(key), &key}, d;
    CHECK_EQ(mdb_get(txn, log, &k, &d), 0);
    uint8_t copy[256];
    CHECK(d.mv_size <= sizeof(copy) && d.mv_size > 20);
    memcpy(copy, d.mv_data, d.mv_size);
    copy[d.mv_size - 1] ^= 0x01; /* one bit of its data */
    MDB_val flipped = {d.mv_size, copy};
    CHECK_EQ(mdb_put(txn, log, &k, &flipped, 0), 0);
    CHECK_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    st = open_ok(1, 1, MAP);
    struct storage_loaded l;
    CHECK_EQ(storage_load(st, 1, &l, err, sizeof(err)), STORAGE_ECORRUPT);
    CHECK(strstr(err, "log of group 1: entry 7 fails its checksum"));
    storage_close(st);
    remove_dir();
}

/* A healthy file is never called truncated: a meta page may count pages
 * LMDB never wrote (taken at the end of the file and freed in the same
 * transaction: a big value written and deleted at once). */
static void test_healthy_file_with_unwritten_pages_opens(void)
{
    fresh_dir();
    static char big[128 * 1024];
    memset(big, 'b', sizeof(big));
    uint64_t seed = 2;
    for (int round = 0; round < 10; round++) {
        struct storage *st = open_ok(1, 1, MAP); /* checks the file the last round left */
        MDB_env *env = storage_env(st);
        for (int i = 0; i < 20; i++) {
            MDB_txn *txn;
            MDB_dbi db;
            CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
            CHECK_EQ(mdb_dbi_open(txn, "scratch", MDB_CREATE, &db), 0);
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            char key[32];
            snprintf(key, sizeof(key), "k%d.%d", round, i);
            MDB_val k = {strlen(key), key}, v = {20000 + (size_t)(seed >> 33) % 100000, big};
            CHECK_EQ(mdb_put(txn, db, &k, &v, 0), 0);
            if ((seed >> 20) & 1)
                CHECK_EQ(mdb_del(txn, db, &k, NULL), 0);
            CHECK_EQ(mdb_txn_commit(txn), 0);
        }
        storage_close(st);
    }
    storage_close(open_ok(1, 1, MAP));
    remove_dir();
}

static void test_fixture_snapshot_behind_log_named(void)
{
    expect_damaged("snapshot-behind-log", 3,
                   "log of group 1 starts at 148746 but its snapshot is at 147629: entries "
                   "147630..148745 are in neither");
}

/* A write that would record an older snapshot than the log needs (a
 * compaction past it) is refused in its transaction. */
static void test_write_leaving_log_after_snapshot_refused(void)
{
    fresh_dir();
    struct storage *st = open_ok(1, 1, MAP);
    append_range(st, 1, 1, 100, 1);
    struct raft_member members[] = {{1, true}};
    struct raft_snapshot_meta snap = {50, 1, 10, 1, members, 1};
    struct storage_group_write ok = {
        .group = 1, .snapshot = &snap, .compact_index = 40, .compact_term = 1};
    CHECK_EQ(storage_commit(st, &ok, 1, err, sizeof(err)), STORAGE_OK);
    struct storage_group_write bad = {.group = 1, .compact_index = 60, .compact_term = 1};
    CHECK_EQ(storage_commit(st, &bad, 1, err, sizeof(err)), STORAGE_ECORRUPT);
    CHECK(strstr(err, "starting at 61 after its snapshot at 50"));
    struct storage_loaded l;
    CHECK_EQ(storage_load(st, 1, &l, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(l.persisted.first_index, 41);
    storage_loaded_free(&l);
    storage_close(st);
    remove_dir();
}

static void test_fixture_stale_after_install_named(void)
{
    expect_damaged("stale-after-install", 5,
                   "log of group 1 holds 1487 entries (31669..33155) below its first index 40955");
}

/* ------------------------------------------------------------------------
 * The data directory itself: one process at a time, and a data file LMDB
 * could not map safely is named at start instead of crashing the node.
 * ------------------------------------------------------------------------ */

/* storage_open of dir (and, when it opens, a load of group 1) in a child
 * process: a crash there is a failed check, not the end of the suite. The
 * child's message is left in err; returns its exit code (the STORAGE_
 * code), or -1 with *status saying how it died. */
static int open_in_child(int *status)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        struct storage *st;
        err[0] = '\0';
        int rv = storage_open(dir, 1, 1, MAP, &st, err, sizeof(err));
        if (rv == STORAGE_OK) {
            struct storage_loaded l;
            if ((rv = storage_load(st, 1, &l, err, sizeof(err))) == STORAGE_OK)
                storage_loaded_free(&l);
            storage_close(st);
        }
        /* An exit status holds 8 bits: STORAGE_ codes (301..) go as code - 300. */
        _exit(write(fds[1], err, strlen(err)) < 0 ? 99 : rv ? rv - 300 : 0);
    }
    close(fds[1]);
    memset(err, 0, sizeof(err));
    size_t got = 0;
    ssize_t r;
    while (got < sizeof(err) - 1 && (r = read(fds[0], err + got, sizeof(err) - 1 - got)) > 0)
        got += (size_t)r;
    close(fds[0]);
    CHECK(waitpid(pid, status, 0) == pid);
    int code = WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
    return code > 0 && code != 99 ? code + 300 : code;
}

static void expect_in_err(const char *want, int line)
{
    if (!strstr(err, want))
        harness_fail(__FILE__, line, "want \"%s\" in: %s", want, err);
}

/* Two processes on one environment would each be "node 1" to the peers:
 * the second open is refused, in this process and in another, with a
 * message naming the holder; once closed, the directory is free. */
static void test_data_dir_locked_while_open(void)
{
    fresh_dir();
    struct storage *st = open_ok(1, 1, MAP), *again;
    int rv = storage_open(dir, 1, 1, MAP, &again, err, sizeof(err));
    if (rv == STORAGE_OK) {
        storage_close(again);
        storage_close(st);
        harness_fail(__FILE__, __LINE__, "a second storage_open of %s succeeded", dir);
    }
    CHECK_EQ(rv, STORAGE_ELOCKED);
    char want[512];
    snprintf(want, sizeof(want),
             "data dir %s is in use by process %d (node 1 of cluster 0000000000000001; another "
             "kvd with this --data?)",
             dir, (int)getpid());
    expect_in_err(want, __LINE__);
    int status;
    rv = open_in_child(&status);
    storage_close(st);
    CHECK_EQ(rv, STORAGE_ELOCKED);
    expect_in_err(want, __LINE__);
    storage_close(open_ok(1, 1, MAP));
    remove_dir();
}

/* The lock goes with its process: after kill -9 of the holder, the next
 * open succeeds (no stale lock to clear by hand). */
static void test_lock_dies_with_its_process(void)
{
    fresh_dir();
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        struct storage *st;
        char ok = storage_open(dir, 1, 1, MAP, &st, err, sizeof(err)) == STORAGE_OK;
        if (write(fds[1], &ok, 1) != 1)
            _exit(2);
        pause();
        _exit(0);
    }
    close(fds[1]);
    char ok = 0;
    CHECK(read(fds[0], &ok, 1) == 1 && ok);
    close(fds[0]);
    struct storage *st;
    int rv = storage_open(dir, 1, 1, MAP, &st, err, sizeof(err));
    if (rv == STORAGE_OK)
        storage_close(st);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    CHECK_EQ(rv, STORAGE_ELOCKED);
    char want[64];
    snprintf(want, sizeof(want), "in use by process %d ", (int)pid);
    expect_in_err(want, __LINE__);
    storage_close(open_ok(1, 1, MAP));
    remove_dir();
}

/* A data file cut short (a bad copy, a full disk during a restore) made
 * the first read of a missing page a SIGBUS: now the open names the file,
 * its size and the size its meta pages need, and says what to do. */
static void test_truncated_data_file_named(void)
{
    fresh_lmdb_dir();
    memset(payload, 't', sizeof(payload));
    struct storage *st = open_ok(1, 1, MAP);
    append_range(st, 1, 1, 3000, 1);
    MDB_envinfo info;
    MDB_stat stat;
    CHECK(mdb_env_info(storage_env(st), &info) == 0);
    CHECK(mdb_env_stat(storage_env(st), &stat) == 0);
    storage_close(st);
    unsigned long long need = (unsigned long long)(info.me_last_pgno + 1) * stat.ms_psize;
    char file[300];
    snprintf(file, sizeof(file), "%s/data.mdb", dir);
    const unsigned long long sizes[] = {need / 2, need - stat.ms_psize, 5000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        CHECK(truncate(file, (off_t)sizes[i]) == 0);
        int status, rv = open_in_child(&status);
        if (rv < 0)
            harness_fail(__FILE__, __LINE__, "opening a data file of %llu bytes (of %llu): %s",
                         sizes[i], need,
                         WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "no exit code");
        CHECK_EQ(rv, STORAGE_ECORRUPT);
        char want[512];
        snprintf(want, sizeof(want),
                 "data file %s is truncated: %llu bytes, LMDB needs at least %llu (restore it "
                 "from a copy, or replace the node)",
                 file, sizes[i], need);
        expect_in_err(want, __LINE__);
    }
    /* An empty data file is a fresh directory. */
    CHECK(truncate(file, 0) == 0);
    int status;
    CHECK_EQ(open_in_child(&status), STORAGE_OK);
    remove_dir();
}

/* Meta pages that are not LMDB's: named, page by page, before LMDB maps
 * the file. */
static void test_garbage_meta_page_named(void)
{
    fresh_dir();
    struct storage *st = open_ok(1, 1, MAP);
    MDB_stat stat;
    CHECK(mdb_env_stat(storage_env(st), &stat) == 0);
    storage_close(st);
    char file[300];
    snprintf(file, sizeof(file), "%s/data.mdb", dir);
    int fd = open(file, O_RDWR);
    CHECK(fd >= 0);
    for (int page = 0; page < 2; page++) {
        uint8_t keep[64], junk[64];
        off_t at = (off_t)page * stat.ms_psize;
        memset(junk, 0x5a, sizeof(junk));
        if (pread(fd, keep, sizeof(keep), at) != (ssize_t)sizeof(keep) ||
            pwrite(fd, junk, sizeof(junk), at) != (ssize_t)sizeof(junk)) {
            close(fd);
            harness_fail(__FILE__, __LINE__, "cannot rewrite page %d of %s", page, file);
        }
        int status, rv = open_in_child(&status);
        bool restored = pwrite(fd, keep, sizeof(keep), at) == (ssize_t)sizeof(keep);
        if (rv != STORAGE_ECORRUPT || !restored) {
            close(fd);
            harness_fail(__FILE__, __LINE__, "page %d garbage: open gave %d: %s", page, rv, err);
        }
        char want[512];
        snprintf(want, sizeof(want),
                 "data file %s is unreadable: its meta page %d is not an LMDB meta page (restore "
                 "it from a copy, or replace the node)",
                 file, page);
        if (!strstr(err, want)) {
            close(fd);
            harness_fail(__FILE__, __LINE__, "want \"%s\" in: %s", want, err);
        }
    }
    close(fd);
    int status;
    CHECK_EQ(open_in_child(&status), STORAGE_OK);
    remove_dir();
}

/* A disk that fills up during a commit: the kernel cuts the write short,
 * and LMDB reports EIO (it passes on ENOSPC only when nothing fit). A file
 * size limit (RLIMIT_FSIZE) cuts writes short the same way, without root:
 * the message must point at free space and a restart, not just say
 * "Input/output error". */
static void test_commit_cut_short_says_what_to_do(void)
{
    fresh_lmdb_dir();
    storage_close(open_ok(1, 1, MAP));
    char file[300];
    snprintf(file, sizeof(file), "%s/data.mdb", dir);
    struct stat sb;
    CHECK(stat(file, &sb) == 0);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        signal(SIGXFSZ, SIG_IGN); /* the write fails instead of killing us */
        struct rlimit lim = {(rlim_t)sb.st_size + 300000, (rlim_t)sb.st_size + 300000};
        struct storage *st;
        int rv = setrlimit(RLIMIT_FSIZE, &lim) != 0
                     ? 98
                     : storage_open(dir, 1, 1, MAP, &st, err, sizeof(err));
        static char big[20000];
        for (raft_index i = 1; rv == STORAGE_OK && i < 100; i++) {
            struct raft_entry e = {.term = 1, .index = i, .data = big, .len = sizeof(big)};
            struct storage_group_write w = {.group = 1, .entries = &e, .n_entries = 1};
            rv = storage_commit(st, &w, 1, err, sizeof(err));
        }
        /* An exit status holds 8 bits: STORAGE_ codes (301..) go as code - 300. */
        _exit(write(fds[1], err, strlen(err)) < 0 ? 99 : rv ? rv - 300 : 0);
    }
    close(fds[1]);
    memset(err, 0, sizeof(err));
    size_t got = 0;
    ssize_t r;
    while (got < sizeof(err) - 1 && (r = read(fds[0], err + got, sizeof(err) - 1 - got)) > 0)
        got += (size_t)r;
    close(fds[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status) + 300, STORAGE_EIO);
    expect_in_err("storage: I/O error while committing", __LINE__);
    expect_in_err("no space left on device", __LINE__);
    expect_in_err("then restart the node", __LINE__);
    remove_dir();
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_identity_recorded_and_checked),
        HARNESS_TEST(test_incarnations_recorded),
        HARNESS_TEST(test_group_base_and_drop),
        HARNESS_TEST(test_hard_state_and_log_round_trip),
        HARNESS_TEST(test_truncate_compact_snapshot),
        HARNESS_TEST(test_commit_cost_reported),
        HARNESS_TEST(test_group_commit_many_groups),
        HARNESS_TEST(test_map_full_then_recover),
        HARNESS_TEST(test_kill9_loses_no_acknowledged_write),
        HARNESS_TEST(test_truncate_many_pages),
        HARNESS_TEST(test_compact_and_install_many_pages),
        HARNESS_TEST(test_write_breaking_the_log_is_refused),
        HARNESS_TEST(test_fixture_log_hole_named),
        HARNESS_TEST(test_fixture_stale_after_install_named),
        HARNESS_TEST(test_fixture_snapshot_behind_log_named),
        HARNESS_TEST(test_flipped_byte_in_log_named),
        HARNESS_TEST(test_healthy_file_with_unwritten_pages_opens),
        HARNESS_TEST(test_write_leaving_log_after_snapshot_refused),
        HARNESS_TEST(test_data_dir_locked_while_open),
        HARNESS_TEST(test_lock_dies_with_its_process),
        HARNESS_TEST(test_truncated_data_file_named),
        HARNESS_TEST(test_garbage_meta_page_named),
        HARNESS_TEST(test_commit_cut_short_says_what_to_do),
    };
    return harness_main(argc, argv, "storage", tests, sizeof(tests) / sizeof(tests[0]));
}
