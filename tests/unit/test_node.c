/* Three Raft nodes in one process on loopback, with real storage and TCP:
 * raft/io/node.c wiring core, storage and transport by the host contract.
 * They elect a leader, commit and apply entries everywhere, and after all
 * three stop and start again from their data directories nothing
 * committed is lost and they go on. A commit that only applies lingers for
 * the next writes and is joined by them, or ended by raft_node_flush() or
 * a stop. A restart finishes what a crash cut in two between the log's
 * commit and the state machine's: an install, a group's drop. Every wait
 * has a timeout. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "node.h"
#include "storage.h"

#include <lmdb.h>
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
static bool on_loop;

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
                                       .apply_linger_us = linger_us,
                                       .apply_on_loop = on_loop};
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

static void cluster_commits_and_survives_restart(int port_base)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    linger_us = 0;
    make_dirs(port_base + (int)(getpid() % 5000) * 3);
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
    /* Applied where the configuration says. */
    CHECK(on_loop ? st.on_loop > before.on_loop : st.on_loop == 0);
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

static void test_cluster_commits_and_survives_restart(void)
{
    on_loop = false;
    cluster_commits_and_survives_restart(31000);
}

/* kvd's default (--apply loop): committed entries applied on the loop. */
static void test_cluster_applies_on_the_loop(void)
{
    on_loop = true;
    cluster_commits_and_survives_restart(46000);
    on_loop = false;
}

static bool wait_for(int *counter, int want, unsigned timeout_ms)
{
    for (unsigned t = 0; t < timeout_ms && *counter < want; t += 5)
        run_ms(5);
    return *counter >= want;
}

/* A linger of a minute: any wait below that ends only because the next
 * entries to apply joined the lingering commit, or a flush or a stop
 * ended it. */
static void test_apply_commit_lingers_for_the_next_entries(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    linger_us = 60 * 1000 * 1000;
    make_dirs(36000 + (int)(getpid() % 5000) * 3);
    start_all();
    CHECK(wait_leader(5000));
    int l = leader();
    run_ms(100); /* the leader's no-op, applied and lingering: end that */
    raft_node_flush(nodes[l]);
    run_ms(50);
    struct raft_node_stats st0, st;
    raft_node_stats(nodes[l], &st0);
    CHECK_EQ(raft_node_propose(nodes[l], GROUP, "a", 1), RAFT_OK);
    /* Committed and staged: its result is out... */
    CHECK(wait_for(&early[l], 1, 5000));
    run_ms(50);
    /* ...but its apply commit waits, transaction open. */
    CHECK_EQ(applied[l], 0);
    /* The next entry to apply joins it: both commit with one sync. */
    CHECK_EQ(raft_node_propose(nodes[l], GROUP, "b", 1), RAFT_OK);
    CHECK(wait_for(&applied[l], 2, 5000));
    CHECK_EQ(early[l], 2);
    raft_node_stats(nodes[l], &st);
    CHECK(st.joined > st0.joined);
    /* "c" is staged and lingers in turn; a flush (a read waiting for it)
     * ends the wait. */
    CHECK_EQ(raft_node_propose(nodes[l], GROUP, "c", 1), RAFT_OK);
    CHECK(wait_for(&early[l], 3, 5000));
    run_ms(50);
    CHECK_EQ(applied[l], 2);
    raft_node_flush(nodes[l]);
    CHECK(wait_for(&applied[l], 3, 5000));
    raft_node_stats(nodes[l], &st);
    CHECK(st.apply_only > st0.apply_only);
    /* The log's commits never waited for it: the entries were persisted
     * by commits of their own. */
    CHECK(st.commits > st0.commits);
    /* A stop ends a linger too (stop_all's wait is bounded at 5 s; the
     * loop closes only if every handle did). */
    CHECK_EQ(raft_node_propose(nodes[l], GROUP, "d", 1), RAFT_OK);
    CHECK(wait_for(&early[l], 4, 5000));
    stop_all();
    CHECK_EQ(uv_loop_close(&loop), 0);
    remove_dirs();
}

/* A data directory made before the state machine had an environment of
 * its own: the node database does not say "sm", and there is no sm/. */
static void make_legacy(const char *dir)
{
    char err[256], cmd[512];
    struct storage *st;
    CHECK_EQ(storage_open(dir, 0x5eed, 1, 64 << 20, &st, err, sizeof(err)), STORAGE_OK);
    storage_close(st);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi node;
    MDB_val k = {2, "sm"};
    CHECK_EQ(mdb_env_create(&env), 0);
    CHECK_EQ(mdb_env_set_maxdbs(env, 8), 0);
    CHECK_EQ(mdb_env_open(env, dir, 0, 0644), 0);
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ(mdb_dbi_open(txn, "node", 0, &node), 0);
    CHECK_EQ(mdb_del(txn, node, &k, NULL), 0);
    CHECK_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/sm'", dir);
    CHECK(system(cmd) == 0);
}

/* The same cluster on such directories: log and state machine share one
 * environment, the log thread and the apply thread take turns at its
 * write lock, and nothing is lost across a restart. */
static void test_cluster_on_data_dirs_from_before_the_split(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    linger_us = 1000; /* not used there: it would hold up the log's writes */
    make_dirs(31000 + (int)(getpid() % 5000) * 3);
    /* Node 1 on the old kind, nodes 2 and 3 on fresh directories made by
     * this build: both kinds in one cluster. */
    make_legacy(dirs[0]);
    start_all();
    CHECK(wait_leader(5000));
    int l = leader();
    for (int k = 0; k < 20; k++)
        CHECK_EQ(raft_node_propose(nodes[l], GROUP, "v", 1), RAFT_OK);
    CHECK(wait_applied(20, 5000));
    stop_all();
    char sm[300];
    snprintf(sm, sizeof(sm), "%s/sm", dirs[0]);
    CHECK(access(sm, F_OK) != 0); /* still one environment */
    start_all();
    CHECK(wait_leader(5000));
    l = leader();
    CHECK_EQ(raft_node_propose(nodes[l], GROUP, "after", 5), RAFT_OK);
    CHECK(wait_applied(21, 5000)); /* replayed into the volatile state machine, then one more */
    stop_all();
    CHECK_EQ(uv_loop_close(&loop), 0);
    remove_dirs();
}

/* One node's start, for the restart tests: what its host was asked. */
static struct {
    raft_index applied; /* what open_group says the state machine holds */
    int opens, restores, drops, dropped, installed;
    raft_index restored_at;
} host;

static int rs_open_group(void *data, uint64_t group, void *env, raft_index *at, char *err,
                         size_t errlen)
{
    (void)data, (void)group, (void)env, (void)err, (void)errlen;
    host.opens++;
    *at = host.applied;
    return 0;
}

static int rs_restore(void *data, uint64_t group, void *txn, const struct raft_snapshot_meta *meta,
                      char *err, size_t errlen)
{
    (void)data, (void)group, (void)txn, (void)err, (void)errlen;
    host.restores++;
    host.restored_at = meta->index;
    return 0;
}

static void rs_installed(void *data, uint64_t group, raft_index index, bool committed)
{
    (void)data, (void)group, (void)index;
    host.installed += committed;
}

static int rs_drop(void *data, uint64_t group, void *txn, char *err, size_t errlen)
{
    (void)data, (void)group, (void)txn, (void)err, (void)errlen;
    host.drops++;
    host.applied = 0; /* the databases are gone */
    return 0;
}

static void rs_dropped(void *data, uint64_t group, bool ok)
{
    (void)data, (void)group;
    host.dropped += ok;
}

static const struct raft_node_callbacks restart_callbacks = {.open_group = rs_open_group,
                                                             .snapshot_restore = rs_restore,
                                                             .snapshot_installed = rs_installed,
                                                             .group_drop = rs_drop,
                                                             .group_dropped = rs_dropped};

/* Start node 1 alone on dirs[0] (its log prepared by the test). */
static struct raft_node *start_one(const struct raft_node_group *g, char *err, size_t errlen)
{
    struct raft_node_config cfg = {.cluster_id = 0x5eed,
                                   .id = 1,
                                   .data_dir = dirs[0],
                                   .map_size_bytes = 64 << 20,
                                   .host = "127.0.0.1",
                                   .port = peers[0].port,
                                   .peers = peers,
                                   .n_peers = 1,
                                   .groups = g,
                                   .n_groups = 1,
                                   .tick_ms = 10};
    raft_config_default(&cfg.raft);
    struct raft_node *n = NULL;
    return raft_node_start(&n, &loop, &cfg, &restart_callbacks, NULL, err, errlen) == 0 ? n : NULL;
}

static void stop_one(struct raft_node *n)
{
    raft_node_stop(n);
    for (int k = 0; k < 5000 && uv_run(&loop, UV_RUN_NOWAIT); k++)
        uv_sleep(1);
}

/* The log recorded a snapshot received from the leader (its meta, the log
 * replaced), and the crash came before the state machine installed it:
 * the restart installs it before the core starts, and the core starts
 * with the snapshot applied. */
static void test_restart_finishes_an_interrupted_install(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    make_dirs(36000 + (int)(getpid() % 5000) * 3);
    char err[256];
    struct storage *st;
    CHECK_EQ(storage_open(dirs[0], 0x5eed, 1, 64 << 20, &st, err, sizeof(err)), STORAGE_OK);
    CHECK(storage_sm_separate(st));
    struct raft_member m = {1, true};
    struct raft_snapshot_meta meta = {.index = 40, .term = 3, .members = &m, .n_members = 1};
    struct raft_entry e = {.term = 2, .index = 1, .data = "x", .len = 1};
    struct storage_group_write w = {
        .group = GROUP, .hard_state = true, .term = 3, .vote = 2, .entries = &e, .n_entries = 1};
    CHECK_EQ(storage_commit(st, &w, 1, err, sizeof(err)), STORAGE_OK);
    struct storage_group_write inst = {.group = GROUP, .snapshot = &meta, .install = true};
    CHECK_EQ(storage_commit(st, &inst, 1, err, sizeof(err)), STORAGE_OK);
    storage_close(st);

    memset(&host, 0, sizeof(host));
    host.applied = 1; /* the state machine holds entry 1 only */
    const struct raft_node_group g = {.id = GROUP};
    struct raft_node *n = start_one(&g, err, sizeof(err));
    CHECK(n != NULL);
    CHECK_EQ(host.restores, 1);
    CHECK_EQ(host.restored_at, 40);
    CHECK_EQ(host.installed, 1);
    CHECK_EQ(raft_applied_index(raft_node_raft(n, GROUP)), 40);
    stop_one(n);

    /* A state machine that holds the snapshot is left alone. */
    memset(&host, 0, sizeof(host));
    host.applied = 40;
    n = start_one(&g, err, sizeof(err));
    CHECK(n != NULL);
    CHECK_EQ(host.restores, 0);
    stop_one(n);
    CHECK_EQ(uv_loop_close(&loop), 0);
    remove_dirs();
}

/* The log of a group this node left was dropped, and the crash came
 * before its state machine was: the restart drops that too, and opens it
 * again empty. */
static void test_restart_finishes_an_interrupted_drop(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    make_dirs(36000 + (int)(getpid() % 5000) * 3);
    char err[256];
    struct storage *st;
    CHECK_EQ(storage_open(dirs[0], 0x5eed, 1, 64 << 20, &st, err, sizeof(err)), STORAGE_OK);
    struct raft_entry e[2] = {{.term = 1, .index = 1, .data = "x", .len = 1},
                              {.term = 1, .index = 2, .data = "y", .len = 1}};
    struct storage_group_write w = {
        .group = GROUP, .hard_state = true, .term = 1, .vote = 1, .entries = e, .n_entries = 2};
    CHECK_EQ(storage_commit(st, &w, 1, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(storage_drop_group(st, GROUP, NULL, NULL, err, sizeof(err)), STORAGE_OK);
    storage_close(st);

    memset(&host, 0, sizeof(host));
    host.applied = 2; /* left behind by the crash */
    const struct raft_node_group g = {.id = GROUP, .join = true};
    struct raft_node *n = start_one(&g, err, sizeof(err));
    CHECK(n != NULL);
    CHECK_EQ(host.drops, 1);
    CHECK_EQ(host.dropped, 1);
    CHECK_EQ(host.opens, 2);
    CHECK_EQ(raft_applied_index(raft_node_raft(n, GROUP)), 0);
    CHECK_EQ(raft_current_term(raft_node_raft(n, GROUP)), 1); /* term and vote kept */
    stop_one(n);
    CHECK_EQ(uv_loop_close(&loop), 0);
    remove_dirs();
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_cluster_commits_and_survives_restart),
        HARNESS_TEST(test_cluster_applies_on_the_loop),
        HARNESS_TEST(test_apply_commit_lingers_for_the_next_entries),
        HARNESS_TEST(test_cluster_on_data_dirs_from_before_the_split),
        HARNESS_TEST(test_restart_finishes_an_interrupted_install),
        HARNESS_TEST(test_restart_finishes_an_interrupted_drop),
    };
    return harness_main(argc, argv, "node", tests, sizeof(tests) / sizeof(tests[0]));
}
