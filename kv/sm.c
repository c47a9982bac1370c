/* sm.c — the key-value state machine on LMDB; see sm.h. */
#include "sm.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

struct kv_sm {
    MDB_env *env;
    MDB_dbi kv, sess, meta;
    raft_index applied; /* committed */
    raft_index staged;  /* applied in the open transaction (the storage thread's) */
    /* The log's clock (sm.h): committed, and as staged. */
    uint64_t clock_ms, staged_clock_ms;
    uint64_t expired, staged_expired; /* sessions expired since the process started */
    /* The read transaction of the thread that reads (kv_sm_read and
     * friends), reset between reads and renewed: beginning one allocates
     * and clears room for every database the environment may open (4096
     * in kvd), which was 5% of a leader's CPU serving GETs. */
    MDB_txn *rtxn;
    bool checked; /* values carry a checksum (state format 3) */
    /* The running content hash (sm.h): committed, and as staged. */
    uint64_t hash, staged_hash;
    /* Checkpoints (sm.h): the committed ones, oldest first, and those of
     * the open transaction, which join them when it commits. */
    struct kv_checkpoint checks[KV_CHECKS_KEPT], staged_checks[KV_CHECKS_KEPT];
    size_t n_checks, n_staged_checks;
    struct kv_sm_open_scan scan; /* what kv_sm_open found */
};

/* A value whose bytes changed on disk (its checksum fails): a code of its
 * own among LMDB's (negative, far from this) and errno's (positive). */
enum { VALUE_DAMAGED = -1 };

static int read_begin(struct kv_sm *sm, MDB_txn **txn)
{
    if (sm->rtxn && mdb_txn_renew(sm->rtxn) == 0) {
        *txn = sm->rtxn;
        return 0;
    }
    if (sm->rtxn)
        mdb_txn_abort(sm->rtxn);
    sm->rtxn = NULL;
    int rc = mdb_txn_begin(sm->env, NULL, MDB_RDONLY, &sm->rtxn);
    *txn = sm->rtxn;
    return rc;
}

static void read_end(struct kv_sm *sm)
{
    mdb_txn_reset(sm->rtxn);
}

/* The layout of the state: 2 since sessions record when they were last
 * used, 3 since every value carries a checksum (XXH64 of key and value,
 * before the value): a flipped bit on disk is found when the value is
 * read, and not served. Format 2 is still read and written as it was
 * made; format 1 is refused, not guessed at. */
enum { STATE_FORMAT = 3, VALUE_SUM = 8 };

static uint64_t meta_u64(MDB_txn *txn, MDB_dbi meta, const char *name, bool *found)
{
    MDB_val k = {strlen(name), (void *)name}, d;
    uint64_t v = 0;
    bool ok = mdb_get(txn, meta, &k, &d) == 0 && d.mv_size == sizeof(v);
    if (ok)
        memcpy(&v, d.mv_data, sizeof(v));
    if (found)
        *found = ok;
    return v;
}

static int put_meta_u64(MDB_txn *txn, MDB_dbi meta, const char *name, uint64_t v)
{
    MDB_val k = {strlen(name), (void *)name}, d = {sizeof(v), &v};
    return mdb_put(txn, meta, &k, &d, 0);
}

static uint64_t pair_hash(const struct kv_sm *sm, const MDB_val *k, const MDB_val *stored);
static void push_checkpoint(struct kv_checkpoint *list, size_t *n, struct kv_checkpoint c);

/* The running content hash (sm.h) recomputed from what is stored: every
 * pair's term, summed (the stored checksums: no value is read whole). */
static int scan_pairs(const struct kv_sm *sm, MDB_txn *txn, uint64_t *sum, uint64_t *keys)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, sm->kv, &c);
    if (rc)
        return rc;
    MDB_val k, v;
    *sum = *keys = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        *sum += pair_hash(sm, &k, &v);
        (*keys)++;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* At open: the running hash from the content itself, compared with the
 * one stored with the applied index (sm.h, kv_sm_open_scan). */
static int open_hash(struct kv_sm *sm, MDB_txn *txn, bool has_applied)
{
    bool has_hash;
    uint64_t stored = meta_u64(txn, sm->meta, "hash", &has_hash), start = monotonic_ms();
    int rc = scan_pairs(sm, txn, &sm->hash, &sm->scan.keys);
    if (rc)
        return rc;
    sm->scan.ms = monotonic_ms() - start;
    sm->scan.stored = has_hash ? stored : sm->hash;
    sm->scan.scanned = sm->hash;
    sm->scan.computed = !has_hash && has_applied;
    sm->scan.mismatch = has_hash && stored != sm->hash;
    sm->staged_hash = sm->hash;
    if (sm->applied && sm->applied % KV_CHECK_EVERY == 0)
        push_checkpoint(sm->checks, &sm->n_checks, (struct kv_checkpoint){sm->applied, sm->hash});
    return has_hash ? 0 : put_meta_u64(txn, sm->meta, "hash", sm->hash);
}

static int lmdb_fail(char *err, size_t errlen, int rc, const char *what)
{
    if (err && errlen)
        snprintf(err, errlen, "state machine: %s: %s%s", what, mdb_strerror(rc),
                 rc == MDB_MAP_FULL ? " (nothing of this batch was applied; restart the node "
                                      "with a larger map: kvd --map-size)"
                                    : "");
    return rc == MDB_MAP_FULL ? KV_EFULL : KV_EIO;
}

int kv_sm_open(MDB_env *env, uint64_t group, struct kv_sm **out, char *err, size_t errlen)
{
    struct kv_sm *sm = calloc(1, sizeof(*sm));
    if (!sm)
        return KV_ENOMEM;
    sm->env = env;
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc) {
        free(sm);
        return lmdb_fail(err, errlen, rc, "opening");
    }
    char name[48];
    snprintf(name, sizeof(name), "g%" PRIu64 ".kv", group);
    rc = mdb_dbi_open(txn, name, MDB_CREATE, &sm->kv);
    snprintf(name, sizeof(name), "g%" PRIu64 ".sess", group);
    if (!rc)
        rc = mdb_dbi_open(txn, name, MDB_CREATE, &sm->sess);
    snprintf(name, sizeof(name), "g%" PRIu64 ".kvmeta", group);
    if (!rc)
        rc = mdb_dbi_open(txn, name, MDB_CREATE, &sm->meta);
    bool old_format = false;
    uint64_t found = 0;
    if (!rc) {
        bool has_applied, has_format;
        sm->applied = meta_u64(txn, sm->meta, "applied", &has_applied);
        uint64_t format = meta_u64(txn, sm->meta, "format", &has_format);
        sm->staged = sm->applied;
        sm->clock_ms = sm->staged_clock_ms = meta_u64(txn, sm->meta, "clock", NULL);
        if (has_applied && format != STATE_FORMAT && format != 2)
            old_format = true;
        else if (!has_format)
            rc = put_meta_u64(txn, sm->meta, "format", format = STATE_FORMAT);
        sm->checked = format >= 3;
        found = format;
        if (!rc && !old_format)
            rc = open_hash(sm, txn, has_applied);
    }
    if (old_format) {
        mdb_txn_abort(txn);
        free(sm);
        snprintf(err, errlen,
                 "state machine: group %" PRIu64 " was written by another kvd (state format "
                 "%" PRIu64 "; this one reads 2 and %d); start this node with an empty --data "
                 "directory: it catches up from the others",
                 group, found, STATE_FORMAT);
        return KV_EIO;
    }
    if (rc || (rc = mdb_txn_commit(txn))) {
        if (rc)
            mdb_txn_abort(txn);
        free(sm);
        return lmdb_fail(err, errlen, rc, "opening");
    }
    *out = sm;
    return KV_OK;
}

int kv_sm_drop(struct kv_sm *sm, MDB_txn *txn, char *err, size_t errlen)
{
    if (sm->rtxn) { /* the loop's read snapshot would pin the dropped pages */
        mdb_txn_abort(sm->rtxn);
        sm->rtxn = NULL;
    }
    int rc = mdb_drop(txn, sm->kv, 0);
    if (!rc)
        rc = mdb_drop(txn, sm->sess, 0);
    if (!rc)
        rc = mdb_drop(txn, sm->meta, 0);
    return rc ? lmdb_fail(err, errlen, rc, "dropping") : KV_OK;
}

void kv_sm_close(struct kv_sm *sm)
{
    if (sm->rtxn)
        mdb_txn_abort(sm->rtxn);
    free(sm);
}

const struct kv_sm_open_scan *kv_sm_open_scan(const struct kv_sm *sm)
{
    return &sm->scan;
}

raft_index kv_sm_applied(const struct kv_sm *sm)
{
    return sm->applied;
}

void kv_result_free(struct kv_result *r)
{
    for (size_t i = 0; i < r->n_values; i++)
        free(r->values[i].data);
    free(r->values);
    memset(r, 0, sizeof(*r));
}

static int result_values(struct kv_result *r, size_t n)
{
    r->values = calloc(n ? n : 1, sizeof(*r->values));
    if (!r->values)
        return KV_ENOMEM;
    r->n_values = n;
    return KV_OK;
}

static int set_value(struct kv_value *v, const void *data, size_t len)
{
    v->present = true;
    v->data = malloc(len ? len : 1);
    if (!v->data)
        return KV_ENOMEM;
    if (len)
        memcpy(v->data, data, len);
    v->len = len;
    return KV_OK;
}

/* ------------------------------------------------------------------------
 * Commands
 * ------------------------------------------------------------------------ */

static int get_key(MDB_txn *txn, MDB_dbi dbi, const ProtobufCBinaryData *key, MDB_val *val)
{
    if (key->len == 0 || key->len > 511) /* LMDB's default key limit */
        return EINVAL;
    MDB_val k = {key->len, key->data};
    return mdb_get(txn, dbi, &k, val);
}

static uint64_t value_sum(const void *key, size_t klen, const void *val, size_t vlen)
{
    return XXH64(val, vlen, XXH64(key, klen, 0x6b76));
}

/* The hash of one stored pair, the term it adds to the running content
 * hash: the checksum stored before the value (format 3: no need to hash
 * the value again), or the same XXH64 computed (format 2). A record too
 * short to hold a checksum is hashed as it is: deterministic, and never
 * equal to a healthy copy's term. */
static uint64_t pair_hash(const struct kv_sm *sm, const MDB_val *k, const MDB_val *stored)
{
    if (!sm->checked || stored->mv_size < VALUE_SUM)
        return value_sum(k->mv_data, k->mv_size, stored->mv_data, stored->mv_size);
    const uint8_t *p = stored->mv_data;
    uint64_t sum = 0;
    for (int i = 0; i < 8; i++)
        sum |= (uint64_t)p[i] << (8 * i);
    return sum;
}

/* Take the pair stored under k (if any) out of the staged running hash:
 * before it is overwritten or deleted. */
static int unhash_old(struct kv_sm *sm, MDB_txn *txn, const MDB_val *k)
{
    MDB_val old;
    int rc = mdb_get(txn, sm->kv, (MDB_val *)k, &old);
    if (rc == 0)
        sm->staged_hash -= pair_hash(sm, k, &old);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* A stored value as the user wrote it: its checksum verified and taken
 * off (format 3). VALUE_DAMAGED if it fails. */
static int value_open(const struct kv_sm *sm, const MDB_val *k, MDB_val *v)
{
    if (!sm->checked)
        return 0;
    if (v->mv_size < VALUE_SUM)
        return VALUE_DAMAGED;
    const uint8_t *p = v->mv_data;
    uint64_t want = 0;
    for (int i = 0; i < 8; i++)
        want |= (uint64_t)p[i] << (8 * i);
    v->mv_data = (uint8_t *)v->mv_data + VALUE_SUM;
    v->mv_size -= VALUE_SUM;
    return value_sum(k->mv_data, k->mv_size, v->mv_data, v->mv_size) == want ? 0 : VALUE_DAMAGED;
}

static int value_get(const struct kv_sm *sm, MDB_txn *txn, const ProtobufCBinaryData *key,
                     MDB_val *val)
{
    int rc = get_key(txn, sm->kv, key, val);
    if (rc)
        return rc;
    MDB_val k = {key->len, key->data};
    return value_open(sm, &k, val);
}

/* Store a value (with its checksum in format 3) and add its pair to the
 * staged running hash; replace: a value may be there (its pair is taken
 * out first), false when the database was just emptied. */
static int value_store(struct kv_sm *sm, MDB_txn *txn, const void *key, size_t klen,
                       const void *data, size_t len, bool replace)
{
    MDB_val k = {klen, (void *)key}, d = {len + (sm->checked ? VALUE_SUM : 0), NULL};
    int rc = replace ? unhash_old(sm, txn, &k) : 0;
    if (rc || (rc = mdb_put(txn, sm->kv, &k, &d, MDB_RESERVE)))
        return rc;
    uint8_t *p = d.mv_data;
    uint64_t sum = value_sum(key, klen, data, len);
    if (sm->checked) {
        for (int i = 0; i < 8; i++)
            p[i] = (uint8_t)(sum >> (8 * i));
        p += VALUE_SUM;
    }
    if (len)
        memcpy(p, data, len);
    sm->staged_hash += sum;
    return 0;
}

static int value_put(struct kv_sm *sm, MDB_txn *txn, const void *key, size_t klen, const void *data,
                     size_t len)
{
    return value_store(sm, txn, key, klen, data, len, true);
}

/* Delete a key, taking its pair out of the staged running hash. */
static int value_del(struct kv_sm *sm, MDB_txn *txn, const ProtobufCBinaryData *key)
{
    MDB_val k = {key->len, key->data}, old;
    int rc = mdb_get(txn, sm->kv, &k, &old);
    if (rc)
        return rc;
    uint64_t sum = pair_hash(sm, &k, &old);
    if ((rc = mdb_del(txn, sm->kv, &k, NULL)) == 0)
        sm->staged_hash -= sum;
    return rc;
}

/* GET, EXISTS and MGET, in a read or write transaction. */
static int do_read(struct kv_sm *sm, MDB_txn *txn, const Kvpb__Command *cmd, struct kv_result *r)
{
    int rc = KV_OK;
    if (cmd->n_keys == 0) {
        r->status = KVPB__STATUS__STATUS_BAD_REQUEST;
        return KV_OK;
    }
    size_t n = cmd->op == KVPB__OP__OP_EXISTS ? 0 : cmd->n_keys;
    if (cmd->op == KVPB__OP__OP_GET)
        n = 1;
    if (n && (rc = result_values(r, n)) != KV_OK)
        return rc;
    for (size_t i = 0; i < cmd->n_keys && (cmd->op != KVPB__OP__OP_GET || i == 0); i++) {
        MDB_val v;
        int g = value_get(sm, txn, &cmd->keys[i], &v);
        if (g == EINVAL) {
            r->status = KVPB__STATUS__STATUS_BAD_REQUEST;
            return KV_OK;
        }
        if (g == VALUE_DAMAGED)
            return KV_EDAMAGED;
        if (g && g != MDB_NOTFOUND)
            return KV_EIO;
        if (cmd->op == KVPB__OP__OP_EXISTS)
            r->integer += g == 0;
        else if (g == 0 && (rc = set_value(&r->values[i], v.mv_data, v.mv_size)) != KV_OK)
            return rc;
    }
    if (cmd->op == KVPB__OP__OP_GET && !r->values[0].present)
        r->status = KVPB__STATUS__STATUS_NOT_FOUND;
    return KV_OK;
}

/* Parse a decimal integer exactly as Redis would accept it. */
static bool parse_int(const void *data, size_t len, int64_t *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, data, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || (buf[0] != '-' && (buf[0] < '0' || buf[0] > '9')))
        return false;
    *out = v;
    return true;
}

static int do_write(struct kv_sm *sm, MDB_txn *txn, const Kvpb__Command *cmd, struct kv_result *r)
{
    MDB_val v;
    int g;
    if (cmd->n_keys == 0 || cmd->keys[0].len == 0 || cmd->keys[0].len > 511) {
        r->status = KVPB__STATUS__STATUS_BAD_REQUEST;
        return 0;
    }
    switch (cmd->op) {
    case KVPB__OP__OP_SET:
        return value_put(sm, txn, cmd->keys[0].data, cmd->keys[0].len, cmd->value.data,
                         cmd->value.len);
    case KVPB__OP__OP_DEL:
        for (size_t i = 0; i < cmd->n_keys; i++) {
            if (cmd->keys[i].len == 0 || cmd->keys[i].len > 511)
                continue; /* no such key can be stored */
            g = value_del(sm, txn, &cmd->keys[i]);
            if (g == 0)
                r->integer++;
            else if (g != MDB_NOTFOUND)
                return g;
        }
        return 0;
    case KVPB__OP__OP_INCR: {
        int64_t cur = 0, delta = cmd->delta ? cmd->delta : 1;
        g = value_get(sm, txn, &cmd->keys[0], &v);
        if (g && g != MDB_NOTFOUND)
            return g;
        if ((g == 0 && !parse_int(v.mv_data, v.mv_size, &cur)) ||
            (delta > 0 && cur > INT64_MAX - delta) || (delta < 0 && cur < INT64_MIN - delta)) {
            r->status = KVPB__STATUS__STATUS_NOT_INTEGER;
            return 0;
        }
        char buf[32];
        int len = snprintf(buf, sizeof(buf), "%" PRId64, cur + delta);
        r->integer = cur + delta;
        return value_put(sm, txn, cmd->keys[0].data, cmd->keys[0].len, buf, (size_t)len);
    }
    case KVPB__OP__OP_CAS: {
        g = value_get(sm, txn, &cmd->keys[0], &v);
        if (g && g != MDB_NOTFOUND)
            return g;
        bool ok = cmd->expect_absent ? g == MDB_NOTFOUND
                                     : g == 0 && v.mv_size == cmd->expected.len &&
                                           (v.mv_size == 0 ||
                                            memcmp(v.mv_data, cmd->expected.data, v.mv_size) == 0);
        if (!ok) {
            r->status = KVPB__STATUS__STATUS_CAS_MISMATCH;
            if (g == 0 && (g = result_values(r, 1)) == 0) /* the value that is there */
                g = set_value(&r->values[0], v.mv_data, v.mv_size);
            return g == KV_ENOMEM ? ENOMEM : 0;
        }
        return value_put(sm, txn, cmd->keys[0].data, cmd->keys[0].len, cmd->value.data,
                         cmd->value.len);
    }
    default:
        r->status = KVPB__STATUS__STATUS_BAD_REQUEST;
        return 0;
    }
}

/* ------------------------------------------------------------------------
 * Sessions (thesis §6.3)
 * ------------------------------------------------------------------------ */

/* A session record: seq (8 bytes), the log clock when it was last used (8),
 * then the encoded Result of that seq. */
enum { SESS_HEAD = 16 };

static int session_store(struct kv_sm *sm, MDB_txn *txn, uint64_t client, uint64_t seq,
                         const struct kv_result *r)
{
    Kvpb__Result res = KVPB__RESULT__INIT;
    ProtobufCBinaryData vals[KV_MAX_KEYS];
    protobuf_c_boolean present[64];
    size_t n = r->n_values < 64 ? r->n_values : 64;
    for (size_t i = 0; i < n; i++) {
        vals[i] = (ProtobufCBinaryData){r->values[i].len, r->values[i].data};
        present[i] = r->values[i].present;
    }
    res.status = r->status;
    res.integer = r->integer;
    res.applied_index = r->index;
    res.n_values = res.n_present = n;
    res.values = vals;
    res.present = present;
    size_t len = kvpb__result__get_packed_size(&res);
    MDB_val k = {sizeof(client), &client}, d = {SESS_HEAD + len, NULL};
    int rc = mdb_put(txn, sm->sess, &k, &d, MDB_RESERVE);
    if (rc)
        return rc;
    memcpy(d.mv_data, &seq, 8);
    memcpy((uint8_t *)d.mv_data + 8, &sm->staged_clock_ms, 8);
    kvpb__result__pack(&res, (uint8_t *)d.mv_data + SESS_HEAD);
    return 0;
}

static bool session_expired(const struct kv_sm *sm, const MDB_val *d, uint64_t ttl_ms)
{
    uint64_t last;
    memcpy(&last, (const uint8_t *)d->mv_data + 8, 8);
    return ttl_ms && last + ttl_ms <= sm->staged_clock_ms;
}

/* Garbage collection of expired sessions: every session idle for ttl_ms of
 * log time goes. Runs when the log clock crosses a multiple of a quarter
 * of the TTL -- a decision made from log contents alone, so every replica
 * sweeps at the same entry and the tables stay identical. */
static int session_sweep(struct kv_sm *sm, MDB_txn *txn, uint64_t ttl_ms)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, sm->sess, &c);
    if (rc)
        return rc;
    MDB_val k, d;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        if (d.mv_size >= SESS_HEAD && !session_expired(sm, &d, ttl_ms))
            continue;
        if ((rc = mdb_cursor_del(c, 0)) != 0)
            break;
        sm->staged_expired++;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The leader's stamp moves the log clock (never back: a new leader's
 * clock may be behind the old one's). */
static int clock_advance(struct kv_sm *sm, MDB_txn *txn, const Kvpb__Command *cmd)
{
    if (cmd->time_ms <= sm->staged_clock_ms)
        return 0;
    uint64_t before = sm->staged_clock_ms, ttl = cmd->session_ttl_ms;
    sm->staged_clock_ms = cmd->time_ms;
    uint64_t period = ttl / 4 ? ttl / 4 : 1;
    if (ttl && before / period != cmd->time_ms / period)
        return session_sweep(sm, txn, ttl);
    return 0;
}

/* 1: answered from the table (a retry, an old seq, or no session); 0:
 * apply it. */
static int session_check(struct kv_sm *sm, MDB_txn *txn, const Kvpb__Command *cmd,
                         struct kv_result *r)
{
    uint64_t client = cmd->client_id;
    MDB_val k = {sizeof(client), &client}, d;
    if (client == 0)
        return 0;
    int g = mdb_get(txn, sm->sess, &k, &d);
    if (g && g != MDB_NOTFOUND)
        return -g;
    if (g == 0 && (d.mv_size < SESS_HEAD || session_expired(sm, &d, cmd->session_ttl_ms))) {
        /* Expired but not swept yet: the same answer as after the sweep. */
        if ((g = mdb_del(txn, sm->sess, &k, NULL)) != 0)
            return -g;
        sm->staged_expired++;
        g = MDB_NOTFOUND;
    }
    if (g == MDB_NOTFOUND) {
        if (cmd->seq == 1)
            return 0; /* a new session */
        /* Its seq 1 was applied once (the client sends seq n+1 only after
         * seq n was answered), so the session existed and has expired, and
         * this command may be a retry of one applied before: refuse it. */
        r->status = KVPB__STATUS__STATUS_SESSION_EXPIRED;
        return 1;
    }
    uint64_t seq;
    memcpy(&seq, d.mv_data, 8);
    if (cmd->seq > seq)
        return 0;
    if (cmd->seq < seq) {
        r->status = KVPB__STATUS__STATUS_SESSION_EXPIRED;
        return 1;
    }
    Kvpb__Result *res =
        kvpb__result__unpack(NULL, d.mv_size - SESS_HEAD, (uint8_t *)d.mv_data + SESS_HEAD);
    if (!res)
        return 0;
    r->status = res->status;
    r->integer = res->integer;
    r->index = res->applied_index;
    if (res->n_values && result_values(r, res->n_values) == KV_OK)
        for (size_t i = 0; i < res->n_values; i++)
            if (i < res->n_present && res->present[i])
                set_value(&r->values[i], res->values[i].data, res->values[i].len);
    kvpb__result__free_unpacked(res, NULL);
    return 1;
}

/* ------------------------------------------------------------------------
 * Checkpoints of the running hash
 * ------------------------------------------------------------------------ */

/* Append to a list of at most KV_CHECKS_KEPT, oldest first: the oldest
 * goes when it is full. */
static void push_checkpoint(struct kv_checkpoint *list, size_t *n, struct kv_checkpoint c)
{
    if (*n == KV_CHECKS_KEPT) {
        memmove(list, list + 1, (KV_CHECKS_KEPT - 1) * sizeof(*list));
        (*n)--;
    }
    list[(*n)++] = c;
}

static void stage_checkpoint(struct kv_sm *sm, raft_index index)
{
    push_checkpoint(sm->staged_checks, &sm->n_staged_checks,
                    (struct kv_checkpoint){index, sm->staged_hash});
}

void kv_sm_running_hash(const struct kv_sm *sm, raft_index *index, uint64_t *hash)
{
    *index = sm->applied;
    *hash = sm->hash;
}

bool kv_sm_checkpoint(const struct kv_sm *sm, raft_index index, uint64_t *hash)
{
    if (index == sm->applied) {
        *hash = sm->hash;
        return true;
    }
    for (size_t i = 0; i < sm->n_checks; i++)
        if (sm->checks[i].index == index) {
            *hash = sm->checks[i].hash;
            return true;
        }
    return false;
}

size_t kv_sm_checkpoints(const struct kv_sm *sm, struct kv_checkpoint *out, size_t max)
{
    size_t n = 0;
    for (size_t i = sm->n_checks; i > 0 && n < max; i--)
        out[n++] = sm->checks[i - 1];
    return n;
}

/* ------------------------------------------------------------------------
 * Apply and read
 * ------------------------------------------------------------------------ */

static int apply_one(struct kv_sm *sm, MDB_txn *txn, const struct raft_entry *e,
                     struct kv_result *r)
{
    r->index = e->index;
    if (e->type != RAFT_ENTRY_NORMAL)
        return 0;
    Kvpb__Command *cmd = kvpb__command__unpack(NULL, e->len, e->data);
    if (!cmd) {
        r->status = KVPB__STATUS__STATUS_BAD_REQUEST;
        return 0;
    }
    r->client_id = cmd->client_id;
    r->seq = cmd->seq;
    int rc = clock_advance(sm, txn, cmd), answered = 0;
    if (!rc && (answered = session_check(sm, txn, cmd, r)) < 0)
        rc = -answered;
    if (!rc && answered == 0) {
        bool read = kv_op_is_read(cmd->op);
        if (read) {
            int d = do_read(sm, txn, cmd, r);
            rc = d == KV_OK ? 0 : d == KV_EDAMAGED ? VALUE_DAMAGED : EIO;
        } else {
            rc = do_write(sm, txn, cmd, r);
        }
        r->index = e->index;
        if (!rc && cmd->client_id)
            rc = session_store(sm, txn, cmd->client_id, cmd->seq, r);
    }
    kvpb__command__free_unpacked(cmd, NULL);
    return rc;
}

int kv_sm_stage(struct kv_sm *sm, MDB_txn *txn, const struct raft_entry *entries, size_t n,
                struct kv_result *results, char *err, size_t errlen)
{
    struct kv_result scratch;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (entries[i].index != sm->staged + 1 + i) {
            if (err && errlen)
                snprintf(err, errlen, "state machine: entry %llu after applied %llu",
                         (unsigned long long)entries[i].index,
                         (unsigned long long)(sm->staged + i));
            rc = KV_EORDER;
            break;
        }
        struct kv_result *r = results ? &results[i] : &scratch;
        memset(r, 0, sizeof(*r));
        rc = apply_one(sm, txn, &entries[i], r);
        if (!results)
            kv_result_free(&scratch);
        if (rc == VALUE_DAMAGED) {
            if (err && errlen)
                snprintf(err, errlen,
                         "state machine: applying entry %llu read a stored value that fails its "
                         "checksum (its bytes changed on disk): this node stops rather than "
                         "build on it; replace it (start it empty while the others hold a "
                         "majority, docs/kvd.md)",
                         (unsigned long long)entries[i].index);
            rc = KV_EDAMAGED;
            break;
        }
        if (rc) {
            rc = lmdb_fail(err, errlen, rc, "applying");
            break;
        }
        /* The hash after this entry is known only here, between two
         * entries of the batch. */
        if (entries[i].index % KV_CHECK_EVERY == 0)
            stage_checkpoint(sm, entries[i].index);
    }
    raft_index applied = sm->staged + n;
    if (!rc && ((rc = put_meta_u64(txn, sm->meta, "applied", applied)) ||
                (rc = put_meta_u64(txn, sm->meta, "clock", sm->staged_clock_ms)) ||
                (rc = put_meta_u64(txn, sm->meta, "hash", sm->staged_hash))))
        rc = lmdb_fail(err, errlen, rc, "applying");
    if (rc) {
        for (size_t i = 0; results && i < n; i++)
            kv_result_free(&results[i]);
        return rc;
    }
    sm->staged = applied;
    return KV_OK;
}

void kv_sm_staged_done(struct kv_sm *sm, bool committed)
{
    if (committed) {
        sm->applied = sm->staged;
        sm->clock_ms = sm->staged_clock_ms;
        sm->expired += sm->staged_expired;
        sm->hash = sm->staged_hash;
        for (size_t i = 0; i < sm->n_staged_checks; i++)
            push_checkpoint(sm->checks, &sm->n_checks, sm->staged_checks[i]);
    } else {
        sm->staged = sm->applied;
        sm->staged_clock_ms = sm->clock_ms;
        sm->staged_hash = sm->hash;
    }
    sm->n_staged_checks = 0;
    sm->staged_expired = 0;
}

int kv_sm_apply(struct kv_sm *sm, const struct raft_entry *entries, size_t n,
                struct kv_result *results, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(sm->env, NULL, 0, &txn);
    if (rc)
        return lmdb_fail(err, errlen, rc, "starting to apply");
    if ((rc = kv_sm_stage(sm, txn, entries, n, results, err, errlen))) {
        mdb_txn_abort(txn);
        kv_sm_staged_done(sm, false);
        return rc;
    }
    /* keys, sessions and applied index: together */
    if ((rc = mdb_txn_commit(txn))) {
        for (size_t i = 0; results && i < n; i++)
            kv_result_free(&results[i]);
        kv_sm_staged_done(sm, false);
        return lmdb_fail(err, errlen, rc, "applying");
    }
    kv_sm_staged_done(sm, true);
    return KV_OK;
}

int kv_sm_read(struct kv_sm *sm, const Kvpb__Command *cmd, struct kv_result *out)
{
    memset(out, 0, sizeof(*out));
    MDB_txn *txn;
    if (read_begin(sm, &txn))
        return KV_EIO;
    int rc = do_read(sm, txn, cmd, out);
    out->index = sm->applied;
    read_end(sm);
    if (rc != KV_OK)
        kv_result_free(out);
    return rc;
}

int kv_command_encode(const Kvpb__Command *cmd, uint8_t **data, size_t *len)
{
    *len = kvpb__command__get_packed_size(cmd);
    *data = malloc(*len ? *len : 1);
    if (!*data)
        return KV_ENOMEM;
    kvpb__command__pack(cmd, *data);
    return KV_OK;
}

/* ------------------------------------------------------------------------
 * Snapshots (§7) and content hashes
 * ------------------------------------------------------------------------ */

/* File: "RKVSNAP1", the applied index (8 bytes LE), then records {kind (1
 * byte: 1 key, 2 session, 3 state metadata: the log clock), key length (4
 * LE), value length (4 LE), key, value}, then a kind 0 byte. The checksum
 * is XXH64 of the whole file. */
static const char SNAP_MAGIC[8] = "RKVSNAP1";

static void le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static bool out_write(FILE *f, XXH64_state_t *h, const void *p, size_t n)
{
    XXH64_update(h, p, n);
    return fwrite(p, 1, n, f) == n;
}

/* Values go into a snapshot as the user wrote them (no checksum: the file
 * has its own), verified on the way out. */
static int dump_db(const struct kv_sm *sm, MDB_txn *txn, MDB_dbi dbi, uint8_t kind, FILE *f,
                   XXH64_state_t *h)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc)
        return rc;
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (kind == 1 && (rc = value_open(sm, &k, &v)))
            break;
        uint8_t head[9];
        head[0] = kind;
        le32(head + 1, (uint32_t)k.mv_size);
        le32(head + 5, (uint32_t)v.mv_size);
        if (!out_write(f, h, head, 9) || !out_write(f, h, k.mv_data, k.mv_size) ||
            !out_write(f, h, v.mv_data, v.mv_size)) {
            rc = EIO;
            break;
        }
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int kv_sm_snapshot_write(struct kv_sm *sm, const char *path, raft_index *index, uint64_t *size,
                         uint64_t *checksum, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(sm->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return lmdb_fail(err, errlen, rc, "snapshot");
    raft_index applied = meta_u64(txn, sm->meta, "applied", NULL);
    uint64_t clock = meta_u64(txn, sm->meta, "clock", NULL);
    FILE *f = fopen(path, "wb");
    XXH64_state_t *h = XXH64_createState();
    if (!f || !h) {
        if (f)
            fclose(f);
        XXH64_freeState(h);
        mdb_txn_abort(txn);
        snprintf(err, errlen, "snapshot: cannot write %s: %s", path, strerror(errno));
        return KV_EIO;
    }
    XXH64_reset(h, 0);
    uint8_t head[16];
    memcpy(head, SNAP_MAGIC, 8);
    le64(head + 8, applied);
    bool ok = out_write(f, h, head, 16);
    uint8_t rec[9 + 5 + 8] = {3};
    le32(rec + 1, 5);
    le32(rec + 5, 8);
    memcpy(rec + 9, "clock", 5);
    le64(rec + 14, clock);
    ok = ok && out_write(f, h, rec, sizeof(rec));
    if (ok && (rc = dump_db(sm, txn, sm->kv, 1, f, h)) == 0)
        rc = dump_db(sm, txn, sm->sess, 2, f, h);
    mdb_txn_abort(txn);
    uint8_t end = 0;
    ok = ok && rc == 0 && out_write(f, h, &end, 1) && fflush(f) == 0 && fsync(fileno(f)) == 0;
    long pos = ftell(f);
    ok = fclose(f) == 0 && ok && pos > 0;
    *checksum = XXH64_digest(h);
    XXH64_freeState(h);
    if (!ok) {
        snprintf(err, errlen, "snapshot: writing %s: %s", path,
                 rc == VALUE_DAMAGED ? "a stored value fails its checksum (its bytes changed on "
                                       "disk): this node must be replaced"
                 : rc                ? mdb_strerror(rc)
                                     : strerror(errno));
        return KV_EIO;
    }
    *index = applied;
    *size = (uint64_t)pos;
    return KV_OK;
}

int kv_snapshot_file_check(const char *path, uint64_t size, uint64_t checksum, raft_index *index)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return KV_EIO;
    XXH64_state_t *h = XXH64_createState();
    XXH64_reset(h, 0);
    uint8_t buf[65536], head[16];
    size_t n, total = 0;
    bool head_ok = fread(head, 1, 16, f) == 16 && !memcmp(head, SNAP_MAGIC, 8);
    if (head_ok) {
        XXH64_update(h, head, 16);
        total = 16;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
            XXH64_update(h, buf, n);
            total += n;
        }
    }
    uint64_t sum = XXH64_digest(h);
    XXH64_freeState(h);
    fclose(f);
    if (!head_ok || total != size || sum != checksum)
        return KV_EIO;
    if (index)
        *index = get_le(head + 8, 8);
    return KV_OK;
}

static int clear_db(MDB_txn *txn, MDB_dbi dbi)
{
    return mdb_drop(txn, dbi, 0); /* empty it, keep the handle */
}

int kv_sm_install_stage(struct kv_sm *sm, MDB_txn *txn, const char *path, raft_index index,
                        char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "snapshot: cannot read %s: %s", path, strerror(errno));
        return KV_EIO;
    }
    uint8_t head[16];
    int rc = 0;
    struct stat sb;
    uint64_t file_size = fstat(fileno(f), &sb) == 0 ? (uint64_t)sb.st_size : 0;
    if (fread(head, 1, 16, f) != 16 || memcmp(head, SNAP_MAGIC, 8) || get_le(head + 8, 8) != index)
        rc = EINVAL;
    if (!rc && !(rc = clear_db(txn, sm->kv)))
        rc = clear_db(txn, sm->sess);
    sm->staged_hash = 0; /* summed again as the pairs go in */
    uint8_t *buf = NULL;
    size_t cap = 0;
    uint64_t clock = 0;
    while (!rc) {
        uint8_t rec[9];
        if (fread(rec, 1, 1, f) != 1) {
            rc = EINVAL;
            break;
        }
        if (rec[0] == 0)
            break;
        if (rec[0] > 3 || fread(rec + 1, 1, 8, f) != 8) {
            rc = EINVAL;
            break;
        }
        size_t kl = (size_t)get_le(rec + 1, 4), vl = (size_t)get_le(rec + 5, 4);
        /* A record longer than what is left of the file does not decode:
         * never allocate what a length field claims (found by the fuzzer). */
        long at = ftell(f);
        if (kl == 0 || kl > 511 || at < 0 || (uint64_t)kl + vl > file_size - (uint64_t)at) {
            rc = EINVAL;
            break;
        }
        if (kl + vl > cap) {
            uint8_t *nb = realloc(buf, kl + vl);
            if (!nb) {
                rc = ENOMEM;
                break;
            }
            buf = nb;
            cap = kl + vl;
        }
        if (fread(buf, 1, kl + vl, f) != kl + vl) {
            rc = EINVAL;
            break;
        }
        if (rec[0] == 3) { /* metadata we know; unknown names are skipped */
            if (kl == 5 && vl == 8 && !memcmp(buf, "clock", 5))
                clock = get_le(buf + 5, 8);
            continue;
        }
        MDB_val k = {kl, buf}, v = {vl, buf + kl};
        rc = rec[0] == 1 ? value_store(sm, txn, buf, kl, buf + kl, vl, false)
                         : mdb_put(txn, sm->sess, &k, &v, 0);
    }
    free(buf);
    fclose(f);
    if (!rc && !(rc = put_meta_u64(txn, sm->meta, "applied", index)) &&
        !(rc = put_meta_u64(txn, sm->meta, "clock", clock)))
        rc = put_meta_u64(txn, sm->meta, "hash", sm->staged_hash);
    if (rc == EINVAL) {
        snprintf(err, errlen, "snapshot %s does not decode", path);
        return KV_EIO;
    }
    if (rc)
        return lmdb_fail(err, errlen, rc, "installing a snapshot");
    sm->staged = index;
    sm->staged_clock_ms = clock;
    if (index % KV_CHECK_EVERY == 0)
        stage_checkpoint(sm, index);
    return KV_OK;
}

/* LMDB's counters of one database, in the reading thread's transaction. */
static int db_stat(struct kv_sm *sm, MDB_dbi dbi, MDB_stat *st)
{
    MDB_txn *txn;
    if (read_begin(sm, &txn))
        return KV_EIO;
    int rc = mdb_stat(txn, dbi, st);
    read_end(sm);
    return rc ? KV_EIO : KV_OK;
}

int kv_sm_sessions(struct kv_sm *sm, uint64_t *count, uint64_t *expired, uint64_t *clock_ms)
{
    MDB_stat st;
    if (db_stat(sm, sm->sess, &st) != KV_OK)
        return KV_EIO;
    *count = st.ms_entries;
    *expired = sm->expired;
    *clock_ms = sm->clock_ms;
    return KV_OK;
}

int kv_sm_stat(struct kv_sm *sm, uint64_t *keys, uint64_t *bytes)
{
    MDB_stat st;
    if (db_stat(sm, sm->kv, &st) != KV_OK)
        return KV_EIO;
    *keys = st.ms_entries;
    *bytes = (uint64_t)st.ms_psize * (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages);
    return KV_OK;
}

int kv_sm_hash(struct kv_sm *sm, uint64_t *hash, uint64_t *keys)
{
    MDB_txn *txn;
    if (read_begin(sm, &txn))
        return KV_EIO;
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, sm->kv, &c);
    if (rc) {
        read_end(sm);
        return KV_EIO;
    }
    XXH64_state_t *h = XXH64_createState();
    XXH64_reset(h, 0);
    uint64_t n = 0;
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if ((rc = value_open(sm, &k, &v)))
            break;
        uint8_t lens[8];
        le32(lens, (uint32_t)k.mv_size);
        le32(lens + 4, (uint32_t)v.mv_size);
        XXH64_update(h, lens, 8);
        XXH64_update(h, k.mv_data, k.mv_size);
        XXH64_update(h, v.mv_data, v.mv_size);
        n++;
    }
    mdb_cursor_close(c);
    read_end(sm);
    *hash = XXH64_digest(h);
    *keys = n;
    XXH64_freeState(h);
    return rc == MDB_NOTFOUND ? KV_OK : rc == VALUE_DAMAGED ? KV_EDAMAGED : KV_EIO;
}

int kv_sm_content_sum(struct kv_sm *sm, uint64_t *sum, uint64_t *keys)
{
    MDB_txn *txn;
    if (read_begin(sm, &txn))
        return KV_EIO;
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, sm->kv, &c);
    if (rc) {
        read_end(sm);
        return KV_EIO;
    }
    MDB_val k, v;
    *sum = *keys = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if ((rc = value_open(sm, &k, &v)))
            break;
        *sum += value_sum(k.mv_data, k.mv_size, v.mv_data, v.mv_size);
        (*keys)++;
    }
    mdb_cursor_close(c);
    read_end(sm);
    return rc == MDB_NOTFOUND ? KV_OK : rc == VALUE_DAMAGED ? KV_EDAMAGED : KV_EIO;
}
