/* storage.h — a node's stable storage: the Raft log, hard state and
 * snapshot meta of every group, written by group commit.
 *
 * In a data directory made by this build they are an append-only file,
 * <data>/log (wal.h): one write and one fdatasync per commit, and LMDB
 * keeps only the node database below. A directory made before (or with
 * RAFTKV_LOG_STORE=lmdb, for tests of that format) keeps them in LMDB:
 *
 * Layout (docs/architecture.md): one LMDB environment per node (the data directory);
 * a "node" database holding the cluster id, node id and format version; and
 * per group g: "g<g>.log" (index -> term, type, data) and "g<g>.meta"
 * (current term, vote, the log's first index and the term before it, and
 * the latest snapshot's meta). The state machine's databases ("g<g>.kv",
 * "g<g>.sess", "g<g>.kvmeta" with the applied index) live in a second
 * environment, <data>/sm (storage_sm_env), committed by a thread of their
 * own: the log's commit, which acknowledgements wait for, does not carry
 * their pages (node.c orders the two).
 *
 * Group commit: everything the groups of a node must persist at the end of
 * a loop turn goes into one storage_batch and one write transaction -- one
 * fsync (measured on this project's machine: ~5,000 commits/s but ~200,000 entries/s when
 * batched). Nothing of a failed commit is visible: LMDB aborts the whole
 * transaction, so a full map (STORAGE_EFULL) loses no acknowledged write and
 * leaves no half-applied state; reopening with a larger map continues.
 */
#ifndef RAFT_IO_STORAGE_H
#define RAFT_IO_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "raft.h"

enum {
    /* In a range of their own (raft.h's RAFT_ codes are below 100). */
    STORAGE_OK = 0,
    STORAGE_EIO = 301,       /* LMDB or the file system failed; see the message */
    STORAGE_EFULL = 302,     /* the map is full: nothing was written; grow --map-size */
    STORAGE_EMISMATCH = 303, /* the data directory belongs to another cluster or node */
    STORAGE_ECORRUPT = 304,  /* stored data does not decode */
    STORAGE_ENOMEM = 305,
    STORAGE_ELOCKED = 306, /* another process holds the data directory; the message names it */
};
/* A word for a STORAGE_ code (the message of the call that failed says more). */
const char *storage_strerror(int code);

/* Format 2 adds a checksum to every log record (format 1 is still read). */
enum { STORAGE_FORMAT_VERSION = 2 };

struct storage;

/* Open (creating if needed) the environment in directory `path` for node
 * `node_id` of cluster `cluster_id`. A directory that records another
 * cluster or node is refused with STORAGE_EMISMATCH and a message saying
 * what to do; one that another process has open (its lock file kvd.lock,
 * held until storage_close() or the process ends), with STORAGE_ELOCKED; a
 * data file shorter than its own meta pages say, or whose meta pages are
 * not LMDB's, with STORAGE_ECORRUPT before LMDB maps it. map_size_bytes
 * bounds the data (LMDB's map size). On error, `err` (size errlen) holds a
 * message for the user. */
int storage_open(const char *path, uint64_t cluster_id, uint64_t node_id, size_t map_size_bytes,
                 struct storage **out, char *err, size_t errlen);
void storage_close(struct storage *st);

/* Incarnations. A data directory draws a random nonzero incarnation id
 * when it is created (one made before incarnations draws it at its first
 * open by this build: it still holds its data). A node that lost its data
 * and starts again empty has a new one, and its peers, which recorded the
 * old one, refuse it: a server that forgot its log and vote must not vote
 * or count toward a commit, or an acknowledged write could be lost (the
 * "disk loss" hazard; docs/kvd.md, A node that lost its data). */
uint64_t storage_incarnation(const struct storage *st);
/* The incarnation recorded for peer `id`, 0 if none yet (read once, at
 * open, into memory). */
uint64_t storage_peer_incarnation(const struct storage *st, uint64_t id);
/* Record peer id's incarnation, in a transaction of its own, synced; from
 * the loop thread, once per peer and data dir (it waits for a storage
 * commit in flight). STORAGE_ code, err filled. */
int storage_set_peer_incarnation(struct storage *st, uint64_t id, uint64_t incarnation, char *err,
                                 size_t errlen);
/* Forget it (the operator brings a node back empty: docs/kvd.md); the next
 * one heard is recorded. Same rules as storage_set_peer_incarnation. */
int storage_forget_peer_incarnation(struct storage *st, uint64_t id, char *err, size_t errlen);

/* What one group persists in one update (host contract 1). The pointers
 * are read during storage_commit() only. */
struct storage_group_write {
    uint64_t group;
    bool hard_state;
    raft_term term;
    raft_id vote;
    raft_index truncate_from; /* delete entries >= this first (0: none) */
    const struct raft_entry *entries;
    size_t n_entries;
    raft_index compact_index;                  /* delete entries <= this (0: none)... */
    raft_term compact_term;                    /* ...and remember the term at it */
    const struct raft_snapshot_meta *snapshot; /* a new snapshot's meta, or NULL */
    /* With snapshot: it was received from the leader and replaces the state
     * (Figure 13, receiver 6 and 7): keep the entries after it if the
     * stored log agrees at its index, otherwise drop the whole log. */
    bool install;
};

/* Write every group's changes in one transaction and sync it. All or
 * nothing: on error nothing of the batch is stored. */
int storage_commit(struct storage *st, const struct storage_group_write *writes, size_t n,
                   char *err, size_t errlen);

/* The same, with hook(arg, txn) called in the transaction after the log
 * writes and before the commit (txn is an MDB_txn *): kvd applies committed
 * entries there, so log, state and applied index share one fsync. A hook
 * error (a STORAGE_ code, with err filled) aborts everything. */
typedef int (*storage_hook)(void *arg, void *txn, char *err, size_t errlen);
int storage_commit_with(struct storage *st, const struct storage_group_write *writes, size_t n,
                        storage_hook hook, void *arg, char *err, size_t errlen);

/* What the last storage_commit_with() cost, read on the thread that called
 * it: the time to build the transaction (log writes and the hook: applying
 * entries, or waiting in it), the time LMDB's commit took (writing the
 * dirty pages, the data file's fdatasync and the meta page's synchronous
 * write), and the bytes that commit wrote (Linux's per-thread count). */
struct storage_cost {
    uint64_t build_ns, commit_ns, bytes;
};
void storage_last_cost(const struct storage *st, struct storage_cost *out);
/* What storage_cost is measured with (shared with wal.c): a monotonic
 * clock, and the bytes this thread has written to files (Linux counts
 * them per thread; page cache included). */
uint64_t storage_clock_ns(void);
uint64_t storage_thread_bytes_written(void);

/* From inside a hook: more groups' writes, in the hook's transaction (the
 * node joins writes that arrive while it waits to commit). */
int storage_write_more(struct storage *st, void *txn, const struct storage_group_write *writes,
                       size_t n, char *err, size_t errlen);

/* The log's LMDB environment (an MDB_env *). */
void *storage_env(struct storage *st);

/* The state machine's environment. A data directory made by this build
 * keeps the state machine in an environment of its own, <data>/sm, so that
 * the log's commit -- the only sync an acknowledgement waits for -- writes
 * the log's pages and not the state machine's (docs/kvd.md, section 4).
 * One made before keeps both in one environment, and this returns the
 * log's (storage_sm_separate() says which). */
void *storage_sm_env(struct storage *st);
bool storage_sm_separate(const struct storage *st);
bool storage_sm_rebuilt(const struct storage *st);

/* A write transaction on the state machine's environment around hook
 * (txn is an MDB_txn *), committed -- not synced: a process crash keeps
 * it (the page cache), and after a machine crash the state machines are
 * rebuilt from the snapshot files and the log (storage.c, open_sm_env;
 * storage_sm_rebuilt() says it happened). A hook error aborts it. */
int storage_commit_sm(struct storage *st, storage_hook hook, void *arg, char *err, size_t errlen);
void storage_last_sm_cost(const struct storage *st, struct storage_cost *out);

/* Make every state machine commit so far durable (before the log forgets
 * the entries they applied: compaction). */
int storage_sync_sm(struct storage *st, char *err, size_t errlen);

/* Everything stored for one group, decoded. Owns its memory; release with
 * storage_loaded_free(). persisted points into it and is ready for
 * raft_init() (configuration fields left for the caller to fill when there
 * is no snapshot). */
struct storage_loaded {
    struct raft_persisted persisted;
    struct raft_snapshot_meta snapshot;
    struct raft_entry *entries;
    struct raft_member *members;
    void *arena; /* entry data */
    /* The group's base configuration as recorded when it was created here
     * (storage_set_base): has_base false for a group from before records. */
    bool has_base;
    raft_id *base;
    size_t n_base;
};
int storage_load(struct storage *st, uint64_t group, struct storage_loaded *out, char *err,
                 size_t errlen);
void storage_loaded_free(struct storage_loaded *l);

/* This node left a group for good (its leader removed it, docs/
 * membership.md): drop its log, snapshot meta and base -- what it holds of
 * the group -- but keep its term and vote, so that if the group is ever
 * hosted here again (as a learner, from nothing) this server cannot vote
 * twice in a term it voted in (Figure 2, votedFor). hook(arg, txn), if
 * given, drops the host's state in the same transaction -- when the state
 * machine shares the log's environment; otherwise node.c drops it after,
 * and finishes that at the next start if a crash came between. From the
 * loop thread while no commit is in flight. STORAGE_ code, err filled. */
int storage_drop_group(struct storage *st, uint64_t group, storage_hook hook, void *arg, char *err,
                       size_t errlen);

/* Record the voters a group starts from on this node, in a transaction of
 * its own, synced, before the group's first step: the bootstrap voters for
 * a group the cluster was created with, none for one this node joins (it
 * learns the configuration from the leader, as a learner). Recorded once,
 * it is what every later start uses: the host's idea of a group's voters
 * changes as nodes come and go, and a group started again from another
 * list could elect a leader among servers with empty logs (docs/
 * membership.md). From the loop thread while no commit is in flight. */
int storage_set_base(struct storage *st, uint64_t group, const raft_id *voters, size_t n, char *err,
                     size_t errlen);

#endif /* RAFT_IO_STORAGE_H */
