/* wal.h — the Raft log of every group of a node as an append-only file:
 * one write and one fdatasync per commit (storage.h's storage_commit).
 *
 * Why: LMDB's commit copies the path of every B-tree it touches and syncs
 * twice (the data pages, then the meta page): 23-36 KiB and two device
 * flushes for a batch that carries a few hundred bytes (docs/kvd.md, 7b).
 * Raft's log is written at its end and read back only at start, the shape
 * a write-ahead log has: etcd's WAL, TiKV's raft-engine. Here the log of
 * every group of the node shares one stream, so one sync serves every
 * group (multi-Raft), and LMDB keeps only what is written rarely (the
 * node's identity and its peers' incarnations).
 *
 * On disk: <dir>/NNNNNNNNNNNNNNNN.seg, numbered in order, each preallocated
 * (posix_fallocate) to the segment size. A segment is a run of frames;
 * a frame is one commit: a 32-byte header (magic, payload length, batch
 * sequence number, XXH64 of header and payload, seeded with the segment's
 * random salt so that no client's bytes pass for a frame) and records -- entries,
 * truncations, hard states, compactions, snapshot metas, installs, base
 * configurations, drops. Every segment begins with a checkpoint frame: the
 * state of every group (term, vote, log range, snapshot meta, base) when
 * it was started, so that a segment whose entries are all dead (compacted,
 * truncated, overwritten) can be deleted without losing the records it
 * held. docs/kvd.md, section 4, has the argument; wal.c the details.
 *
 * Recovery (wal_open) reads every segment in order and applies each
 * complete frame. A frame is written and synced before the next is
 * written, so a crash leaves at most one frame torn, at the end of the
 * segment being written: it is dropped (it was never acknowledged) and
 * appends continue in a new segment. A frame that fails its checksum with
 * a good frame after it is damage, not a torn write: the node refuses to
 * start and says where.
 */
#ifndef RAFT_IO_WAL_H
#define RAFT_IO_WAL_H

#include "storage.h"

struct wal;

/* The default size a segment is preallocated to. */
enum { WAL_SEGMENT_BYTES = 32 << 20 };

/* Open (creating if needed) the log in directory `dir` and recover it.
 * segment_bytes 0 means WAL_SEGMENT_BYTES. STORAGE_ code, err filled. */
int wal_open(const char *dir, size_t segment_bytes, struct wal **out, char *err, size_t errlen);
void wal_close(struct wal *w);

/* One commit: every write, in one frame, synced (host contract 1). All or
 * nothing: a write that would break the log's shape (a hole, a log that
 * starts after its snapshot) is refused before anything is written, with
 * STORAGE_ECORRUPT, and the log refuses every later commit (the caller has
 * a bug; its in-memory state no longer matches the disk). */
int wal_commit(struct wal *w, const struct storage_group_write *ws, size_t n, char *err,
               size_t errlen);

/* storage_set_base and storage_drop_group (storage.h), as records. */
int wal_set_base(struct wal *w, uint64_t group, const raft_id *voters, size_t n, char *err,
                 size_t errlen);
int wal_drop_group(struct wal *w, uint64_t group, char *err, size_t errlen);

/* storage_load (storage.h): entries are read back from the segments. */
int wal_load(struct wal *w, uint64_t group, struct storage_loaded *out, char *err, size_t errlen);

/* What the last wal_commit cost (storage_cost: build, write+sync, bytes). */
void wal_last_cost(const struct wal *w, struct storage_cost *out);

/* For tests and `make profile`: segments on disk, and frames recovered at
 * open (the torn one dropped, if any). */
struct wal_stats {
    size_t segments;
    uint64_t frames_recovered;
    bool torn_tail; /* the last open found and dropped a torn frame */
};
void wal_stats(const struct wal *w, struct wal_stats *out);

#endif /* RAFT_IO_WAL_H */
