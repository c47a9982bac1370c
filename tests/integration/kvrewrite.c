/* kvrewrite.c — a test-only tool: change one stored value in a stopped kvd's data
 * directory the way no read can notice, so only the replicas' content-hash
 * comparison can (tests/integration/test_corruption.sh).
 *
 *   kvrewrite DATA_DIR GROUP KEY VALUE [--fix-hash]
 *
 * The value of KEY in group GROUP's table ("g<GROUP>.kv") becomes VALUE, stored
 * with a checksum that fits it (state format 3: XXH64 of key and value before the
 * value, kv/sm.c), so the per-value checksum passes. With --fix-hash the running
 * content hash kept with the applied index ("hash" in "g<GROUP>.kvmeta") is then
 * summed again from every stored pair, so the node's own scan at start finds
 * nothing either: a copy that differs from the others' with no local sign at all
 * (what a bug in applying, or a disk that rewrote whole pages consistently, would
 * leave) -- or, when VALUE is the good one, a copy repaired by hand.
 *
 * Exit status 0 when rewritten; 1 with a message otherwise. Never use it on a data
 * directory a kvd has open.
 */
#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

enum { MAX_DBS = 4096, VALUE_SUM = 8 }; /* as raft/io/storage.c and kv/sm.c */

static uint64_t value_sum(const void *key, size_t klen, const void *val, size_t vlen)
{
    return XXH64(val, vlen, XXH64(key, klen, 0x6b76)); /* kv/sm.c */
}

static uint64_t get_le64(const void *p)
{
    const uint8_t *b = p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static void put_le64(void *p, uint64_t v)
{
    uint8_t *b = p;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "kvrewrite: %s: %s\n", what, rc ? mdb_strerror(rc) : "failed");
    return 1;
}

/* Rewrite key's value in txn. */
static int rewrite(MDB_txn *txn, MDB_dbi kv, bool checked, const char *key, const char *value)
{
    size_t klen = strlen(key), vlen = strlen(value);
    MDB_val k = {klen, (void *)key}, d;
    int rc = mdb_get(txn, kv, &k, &d);
    if (rc)
        return fail("the key", rc);
    size_t head = checked ? VALUE_SUM : 0;
    uint8_t *rec = malloc(head + vlen + 1);
    if (!rec)
        return fail("memory", 0);
    if (checked)
        put_le64(rec, value_sum(key, klen, value, vlen));
    memcpy(rec + head, value, vlen);
    MDB_val nd = {head + vlen, rec};
    rc = mdb_put(txn, kv, &k, &nd, 0);
    free(rec);
    return rc ? fail("writing the value", rc) : 0;
}

/* The running content hash of the stored pairs, as kv/sm.c sums it. */
static int content_hash(MDB_txn *txn, MDB_dbi kv, bool checked, uint64_t *sum)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, kv, &c);
    if (rc)
        return rc;
    MDB_val k, v;
    *sum = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
        *sum += checked && v.mv_size >= VALUE_SUM
                    ? get_le64(v.mv_data)
                    : value_sum(k.mv_data, k.mv_size, v.mv_data, v.mv_size);
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 6 || (argc == 6 && strcmp(argv[5], "--fix-hash") != 0)) {
        fprintf(stderr, "usage: kvrewrite DATA_DIR GROUP KEY VALUE [--fix-hash]\n");
        return 2;
    }
    bool fix_hash = argc == 6;
    /* The state machine's environment: DATA_DIR/sm, or DATA_DIR itself in
     * a directory made before the split (raft/io/storage.h). */
    char dir[4096];
    struct stat sb;
    snprintf(dir, sizeof(dir), "%s/sm/data.mdb", argv[1]);
    if (stat(dir, &sb) == 0)
        snprintf(dir, sizeof(dir), "%s/sm", argv[1]);
    else
        snprintf(dir, sizeof(dir), "%s", argv[1]);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi kv, meta;
    char name[64];
    int rc;
    if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_maxdbs(env, MAX_DBS)) ||
        (rc = mdb_env_open(env, dir, 0, 0644)))
        return fail(dir, rc);
    if ((rc = mdb_txn_begin(env, NULL, 0, &txn)))
        return fail("a transaction", rc);
    snprintf(name, sizeof(name), "g%s.kv", argv[2]);
    if ((rc = mdb_dbi_open(txn, name, 0, &kv)))
        return fail(name, rc);
    snprintf(name, sizeof(name), "g%s.kvmeta", argv[2]);
    if ((rc = mdb_dbi_open(txn, name, 0, &meta)))
        return fail(name, rc);
    MDB_val fk = {6, "format"}, hk = {4, "hash"}, d;
    bool checked = mdb_get(txn, meta, &fk, &d) == 0 && d.mv_size == 8 && get_le64(d.mv_data) >= 3;
    if (rewrite(txn, kv, checked, argv[3], argv[4]))
        return 1;
    if (fix_hash) {
        uint64_t sum;
        if ((rc = content_hash(txn, kv, checked, &sum)))
            return fail("summing the content", rc);
        uint8_t h[8];
        put_le64(h, sum);
        MDB_val nd = {8, h};
        if ((rc = mdb_put(txn, meta, &hk, &nd, 0)))
            return fail("writing the content hash", rc);
    }
    if ((rc = mdb_txn_commit(txn)))
        return fail("committing", rc);
    mdb_env_close(env);
    printf("kvrewrite: %s of group %s rewritten%s\n", argv[3], argv[2],
           fix_hash ? ", and the stored content hash summed again to fit" : "");
    return 0;
}
