/* The write path of raft/io/node.c against a model of what must be stored.
 *
 * A node with one real LMDB environment is handed random updates -- as a
 * core would return them -- through its batching (updates of a loop turn
 * share a transaction), the batch that waits while another is on the
 * storage thread, and the apply-only commit that lingers, transaction
 * open, for the next writes to join it. The updates append, truncate a
 * conflicting suffix and append anew (§5.3), compact (§7), install a
 * snapshot that agrees with the log or does not (Figure 13, receiver 6
 * and 7), change term and vote, and apply entries. Whenever the node is
 * idle, what storage holds is compared with the model: the same first
 * index, term before it, entries (index, term, data), term and vote. In
 * between, storage checks its own contract after every write (storage.c,
 * check_log). Seeded; HARNESS_SEED replays a run.
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "node_testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum { GROUP = 3, WINDOW = 8192, ROUNDS = 4000 };

static uint64_t rng;

static uint64_t next_rand(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
    return n ? next_rand() % n : 0;
}

/* The model: what storage must hold once every injected update is
 * committed. Entry i's data is the 8 bytes of data_of(i, term). */
static struct {
    raft_index first; /* first index of the log (1 + the compaction point) */
    raft_term prev_term;
    raft_index last;         /* first - 1 when empty */
    raft_term terms[WINDOW]; /* of index i at i % WINDOW: the log never spans more */
    raft_term term;
    raft_id vote;
    raft_index snap; /* the stored snapshot's index (0: none) */
} m;

static uint64_t data_of(raft_index i, raft_term t)
{
    return i * 1000003 + t;
}

static raft_term model_term_at(raft_index i)
{
    return i == m.first - 1 ? m.prev_term : m.terms[i % WINDOW];
}

static int snapshot_chunk(void *data, uint64_t group, const struct raft_install_snapshot *is)
{
    (void)data, (void)group, (void)is;
    return 1; /* complete and checked: install it */
}

static int snapshot_install(void *data, uint64_t group, void *txn, raft_index index, char *err,
                            size_t errlen)
{
    (void)data, (void)group, (void)txn, (void)index, (void)err, (void)errlen;
    return 0;
}

static uint64_t applied_entries;

static int apply(void *data, uint64_t group, void *txn, const struct raft_entry *e, size_t n,
                 void **result, char *err, size_t errlen)
{
    (void)data, (void)group, (void)txn, (void)e, (void)err, (void)errlen;
    *result = NULL;
    applied_entries += n;
    return 0;
}

static const struct raft_node_callbacks callbacks = {
    .apply = apply, .snapshot_chunk = snapshot_chunk, .snapshot_install = snapshot_install};

/* Entries from..to of term t, and the update that appends them. */
static struct raft_entry entries[256];
static uint64_t payloads[256];

static size_t make_entries(raft_index from, raft_index to, raft_term t)
{
    size_t n = 0;
    for (raft_index i = from; i <= to; i++, n++) {
        payloads[n] = data_of(i, t);
        entries[n] = (struct raft_entry){.term = t,
                                         .index = i,
                                         .type = RAFT_ENTRY_NORMAL,
                                         .data = &payloads[n],
                                         .len = sizeof(payloads[n])};
        m.terms[i % WINDOW] = t;
    }
    m.last = to;
    return n;
}

static raft_term last_term(void)
{
    return model_term_at(m.last);
}

static struct raft_member members[] = {{1, true}, {2, true}, {3, true}};

/* A snapshot taken at s, and the log compacted up to c <= s: the meta
 * travels with the compaction (the log never starts after its snapshot). */
static void compact(struct raft_update *u, struct raft_snapshot_meta **taken)
{
    static struct raft_snapshot_meta meta;
    raft_index c = m.first + below(m.last - m.first + 1);
    raft_index lo = c > m.snap ? c : m.snap;
    raft_index s = lo + below(m.last - lo + 1);
    meta = (struct raft_snapshot_meta){s, model_term_at(s), 1, 1, members, 3};
    *taken = &meta;
    m.snap = s;
    u->compact_index = c;
    u->compact_term = model_term_at(c);
    m.prev_term = u->compact_term;
    m.first = c + 1;
}

/* One random update, applied to the model as storage must apply it. */
static void random_update(struct raft_update *u, struct raft_install_snapshot *is,
                          struct raft_snapshot_meta **taken)
{
    memset(u, 0, sizeof(*u));
    *taken = NULL;
    uint64_t op = below(100);
    if (m.last + 1 - m.first > WINDOW - 600) /* keep the log within the window */
        op = 60;
    if (op < 40) { /* append in the current term */
        if (m.term < last_term() || m.term == 0) {
            m.term = last_term() + 1;
            u->hard_state_changed = true;
        }
        raft_index to = m.last + 1 + below(200);
        u->n_entries = make_entries(m.last + 1, to, m.term);
    } else if (op < 55 && m.last >= m.first) { /* a new leader's log conflicts (§5.3) */
        raft_index from = m.first + below(m.last - m.first + 1);
        m.term++;
        m.vote = 1 + below(3);
        u->hard_state_changed = true;
        u->truncate_from = from;
        u->n_entries = make_entries(from, from + below(100), m.term);
    } else if (op < 65 && m.last >= m.first) { /* a snapshot taken here, and a compaction (§7) */
        compact(u, taken);
    } else if (op < 75) { /* a snapshot from the leader (Figure 13) */
        /* Newer than any snapshot here (the core refuses others, §7). */
        raft_index lo = m.first > m.snap + 1 ? m.first : m.snap + 1;
        bool agree = m.last >= lo && below(2);
        raft_index at;
        raft_term t;
        if (agree) {
            at = lo + below(m.last - lo + 1);
            t = model_term_at(at);
        } else {
            at = m.last + 1 + below(500);
            t = last_term() + 1 + below(2);
        }
        if (t > m.term) {
            m.term = t;
            u->hard_state_changed = true;
        }
        *is = (struct raft_install_snapshot){.last_index = at,
                                             .last_term = t,
                                             .done = true,
                                             .total_size = 1,
                                             .checksum = 1,
                                             .members = members,
                                             .n_members = 3};
        u->snapshot_chunk = is;
        if (!agree)
            m.last = at;
        m.first = at + 1;
        m.prev_term = t;
        m.snap = at;
    } else if (op < 85) { /* a vote in a new term */
        m.term++;
        m.vote = 1 + below(3);
        u->hard_state_changed = true;
    } else { /* committed entries to apply, nothing to persist: may linger */
        static struct raft_entry noop = {.term = 1, .index = 1, .type = RAFT_ENTRY_NOOP};
        u->apply = &noop;
        u->n_apply = 1;
    }
    if (u->hard_state_changed) {
        u->current_term = m.term;
        u->voted_for = m.vote;
    }
    if (u->n_entries) {
        u->entries = entries;
        if (below(4) == 0 && m.last >= m.first) /* compact in the same update */
            compact(u, taken);
    }
}

static void expect_model(struct raft_node *n, int round)
{
    struct storage_loaded l;
    char err[1024];
    if (raft_node_testing_load(n, GROUP, &l, err, sizeof(err)) != STORAGE_OK)
        harness_fail(__FILE__, __LINE__, "round %d: storage_load: %s", round, err);
    const struct raft_persisted *p = &l.persisted;
    size_t want = m.last >= m.first ? (size_t)(m.last - m.first + 1) : 0;
    char why[200] = "";
    if (p->first_index != m.first || p->prev_term != m.prev_term)
        snprintf(why, sizeof(why), "first %llu/%llu, want %llu/%llu",
                 (unsigned long long)p->first_index, (unsigned long long)p->prev_term,
                 (unsigned long long)m.first, (unsigned long long)m.prev_term);
    else if ((p->snapshot ? p->snapshot->index : 0) != m.snap)
        snprintf(why, sizeof(why), "snapshot at %llu, want %llu",
                 (unsigned long long)(p->snapshot ? p->snapshot->index : 0),
                 (unsigned long long)m.snap);
    else if (p->current_term != m.term || p->voted_for != m.vote)
        snprintf(why, sizeof(why), "term %llu vote %llu, want %llu %llu",
                 (unsigned long long)p->current_term, (unsigned long long)p->voted_for,
                 (unsigned long long)m.term, (unsigned long long)m.vote);
    else if (p->n_entries != want)
        snprintf(why, sizeof(why), "%zu entries, want %zu (%llu..%llu)", p->n_entries, want,
                 (unsigned long long)m.first, (unsigned long long)m.last);
    for (size_t i = 0; !why[0] && i < want; i++) {
        const struct raft_entry *e = &p->entries[i];
        uint64_t d = 0;
        if (e->len == sizeof(d))
            memcpy(&d, e->data, sizeof(d));
        if (e->index != m.first + i || e->term != model_term_at(e->index) || e->len != sizeof(d) ||
            d != data_of(e->index, e->term))
            snprintf(why, sizeof(why), "entry %zu is %llu/%llu, want %llu/%llu", i,
                     (unsigned long long)e->index, (unsigned long long)e->term,
                     (unsigned long long)(m.first + i),
                     (unsigned long long)model_term_at(m.first + i));
    }
    storage_loaded_free(&l);
    if (why[0])
        harness_fail(__FILE__, __LINE__, "round %d: stored log differs from the model: %s", round,
                     why);
}

static void run_model(uint32_t linger_us, bool on_loop)
{
    rng = harness_seed((uint64_t)time(NULL) ^ (uint64_t)getpid());
    memset(&m, 0, sizeof(m));
    m.first = 1;
    m.last = 0;
    char dir[128], cmd[300], err[512];
    snprintf(dir, sizeof(dir), "/tmp/raftkv-test-node-model-%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    static const struct raft_node_peer self[] = {{1, "127.0.0.1", 0}};
    static const struct raft_node_group groups[] = {{.id = GROUP}};
    struct raft_node_config cfg = {.cluster_id = 0x70de1,
                                   .id = 1,
                                   .data_dir = dir,
                                   .map_size_bytes = 256 << 20,
                                   .host = "127.0.0.1",
                                   .port = 0,
                                   .peers = self,
                                   .n_peers = 1,
                                   .groups = groups,
                                   .n_groups = 1,
                                   .tick_ms = 1000000, /* the core stays silent */
                                   .apply_linger_us = linger_us,
                                   .apply_on_loop = on_loop};
    raft_config_default(&cfg.raft);
    cfg.raft.election_timeout_ms = 1000000000;
    struct raft_node *n;
    if (raft_node_start(&n, &loop, &cfg, &callbacks, NULL, err, sizeof(err)) != 0)
        harness_fail(__FILE__, __LINE__, "raft_node_start: %s", err);
    struct raft_install_snapshot is;
    struct raft_snapshot_meta *taken;
    int checks = 0;
    for (int round = 0; round < ROUNDS; round++) {
        /* A burst of updates in one loop turn, then one turn or a few of the
         * loop: a batch goes to the storage thread and the next ones form,
         * or join it, while it is there. */
        for (uint64_t k = 1 + below(4); k > 0; k--) {
            struct raft_update u;
            random_update(&u, &is, &taken);
            int rv = raft_node_testing_inject(n, GROUP, &u, taken);
            if (rv != 0)
                harness_fail(__FILE__, __LINE__, "round %d: inject: %d (%s)", round, rv,
                             raft_node_error(n) ? raft_node_error(n) : "");
        }
        for (uint64_t k = below(3); k > 0; k--)
            uv_run(&loop, UV_RUN_NOWAIT);
        /* Sometimes let the storage thread reach its lingering wait, so
         * that the next burst joins it (bounded: 100 ms). */
        for (int k = 0; linger_us && below(2) && k < 1000 && !raft_node_testing_lingering(n); k++)
            nanosleep(&(struct timespec){0, 100000}, NULL);
        if (raft_node_error(n))
            harness_fail(__FILE__, __LINE__, "round %d: %s", round, raft_node_error(n));
        if (below(5) == 0 || round == ROUNDS - 1) {
            for (int k = 0; k < 100000 && !raft_node_testing_idle(n) && !raft_node_error(n); k++)
                uv_run(&loop, UV_RUN_ONCE);
            CHECK(raft_node_testing_idle(n));
            if (raft_node_error(n))
                harness_fail(__FILE__, __LINE__, "round %d: %s", round, raft_node_error(n));
            expect_model(n, round);
            checks++;
        }
    }
    CHECK(checks > ROUNDS / 10);
    CHECK(applied_entries > 0);
    struct raft_node_stats st;
    raft_node_stats(n, &st);
    printf("  commits %llu, apply-only %llu, joined by the next writes %llu, on the loop %llu\n",
           (unsigned long long)st.commits, (unsigned long long)st.apply_only,
           (unsigned long long)st.joined, (unsigned long long)st.on_loop);
    if (linger_us)
        CHECK(st.joined > 0); /* the lingering commit was joined, so that path ran */
    CHECK(on_loop ? st.on_loop > 0 : st.on_loop == 0);
    raft_node_stop(n);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    CHECK(system(cmd) == 0);
}

static void test_write_path_matches_model(void)
{
    run_model(0, false);
}

static void test_write_path_matches_model_lingering(void)
{
    run_model(20000, false); /* 20 ms: the next burst always comes while it waits */
}

/* kvd's default: applied on the loop, large batches and installs on the
 * pool thread (node.c start_apply). */
static void test_write_path_matches_model_applying_on_loop(void)
{
    run_model(0, true);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_write_path_matches_model),
        HARNESS_TEST(test_write_path_matches_model_lingering),
        HARNESS_TEST(test_write_path_matches_model_applying_on_loop),
    };
    return harness_main(argc, argv, "node_model", tests, sizeof(tests) / sizeof(tests[0]));
}
