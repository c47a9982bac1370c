/* Three Raft nodes in one process on loopback, with real storage and TCP:
 * raft/io/node.c wiring core, storage and transport by the host contract.
 * They elect a leader, commit and apply entries everywhere, and after all
 * three stop and start again from their data directories nothing
 * committed is lost and they go on. A commit that only applies lingers for
 * the next writes and is joined by them, or ended by raft_node_flush() or
 * a stop. Every wait has a timeout. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "node.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

enum { N = 3, GROUP = 1 };

static uv_loop_t loop;
static struct raft_node *nodes[N];
static int applied[N];
static char dirs[N][128];
static struct raft_node_peer peers[N];
static const struct raft_node_group groups[] = {{.id = GROUP}};

/* A volatile state machine: it counts what it is given, so after a
 * restart the node replays the whole log into it. */
static void on_applied(void *data, uint64_t group, const struct raft_entry *e, size_t n,
                       void *result, bool committed)
{
    (void)group;
    (void)result;
    for (size_t i = 0; committed && i < n; i++)
        if (e[i].type == RAFT_ENTRY_NORMAL)
            applied[(intptr_t)data]++;
}

/* Staged on the storage thread, and announced before the commit. */
static int early[N];

static int on_apply(void *data, uint64_t group, void *txn, const struct raft_entry *e, size_t n,
                    void **result, char *err, size_t errlen)
{
    (void)data, (void)group, (void)txn, (void)e, (void)n, (void)err, (void)errlen;
    *result = (void *)1; /* anything non-NULL: results() is called */
    return 0;
}

static void on_results(void *data, uint64_t group, const struct raft_entry *e, size_t n,
                       void *result)
{
    (void)group, (void)result;
    for (size_t i = 0; i < n; i++)
        if (e[i].type == RAFT_ENTRY_NORMAL)
            early[(intptr_t)data]++;
}

static const struct raft_node_callbacks callbacks = {
    .apply = on_apply, .results = on_results, .applied = on_applied};

static uint32_t linger_us;

static void start_all(void)
{
    for (int i = 0; i < N; i++) {
        struct raft_node_config cfg = {.cluster_id = 0x5eed,
                                       .id = (raft_id)i + 1,
                                       .data_dir = dirs[i],
                                       .map_size_bytes = 64 << 20,
                                       .host = "127.0.0.1",
                                       .port = peers[i].port,
                                       .peers = peers,
                                       .n_peers = N,
                                       .groups = groups,
                                       .n_groups = 1,
                                       .tick_ms = 10,
                                       .apply_linger_us = linger_us};
        raft_config_default(&cfg.raft);
        cfg.raft.election_timeout_ms = 300;
        cfg.raft.heartbeat_interval_ms = 50;
        char err[256];
        if (raft_node_start(&nodes[i], &loop, &cfg, &callbacks, (void *)(intptr_t)i, err,
                            sizeof(err)) != 0)
            harness_fail(__FILE__, __LINE__, "raft_node_start: %s", err);
        applied[i] = early[i] = 0;
    }
}

static void make_dirs(int base)
{
    for (int i = 0; i < N; i++) {
        snprintf(dirs[i], sizeof(dirs[i]), "/tmp/raftkv-test-node-%d-%d", (int)getpid(), i + 1);
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dirs[i]);
        CHECK(system(cmd) == 0);
        peers[i] = (struct raft_node_peer){(raft_id)i + 1, "127.0.0.1", (uint16_t)(base + i)};
    }
}

static void remove_dirs(void)
{
    for (int i = 0; i < N; i++) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dirs[i]);
        CHECK(system(cmd) == 0);
    }
}

static void stop_all(void)
{
    for (int i = 0; i < N; i++)
        raft_node_stop(nodes[i]);
    /* A batch may still be on the storage thread: wait until every handle
     * is closed (bounded). */
    for (int k = 0; k < 5000 && uv_run(&loop, UV_RUN_NOWAIT); k++)
        uv_sleep(1);
}

static int leader(void)
{
    for (int i = 0; i < N; i++)
        if (raft_role_of(raft_node_raft(nodes[i], GROUP)) == RAFT_LEADER)
            return i;
    return -1;
}

static void run_ms(unsigned ms)
{
    uint64_t until = uv_now(&loop) + ms;
    while (uv_now(&loop) < until) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
        uv_update_time(&loop);
    }
}

static bool wait_leader(unsigned timeout_ms)
{
    for (unsigned t = 0; t < timeout_ms && leader() < 0; t += 5)
        run_ms(5);
    return leader() >= 0;
}

static bool wait_applied(int want, unsigned timeout_ms)
{
    for (unsigned t = 0; t < timeout_ms; t += 5) {
        bool all = true;
        for (int i = 0; i < N; i++)
            all &= applied[i] >= want;
        if (all)
            return true;
        run_ms(5);
    }
    return false;
}

static void test_cluster_commits_and_survives_restart(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    linger_us = 0;
    make_dirs(31000 + (int)(getpid() % 5000) * 3);
    start_all();
    CHECK(wait_leader(5000));
    int l = leader();
    run_ms(100); /* let the leader's no-op settle */
    struct raft_node_stats before;
    raft_node_stats(nodes[l], &before);
    for (int k = 0; k < 20; k++) {
        char cmd[32];
        snprintf(cmd, sizeof(cmd), "set k%d", k);
        CHECK_EQ(raft_node_propose(nodes[l], GROUP, cmd, strlen(cmd)), RAFT_OK);
    }
    CHECK(wait_applied(20, 5000));
    /* The 20 proposals of one loop turn were proposed together and written
     * in one transaction (one fsync); applying them may take another. */
    struct raft_node_stats st;
    raft_node_stats(nodes[l], &st);
    CHECK_EQ(st.entries - before.entries, 20);
    CHECK(st.commits - before.commits <= 3);
    raft_index last = raft_last_index(raft_node_raft(nodes[l], GROUP));
    CHECK(last >= 21);
    /* A follower refuses a proposal and names the leader. */
    int f = (l + 1) % N;
    CHECK_EQ(raft_node_propose(nodes[f], GROUP, "x", 1), RAFT_ENOTLEADER);

    stop_all();
    start_all(); /* from the same directories */
    for (int i = 0; i < N; i++)
        CHECK(raft_last_index(raft_node_raft(nodes[i], GROUP)) >= last - 1);
    CHECK(wait_leader(5000));
    l = leader();
    CHECK_EQ(raft_node_propose(nodes[l], GROUP, "after", 5), RAFT_OK);
    /* Replay applies the 20 old entries again (the state machine here is
     * volatile), then the new one. */
    CHECK(wait_applied(21, 5000));
    stop_all();
    CHECK_EQ(uv_loop_close(&loop), 0);
    remove_dirs();
}

static bool wait_for(int *counter, int want, unsigned timeout_ms)
{
    for (unsigned t = 0; t < timeout_ms && *counter < want; t += 5)
        run_ms(5);
    return *counter >= want;
}

/* A linger of a minute: any wait below that ends only because writes
 * joined the lingering commit, or a flush or a stop ended it. */
static void test_apply_commit_lingers_for_the_next_writes(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    linger_us = 60 * 1000 * 1000;
    make_dirs(36000 + (int)(getpid() % 5000) * 3);
    start_all();
    CHECK(wait_leader(5000));
    int l = leader();
    run_ms(100); /* the leader's no-op */
    struct raft_node_stats st0, st;
    raft_node_stats(nodes[l], &st0);
    CHECK_EQ(raft_node_propose(nodes[l], GROUP, "a", 1), RAFT_OK);
    /* Committed and staged: its result is out... */
    CHECK(wait_for(&early[l], 1, 5000));
    run_ms(50);
    /* ...but the apply-only commit waits, transaction open. */
    CHECK_EQ(applied[l], 0);
    /* The next write joins it: both commit with one sync. */
    CHECK_EQ(raft_node_propose(nodes[l], GROUP, "b", 1), RAFT_OK);
    CHECK(wait_for(&applied[l], 1, 5000));
    raft_node_stats(nodes[l], &st);
    CHECK(st.joined > st0.joined);
    /* "b" is staged and lingers in turn; a flush (a read waiting for it)
     * ends the wait. */
    CHECK(wait_for(&early[l], 2, 5000));
    CHECK_EQ(applied[l], 1);
    raft_node_flush(nodes[l]);
    CHECK(wait_for(&applied[l], 2, 5000));
    raft_node_stats(nodes[l], &st);
    CHECK(st.apply_only > st0.apply_only);
    /* A stop ends a linger too (stop_all's wait is bounded at 5 s; the
     * loop closes only if every handle did). */
    CHECK_EQ(raft_node_propose(nodes[l], GROUP, "c", 1), RAFT_OK);
    CHECK(wait_for(&early[l], 3, 5000));
    stop_all();
    CHECK_EQ(uv_loop_close(&loop), 0);
    remove_dirs();
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_cluster_commits_and_survives_restart),
        HARNESS_TEST(test_apply_commit_lingers_for_the_next_writes),
    };
    return harness_main(argc, argv, "node", tests, sizeof(tests) / sizeof(tests[0]));
}
