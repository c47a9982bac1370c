/* sm.h — the key-value state machine of one Raft group, on LMDB.
 *
 * Committed entries carry kv.proto Commands. Applying a batch is one LMDB
 * write transaction that changes the keys, the client sessions and the
 * applied index together (host contract 2): after a crash the state is
 * exactly that of some prefix of the log, and replay continues from the
 * stored applied index. Nothing of a failed batch is visible (a full map
 * is an error, and the node applies nothing more until given space).
 *
 * Exactly-once (thesis §6.3): a command carries {client_id, seq}; the
 * session table keeps each client's highest applied seq and its result, so
 * a retried command is answered from the table and never applied twice.
 * A client has one command outstanding at a time and starts at seq 1; a
 * seq below the last applied one, or above 1 with no session in the table,
 * is refused as expired (STATUS_SESSION_EXPIRED) and not applied.
 *
 * Sessions expire after session_ttl_ms of idleness, measured on the log's
 * clock: the largest leader stamp (Command.time_ms) applied so far. So
 * every replica expires the same sessions at the same entry; the clock is
 * stored with the applied index and carried in snapshots.
 *
 * Content hash (etcd's corruption check, kvd.md 6a): the state machine
 * keeps a running hash of its pairs, the sum mod 2^64 of XXH64(key,
 * value) over every stored pair -- order-independent, so each write
 * adjusts it (a SET adds the new pair's term and takes out the one it
 * overwrote; a DEL takes its pair's out) in the transaction that applies
 * it. Replicas that applied the same prefix of the log have the same
 * hash; one whose stored pairs changed (a disk, a bug) has another. It is
 * stored with the applied index, installed with a snapshot (summed as the
 * pairs go in), and recomputed by a scan at every open, which compares
 * it with the stored one (kv_sm_open_scan): the hash always describes
 * what is on disk, not only what was applied.
 *
 * Databases: "g<id>.kv" (key -> value), "g<id>.sess" (client
 * id -> seq, last-used clock and encoded Result), "g<id>.kvmeta" (the
 * applied index, the log clock, the state format, the running hash).
 */
#ifndef KV_SM_H
#define KV_SM_H

#include <lmdb.h>
#include <stdint.h>

#include "kv.pb-c.h"
#include "raft.h"

#include "errors.h" /* KV_OK, KV_E... */

/* The commands that only read (answered by ReadIndex or a lease, not the
 * log), and the most keys one MGET or DEL may name. */
static inline bool kv_op_is_read(Kvpb__Op op)
{
    return op == KVPB__OP__OP_GET || op == KVPB__OP__OP_EXISTS || op == KVPB__OP__OP_MGET;
}
enum { KV_MAX_KEYS = 64 };

struct kv_sm;

int kv_sm_open(MDB_env *env, uint64_t group, struct kv_sm **out, char *err, size_t errlen);
void kv_sm_close(struct kv_sm *sm);
raft_index kv_sm_applied(const struct kv_sm *sm);

/* The result of one command: status and values as in kv.proto. Owns its
 * memory; release with kv_result_free(). */
struct kv_value {
    bool present;
    uint8_t *data;
    size_t len;
};
struct kv_result {
    Kvpb__Status status;
    int64_t integer;
    struct kv_value *values;
    size_t n_values;
    raft_index index;        /* where it took effect */
    uint64_t client_id, seq; /* the command's session, 0 if none */
};
void kv_result_free(struct kv_result *r);

/* Apply committed entries (consecutive, starting at applied + 1) in one
 * transaction. results (room for n, may be NULL) receive each entry's
 * result; NOOP and CONF entries only move the applied index. */
int kv_sm_apply(struct kv_sm *sm, const struct raft_entry *entries, size_t n,
                struct kv_result *results, char *err, size_t errlen);

/* The same in two steps, for a transaction the caller owns (kvd applies
 * inside the node's group commit: one fsync for log and state): stage in
 * txn, then say whether txn committed. Between the two, kv_sm_applied()
 * still returns the committed index. */
int kv_sm_stage(struct kv_sm *sm, MDB_txn *txn, const struct raft_entry *entries, size_t n,
                struct kv_result *results, char *err, size_t errlen);
void kv_sm_staged_done(struct kv_sm *sm, bool committed);

/* The group left this node for good: empty its databases in txn (the
 * node's drop transaction, node.h group_drop). Close it after. */
int kv_sm_drop(struct kv_sm *sm, MDB_txn *txn, char *err, size_t errlen);

/* A read-only command (GET, EXISTS, MGET) against the applied state; the
 * caller has made it linearizable first (ReadIndex). kv_sm_read,
 * kv_sm_hash and kv_sm_sessions share one read transaction: call them from
 * one thread (kvd's loop). */
int kv_sm_read(struct kv_sm *sm, const Kvpb__Command *cmd, struct kv_result *out);

/* Snapshots (§7). Write the committed state -- keys, sessions, applied
 * index, from one read transaction (LMDB's MVCC: writers go on) -- to
 * path, synced; *index is the applied index it captures, *checksum its
 * XXH64. Safe on a thread of its own. */
int kv_sm_snapshot_write(struct kv_sm *sm, const char *path, raft_index *index, uint64_t *size,
                         uint64_t *checksum, char *err, size_t errlen);
/* Whether the file at path has this size and checksum (and its index). */
int kv_snapshot_file_check(const char *path, uint64_t size, uint64_t checksum, raft_index *index);
/* Replace the state by the snapshot at path (captured at index) in txn,
 * then kv_sm_staged_done() as for kv_sm_stage(). */
int kv_sm_install_stage(struct kv_sm *sm, MDB_txn *txn, const char *path, raft_index index,
                        char *err, size_t errlen);
/* XXH64 of every key and value in key order, and how many keys: equal on
 * replicas that applied the same prefix of the log. */
int kv_sm_hash(struct kv_sm *sm, uint64_t *hash, uint64_t *keys);

/* The running content hash, committed: *index is the applied index it
 * describes. Sessions are not in it (only keys and values). */
void kv_sm_running_hash(const struct kv_sm *sm, raft_index *index, uint64_t *hash);

/* Checkpoints: every time the applied index reaches a multiple of
 * KV_CHECK_EVERY, the running hash at exactly that index (taken between
 * two entries of an apply batch) is kept, the last KV_CHECKS_KEPT of
 * them, in memory: what replicas compare (kv/relay.c). 256 entries:
 * taking one costs a 16-byte copy, and the kept ones span 4096 entries,
 * far more than a follower's apply lags behind its leader's, so a
 * leader's recent checkpoints are nearly always also a follower's. */
enum { KV_CHECK_EVERY = 256, KV_CHECKS_KEPT = 16 };
struct kv_checkpoint {
    raft_index index;
    uint64_t hash; /* the running hash once index was applied */
};
/* The hash at index if this state machine knows it (a kept checkpoint, or
 * the applied index itself). */
bool kv_sm_checkpoint(const struct kv_sm *sm, raft_index index, uint64_t *hash);
/* The kept checkpoints, newest first, at most max; how many. */
size_t kv_sm_checkpoints(const struct kv_sm *sm, struct kv_checkpoint *out, size_t max);

/* What kv_sm_open found when it summed the stored pairs. */
struct kv_sm_open_scan {
    bool computed;   /* no hash was stored (an older kvd's data): computed now */
    bool mismatch;   /* the stored pairs do not sum to the hash stored with them */
    uint64_t stored; /* the hash stored with the applied index */
    uint64_t scanned;
    uint64_t keys, ms; /* the scan: pairs, and how long it took */
};
const struct kv_sm_open_scan *kv_sm_open_scan(const struct kv_sm *sm);

/* The running hash recomputed from the committed state's values, each
 * read whole and its checksum verified (KV_EDAMAGED if one fails): for
 * tests and checks. Shares kv_sm_read's read transaction. */
int kv_sm_content_sum(struct kv_sm *sm, uint64_t *sum, uint64_t *keys);

/* How many keys the state holds and the bytes of its B-tree pages, from
 * LMDB's counters (no scan). */
int kv_sm_stat(struct kv_sm *sm, uint64_t *keys, uint64_t *bytes);

/* Sessions in the table (expired ones not yet swept included), sessions
 * expired by this process, and the log clock (ms since the epoch). */
int kv_sm_sessions(struct kv_sm *sm, uint64_t *count, uint64_t *expired, uint64_t *clock_ms);

/* Encode a command as entry data (malloc'ed; the caller frees). */
int kv_command_encode(const Kvpb__Command *cmd, uint8_t **data, size_t *len);

#endif /* KV_SM_H */
