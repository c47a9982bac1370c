/* The append-only log: raft/io/wal.c. The claim that matters: after a
 * power loss at any moment -- any subset of the bytes written since the
 * last sync reached the disk, in any order, sector by sector -- the log
 * reopens to exactly what was acknowledged (or, if the commit in flight
 * landed whole, that too), never anything else, and goes on. */
#define _DEFAULT_SOURCE
#include "harness.h"
#include "wal.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

enum { GROUPS = 3, MAX_GROUPS = 20, MAX_LOG = 4096, SEG = 64 << 10 };

/* Groups the random commits write (tests may raise it to MAX_GROUPS). */
static int n_groups = GROUPS;

static char err[1024];

/* ------------------------------------------------------------------------
 * The model: what each group's log must be
 * ------------------------------------------------------------------------ */

struct m_entry {
    raft_term term;
    uint32_t len;
    uint8_t seed; /* data[i] = seed + i */
};

struct m_group {
    raft_term term;
    raft_id vote;
    raft_index first;
    raft_term prev_term;
    struct m_entry log[MAX_LOG]; /* log[i]: index first + i */
    size_t n;
    bool has_snap;
    raft_index snap_index;
    raft_term snap_term;
    size_t snap_members; /* the first ones of members[] */
    bool has_base;
    size_t n_base;
    raft_id base[4];
};

struct model {
    struct m_group g[MAX_GROUPS];
};

static void model_init(struct model *m)
{
    memset(m, 0, sizeof(*m));
    for (int i = 0; i < MAX_GROUPS; i++)
        m->g[i].first = 1;
}

static raft_index m_last(const struct m_group *g)
{
    return g->first + g->n - 1;
}

static uint64_t rnd_state;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static uint64_t below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

/* One random write for group gi, applied to the model, described in *w
 * (entries in ents/data). Returns false if nothing was chosen. */
enum { WRITES = 3 }; /* at most, in one commit */
static uint8_t databufs[WRITES][4][3000];
static struct raft_entry entss[WRITES][4];
static struct raft_snapshot_meta snapmetas[WRITES];
/* The buffers of the write being made. */
static uint8_t (*databuf)[3000];
static struct raft_entry *ents;
static struct raft_member members[3] = {{1, true}, {2, true}, {3, false}};
#define snapmeta (snapmetas[cur])
static int cur;

static void fill_entry(struct raft_entry *e, raft_index index, raft_term term, int slot,
                       struct m_entry *me)
{
    uint32_t len = (uint32_t)(below(4) == 0 ? 0 : below(sizeof(databuf[0])));
    uint8_t seed = (uint8_t)rnd();
    for (uint32_t i = 0; i < len; i++)
        databuf[slot][i] = (uint8_t)(seed + i);
    *e = (struct raft_entry){
        .term = term, .index = index, .type = RAFT_ENTRY_NORMAL, .data = databuf[slot], .len = len};
    *me = (struct m_entry){term, len, seed};
}

static void random_write(struct model *m, int gi, struct storage_group_write *w)
{
    struct m_group *g = &m->g[gi];
    *w = (struct storage_group_write){.group = 10 + (uint64_t)gi};
    raft_term top = g->n ? g->log[g->n - 1].term : g->prev_term;
    if (top < g->term)
        top = g->term;
    switch (below(10)) {
    case 0: /* a new term and vote */
        w->hard_state = true;
        w->term = g->term = g->term + 1 + below(2);
        w->vote = g->vote = below(4);
        break;
    case 1: /* truncate a suffix, then append in a newer term */
        if (g->n) {
            raft_index from = g->first + below(g->n);
            w->truncate_from = from;
            g->n = (size_t)(from - g->first);
            top++;
        }
        /* fall through */
    case 2:
    case 3:
    case 4:
    case 5: { /* append */
        size_t k = 1 + below(4);
        if (g->n + k >= MAX_LOG)
            break;
        for (size_t i = 0; i < k; i++) {
            raft_index index = m_last(g) + 1;
            fill_entry(&ents[i], index, top, (int)i, &g->log[g->n]);
            g->n++;
        }
        w->entries = ents;
        w->n_entries = k;
        break;
    }
    case 6: /* a snapshot, and compaction up to it */
        if (g->n) {
            raft_index at = g->first + below(g->n);
            snapmeta =
                (struct raft_snapshot_meta){at, g->log[at - g->first].term, 100, 7, members, 3};
            w->snapshot = &snapmeta;
            g->has_snap = true;
            g->snap_index = at;
            g->snap_term = snapmeta.term;
            g->snap_members = 3;
            w->compact_index = at;
            w->compact_term = snapmeta.term;
            size_t drop = (size_t)(at + 1 - g->first);
            memmove(g->log, g->log + drop, (g->n - drop) * sizeof(g->log[0]));
            g->n -= drop;
            g->first = at + 1;
            g->prev_term = snapmeta.term;
        }
        break;
    case 7: { /* a snapshot from the leader (Figure 13, 6 and 7) */
        bool agree = g->n && below(2);
        raft_index at = agree ? g->first + below(g->n) : m_last(g) + 1 + below(5);
        raft_term t = agree ? g->log[at - g->first].term : top + 1;
        snapmeta = (struct raft_snapshot_meta){at, t, 100, 9, members, 2};
        w->snapshot = &snapmeta;
        w->install = true;
        if (agree) {
            size_t drop = (size_t)(at + 1 - g->first);
            memmove(g->log, g->log + drop, (g->n - drop) * sizeof(g->log[0]));
            g->n -= drop;
        } else {
            g->n = 0;
        }
        g->first = at + 1;
        g->prev_term = t;
        g->has_snap = true;
        g->snap_index = at;
        g->snap_term = t;
        g->snap_members = 2;
        break;
    }
    default:
        break; /* nothing for this group */
    }
}

/* Where the stored group differs from the model, or NULL. */
static const char *group_diff(struct wal *w, const struct model *m, int gi, char *why, size_t len)
{
    const struct m_group *g = &m->g[gi];
    struct storage_loaded l;
    int rc = wal_load(w, 10 + (uint64_t)gi, &l, err, sizeof(err));
    if (rc) {
        snprintf(why, len, "wal_load: %s", err);
        return why;
    }
    const char *d = NULL;
    if (l.persisted.current_term != g->term || l.persisted.voted_for != g->vote)
        d = "term or vote";
    else if (l.persisted.first_index != g->first || l.persisted.prev_term != g->prev_term)
        d = "first index or prev_term";
    else if (l.persisted.n_entries != g->n)
        d = "entry count";
    else if ((l.persisted.snapshot != NULL) != g->has_snap ||
             (g->has_snap &&
              (l.snapshot.index != g->snap_index || l.snapshot.term != g->snap_term)))
        d = "snapshot";
    else if (g->has_snap && l.snapshot.n_members != g->snap_members)
        d = "snapshot members";
    else if (l.has_base != g->has_base || l.n_base != g->n_base ||
             (g->n_base && memcmp(l.base, g->base, g->n_base * sizeof(raft_id)) != 0))
        d = "base";
    for (size_t i = 0; g->has_snap && i < l.snapshot.n_members && !d; i++)
        if (l.snapshot.members[i].id != members[i].id ||
            l.snapshot.members[i].is_voter != members[i].is_voter)
            d = "a snapshot member";
    for (size_t i = 0; i < g->n && !d; i++) {
        const struct raft_entry *e = &l.persisted.entries[i];
        if (e->index != g->first + i || e->term != g->log[i].term || e->len != g->log[i].len)
            d = "an entry's index, term or length";
        for (uint32_t j = 0; j < e->len && !d; j++)
            if (((const uint8_t *)e->data)[j] != (uint8_t)(g->log[i].seed + j))
                d = "an entry's bytes";
    }
    storage_loaded_free(&l);
    if (!d)
        return NULL;
    snprintf(why, len, "group %d: %s", gi, d);
    return why;
}

static bool model_matches(struct wal *w, const struct model *m, char *why, size_t len)
{
    for (int i = 0; i < n_groups; i++)
        if (group_diff(w, m, i, why, len))
            return false;
    return true;
}

static void check_model_at(struct wal *w, const struct model *m, int line)
{
    char why[1200];
    if (!model_matches(w, m, why, sizeof(why)))
        harness_fail(__FILE__, line, "the log differs from the model: %s", why);
}
#define check_model(w, m) check_model_at(w, m, __LINE__)

/* One commit of random writes (and sometimes a base or a drop). */
static int random_commit(struct wal *w, struct model *m)
{
    uint64_t what = below(40);
    if (what == 0) {
        int gi = (int)below((uint64_t)n_groups);
        raft_id v[3] = {1 + below(9), 2, 3};
        struct m_group *g = &m->g[gi];
        g->has_base = true;
        g->n_base = 3;
        memcpy(g->base, v, sizeof(v));
        return wal_set_base(w, 10 + (uint64_t)gi, v, 3, err, sizeof(err));
    }
    if (what == 1) {
        int gi = (int)below((uint64_t)n_groups);
        struct m_group *g = &m->g[gi];
        raft_term t = g->term;
        raft_id v = g->vote;
        memset(g, 0, sizeof(*g));
        g->term = t;
        g->vote = v;
        g->first = 1;
        g->has_base = true;
        return wal_drop_group(w, 10 + (uint64_t)gi, err, sizeof(err));
    }
    /* One to three writes, of the same group or not: a node's batch holds
     * every update of the loop turn, several of one group among them. */
    struct storage_group_write x[WRITES];
    int n = 1 + (int)below(WRITES);
    for (cur = 0; cur < n; cur++) {
        databuf = databufs[cur];
        ents = entss[cur];
        random_write(m, (int)below((uint64_t)n_groups), &x[cur]);
    }
    return wal_commit(w, x, (size_t)n, err, sizeof(err));
}

/* ------------------------------------------------------------------------
 * Directories: copy, compare, and lose what was not synced
 * ------------------------------------------------------------------------ */

static void sh(const char *fmt, const char *a, const char *b)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), fmt, a, b);
    if (system(cmd) != 0)
        harness_fail(__FILE__, __LINE__, "failed: %s", cmd);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* `crashed` holds the directory as it was at the last sync; `after` as it
 * was when the commit in flight returned. Write into `crashed` a random
 * subset of the 512-byte sectors that differ: a power loss in the middle
 * of that commit. Returns whether every differing sector was written. */
static bool lose_unsynced(const char *crashed, const char *after)
{
    DIR *d = opendir(after);
    CHECK(d);
    struct dirent *de;
    bool all = below(4) == 0; /* sometimes the whole commit lands */
    bool complete = true;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char pa[600], pc[600];
        snprintf(pa, sizeof(pa), "%s/%s", after, de->d_name);
        snprintf(pc, sizeof(pc), "%s/%s", crashed, de->d_name);
        size_t la, lc = 0;
        char *a = slurp(pa, &la);
        CHECK(a);
        char *c = slurp(pc, &lc);
        if (!c && !all && below(2)) {
            free(a);
            complete = false; /* the new file's directory entry never landed */
            continue;
        }
        int fd = open(pc, O_WRONLY | O_CREAT, 0600);
        CHECK(fd >= 0);
        /* A new segment's checkpoint frame is synced (with the directory)
         * before the commit's frame is written: if the file is there, so
         * is that frame, whole. */
        size_t synced = 0;
        if (!c && la >= 32) {
            uint32_t n = (uint32_t)(uint8_t)a[4] | (uint32_t)(uint8_t)a[5] << 8 |
                         (uint32_t)(uint8_t)a[6] << 16 | (uint32_t)(uint8_t)a[7] << 24;
            synced = 32 + ((n + 7) & ~7u);
            CHECK(synced <= la);
            CHECK(pwrite(fd, a, synced, 0) == (ssize_t)synced);
        }
        for (size_t off = synced & ~(size_t)511; off < la; off += 512) {
            size_t n = la - off < 512 ? la - off : 512;
            bool same = c && off + n <= lc && memcmp(a + off, c + off, n) == 0;
            if (off < synced) { /* the sector the synced frame ends in */
                size_t k = off + n - synced;
                if (!all && below(2)) {
                    complete = false;
                    continue;
                }
                CHECK(pwrite(fd, a + synced, k, (off_t)synced) == (ssize_t)k);
                continue;
            }
            if (same)
                continue;
            if (all || below(2)) {
                CHECK(pwrite(fd, a + off, n, (off_t)off) == (ssize_t)n);
            } else {
                complete = false;
            }
        }
        if (!c || lc < la)
            CHECK(ftruncate(fd, (off_t)la) == 0);
        close(fd);
        free(a);
        free(c);
    }
    closedir(d);
    /* Segments the commit deleted: it deletes only after its sync, so
     * their deletion may land only if the commit did. */
    if (all) {
        d = opendir(crashed);
        CHECK(d);
        while ((de = readdir(d))) {
            char pa[600], pc[600];
            snprintf(pa, sizeof(pa), "%s/%s", after, de->d_name);
            snprintf(pc, sizeof(pc), "%s/%s", crashed, de->d_name);
            if (de->d_name[0] != '.' && access(pa, F_OK) != 0)
                CHECK(unlink(pc) == 0);
        }
        closedir(d);
    }
    return complete;
}

static void base_dir(char *out, size_t len, const char *what)
{
    snprintf(out, len, "/tmp/raftkv-test-wal-%d-%s", (int)getpid(), what);
    sh("rm -rf '%s' %s", out, "");
}

/* A group that writes now and then and never compacts: a quiet shard, or
 * the members table. Its entries, one in almost every segment, must not
 * keep every segment alive (wal.c, rewrite_oldest). */
enum { PINNED = 99 };
static raft_index pinned_last;

static void write_pinned(struct wal *w)
{
    char data[32];
    snprintf(data, sizeof(data), "members %llu", (unsigned long long)pinned_last + 1);
    struct raft_entry e = {1, pinned_last + 1, RAFT_ENTRY_NORMAL, data, strlen(data) + 1};
    struct storage_group_write x = {.group = PINNED, .entries = &e, .n_entries = 1};
    CHECK_EQ(wal_commit(w, &x, 1, err, sizeof(err)), STORAGE_OK);
    pinned_last++;
}

static void check_pinned(struct wal *w)
{
    struct storage_loaded l;
    CHECK_EQ(wal_load(w, PINNED, &l, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(l.persisted.n_entries, pinned_last);
    for (size_t i = 0; i < pinned_last; i++) {
        char want[32];
        snprintf(want, sizeof(want), "members %zu", i + 1);
        CHECK_STR((const char *)l.persisted.entries[i].data, want);
    }
    storage_loaded_free(&l);
}

static struct wal *open_ok(const char *dir)
{
    struct wal *w;
    int rc = wal_open(dir, SEG, &w, err, sizeof(err));
    if (rc)
        harness_fail(__FILE__, __LINE__, "wal_open %s: %s", dir, err);
    return w;
}

/* ------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------ */

/* Random commits, reopened now and then: the log is the model's, across
 * many segments (small ones) and their deletion after compaction. */
static void test_round_trip_many_segments(void)
{
    rnd_state = harness_seed(0x5eed1) | 1;
    char dir[300];
    base_dir(dir, sizeof(dir), "rt");
    struct model m;
    model_init(&m);
    struct wal *w = open_ok(dir);
    pinned_last = 0;
    size_t max_segments = 0;
    for (int i = 0; i < 3000; i++) {
        if (i % 20 == 0)
            write_pinned(w);
        if (random_commit(w, &m))
            harness_fail(__FILE__, __LINE__, "commit %d: %s", i, err);
        struct wal_stats s;
        wal_stats(w, &s);
        if (s.segments > max_segments)
            max_segments = s.segments;
        if (i % 500 == 499) {
            check_model(w, &m);
            wal_close(w);
            w = open_ok(dir);
            check_model(w, &m);
            check_pinned(w);
        }
    }
    struct wal_stats s;
    wal_stats(w, &s);
    wal_close(w);
    /* Segments rotated (64 KiB each); dead ones were deleted, and the
     * pinned entry was copied forward rather than keeping them all. */
    CHECK(max_segments >= 3);
    CHECK(max_segments <= 8);
    sh("rm -rf '%s' %s", dir, "");
}

/* The power-loss claim, at many random moments. */
static struct model pl_m, pl_before, pl_cm;
static void power_loss_rounds(uint64_t seed, int rounds)
{
    rnd_state = harness_seed(seed) | 1;
    char live[300], crashed[300];
    base_dir(live, sizeof(live), "live");
    base_dir(crashed, sizeof(crashed), "crashed");
    model_init(&pl_m);
    struct wal *w = open_ok(live);
    pinned_last = 0;
    int torn = 0, whole = 0;
    for (int round = 0; round < rounds; round++) {
        int k = 1 + (int)below(30);
        write_pinned(w);
        for (int i = 0; i < k; i++)
            if (random_commit(w, &pl_m))
                harness_fail(__FILE__, __LINE__, "round %d: %s", round, err);
        /* Everything so far is synced: copy it, then commit once more and
         * lose a random part of that commit's bytes in the copy. */
        char cmd[1000];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -a '%s' '%s'", crashed, live, crashed);
        CHECK(system(cmd) == 0);
        pl_before = pl_m;
        if (random_commit(w, &pl_m))
            harness_fail(__FILE__, __LINE__, "round %d: %s", round, err);
        bool complete = lose_unsynced(crashed, live);
        struct wal *c;
        int rc = wal_open(crashed, SEG, &c, err, sizeof(err));
        if (rc)
            harness_fail(__FILE__, __LINE__, "round %d: reopening after a power loss: %s", round,
                         err);
        /* Either the commit in flight is there whole, or not at all. */
        char why[1200];
        bool has_new = model_matches(c, &pl_m, why, sizeof(why));
        if (complete)
            CHECK(has_new);
        if (!has_new)
            check_model(c, &pl_before);
        check_pinned(c);
        torn += !has_new;
        whole += has_new;
        /* The crashed copy goes on: new commits land and reopen. */
        pl_cm = has_new ? pl_m : pl_before;
        for (int i = 0; i < 5; i++)
            if (random_commit(c, &pl_cm))
                harness_fail(__FILE__, __LINE__, "after the crash: %s", err);
        wal_close(c);
        c = open_ok(crashed);
        check_model(c, &pl_cm);
        wal_close(c);
    }
    wal_close(w);
    /* Both outcomes happened: the test exercised torn commits. */
    CHECK(torn > rounds / 12);
    CHECK(whole > rounds / 12);
    sh("rm -rf '%s' %s", live, "");
    sh("rm -rf '%s' %s", crashed, "");
}

static void test_power_loss_keeps_what_was_acknowledged(void)
{
    power_loss_rounds(0xb0b, 120);
}

/* The same with twenty groups: checkpoints of more groups than the group
 * table first holds, crashes in rotations of bigger checkpoints. */
static void test_power_loss_many_groups(void)
{
    n_groups = MAX_GROUPS;
    power_loss_rounds(0xb0b20, 80);
    n_groups = GROUPS;
}

/* A flipped byte in a synced frame with good frames after it is damage:
 * refused, naming the segment and the offset. */
static void test_damage_in_the_middle_refused(void)
{
    rnd_state = 77;
    char dir[300];
    base_dir(dir, sizeof(dir), "damage");
    struct model m;
    model_init(&m);
    struct wal *w; /* one segment big enough for every frame */
    CHECK_EQ(wal_open(dir, 8 << 20, &w, err, sizeof(err)), STORAGE_OK);
    for (int i = 0; i < 40; i++)
        CHECK_EQ(random_commit(w, &m), STORAGE_OK);
    wal_close(w);
    char path[400];
    snprintf(path, sizeof(path), "%s/0000000000000000.seg", dir);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint8_t b;
    CHECK(pread(fd, &b, 1, 200) == 1);
    b ^= 0x10;
    CHECK(pwrite(fd, &b, 1, 200) == 1);
    close(fd);
    struct wal *bad;
    CHECK_EQ(wal_open(dir, 8 << 20, &bad, err, sizeof(err)), STORAGE_ECORRUPT);
    CHECK(strstr(err, "0000000000000000.seg") && strstr(err, "damaged"));
    CHECK(strstr(err, "must not rejoin"));
    sh("rm -rf '%s' %s", dir, "");
}

/* A write that would leave a hole is refused before anything is written. */
static void test_hole_refused_nothing_written(void)
{
    char dir[300];
    base_dir(dir, sizeof(dir), "hole");
    struct wal *w = open_ok(dir);
    struct raft_entry e[2] = {{1, 1, RAFT_ENTRY_NORMAL, "a", 1}, {1, 3, RAFT_ENTRY_NORMAL, "b", 1}};
    struct storage_group_write x = {.group = 1, .entries = e, .n_entries = 1};
    CHECK_EQ(wal_commit(w, &x, 1, err, sizeof(err)), STORAGE_OK);
    x.entries = &e[1];
    CHECK_EQ(wal_commit(w, &x, 1, err, sizeof(err)), STORAGE_ECORRUPT);
    CHECK(strstr(err, "entry 3 would follow a log that ends at 1"));
    wal_close(w);
    w = open_ok(dir);
    struct storage_loaded l;
    CHECK_EQ(wal_load(w, 1, &l, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(l.persisted.n_entries, 1);
    storage_loaded_free(&l);
    wal_close(w);
    sh("rm -rf '%s' %s", dir, "");
}

/* ------------------------------------------------------------------------
 * Review tests (wal-review)
 * ------------------------------------------------------------------------ */

static void commit1(struct wal *w, const struct storage_group_write *x)
{
    if (wal_commit(w, x, 1, err, sizeof(err)) != STORAGE_OK)
        harness_fail(__FILE__, __LINE__, "commit: %s", err);
}

/* Entries of `group`, compacted right away by a snapshot at the last one:
 * dead bytes that rotate segments. */
static raft_index filler_last;
static void write_filler(struct wal *w, uint64_t group, int commits)
{
    static uint8_t data[6000];
    static struct raft_member fm[1] = {{1, true}};
    for (int i = 0; i < commits; i++) {
        struct raft_entry e = {1, filler_last + 1, RAFT_ENTRY_NORMAL, data, sizeof(data)};
        struct raft_snapshot_meta s = {filler_last + 1, 1, 1, 1, fm, 1};
        struct storage_group_write x = {.group = group,
                                        .entries = &e,
                                        .n_entries = 1,
                                        .snapshot = &s,
                                        .compact_index = filler_last + 1,
                                        .compact_term = 1};
        commit1(w, &x);
        filler_last++;
    }
}

/* More groups than the first allocation of the group table (16): a
 * snapshot's members recorded before the table grows must still be the
 * ones the next segment's checkpoint writes, and the ones a restart
 * reads once the segment holding the snapshot record is gone. A 16-shard
 * node has 17 groups. */
static void test_many_groups_keep_snapshot_members(void)
{
    char dir[300];
    base_dir(dir, sizeof(dir), "members");
    struct wal *w = open_ok(dir);
    struct raft_member mem[3] = {{7, true}, {8, true}, {9, false}};
    for (uint64_t g = 1; g <= 40; g++) {
        struct raft_entry e = {1, 1, RAFT_ENTRY_NORMAL, "x", 1};
        struct raft_snapshot_meta s = {1, 1, 1, 1, mem, 3};
        struct storage_group_write x = {.group = g,
                                        .hard_state = true,
                                        .term = 1,
                                        .entries = &e,
                                        .n_entries = 1,
                                        .snapshot = &s,
                                        .compact_index = 1,
                                        .compact_term = 1};
        commit1(w, &x);
    }
    filler_last = 0;
    write_filler(w, 1000, 60); /* several segments: the first ones die */
    wal_close(w);
    w = open_ok(dir);
    struct wal_stats st;
    wal_stats(w, &st);
    for (uint64_t g = 1; g <= 40; g++) {
        struct storage_loaded l;
        CHECK_EQ(wal_load(w, g, &l, err, sizeof(err)), STORAGE_OK);
        CHECK(l.persisted.snapshot != NULL);
        CHECK_EQ(l.snapshot.n_members, 3);
        for (size_t i = 0; i < 3 && i < l.snapshot.n_members; i++) {
            if (l.snapshot.members[i].id != mem[i].id ||
                l.snapshot.members[i].is_voter != mem[i].is_voter)
                harness_fail(__FILE__, __LINE__, "group %llu: member %zu is %llu, not %llu",
                             (unsigned long long)g, i, (unsigned long long)l.snapshot.members[i].id,
                             (unsigned long long)mem[i].id);
        }
        storage_loaded_free(&l);
    }
    wal_close(w);
    sh("rm -rf '%s' %s", dir, "");
}

/* Zeros where a synced frame's header was (a lost or misdirected write),
 * in the segment being written, with good frames after it: damage, like a
 * flipped byte -- not the preallocated end, which would drop the
 * acknowledged frames after it without a word. */
static void test_zeroed_frame_in_the_middle_refused(void)
{
    char dir[300];
    base_dir(dir, sizeof(dir), "zeroed");
    struct wal *w;
    CHECK_EQ(wal_open(dir, 8 << 20, &w, err, sizeof(err)), STORAGE_OK);
    for (raft_index i = 1; i <= 10; i++) {
        struct raft_entry e = {1, i, RAFT_ENTRY_NORMAL, "abcdefgh", 8};
        struct storage_group_write x = {.group = 1, .entries = &e, .n_entries = 1};
        commit1(w, &x);
    }
    wal_close(w);
    /* The open above started segment 0; its checkpoint is the first frame
     * and the ten commits follow. Zero the header of the fourth commit. */
    char path[400];
    snprintf(path, sizeof(path), "%s/0000000000000000.seg", dir);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint8_t buf[4096];
    CHECK(pread(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf));
    size_t pos = 0;
    for (int k = 0; k < 4; k++) {
        uint32_t n = (uint32_t)buf[pos + 4] | (uint32_t)buf[pos + 5] << 8 |
                     (uint32_t)buf[pos + 6] << 16 | (uint32_t)buf[pos + 7] << 24;
        pos += 32 + ((n + 7) & ~7u);
    }
    static const uint8_t zeros[32];
    CHECK(pwrite(fd, zeros, 32, (off_t)pos) == 32);
    close(fd);
    struct wal *bad;
    int rc = wal_open(dir, 8 << 20, &bad, err, sizeof(err));
    if (rc == STORAGE_OK) {
        struct storage_loaded l;
        CHECK_EQ(wal_load(bad, 1, &l, err, sizeof(err)), STORAGE_OK);
        size_t n = l.persisted.n_entries;
        storage_loaded_free(&l);
        wal_close(bad);
        harness_fail(__FILE__, __LINE__,
                     "opened a log with a zeroed frame in the middle: %zu of 10 acknowledged "
                     "entries left",
                     n);
    }
    CHECK_EQ(rc, STORAGE_ECORRUPT);
    CHECK(strstr(err, "0000000000000000.seg") && strstr(err, "damaged"));
    sh("rm -rf '%s' %s", dir, "");
}

/* A quiet group with a long log (written, then idle, far from its next
 * snapshot) keeps the oldest segment mostly live, so it is never copied
 * forward. That must not stop every later segment from being copied:
 * otherwise the members table's one entry per segment keeps them all,
 * and the log grows without bound. */
static void test_quiet_long_log_does_not_pin_every_segment(void)
{
    char dir[300];
    base_dir(dir, sizeof(dir), "quiet");
    struct wal *w = open_ok(dir);
    static uint8_t big[8000];
    for (raft_index i = 1; i <= 3; i++) { /* 24 KB: more than a quarter of a segment */
        struct raft_entry e = {1, i, RAFT_ENTRY_NORMAL, big, sizeof(big)};
        struct storage_group_write x = {.group = 5, .entries = &e, .n_entries = 1};
        commit1(w, &x);
    }
    pinned_last = 0;
    filler_last = 0;
    size_t most = 0;
    for (int round = 0; round < 60; round++) {
        write_pinned(w);
        write_filler(w, 1000, 12); /* about one segment */
        struct wal_stats st;
        wal_stats(w, &st);
        if (st.segments > most)
            most = st.segments;
    }
    check_pinned(w);
    wal_close(w);
    w = open_ok(dir);
    check_pinned(w);
    wal_close(w);
    if (most > 12)
        harness_fail(__FILE__, __LINE__, "%zu segments of %d KiB for %d KiB of live entries", most,
                     SEG >> 10, 25);
    sh("rm -rf '%s' %s", dir, "");
}

/* Segments deleted by a commit whose unlink was not yet durable come back
 * after a power loss (docs/kvd.md, section 4: "replays harmlessly before
 * the checkpoints that supersede it"). Any subset of the deleted segments
 * back: the log reopens to the model, and goes on. With many groups (the
 * group table grows past its first allocation), drops and re-adds. */
static struct model rz_m, rz_cm;
static void test_deleted_segments_brought_back(void)
{
    rnd_state = harness_seed(0xdead5) | 1;
    n_groups = MAX_GROUPS;
    char live[300], pre[300], grave[300], crashed[300];
    base_dir(live, sizeof(live), "rz-live");
    base_dir(pre, sizeof(pre), "rz-pre");
    base_dir(grave, sizeof(grave), "rz-grave");
    base_dir(crashed, sizeof(crashed), "rz-crashed");
    sh("mkdir -p '%s' '%s'", pre, grave);
    model_init(&rz_m);
    struct wal *w = open_ok(live);
    pinned_last = 0;
    int brought = 0;
    for (int i = 0; i < 600; i++) {
        if (i % 25 == 0)
            write_pinned(w);
        /* The segments as they are before this commit: those it deletes
         * go to the graveyard, as they were. */
        char cmd[3000];
        snprintf(cmd, sizeof(cmd), "rm -f '%s'/*.seg; cp '%s'/*.seg '%s'/", pre, live, pre);
        CHECK(system(cmd) == 0);
        if (random_commit(w, &rz_m))
            harness_fail(__FILE__, __LINE__, "commit %d: %s", i, err);
        DIR *d = opendir(pre);
        CHECK(d);
        struct dirent *de;
        while ((de = readdir(d))) {
            char pl[700], pp[700], pg[700];
            snprintf(pl, sizeof(pl), "%s/%s", live, de->d_name);
            snprintf(pp, sizeof(pp), "%s/%s", pre, de->d_name);
            snprintf(pg, sizeof(pg), "%s/%s", grave, de->d_name);
            if (de->d_name[0] != '.' && access(pl, F_OK) != 0)
                CHECK(rename(pp, pg) == 0);
        }
        closedir(d);
        if (i % 50 != 49)
            continue;
        /* A power loss now: the live directory, plus some of the dead. */
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -a '%s' '%s'", crashed, live, crashed);
        CHECK(system(cmd) == 0);
        d = opendir(grave);
        CHECK(d);
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.' || below(2))
                continue;
            char pg[700], pc[700];
            snprintf(pg, sizeof(pg), "%s/%s", grave, de->d_name);
            snprintf(pc, sizeof(pc), "%s/%s", crashed, de->d_name);
            snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", pg, pc);
            CHECK(system(cmd) == 0);
            brought++;
        }
        closedir(d);
        struct wal *c;
        if (wal_open(crashed, SEG, &c, err, sizeof(err)))
            harness_fail(__FILE__, __LINE__, "commit %d: reopening with dead segments back: %s", i,
                         err);
        check_model(c, &rz_m);
        check_pinned(c);
        rz_cm = rz_m;
        for (int k = 0; k < 20; k++)
            if (random_commit(c, &rz_cm))
                harness_fail(__FILE__, __LINE__, "after reopening: %s", err);
        wal_close(c);
        c = open_ok(crashed);
        check_model(c, &rz_cm);
        wal_close(c);
    }
    wal_close(w);
    n_groups = GROUPS;
    CHECK(brought > 10);
    sh("rm -rf '%s' '%s'", live, pre);
    sh("rm -rf '%s' '%s'", grave, crashed);
}

/* An entry's bytes are a client's: they may hold what looks like a frame.
 * A power loss that tears the frame carrying such an entry (its first
 * sector lost, a later one landed) is a torn write, and the node must
 * start -- not refuse the log as damaged. */
static void test_frame_lookalike_in_a_torn_entry(void)
{
    char dir[300];
    base_dir(dir, sizeof(dir), "lookalike");
    struct wal *w;
    CHECK_EQ(wal_open(dir, 8 << 20, &w, err, sizeof(err)), STORAGE_OK);
    struct raft_entry e = {1, 1, RAFT_ENTRY_NORMAL, "a", 1};
    struct storage_group_write x = {.group = 1, .entries = &e, .n_entries = 1};
    commit1(w, &x);
    /* 1024 bytes, then a 32-byte empty frame at each of the eight
     * alignments (40-byte blocks, the frame k bytes into block k). */
    static uint8_t data[1024 + 8 * 40];
    memset(data, 0xaa, sizeof(data));
    for (int k = 0; k < 8; k++) {
        uint8_t *f = data + 1024 + 40 * k + k;
        uint8_t h[16] = {0x57, 0x41, 0x4c, 0x31}; /* magic, length 0 */
        uint64_t seq = (uint64_t)1 << 40;
        for (int i = 0; i < 8; i++)
            h[8 + i] = (uint8_t)(seq >> (8 * i));
        uint64_t hash = XXH64(f, 0, XXH64(h, 16, 0));
        memcpy(f, h, 16);
        for (int i = 0; i < 8; i++)
            f[16 + i] = (uint8_t)(hash >> (8 * i));
    }
    e = (struct raft_entry){1, 2, RAFT_ENTRY_NORMAL, data, sizeof(data)};
    commit1(w, &x);
    wal_close(w);
    /* A sector in the middle of that last frame never landed (its
     * header and the sectors after did). */
    char path[400];
    snprintf(path, sizeof(path), "%s/0000000000000000.seg", dir);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint8_t buf[8192];
    CHECK(pread(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf));
    size_t pos = 0;
    for (int k = 0; k < 2; k++) { /* the checkpoint, entry 1 */
        uint32_t n = (uint32_t)buf[pos + 4] | (uint32_t)buf[pos + 5] << 8 |
                     (uint32_t)buf[pos + 6] << 16 | (uint32_t)buf[pos + 7] << 24;
        pos += 32 + ((n + 7) & ~7u);
    }
    size_t sector = (pos + 600) & ~(size_t)511;
    static uint8_t zeros[512];
    CHECK(pwrite(fd, zeros, 512, (off_t)sector) == 512);
    close(fd);
    int rc = wal_open(dir, 8 << 20, &w, err, sizeof(err));
    if (rc)
        harness_fail(__FILE__, __LINE__, "a torn frame refused as damage: %s", err);
    struct storage_loaded l;
    CHECK_EQ(wal_load(w, 1, &l, err, sizeof(err)), STORAGE_OK);
    CHECK_EQ(l.persisted.n_entries, 1);
    storage_loaded_free(&l);
    wal_close(w);
    sh("rm -rf '%s' %s", dir, "");
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_round_trip_many_segments),
        HARNESS_TEST(test_power_loss_keeps_what_was_acknowledged),
        HARNESS_TEST(test_damage_in_the_middle_refused),
        HARNESS_TEST(test_hole_refused_nothing_written),
        HARNESS_TEST(test_many_groups_keep_snapshot_members),
        HARNESS_TEST(test_zeroed_frame_in_the_middle_refused),
        HARNESS_TEST(test_quiet_long_log_does_not_pin_every_segment),
        HARNESS_TEST(test_deleted_segments_brought_back),
        HARNESS_TEST(test_power_loss_many_groups),
        HARNESS_TEST(test_frame_lookalike_in_a_torn_entry),
    };
    return harness_main(argc, argv, "wal", tests, sizeof(tests) / sizeof(tests[0]));
}
