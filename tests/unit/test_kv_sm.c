/* The key-value state machine: kv/sm.c. Commands, exactly-once sessions,
 * atomic batches with the applied index, a full map, and the running
 * content hash that replicas compare (etcd's corruption check). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "sm.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static char dir[128];
static MDB_env *env;
static char err[256];

static void open_env(size_t map)
{
    CHECK_EQ(mdb_env_create(&env), 0);
    CHECK_EQ(mdb_env_set_maxdbs(env, 16), 0);
    CHECK_EQ(mdb_env_set_mapsize(env, map), 0);
    CHECK_EQ(mdb_env_open(env, dir, 0, 0644), 0);
}

static void fresh(size_t map)
{
    snprintf(dir, sizeof(dir), "/tmp/raftkv-test-sm-%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    CHECK(mkdir(dir, 0755) == 0);
    open_env(map);
}

static void cleanup(void)
{
    mdb_env_close(env);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* The leader's stamp on the entries entry() makes (kv.proto fields 9, 10). */
static uint64_t stamp_ms, stamp_ttl_ms;

/* An entry at index holding a command; data is malloc'ed into *buf. */
static struct raft_entry entry(raft_index index, Kvpb__Op op, const char *key, const char *value,
                               uint64_t client, uint64_t seq, uint8_t **buf)
{
    Kvpb__Command c = KVPB__COMMAND__INIT;
    ProtobufCBinaryData k = {strlen(key), (uint8_t *)key};
    c.op = op;
    c.n_keys = 1;
    c.keys = &k;
    if (value) {
        c.value.data = (uint8_t *)value;
        c.value.len = strlen(value);
    }
    c.client_id = client;
    c.seq = seq;
    c.time_ms = stamp_ms;
    c.session_ttl_ms = stamp_ttl_ms;
    size_t len;
    CHECK_EQ(kv_command_encode(&c, buf, &len), KV_OK);
    return (struct raft_entry){.term = 1, .index = index, .data = *buf, .len = len};
}

static struct kv_result apply1(struct kv_sm *sm, struct raft_entry e)
{
    struct kv_result r;
    CHECK_EQ(kv_sm_apply(sm, &e, 1, &r, err, sizeof(err)), KV_OK);
    free((void *)e.data);
    return r;
}

static struct kv_result get(struct kv_sm *sm, const char *key)
{
    Kvpb__Command c = KVPB__COMMAND__INIT;
    ProtobufCBinaryData k = {strlen(key), (uint8_t *)key};
    c.op = KVPB__OP__OP_GET;
    c.n_keys = 1;
    c.keys = &k;
    struct kv_result r;
    CHECK_EQ(kv_sm_read(sm, &c, &r), KV_OK);
    return r;
}

static void test_commands(void)
{
    fresh(16 << 20);
    struct kv_sm *sm;
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    uint8_t *b;
    struct kv_result r = apply1(sm, entry(1, KVPB__OP__OP_SET, "k", "v1", 0, 0, &b));
    CHECK_EQ(r.status, KVPB__STATUS__STATUS_OK);
    kv_result_free(&r);
    r = get(sm, "k");
    CHECK(r.status == KVPB__STATUS__STATUS_OK && r.values[0].len == 2 &&
          memcmp(r.values[0].data, "v1", 2) == 0);
    kv_result_free(&r);
    r = apply1(sm, entry(2, KVPB__OP__OP_INCR, "n", NULL, 0, 0, &b));
    CHECK_EQ(r.integer, 1);
    kv_result_free(&r);
    r = apply1(sm, entry(3, KVPB__OP__OP_INCR, "n", NULL, 0, 0, &b));
    CHECK_EQ(r.integer, 2);
    kv_result_free(&r);
    r = apply1(sm, entry(4, KVPB__OP__OP_INCR, "k", NULL, 0, 0, &b));
    CHECK_EQ(r.status, KVPB__STATUS__STATUS_NOT_INTEGER);
    kv_result_free(&r);
    r = apply1(sm, entry(5, KVPB__OP__OP_DEL, "k", NULL, 0, 0, &b));
    CHECK_EQ(r.integer, 1);
    kv_result_free(&r);
    r = get(sm, "k");
    CHECK_EQ(r.status, KVPB__STATUS__STATUS_NOT_FOUND);
    kv_result_free(&r);
    CHECK_EQ(kv_sm_applied(sm), 5);
    /* Out of order is refused, and changes nothing. */
    struct raft_entry late = entry(9, KVPB__OP__OP_SET, "x", "y", 0, 0, &b);
    CHECK_EQ(kv_sm_apply(sm, &late, 1, NULL, err, sizeof(err)), KV_EORDER);
    free(b);
    CHECK_EQ(kv_sm_applied(sm), 5);
    kv_sm_close(sm);
    cleanup();
}

static void test_cas(void)
{
    fresh(16 << 20);
    struct kv_sm *sm;
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    Kvpb__Command c = KVPB__COMMAND__INIT;
    ProtobufCBinaryData k = {1, (uint8_t *)"c"};
    c.op = KVPB__OP__OP_CAS;
    c.n_keys = 1;
    c.keys = &k;
    c.expect_absent = true;
    c.value = (ProtobufCBinaryData){1, (uint8_t *)"1"};
    uint8_t *data;
    size_t len;
    kv_command_encode(&c, &data, &len);
    struct raft_entry e = {.term = 1, .index = 1, .data = data, .len = len};
    struct kv_result r;
    CHECK_EQ(kv_sm_apply(sm, &e, 1, &r, err, sizeof(err)), KV_OK);
    CHECK_EQ(r.status, KVPB__STATUS__STATUS_OK);
    kv_result_free(&r);
    e.index = 2; /* the same CAS again: the key exists now */
    CHECK_EQ(kv_sm_apply(sm, &e, 1, &r, err, sizeof(err)), KV_OK);
    CHECK_EQ(r.status, KVPB__STATUS__STATUS_CAS_MISMATCH);
    CHECK(r.n_values == 1 && r.values[0].present && r.values[0].data[0] == '1');
    kv_result_free(&r);
    free(data);
    c.expect_absent = false;
    c.expected = (ProtobufCBinaryData){1, (uint8_t *)"1"};
    c.value = (ProtobufCBinaryData){1, (uint8_t *)"2"};
    kv_command_encode(&c, &data, &len);
    e = (struct raft_entry){.term = 1, .index = 3, .data = data, .len = len};
    CHECK_EQ(kv_sm_apply(sm, &e, 1, &r, err, sizeof(err)), KV_OK);
    CHECK_EQ(r.status, KVPB__STATUS__STATUS_OK);
    kv_result_free(&r);
    free(data);
    r = get(sm, "c");
    CHECK(r.values[0].data[0] == '2');
    kv_result_free(&r);
    kv_sm_close(sm);
    cleanup();
}

/* thesis §6.3: a retried command is answered from the session table and
 * not applied again; an older seq is refused as expired. */
static void test_retry_applied_once(void)
{
    fresh(16 << 20);
    struct kv_sm *sm;
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    uint8_t *b;
    struct kv_result r = apply1(sm, entry(1, KVPB__OP__OP_INCR, "n", NULL, 77, 1, &b));
    CHECK_EQ(r.integer, 1);
    kv_result_free(&r);
    /* The same command, committed again (a client retry after a leader
     * change): same answer, no second increment. */
    r = apply1(sm, entry(2, KVPB__OP__OP_INCR, "n", NULL, 77, 1, &b));
    CHECK_EQ(r.integer, 1);
    CHECK_EQ(r.index, 1);
    kv_result_free(&r);
    r = get(sm, "n");
    CHECK(r.values[0].len == 1 && r.values[0].data[0] == '1');
    kv_result_free(&r);
    r = apply1(sm, entry(3, KVPB__OP__OP_INCR, "n", NULL, 77, 2, &b));
    CHECK_EQ(r.integer, 2);
    kv_result_free(&r);
    r = apply1(sm, entry(4, KVPB__OP__OP_INCR, "n", NULL, 77, 1, &b));
    CHECK_EQ(r.status, KVPB__STATUS__STATUS_SESSION_EXPIRED);
    kv_result_free(&r);
    /* Another client has its own session. */
    r = apply1(sm, entry(5, KVPB__OP__OP_INCR, "n", NULL, 78, 1, &b));
    CHECK_EQ(r.integer, 3);
    kv_result_free(&r);
    kv_sm_close(sm);
    /* Sessions and the applied index survive a restart. */
    mdb_env_close(env);
    open_env(16 << 20);
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    CHECK_EQ(kv_sm_applied(sm), 5);
    r = apply1(sm, entry(6, KVPB__OP__OP_INCR, "n", NULL, 78, 1, &b));
    CHECK_EQ(r.integer, 3);
    kv_result_free(&r);
    kv_sm_close(sm);
    cleanup();
}

/* A full map applies nothing of the batch; with a larger map the same
 * batch applies. */
static void test_map_full_applies_nothing(void)
{
    fresh(256 << 10);
    struct kv_sm *sm;
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    static char big[8000];
    memset(big, 'z', sizeof(big) - 1);
    enum { BATCH = 64 };
    struct raft_entry es[BATCH];
    uint8_t *bufs[BATCH];
    for (int i = 0; i < BATCH; i++) {
        char key[16];
        snprintf(key, sizeof(key), "key%d", i);
        es[i] = entry((raft_index)i + 1, KVPB__OP__OP_SET, key, big, 0, 0, &bufs[i]);
    }
    CHECK_EQ(kv_sm_apply(sm, es, BATCH, NULL, err, sizeof(err)), KV_EFULL);
    CHECK(strstr(err, "nothing of this batch was applied"));
    CHECK_EQ(kv_sm_applied(sm), 0);
    struct kv_result r = get(sm, "key0");
    CHECK_EQ(r.status, KVPB__STATUS__STATUS_NOT_FOUND);
    kv_result_free(&r);
    kv_sm_close(sm);
    mdb_env_close(env);
    open_env(64 << 20);
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    CHECK_EQ(kv_sm_apply(sm, es, BATCH, NULL, err, sizeof(err)), KV_OK);
    CHECK_EQ(kv_sm_applied(sm), BATCH);
    for (int i = 0; i < BATCH; i++)
        free(bufs[i]);
    kv_sm_close(sm);
    cleanup();
}

/* A snapshot written from one state machine and installed into another
 * (group 2 of the same environment stands for another node) gives the
 * same content hash, the same session table and the same applied index;
 * a damaged file is caught by its checksum. */
static void test_snapshot_round_trip(void)
{
    fresh(16 << 20);
    struct kv_sm *a, *b;
    CHECK_EQ(kv_sm_open(env, 1, &a, err, sizeof(err)), KV_OK);
    CHECK_EQ(kv_sm_open(env, 2, &b, err, sizeof(err)), KV_OK);
    uint8_t *buf;
    char key[16], val[16];
    for (int i = 1; i <= 200; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "v%d", i * 7);
        struct kv_result r =
            apply1(a, entry((raft_index)i, KVPB__OP__OP_SET, key, val, 9, (uint64_t)i, &buf));
        kv_result_free(&r);
    }
    /* b held something else before: the install replaces it. */
    struct kv_result r = apply1(b, entry(1, KVPB__OP__OP_SET, "stale", "x", 0, 0, &buf));
    kv_result_free(&r);
    char path[200];
    snprintf(path, sizeof(path), "%s/snap", dir);
    raft_index index;
    uint64_t size, sum;
    CHECK_EQ(kv_sm_snapshot_write(a, path, &index, &size, &sum, err, sizeof(err)), KV_OK);
    CHECK_EQ(index, 200);
    raft_index at;
    CHECK_EQ(kv_snapshot_file_check(path, size, sum, &at), KV_OK);
    CHECK_EQ(at, 200);
    CHECK_EQ(kv_snapshot_file_check(path, size, sum ^ 1, NULL), KV_EIO);
    MDB_txn *txn;
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ(kv_sm_install_stage(b, txn, path, 200, err, sizeof(err)), KV_OK);
    CHECK_EQ(mdb_txn_commit(txn), 0);
    kv_sm_staged_done(b, true);
    CHECK_EQ(kv_sm_applied(b), 200);
    uint64_t ha, hb, na, nb;
    CHECK_EQ(kv_sm_hash(a, &ha, &na), KV_OK);
    CHECK_EQ(kv_sm_hash(b, &hb, &nb), KV_OK);
    CHECK_EQ(na, 200);
    CHECK_EQ(nb, 200);
    CHECK_EQ(ha, hb);
    r = get(b, "stale");
    CHECK_EQ(r.status, KVPB__STATUS__STATUS_NOT_FOUND);
    kv_result_free(&r);
    /* The session table came along: a retry of seq 200 is answered, not applied. */
    r = apply1(b, entry(201, KVPB__OP__OP_SET, "k200", "again", 9, 200, &buf));
    kv_result_free(&r);
    r = get(b, "k200");
    CHECK_EQ(r.values[0].len, 5);
    CHECK(memcmp(r.values[0].data, "v1400", 5) == 0);
    kv_result_free(&r);
    /* A truncated file does not install. */
    CHECK_EQ(truncate(path, (off_t)size - 5), 0);
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK(kv_sm_install_stage(b, txn, path, 200, err, sizeof(err)) != KV_OK);
    mdb_txn_abort(txn);
    kv_sm_staged_done(b, false);
    kv_sm_close(a);
    kv_sm_close(b);
    cleanup();
}

static uint64_t sessions(struct kv_sm *sm, uint64_t *clock)
{
    uint64_t n, expired, c;
    CHECK_EQ(kv_sm_sessions(sm, &n, &expired, &c), KV_OK);
    if (clock)
        *clock = c;
    return n;
}

static Kvpb__Status incr_status(struct kv_sm *sm, raft_index i, uint64_t client, uint64_t seq,
                                int64_t *value)
{
    uint8_t *b;
    struct kv_result r = apply1(sm, entry(i, KVPB__OP__OP_INCR, "n", NULL, client, seq, &b));
    Kvpb__Status st = r.status;
    if (value)
        *value = r.integer;
    kv_result_free(&r);
    return st;
}

/* thesis §6.3: sessions expire after the TTL of idleness on the log's clock
 * (the leader's stamps); an expired session's next command is refused and
 * not applied; a session starts at seq 1. */
static void test_session_expiry(void)
{
    fresh(16 << 20);
    struct kv_sm *sm;
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    int64_t v;
    stamp_ttl_ms = 10000;
    stamp_ms = 1000;
    CHECK_EQ(incr_status(sm, 1, 1, 1, &v), KVPB__STATUS__STATUS_OK);
    CHECK_EQ(v, 1);
    stamp_ms = 5000;
    CHECK_EQ(incr_status(sm, 2, 2, 1, &v), KVPB__STATUS__STATUS_OK);
    CHECK_EQ(v, 2);
    /* 1 ms short of its TTL, client 1 is alive; using it renews it. */
    stamp_ms = 10999;
    CHECK_EQ(incr_status(sm, 3, 1, 2, &v), KVPB__STATUS__STATUS_OK);
    CHECK_EQ(v, 3);
    stamp_ms = 20998;
    CHECK_EQ(incr_status(sm, 4, 1, 3, &v), KVPB__STATUS__STATUS_OK);
    CHECK_EQ(v, 4);
    /* Client 2 has been idle since 5000: its next command is refused, and
     * not applied. */
    CHECK_EQ(incr_status(sm, 5, 2, 2, NULL), KVPB__STATUS__STATUS_SESSION_EXPIRED);
    /* A session never started (seq above 1) is refused the same way. */
    CHECK_EQ(incr_status(sm, 6, 3, 5, NULL), KVPB__STATUS__STATUS_SESSION_EXPIRED);
    struct kv_result r = get(sm, "n");
    CHECK(r.values[0].len == 1 && r.values[0].data[0] == '4');
    kv_result_free(&r);
    /* The clock never goes back (a new leader's clock may be behind). */
    uint64_t clock;
    stamp_ms = 7000;
    CHECK_EQ(incr_status(sm, 7, 1, 4, NULL), KVPB__STATUS__STATUS_OK);
    sessions(sm, &clock);
    CHECK_EQ(clock, 20998);
    /* The sweep: ten sessions, then 10 s of log time later one command
     * from a new client: only client 1 (used at 20998) and the new one
     * stay. */
    stamp_ms = 25000;
    for (uint64_t c = 10; c < 20; c++)
        CHECK_EQ(incr_status(sm, 8 + c - 10, c, 1, NULL), KVPB__STATUS__STATUS_OK);
    CHECK_EQ(sessions(sm, NULL), 11);
    stamp_ms = 35001;
    CHECK_EQ(incr_status(sm, 18, 100, 1, NULL), KVPB__STATUS__STATUS_OK);
    CHECK_EQ(sessions(sm, NULL), 1);
    uint64_t n, expired;
    CHECK_EQ(kv_sm_sessions(sm, &n, &expired, &clock), KV_OK);
    CHECK_EQ(expired, 12); /* client 2 at entry 5, then eleven in the sweep */
    /* TTL 0: nothing expires. */
    stamp_ttl_ms = 0;
    stamp_ms = 1000000;
    CHECK_EQ(incr_status(sm, 19, 100, 2, NULL), KVPB__STATUS__STATUS_OK);
    /* The clock survives a restart. */
    kv_sm_close(sm);
    mdb_env_close(env);
    open_env(16 << 20);
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    sessions(sm, &clock);
    CHECK_EQ(clock, 1000000);
    kv_sm_close(sm);
    stamp_ms = stamp_ttl_ms = 0;
    cleanup();
}

/* Expiry is decided from the log alone: the same entries applied in one
 * batch on one replica and one by one on another leave identical states
 * (keys, sessions with their last-used clocks, the clock: equal snapshot
 * checksums), and a snapshot carries the clock to a third. */
static void test_session_expiry_deterministic(void)
{
    fresh(32 << 20);
    struct kv_sm *a, *b, *c;
    CHECK_EQ(kv_sm_open(env, 1, &a, err, sizeof(err)), KV_OK);
    CHECK_EQ(kv_sm_open(env, 2, &b, err, sizeof(err)), KV_OK);
    CHECK_EQ(kv_sm_open(env, 3, &c, err, sizeof(err)), KV_OK);
    enum { N = 400 };
    struct raft_entry es[N];
    uint8_t *bufs[N];
    uint64_t seqs[40] = {0};
    uint64_t rng = 12345;
    stamp_ttl_ms = 3000;
    for (int i = 0; i < N; i++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t client = 1 + (rng >> 33) % 40;
        stamp_ms = 1000 + (uint64_t)i * 37 - (rng >> 60) * 10; /* not monotonic */
        es[i] = entry((raft_index)i + 1, KVPB__OP__OP_INCR, "n", NULL, client, ++seqs[client - 1],
                      &bufs[i]);
    }
    CHECK_EQ(kv_sm_apply(a, es, N, NULL, err, sizeof(err)), KV_OK);
    for (int i = 0; i < N; i++)
        CHECK_EQ(kv_sm_apply(b, &es[i], 1, NULL, err, sizeof(err)), KV_OK);
    uint64_t na, nb, ea, eb, ca, cb;
    CHECK_EQ(kv_sm_sessions(a, &na, &ea, &ca), KV_OK);
    CHECK_EQ(kv_sm_sessions(b, &nb, &eb, &cb), KV_OK);
    CHECK_EQ(na, nb);
    CHECK_EQ(ea, eb);
    CHECK_EQ(ca, cb);
    CHECK(ea > 0); /* the schedule does expire sessions */
    char pa[200], pb[200];
    snprintf(pa, sizeof(pa), "%s/snap-a", dir);
    snprintf(pb, sizeof(pb), "%s/snap-b", dir);
    raft_index ia, ib;
    uint64_t sa, sb, suma, sumb;
    CHECK_EQ(kv_sm_snapshot_write(a, pa, &ia, &sa, &suma, err, sizeof(err)), KV_OK);
    CHECK_EQ(kv_sm_snapshot_write(b, pb, &ib, &sb, &sumb, err, sizeof(err)), KV_OK);
    CHECK_EQ(suma, sumb);
    MDB_txn *txn;
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ(kv_sm_install_stage(c, txn, pa, ia, err, sizeof(err)), KV_OK);
    CHECK_EQ(mdb_txn_commit(txn), 0);
    kv_sm_staged_done(c, true);
    uint64_t nc, ec, cc;
    CHECK_EQ(kv_sm_sessions(c, &nc, &ec, &cc), KV_OK);
    CHECK_EQ(nc, na);
    CHECK_EQ(cc, ca);
    for (int i = 0; i < N; i++)
        free(bufs[i]);
    kv_sm_close(a);
    kv_sm_close(b);
    kv_sm_close(c);
    stamp_ms = stamp_ttl_ms = 0;
    cleanup();
}

/* A byte of a stored value changed on disk: a read gets KV_EDAMAGED, not
 * the changed bytes; a write that reads it (INCR) stops the apply with a
 * message; the snapshot refuses to carry it; other keys still read. */
static void test_flipped_value_never_served(void)
{
    fresh(16 << 20);
    struct kv_sm *sm;
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    uint8_t *b;
    struct kv_result r = apply1(sm, entry(1, KVPB__OP__OP_SET, "n", "41", 0, 0, &b));
    kv_result_free(&r);
    r = apply1(sm, entry(2, KVPB__OP__OP_SET, "other", "fine", 0, 0, &b));
    kv_result_free(&r);
    MDB_txn *txn;
    MDB_dbi kv;
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ(mdb_dbi_open(txn, "g1.kv", 0, &kv), 0);
    MDB_val k = {1, "n"}, d;
    CHECK_EQ(mdb_get(txn, kv, &k, &d), 0);
    uint8_t copy[64];
    CHECK(d.mv_size < sizeof(copy));
    memcpy(copy, d.mv_data, d.mv_size);
    copy[d.mv_size - 1] ^= 0x02; /* "41" becomes "43" */
    MDB_val flipped = {d.mv_size, copy};
    CHECK_EQ(mdb_put(txn, kv, &k, &flipped, 0), 0);
    CHECK_EQ(mdb_txn_commit(txn), 0);

    Kvpb__Command c = KVPB__COMMAND__INIT;
    ProtobufCBinaryData key = {1, (uint8_t *)"n"};
    c.op = KVPB__OP__OP_GET;
    c.n_keys = 1;
    c.keys = &key;
    CHECK_EQ(kv_sm_read(sm, &c, &r), KV_EDAMAGED);
    r = get(sm, "other");
    CHECK(r.values[0].len == 4 && memcmp(r.values[0].data, "fine", 4) == 0);
    kv_result_free(&r);
    struct raft_entry e = entry(3, KVPB__OP__OP_INCR, "n", NULL, 0, 0, &b);
    CHECK_EQ(kv_sm_apply(sm, &e, 1, &r, err, sizeof(err)), KV_EDAMAGED);
    free((void *)e.data);
    CHECK(strstr(err, "entry 3 read a stored value that fails its checksum"));
    char path[200];
    raft_index index;
    uint64_t size, sum;
    snprintf(path, sizeof(path), "%s/snap", dir);
    CHECK_EQ(kv_sm_snapshot_write(sm, path, &index, &size, &sum, err, sizeof(err)), KV_EIO);
    CHECK(strstr(err, "fails its checksum"));
    uint64_t hash, keys;
    CHECK_EQ(kv_sm_hash(sm, &hash, &keys), KV_EDAMAGED);
    kv_sm_close(sm);
    cleanup();
}

/* A snapshot record whose length field claims more than the file holds
 * is refused, not allocated (the fuzzer's find: 4 GiB for a 7-byte file). */
static void test_snapshot_record_longer_than_file_refused(void)
{
    fresh(16 << 20);
    struct kv_sm *sm;
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    char path[200];
    snprintf(path, sizeof(path), "%s/bad.snap", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    uint8_t head[16] = "RKVSNAP1";
    head[8] = 7;
    const uint8_t rec[] = {1, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 'k'}; /* a 4 GiB value */
    CHECK(fwrite(head, 1, sizeof(head), f) == sizeof(head));
    CHECK(fwrite(rec, 1, sizeof(rec), f) == sizeof(rec));
    CHECK(fclose(f) == 0);
    MDB_txn *txn;
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ(kv_sm_install_stage(sm, txn, path, 7, err, sizeof(err)), KV_EIO);
    CHECK(strstr(err, "does not decode"));
    mdb_txn_abort(txn);
    kv_sm_staged_done(sm, false);
    kv_sm_close(sm);
    cleanup();
}

/* ------------------------------------------------------------------------
 * The running content hash and its checkpoints
 * ------------------------------------------------------------------------ */

enum { HASH_KEYS = 20 };

/* A random command on keys k0..k19, values from a small set (so CAS and
 * INCR succeed as often as they fail); entry data malloc'ed into *buf. */
static struct raft_entry random_entry(uint64_t *rng, raft_index index, uint8_t **buf)
{
    static const char *const vals[] = {"a", "b", "1", "2", "a longer value, for a change", ""};
    char keys[3][8];
    ProtobufCBinaryData k[3];
    Kvpb__Command c = KVPB__COMMAND__INIT;
    uint64_t x = raft_splitmix64(rng);
    c.n_keys = 1;
    for (int i = 0; i < 3; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", (int)((x >> (8 * i)) % HASH_KEYS));
        k[i] = (ProtobufCBinaryData){strlen(keys[i]), (uint8_t *)keys[i]};
    }
    c.keys = k;
    const char *v = vals[(x >> 32) % 6], *e = vals[(x >> 40) % 6];
    switch ((x >> 48) % 5) {
    case 0:
        c.op = KVPB__OP__OP_SET;
        break;
    case 1:
        c.op = KVPB__OP__OP_DEL;
        c.n_keys = 1 + (x >> 56) % 3;
        break;
    case 2:
        c.op = KVPB__OP__OP_INCR;
        c.delta = (int64_t)((x >> 56) % 7) - 3;
        break;
    case 3:
        c.op = KVPB__OP__OP_CAS;
        c.expected = (ProtobufCBinaryData){strlen(e), (uint8_t *)e};
        c.expect_absent = (x >> 56) % 4 == 0;
        break;
    default:
        c.op = KVPB__OP__OP_GET; /* a read through the log changes nothing */
    }
    c.value = (ProtobufCBinaryData){strlen(v), (uint8_t *)v};
    size_t len;
    CHECK_EQ(kv_command_encode(&c, buf, &len), KV_OK);
    return (struct raft_entry){.term = 1, .index = index, .data = *buf, .len = len};
}

/* Apply entries first..last to sm in batches of random size (1..max). */
static void apply_range(struct kv_sm *sm, struct raft_entry *es, raft_index first, raft_index last,
                        uint64_t *rng, size_t max)
{
    for (raft_index i = first; i <= last;) {
        size_t n = 1 + raft_splitmix64(rng) % max;
        if (i + n - 1 > last)
            n = (size_t)(last - i + 1);
        CHECK_EQ(kv_sm_apply(sm, &es[i - 1], n, NULL, err, sizeof(err)), KV_OK);
        i += n;
    }
}

/* The running hash from its definition, by reading every key: the sum of
 * XXH64(value, seed XXH64(key)) over the stored pairs. */
static uint64_t hash_by_definition(struct kv_sm *sm)
{
    uint64_t sum = 0;
    for (int i = 0; i < HASH_KEYS; i++) {
        char key[8];
        snprintf(key, sizeof(key), "k%d", i);
        struct kv_result r = get(sm, key);
        if (r.status == KVPB__STATUS__STATUS_OK)
            sum += XXH64(r.values[0].data, r.values[0].len, XXH64(key, strlen(key), 0x6b76));
        kv_result_free(&r);
    }
    return sum;
}

/* The running hash, a full recomputation from the values and the
 * definition agree; the applied index is the one expected. */
static uint64_t check_running_hash(struct kv_sm *sm, raft_index applied)
{
    raft_index at;
    uint64_t running, sum, keys;
    kv_sm_running_hash(sm, &at, &running);
    CHECK_EQ(at, applied);
    CHECK_EQ(kv_sm_content_sum(sm, &sum, &keys), KV_OK);
    CHECK_EQ(running, sum);
    CHECK_EQ(running, hash_by_definition(sm));
    return running;
}

static struct raft_entry *random_log(uint64_t *rng, size_t n, uint8_t **bufs)
{
    struct raft_entry *es = calloc(n, sizeof(*es));
    CHECK(es != NULL);
    for (size_t i = 0; i < n; i++)
        es[i] = random_entry(rng, (raft_index)i + 1, &bufs[i]);
    return es;
}

static void free_log(struct raft_entry *es, uint8_t **bufs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(es);
}

/* SET, DEL, INCR and CAS each adjust the running hash in the apply
 * transaction: after random commands in random batches it equals a full
 * recomputation, after a restart too (the scan at open agrees with the
 * stored hash), and a checkpoint holds the hash at exactly its index. */
static void test_running_hash_follows_every_write(void)
{
    uint64_t seed = harness_seed(0x5eed0012), rng = seed;
    fresh(64 << 20);
    struct kv_sm *sm;
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    CHECK_EQ(check_running_hash(sm, 0), 0);
    enum { N = 3 * KV_CHECK_EVERY + 37 };
    uint8_t *bufs[N];
    struct raft_entry *es = random_log(&rng, N, bufs);
    uint64_t at_check[N / KV_CHECK_EVERY + 1] = {0};
    for (raft_index i = 1; i <= N;) {
        size_t n = 1 + raft_splitmix64(&rng) % 40;
        if (i + n - 1 > N)
            n = (size_t)(N - i + 1);
        /* A batch ends at a checkpoint rather than cross it: the hash
         * there is then known here too. */
        raft_index next_check = ((i - 1) / KV_CHECK_EVERY + 1) * KV_CHECK_EVERY;
        if (i + n - 1 > next_check)
            n = (size_t)(next_check - i + 1);
        CHECK_EQ(kv_sm_apply(sm, &es[i - 1], n, NULL, err, sizeof(err)), KV_OK);
        i += n;
        uint64_t h = check_running_hash(sm, i - 1);
        if ((i - 1) % KV_CHECK_EVERY == 0)
            at_check[(i - 1) / KV_CHECK_EVERY] = h;
    }
    struct kv_checkpoint cps[KV_CHECKS_KEPT];
    CHECK_EQ(kv_sm_checkpoints(sm, cps, KV_CHECKS_KEPT), 3);
    for (size_t k = 0; k < 3; k++) {
        CHECK_EQ(cps[k].index, (3 - k) * KV_CHECK_EVERY);
        CHECK_EQ(cps[k].hash, at_check[3 - k]);
        uint64_t h;
        CHECK(kv_sm_checkpoint(sm, cps[k].index, &h));
        CHECK_EQ(h, cps[k].hash);
    }
    uint64_t h;
    CHECK(!kv_sm_checkpoint(sm, KV_CHECK_EVERY + 1, &h));
    uint64_t before = check_running_hash(sm, N);
    kv_sm_close(sm);
    mdb_env_close(env);
    open_env(64 << 20);
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    const struct kv_sm_open_scan *scan = kv_sm_open_scan(sm);
    CHECK(!scan->computed && !scan->mismatch);
    CHECK_EQ(scan->stored, before);
    CHECK_EQ(check_running_hash(sm, N), before);
    free_log(es, bufs, N);
    kv_sm_close(sm);
    cleanup();
}

/* Rewrite the value of key in group's table with a checksum that fits it
 * (what the per-value checksum cannot catch), and if stored_too also the
 * running hash kept with the applied index, adjusted to match. */
static void rewrite_value(int group, const char *key, const char *value, bool stored_too)
{
    MDB_txn *txn;
    MDB_dbi kv, meta;
    char name[32];
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    snprintf(name, sizeof(name), "g%d.kv", group);
    CHECK_EQ(mdb_dbi_open(txn, name, 0, &kv), 0);
    snprintf(name, sizeof(name), "g%d.kvmeta", group);
    CHECK_EQ(mdb_dbi_open(txn, name, 0, &meta), 0);
    MDB_val k = {strlen(key), (void *)key}, d;
    CHECK_EQ(mdb_get(txn, kv, &k, &d), 0);
    uint64_t old_sum = 0, sum = XXH64(value, strlen(value), XXH64(key, strlen(key), 0x6b76));
    memcpy(&old_sum, d.mv_data, 8); /* little-endian hosts */
    uint8_t rec[64];
    memcpy(rec, &sum, 8);
    memcpy(rec + 8, value, strlen(value));
    MDB_val nd = {8 + strlen(value), rec};
    CHECK_EQ(mdb_put(txn, kv, &k, &nd, 0), 0);
    if (stored_too) {
        MDB_val mk = {4, "hash"}, mv;
        CHECK_EQ(mdb_get(txn, meta, &mk, &mv), 0);
        uint64_t h;
        memcpy(&h, mv.mv_data, 8);
        h = h - old_sum + sum;
        MDB_val nv = {8, &h};
        CHECK_EQ(mdb_put(txn, meta, &mk, &nv, 0), 0);
    }
    CHECK_EQ(mdb_txn_commit(txn), 0);
}

static void reopen(struct kv_sm **a, struct kv_sm **b)
{
    kv_sm_close(*a);
    kv_sm_close(*b);
    mdb_env_close(env);
    open_env(64 << 20);
    CHECK_EQ(kv_sm_open(env, 1, a, err, sizeof(err)), KV_OK);
    CHECK_EQ(kv_sm_open(env, 2, b, err, sizeof(err)), KV_OK);
}

/* Two replicas (groups 1 and 2 of one environment) applying the same
 * entries in different batches have the same running hash and the same
 * checkpoints. A value rewritten on one of them with a fitting checksum
 * -- which no read notices -- makes the hashes differ after a restart:
 * found by the scan at open when only the value changed, and by the
 * comparison alone when the stored hash was adjusted too. */
static void test_replicas_agree_until_a_value_changes(void)
{
    uint64_t seed = harness_seed(0x5eed0013), rng = seed;
    fresh(64 << 20);
    struct kv_sm *a, *b;
    CHECK_EQ(kv_sm_open(env, 1, &a, err, sizeof(err)), KV_OK);
    CHECK_EQ(kv_sm_open(env, 2, &b, err, sizeof(err)), KV_OK);
    enum { N = 2 * KV_CHECK_EVERY + 5 };
    uint8_t *bufs[N + 1];
    struct raft_entry *es = random_log(&rng, N, bufs);
    apply_range(a, es, 1, N, &rng, 1);
    apply_range(b, es, 1, N, &rng, 64);
    uint64_t ha = check_running_hash(a, N), hb = check_running_hash(b, N);
    CHECK_EQ(ha, hb);
    struct kv_checkpoint ca[KV_CHECKS_KEPT], cb[KV_CHECKS_KEPT];
    CHECK_EQ(kv_sm_checkpoints(a, ca, KV_CHECKS_KEPT), 2);
    CHECK_EQ(kv_sm_checkpoints(b, cb, KV_CHECKS_KEPT), 2);
    CHECK(memcmp(ca, cb, sizeof(ca[0]) * 2) == 0);
    /* A key both hold, rewritten on b. */
    uint8_t *buf;
    struct kv_result r = apply1(a, entry(N + 1, KVPB__OP__OP_SET, "k3", "good", 0, 0, &buf));
    kv_result_free(&r);
    r = apply1(b, entry(N + 1, KVPB__OP__OP_SET, "k3", "good", 0, 0, &buf));
    kv_result_free(&r);
    ha = check_running_hash(a, N + 1);
    CHECK_EQ(check_running_hash(b, N + 1), ha);
    rewrite_value(2, "k3", "evil", false);
    reopen(&a, &b);
    CHECK(!kv_sm_open_scan(a)->mismatch);
    const struct kv_sm_open_scan *scan = kv_sm_open_scan(b);
    CHECK(scan->mismatch);
    CHECK_EQ(scan->stored, ha);
    raft_index at;
    kv_sm_running_hash(b, &at, &hb);
    CHECK_EQ(at, N + 1);
    CHECK(hb != ha);
    CHECK_EQ(hb, scan->scanned);
    CHECK_EQ(check_running_hash(b, N + 1), hb); /* it describes what b holds */
    /* Back to "good" by hand, then a subtler damage: the stored hash made to
     * fit. No local sign at all; only the comparison finds it. */
    rewrite_value(2, "k3", "good", false);
    reopen(&a, &b);
    CHECK(!kv_sm_open_scan(b)->mismatch);
    rewrite_value(2, "k3", "evil", true);
    reopen(&a, &b);
    CHECK(!kv_sm_open_scan(b)->mismatch);
    kv_sm_running_hash(b, &at, &hb);
    CHECK(hb != ha);
    /* And it stays different as both go on applying the same entries. */
    r = apply1(a, entry(N + 2, KVPB__OP__OP_SET, "k4", "x", 0, 0, &buf));
    kv_result_free(&r);
    r = apply1(b, entry(N + 2, KVPB__OP__OP_SET, "k4", "x", 0, 0, &buf));
    kv_result_free(&r);
    CHECK(check_running_hash(a, N + 2) != check_running_hash(b, N + 2));
    free_log(es, bufs, N);
    kv_sm_close(a);
    kv_sm_close(b);
    cleanup();
}

/* A snapshot installed (§7) brings the running hash along: equal to the
 * sender's and to a recomputation, a checkpoint at its index, and the
 * same after a restart. */
static void test_running_hash_through_snapshot_install(void)
{
    uint64_t seed = harness_seed(0x5eed0014), rng = seed;
    fresh(64 << 20);
    struct kv_sm *a, *b;
    CHECK_EQ(kv_sm_open(env, 1, &a, err, sizeof(err)), KV_OK);
    CHECK_EQ(kv_sm_open(env, 2, &b, err, sizeof(err)), KV_OK);
    enum { N = KV_CHECK_EVERY };
    uint8_t *bufs[N];
    struct raft_entry *es = random_log(&rng, N, bufs);
    apply_range(a, es, 1, N, &rng, 16);
    apply_range(b, es, 1, 100, &rng, 16); /* b held older state before */
    uint64_t ha = check_running_hash(a, N);
    char path[200];
    snprintf(path, sizeof(path), "%s/snap", dir);
    raft_index index;
    uint64_t size, sum;
    CHECK_EQ(kv_sm_snapshot_write(a, path, &index, &size, &sum, err, sizeof(err)), KV_OK);
    CHECK_EQ(index, N);
    MDB_txn *txn;
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ(kv_sm_install_stage(b, txn, path, index, err, sizeof(err)), KV_OK);
    CHECK_EQ(mdb_txn_commit(txn), 0);
    kv_sm_staged_done(b, true);
    CHECK_EQ(check_running_hash(b, N), ha);
    uint64_t h;
    CHECK(kv_sm_checkpoint(b, N, &h));
    CHECK_EQ(h, ha);
    reopen(&a, &b);
    CHECK(!kv_sm_open_scan(b)->mismatch);
    CHECK_EQ(check_running_hash(b, N), ha);
    free_log(es, bufs, N);
    kv_sm_close(a);
    kv_sm_close(b);
    cleanup();
}

/* Data made before the running hash existed (no "hash" in kvmeta): the
 * first open computes it by a scan and says so. */
static void test_running_hash_computed_for_older_data(void)
{
    uint64_t seed = harness_seed(0x5eed0015), rng = seed;
    fresh(64 << 20);
    struct kv_sm *sm;
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    CHECK(!kv_sm_open_scan(sm)->computed); /* a new group has nothing to compute */
    enum { N = 300 };
    uint8_t *bufs[N];
    struct raft_entry *es = random_log(&rng, N, bufs);
    apply_range(sm, es, 1, N, &rng, 8);
    uint64_t h = check_running_hash(sm, N);
    kv_sm_close(sm);
    MDB_txn *txn;
    MDB_dbi meta;
    CHECK_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ(mdb_dbi_open(txn, "g1.kvmeta", 0, &meta), 0);
    MDB_val k = {4, "hash"};
    CHECK_EQ(mdb_del(txn, meta, &k, NULL), 0);
    CHECK_EQ(mdb_txn_commit(txn), 0);
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    const struct kv_sm_open_scan *scan = kv_sm_open_scan(sm);
    CHECK(scan->computed && !scan->mismatch);
    CHECK_EQ(scan->scanned, h);
    CHECK_EQ(check_running_hash(sm, N), h);
    kv_sm_close(sm);
    CHECK_EQ(kv_sm_open(env, 1, &sm, err, sizeof(err)), KV_OK);
    CHECK(!kv_sm_open_scan(sm)->computed); /* stored by that first open */
    free_log(es, bufs, N);
    kv_sm_close(sm);
    cleanup();
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_commands),
        HARNESS_TEST(test_snapshot_round_trip),
        HARNESS_TEST(test_cas),
        HARNESS_TEST(test_retry_applied_once),
        HARNESS_TEST(test_map_full_applies_nothing),
        HARNESS_TEST(test_session_expiry),
        HARNESS_TEST(test_session_expiry_deterministic),
        HARNESS_TEST(test_flipped_value_never_served),
        HARNESS_TEST(test_snapshot_record_longer_than_file_refused),
        HARNESS_TEST(test_running_hash_follows_every_write),
        HARNESS_TEST(test_replicas_agree_until_a_value_changes),
        HARNESS_TEST(test_running_hash_through_snapshot_install),
        HARNESS_TEST(test_running_hash_computed_for_older_data),
    };
    return harness_main(argc, argv, "kv_sm", tests, sizeof(tests) / sizeof(tests[0]));
}
