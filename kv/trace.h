/* trace.h — where kvd's JSON trace records go (docs/trace.md, JSON lines):
 * a file (--trace-file, rotated at a size bound) and the live subscribers
 * of GET /v1/events (http.c), each bounded.
 *
 * A subscriber that does not keep up loses records rather than making the
 * node wait or buffer: while more than KV_TRACE_SUB_QUEUE bytes of its
 * stream wait unsent, what comes for it is counted and dropped, and once it
 * has caught up it first gets a "lost" record with that count. The node
 * never blocks on a viewer, and a viewer costs at most that many bytes.
 */
#ifndef KV_TRACE_H
#define KV_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { KV_TRACE_SUB_QUEUE = 256 << 10, KV_TRACE_MAX_SUBS = 16 };

struct kv_trace_sub {
    struct kv_trace_sub *prev, *next;
    /* Write one record (a JSON line) to the stream; nonzero: the stream
     * broke and the subscriber leaves. */
    int (*write)(struct kv_trace_sub *sub, const char *line, size_t len);
    /* Bytes written and not yet taken by the client. */
    size_t (*queued)(struct kv_trace_sub *sub);
    uint64_t group; /* only this group's records (and the node-wide ones) */
    bool all_groups;
    uint64_t lost; /* dropped since the subscriber was last told */
    /* The server stopped and let go of it (kv_trace_detach_all): the trace
     * is not to be touched again, it may be freed already. */
    bool detached;
};

struct kv_trace {
    FILE *file;
    char path[4096];
    uint64_t max_bytes; /* the file is rotated to PATH.1 at this size */
    uint64_t file_bytes;
    struct kv_trace_sub *subs;
    unsigned n_subs;
    uint64_t node; /* for the "lost" records */
    /* Metrics. */
    uint64_t records, sub_dropped, sub_dropped_bytes, file_rotations, file_errors;
    size_t queued_max; /* the most bytes any subscriber had waiting */
};

/* Open (append to) the trace file; -1 with err filled on failure. */
int kv_trace_open(struct kv_trace *t, const char *path, uint64_t max_bytes, char *err,
                  size_t errlen);
void kv_trace_close(struct kv_trace *t);
/* Whether any record has somewhere to go. */
bool kv_trace_on(const struct kv_trace *t);
/* One record (a whole line ending in a newline) of group `group`. */
void kv_trace_emit(struct kv_trace *t, uint64_t group, const char *line, size_t len);
/* Add a subscriber; false when there are KV_TRACE_MAX_SUBS already. */
bool kv_trace_subscribe(struct kv_trace *t, struct kv_trace_sub *sub);
void kv_trace_unsubscribe(struct kv_trace *t, struct kv_trace_sub *sub);
/* The server is stopping: forget every subscriber, marking each detached,
 * since the connections close after the server may be gone. */
void kv_trace_detach_all(struct kv_trace *t);
/* The subscriber's stream drained some: tell it what it lost, if it did. */
void kv_trace_drained(struct kv_trace *t, struct kv_trace_sub *sub);

#endif /* KV_TRACE_H */
