/* storage.c — stable storage on LMDB; see storage.h for the layout.
 *
 * Every value is encoded little-endian by hand, so a data directory means
 * the same on every machine. Log keys are MDB_INTEGERKEY (native size_t).
 */
#define _POSIX_C_SOURCE 200809L
#include "storage.h"

#include <errno.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum {
    MAX_DBS = 4096,     /* named databases: 4 per group plus the node's */
    GROUP_CACHE = 256,  /* groups whose handles are kept open */
    SNAP_HEADER = 8 * 5 /* index, term, size, checksum, member count */
};

struct group_dbis {
    uint64_t group;
    MDB_dbi log, meta;
    bool open;
};

struct storage {
    MDB_env *env;
    MDB_dbi node;
    struct group_dbis groups[GROUP_CACHE];
    size_t n_groups;
    size_t hook_writes; /* groups written by storage_write_more in this commit */
};

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int lmdb_error(char *err, size_t errlen, int rc, const char *what)
{
    if (rc == MDB_MAP_FULL)
        return fail(err, errlen, STORAGE_EFULL,
                    "storage full (MDB_MAP_FULL) while %s: nothing of this write was stored; "
                    "restart the node with a larger map (kvd --map-size)",
                    what);
    return fail(err, errlen, STORAGE_EIO, "storage: %s: %s", what, mdb_strerror(rc));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t v)
{
    uint8_t buf[8];
    put64(buf, v);
    MDB_val k = {strlen(key), (void *)key}, d = {8, buf};
    return mdb_put(txn, dbi, &k, &d, 0);
}

/* 0 when absent. */
static int get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *v)
{
    MDB_val k = {strlen(key), (void *)key}, d;
    int rc = mdb_get(txn, dbi, &k, &d);
    *v = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc == 0 && d.mv_size == 8)
        *v = get64(d.mv_data);
    return rc;
}

/* ------------------------------------------------------------------------
 * Open
 * ------------------------------------------------------------------------ */

static int check_identity(struct storage *st, uint64_t cluster_id, uint64_t node_id,
                          const char *path, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return lmdb_error(err, errlen, rc, "opening the node database");
    if ((rc = mdb_dbi_open(txn, "node", MDB_CREATE, &st->node))) {
        mdb_txn_abort(txn);
        return lmdb_error(err, errlen, rc, "opening the node database");
    }
    uint64_t have_cluster, have_node, have_version;
    get_u64(txn, st->node, "cluster", &have_cluster);
    get_u64(txn, st->node, "node", &have_node);
    get_u64(txn, st->node, "version", &have_version);
    if (have_version == 0) { /* a fresh directory: record who owns it */
        if ((rc = put_u64(txn, st->node, "cluster", cluster_id)) ||
            (rc = put_u64(txn, st->node, "node", node_id)) ||
            (rc = put_u64(txn, st->node, "version", STORAGE_FORMAT_VERSION))) {
            mdb_txn_abort(txn);
            return lmdb_error(err, errlen, rc, "recording the node's identity");
        }
        rc = mdb_txn_commit(txn);
        return rc ? lmdb_error(err, errlen, rc, "recording the node's identity") : STORAGE_OK;
    }
    mdb_txn_abort(txn);
    if (have_version != STORAGE_FORMAT_VERSION)
        return fail(err, errlen, STORAGE_EMISMATCH,
                    "data dir %s has storage format %llu, this build reads %d (use a fresh "
                    "--data)",
                    path, (unsigned long long)have_version, STORAGE_FORMAT_VERSION);
    if (have_cluster != cluster_id || have_node != node_id)
        return fail(err, errlen, STORAGE_EMISMATCH,
                    "data dir %s belongs to cluster %016llx node %llu, not cluster %016llx node "
                    "%llu (use a fresh --data, or the --id and cluster it was made for)",
                    path, (unsigned long long)have_cluster, (unsigned long long)have_node,
                    (unsigned long long)cluster_id, (unsigned long long)node_id);
    return STORAGE_OK;
}

int storage_open(const char *path, uint64_t cluster_id, uint64_t node_id, size_t map_size_bytes,
                 struct storage **out, char *err, size_t errlen)
{
    int rc;
    *out = NULL;
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return fail(err, errlen, STORAGE_EIO, "storage: cannot create %s: %s", path,
                    strerror(errno));
    struct storage *st = calloc(1, sizeof(*st));
    if (!st)
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
    if ((rc = mdb_env_create(&st->env))) {
        free(st);
        return lmdb_error(err, errlen, rc, "creating the environment");
    }
    /* Default flags: every commit is durable (never MDB_NOSYNC, DESIGN.md). */
    if ((rc = mdb_env_set_maxdbs(st->env, MAX_DBS)) ||
        (rc = mdb_env_set_mapsize(st->env, map_size_bytes)) ||
        (rc = mdb_env_open(st->env, path, 0, 0644))) {
        rc = lmdb_error(err, errlen, rc, "opening the environment");
        goto err_after_env;
    }
    if ((rc = check_identity(st, cluster_id, node_id, path, err, errlen)) != STORAGE_OK)
        goto err_after_env;
    *out = st;
    return STORAGE_OK;

err_after_env:
    mdb_env_close(st->env);
    free(st);
    return rc;
}

void storage_close(struct storage *st)
{
    if (!st)
        return;
    mdb_env_close(st->env);
    free(st);
}

/* The handles of a group's databases, opened (and created) in txn. */
static int group_dbis(struct storage *st, MDB_txn *txn, uint64_t group, bool create,
                      struct group_dbis **out)
{
    for (size_t i = 0; i < st->n_groups; i++)
        if (st->groups[i].group == group) {
            *out = &st->groups[i];
            return 0;
        }
    char name[40];
    struct group_dbis g = {.group = group};
    unsigned flags = create ? MDB_CREATE : 0;
    snprintf(name, sizeof(name), "g%llu.log", (unsigned long long)group);
    int rc = mdb_dbi_open(txn, name, flags | MDB_INTEGERKEY, &g.log);
    if (rc)
        return rc;
    snprintf(name, sizeof(name), "g%llu.meta", (unsigned long long)group);
    if ((rc = mdb_dbi_open(txn, name, flags, &g.meta)))
        return rc;
    g.open = true;
    /* Handles opened in a write transaction stay valid once it commits;
     * cache only then (the caller passes create for write transactions). */
    if (st->n_groups < GROUP_CACHE && create) {
        st->groups[st->n_groups] = g;
        *out = &st->groups[st->n_groups++];
        return 0;
    }
    static struct group_dbis scratch;
    scratch = g;
    *out = &scratch;
    return 0;
}

/* ------------------------------------------------------------------------
 * Commit
 * ------------------------------------------------------------------------ */

/* A log key (LMDB does not promise alignment). */
static size_t key_of(const MDB_val *k)
{
    size_t v;
    memcpy(&v, k->mv_data, sizeof(v));
    return v;
}

/* Delete every log key >= from (downwards: every key <= from).
 *
 * Each step finds its next victim afresh, at the end it works from
 * (MDB_LAST or MDB_FIRST), and passes LMDB no memory of LMDB's own: a key
 * or value LMDB returns points into its page and is valid only until the
 * next update in the transaction (lmdb.h, "Values returned from the
 * database are valid only until a subsequent update operation"). An
 * earlier version searched again after mdb_cursor_del() with the key the
 * cursor had returned -- bytes the delete had just moved -- and in a log
 * of more than one page deleted entries it had to keep (a hole) and kept
 * ones it had to delete (a stale range, which a restart would load). A
 * descent per entry costs O(log n); truncations are short suffixes, and
 * dropping a whole log is one mdb_drop(). */
static int delete_from(MDB_txn *txn, MDB_dbi log, size_t from, bool downwards)
{
    if (!downwards && from <= 1)
        return mdb_drop(txn, log, 0); /* every key: empty it, keep the handle */
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, log, &c);
    if (rc)
        return rc;
    MDB_val k, d;
    MDB_cursor_op at = downwards ? MDB_FIRST : MDB_LAST;
    while ((rc = mdb_cursor_get(c, &k, &d, at)) == 0) {
        size_t key = key_of(&k);
        if (downwards ? key > from : key < from)
            break;
        if ((rc = mdb_cursor_del(c, 0)))
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int put_entry(MDB_txn *txn, MDB_dbi log, const struct raft_entry *e)
{
    size_t key = (size_t)e->index;
    MDB_val k = {sizeof(key), &key}, d = {9 + e->len, NULL};
    /* MDB_RESERVE: LMDB gives us the space, we fill it: one copy. */
    int rc = mdb_put(txn, log, &k, &d, MDB_RESERVE);
    if (rc)
        return rc;
    uint8_t *p = d.mv_data;
    put64(p, e->term);
    p[8] = (uint8_t)e->type;
    if (e->len)
        memcpy(p + 9, e->data, e->len);
    return 0;
}

static int put_snapshot(MDB_txn *txn, MDB_dbi meta, const struct raft_snapshot_meta *s)
{
    size_t len = SNAP_HEADER + s->n_members * 9;
    MDB_val k = {4, "snap"}, d = {len, NULL};
    int rc = mdb_put(txn, meta, &k, &d, MDB_RESERVE);
    if (rc)
        return rc;
    uint8_t *p = d.mv_data;
    put64(p, s->index);
    put64(p + 8, s->term);
    put64(p + 16, s->size);
    put64(p + 24, s->checksum);
    put64(p + 32, s->n_members);
    for (size_t i = 0; i < s->n_members; i++) {
        put64(p + SNAP_HEADER + 9 * i, s->members[i].id);
        p[SNAP_HEADER + 9 * i + 8] = s->members[i].is_voter ? 1 : 0;
    }
    return 0;
}

/* The log after installing a snapshot at (index, term): its tail after the
 * snapshot if the stored entry at index has that term, else nothing. */
static int log_after_install(MDB_txn *txn, struct group_dbis *g, const struct raft_snapshot_meta *s)
{
    size_t key = (size_t)s->index;
    MDB_val k = {sizeof(key), &key}, d;
    int rc = mdb_get(txn, g->log, &k, &d);
    if (rc && rc != MDB_NOTFOUND)
        return rc;
    bool agrees = rc == 0 && d.mv_size >= 9 && get64(d.mv_data) == s->term;
    rc = agrees ? delete_from(txn, g->log, (size_t)s->index, true) /* <= index */
                : delete_from(txn, g->log, 1, false);              /* everything */
    if (rc)
        return rc;
    if ((rc = put_u64(txn, g->meta, "first", s->index + 1)) ||
        (rc = put_u64(txn, g->meta, "prev_term", s->term)))
        return rc;
    return 0;
}

static int write_log(struct storage *st, MDB_txn *txn, const struct storage_group_write *w,
                     struct group_dbis **out)
{
    struct group_dbis *g;
    int rc = group_dbis(st, txn, w->group, true, &g);
    if (rc)
        return rc;
    *out = g;
    if (w->hard_state && ((rc = put_u64(txn, g->meta, "term", w->term)) ||
                          (rc = put_u64(txn, g->meta, "vote", w->vote))))
        return rc;
    if (w->truncate_from && (rc = delete_from(txn, g->log, (size_t)w->truncate_from, false)))
        return rc;
    for (size_t i = 0; i < w->n_entries; i++)
        if ((rc = put_entry(txn, g->log, &w->entries[i])))
            return rc;
    if (w->snapshot && w->install && (rc = log_after_install(txn, g, w->snapshot)))
        return rc;
    if (w->snapshot && (rc = put_snapshot(txn, g->meta, w->snapshot)))
        return rc;
    if (w->compact_index) {
        uint64_t first;
        if ((rc = get_u64(txn, g->meta, "first", &first)))
            return rc;
        if (w->compact_index + 1 > first) {
            if ((rc = delete_from(txn, g->log, (size_t)w->compact_index, true)) ||
                (rc = put_u64(txn, g->meta, "first", w->compact_index + 1)) ||
                (rc = put_u64(txn, g->meta, "prev_term", w->compact_term)))
                return rc;
        }
    }
    return 0;
}

/* Host contract 1 as stored: after each write a group's log is one run
 * first..last -- no hole, nothing left below `first` -- and it holds the
 * last entry just written (the index PERSISTED will report), unless the
 * same write compacted or replaced it. Checked inside the transaction, so
 * a write that would break it is never committed and the node stops at
 * once, saying why, instead of failing at its next start. Three B-tree
 * descents per write. */
static int check_log(MDB_txn *txn, struct group_dbis *g, const struct storage_group_write *w,
                     char *err, size_t errlen)
{
    uint64_t first;
    MDB_stat stat;
    int rc = get_u64(txn, g->meta, "first", &first);
    if (rc || (rc = mdb_stat(txn, g->log, &stat)))
        return lmdb_error(err, errlen, rc, "checking the log");
    first = first ? first : 1;
    size_t lo = 0, hi = 0;
    if (stat.ms_entries) {
        MDB_cursor *c;
        MDB_val k, d;
        if ((rc = mdb_cursor_open(txn, g->log, &c)))
            return lmdb_error(err, errlen, rc, "checking the log");
        if ((rc = mdb_cursor_get(c, &k, &d, MDB_FIRST)) == 0) {
            lo = key_of(&k);
            if ((rc = mdb_cursor_get(c, &k, &d, MDB_LAST)) == 0)
                hi = key_of(&k);
        }
        mdb_cursor_close(c);
        if (rc)
            return lmdb_error(err, errlen, rc, "checking the log");
        if (lo != first || hi - lo + 1 != stat.ms_entries)
            return fail(err, errlen, STORAGE_ECORRUPT,
                        "storage: group %llu: this write would leave the log with %s (first index "
                        "%llu, %zu entries stored in %zu..%zu); nothing of it was stored",
                        (unsigned long long)g->group,
                        lo < first   ? "entries before its first index"
                        : lo > first ? "its first entries missing"
                                     : "a hole",
                        (unsigned long long)first, (size_t)stat.ms_entries, lo, hi);
    }
    if (!w->n_entries)
        return STORAGE_OK;
    const struct raft_entry *last = &w->entries[w->n_entries - 1];
    raft_index gone = w->compact_index;
    if (w->install && w->snapshot && w->snapshot->index > gone)
        gone = w->snapshot->index;
    if (last->index <= gone)
        return STORAGE_OK;
    size_t key = (size_t)last->index;
    MDB_val k = {sizeof(key), &key}, d;
    rc = mdb_get(txn, g->log, &k, &d);
    if (rc && rc != MDB_NOTFOUND)
        return lmdb_error(err, errlen, rc, "checking the log");
    if (rc || d.mv_size < 9 || get64(d.mv_data) != last->term)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: group %llu: entry %llu of term %llu was written but is not stored; "
                    "nothing of this write was stored",
                    (unsigned long long)g->group, (unsigned long long)last->index,
                    (unsigned long long)last->term);
    return STORAGE_OK;
}

/* One group's write and its check; a STORAGE_ code with err filled. */
static int write_group(struct storage *st, MDB_txn *txn, const struct storage_group_write *w,
                       char *err, size_t errlen)
{
    struct group_dbis *g = NULL;
    int rc = write_log(st, txn, w, &g);
    if (rc)
        return lmdb_error(err, errlen, rc, "writing the log");
    return check_log(txn, g, w, err, errlen);
}

int storage_commit(struct storage *st, const struct storage_group_write *writes, size_t n,
                   char *err, size_t errlen)
{
    return storage_commit_with(st, writes, n, NULL, NULL, err, errlen);
}

int storage_write_more(struct storage *st, void *txn, const struct storage_group_write *writes,
                       size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        int rc = write_group(st, txn, &writes[i], err, errlen);
        if (rc)
            return rc;
    }
    st->hook_writes += n;
    return STORAGE_OK;
}

int storage_commit_with(struct storage *st, const struct storage_group_write *writes, size_t n,
                        storage_hook hook, void *arg, char *err, size_t errlen)
{
    MDB_txn *txn;
    size_t cached = st->n_groups;
    st->hook_writes = 0;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return lmdb_error(err, errlen, rc, "starting a write");
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = write_group(st, txn, &writes[i], err, errlen);
    if (rc) {
        mdb_txn_abort(txn);
        st->n_groups = cached; /* handles opened in an aborted txn are void */
        return rc;
    }
    if (hook && (rc = hook(arg, txn, err, errlen)) != STORAGE_OK) {
        mdb_txn_abort(txn);
        st->n_groups = cached;
        return rc;
    }
    /* A transaction without log writes only applies committed entries:
     * their log is durable, so losing this transaction in a system crash
     * costs a replay, nothing more. Skip the meta page's own sync for it
     * (LMDB keeps atomicity and consistency; the next synced commit makes
     * it durable too): one sync instead of two, on the path of every
     * client's answer. */
    bool apply_only = n == 0 && st->hook_writes == 0;
    if (apply_only)
        mdb_env_set_flags(st->env, MDB_NOMETASYNC, 1);
    /* The commit is the fsync: durable when it returns (host contract 1). */
    rc = mdb_txn_commit(txn);
    if (apply_only)
        mdb_env_set_flags(st->env, MDB_NOMETASYNC, 0);
    if (rc) {
        st->n_groups = cached;
        return lmdb_error(err, errlen, rc, "committing");
    }
    return STORAGE_OK;
}

/* ------------------------------------------------------------------------
 * Load
 * ------------------------------------------------------------------------ */

static int load_snapshot(MDB_txn *txn, MDB_dbi meta, struct storage_loaded *out)
{
    MDB_val k = {4, "snap"}, d;
    int rc = mdb_get(txn, meta, &k, &d);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    const uint8_t *p = d.mv_data;
    if (d.mv_size < SNAP_HEADER)
        return STORAGE_ECORRUPT;
    uint64_t n = get64(p + 32);
    if (n > 64 || d.mv_size != SNAP_HEADER + n * 9)
        return STORAGE_ECORRUPT;
    out->members = calloc(n ? n : 1, sizeof(*out->members));
    if (!out->members)
        return STORAGE_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        out->members[i].id = get64(p + SNAP_HEADER + 9 * i);
        out->members[i].is_voter = p[SNAP_HEADER + 9 * i + 8] & 1;
    }
    out->snapshot = (struct raft_snapshot_meta){get64(p),      get64(p + 8), get64(p + 16),
                                                get64(p + 24), out->members, (size_t)n};
    out->persisted.snapshot = &out->snapshot;
    out->persisted.applied_index = out->snapshot.index;
    return 0;
}

/* What a damaged log means, and what to do about it (appended to every
 * diagnosis of diagnose_log). */
#define DAMAGED_ADVICE                                                                             \
    "; this node may have acknowledged entries it no longer holds, or kept entries it had to "     \
    "delete, so it must not rejoin with this log. Move its data directory aside and start it "     \
    "empty only while the other nodes alone are a majority and are caught up with their leader "   \
    "(they then hold every committed entry; see docs/kvd.md, \"A node that will not start\")"

/* Read the stored log once and say what, if anything, breaks host
 * contract 1: a record that does not decode, entries below the first
 * index (a compaction or snapshot install left them), a hole, or a term
 * that goes down (a stale range a truncation left: Log Matching, §5.3,
 * makes terms non-decreasing along any log). *bytes is the data size
 * when the log is sound. */
static int diagnose_log(MDB_txn *txn, MDB_dbi log, uint64_t group, raft_index first,
                        raft_term prev_term, size_t *bytes, char *err, size_t errlen)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, log, &c);
    if (rc)
        return lmdb_error(err, errlen, rc, "reading the log");
    size_t n = 0, lo = 0, hi = 0, below = 0, below_lo = 0, below_hi = 0;
    size_t bad = 0, bad_size = 0, hole = 0, drop = 0;
    raft_term last_term = prev_term, drop_term = 0, drop_prev = 0;
    raft_index expect = first;
    MDB_val k, d;
    *bytes = 0;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        size_t index = key_of(&k);
        lo = n++ ? lo : index;
        hi = index;
        *bytes += d.mv_size;
        if (d.mv_size < 9) {
            bad = bad ? bad : index, bad_size = bad_size ? bad_size : d.mv_size;
            continue;
        }
        if (index < first) {
            below_lo = below++ ? below_lo : index;
            below_hi = index;
            continue;
        }
        if (index != expect && !hole)
            hole = expect;
        expect = index + 1;
        raft_term term = get64(d.mv_data);
        if (term < last_term && !drop)
            drop = index, drop_term = term, drop_prev = last_term;
        last_term = term;
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND)
        return lmdb_error(err, errlen, rc, "reading the log");
    unsigned long long g = group;
    if (bad)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu: entry %zu does not decode (a record of %zu bytes, "
                    "stored %zu..%zu)" DAMAGED_ADVICE,
                    g, bad, bad_size, lo, hi);
    if (below)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu holds %zu entries (%zu..%zu) below its first index "
                    "%llu, which a compaction or snapshot install had to delete (stored "
                    "%zu..%zu)" DAMAGED_ADVICE,
                    g, below, below_lo, below_hi, (unsigned long long)first, lo, hi);
    if (hole)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu has a hole at %zu (first index %llu, stored "
                    "%zu..%zu)" DAMAGED_ADVICE,
                    g, hole, (unsigned long long)first, lo, hi);
    if (drop)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu: entry %zu has term %llu after term %llu (terms "
                    "never go down along a log: a stale range a truncation had to delete; stored "
                    "%zu..%zu)" DAMAGED_ADVICE,
                    g, drop, (unsigned long long)drop_term, (unsigned long long)drop_prev, lo, hi);
    return STORAGE_OK;
}

static int load_entries(MDB_txn *txn, MDB_dbi log, uint64_t group, struct storage_loaded *out,
                        char *err, size_t errlen)
{
    size_t bytes = 0;
    int rc = diagnose_log(txn, log, group, out->persisted.first_index, out->persisted.prev_term,
                          &bytes, err, errlen);
    if (rc)
        return rc;
    MDB_stat stat;
    MDB_cursor *c;
    if ((rc = mdb_stat(txn, log, &stat)) || (rc = mdb_cursor_open(txn, log, &c)))
        return lmdb_error(err, errlen, rc, "reading the log");
    size_t n = 0, cap = stat.ms_entries;
    out->entries = calloc(cap ? cap : 1, sizeof(*out->entries));
    out->arena = malloc(bytes ? bytes : 1);
    if (!out->entries || !out->arena) {
        mdb_cursor_close(c);
        return fail(err, errlen, STORAGE_ENOMEM, "storage: group %llu: out of memory",
                    (unsigned long long)group);
    }
    uint8_t *at = out->arena;
    MDB_val k, d;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0 && n < cap;
         rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        memcpy(at, (const uint8_t *)d.mv_data + 9, d.mv_size - 9);
        out->entries[n++] = (struct raft_entry){.term = get64(d.mv_data),
                                                .index = key_of(&k),
                                                .type = ((const uint8_t *)d.mv_data)[8],
                                                .data = at,
                                                .len = d.mv_size - 9};
        at += d.mv_size - 9;
    }
    mdb_cursor_close(c);
    out->persisted.entries = out->entries;
    out->persisted.n_entries = n;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return lmdb_error(err, errlen, rc, "reading the log");
    return STORAGE_OK;
}

int storage_load(struct storage *st, uint64_t group, struct storage_loaded *out, char *err,
                 size_t errlen)
{
    memset(out, 0, sizeof(*out));
    /* Open (or create, empty) the group's databases in a write
     * transaction, so that their handles outlive it. */
    MDB_txn *txn;
    struct group_dbis *g;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return lmdb_error(err, errlen, rc, "opening a group");
    size_t cached = st->n_groups;
    if ((rc = group_dbis(st, txn, group, true, &g)) || (rc = mdb_txn_commit(txn))) {
        if (rc)
            st->n_groups = cached;
        return lmdb_error(err, errlen, rc, "opening a group");
    }
    struct group_dbis handles = *g;
    g = &handles;
    if ((rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn)))
        return lmdb_error(err, errlen, rc, "starting a read");
    uint64_t term = 0, vote = 0, first = 0, prev_term = 0;
    if (rc == 0)
        rc = get_u64(txn, g->meta, "term", &term);
    if (rc == 0)
        rc = get_u64(txn, g->meta, "vote", &vote);
    if (rc == 0)
        rc = get_u64(txn, g->meta, "first", &first);
    if (rc == 0)
        rc = get_u64(txn, g->meta, "prev_term", &prev_term);
    out->persisted.current_term = term;
    out->persisted.voted_for = vote;
    out->persisted.first_index = first ? first : 1;
    out->persisted.prev_term = prev_term;
    if (rc == 0)
        rc = load_snapshot(txn, g->meta, out);
    if (rc == 0) {
        rc = load_entries(txn, g->log, group, out, err, errlen);
        mdb_txn_abort(txn);
        if (rc)
            storage_loaded_free(out);
        return rc;
    }
    mdb_txn_abort(txn);
    if (rc == STORAGE_ECORRUPT || rc == STORAGE_ENOMEM) {
        storage_loaded_free(out);
        return fail(err, errlen, rc, "storage: group %llu: %s", (unsigned long long)group,
                    rc == STORAGE_ECORRUPT ? "its snapshot record does not decode"
                                           : "out of memory");
    }
    if (rc) {
        storage_loaded_free(out);
        return lmdb_error(err, errlen, rc, "reading a group");
    }
    return STORAGE_OK;
}

void storage_loaded_free(struct storage_loaded *l)
{
    free(l->entries);
    free(l->members);
    free(l->arena);
    memset(l, 0, sizeof(*l));
}

void *storage_env(struct storage *st)
{
    return st->env;
}
