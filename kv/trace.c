/* trace.c — kvd's JSON trace records to a file and to live subscribers; see trace.h. */
#include "trace.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "node.h"
#include "tracejson.h"

int kv_trace_open(struct kv_trace *t, const char *path, uint64_t max_bytes, char *err,
                  size_t errlen)
{
    if (strlen(path) + 3 > sizeof(t->path)) {
        snprintf(err, errlen, "--trace-file: path too long");
        return -1;
    }
    FILE *f = fopen(path, "ab");
    if (!f) {
        snprintf(err, errlen, "--trace-file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    t->file_bytes = fstat(fileno(f), &st) == 0 ? (uint64_t)st.st_size : 0;
    setvbuf(f, NULL, _IOLBF, 0); /* a kill -9 loses no whole record */
    t->file = f;
    t->max_bytes = max_bytes;
    snprintf(t->path, sizeof(t->path), "%s", path);
    return 0;
}

void kv_trace_close(struct kv_trace *t)
{
    if (t->file)
        fclose(t->file);
    t->file = NULL;
}

bool kv_trace_on(const struct kv_trace *t)
{
    return t->file || t->subs;
}

/* The file keeps at most two generations, PATH and PATH.1, each under
 * max_bytes: the newest records, bounded on disk. */
static void file_write(struct kv_trace *t, const char *line, size_t len)
{
    if (t->max_bytes && t->file_bytes + len > t->max_bytes && t->file_bytes > 0) {
        char old[sizeof(t->path) + 2];
        snprintf(old, sizeof(old), "%s.1", t->path);
        fclose(t->file);
        t->file = NULL;
        if (rename(t->path, old) != 0)
            t->file_errors++;
        t->file = fopen(t->path, "wb");
        t->file_bytes = 0;
        t->file_rotations++;
        if (!t->file) {
            t->file_errors++;
            return;
        }
        setvbuf(t->file, NULL, _IOLBF, 0);
    }
    if (fwrite(line, 1, len, t->file) != len)
        t->file_errors++;
    t->file_bytes += len;
}

/* Tell a subscriber how many records it lost, once it has room again. */
static int tell_lost(struct kv_trace *t, struct kv_trace_sub *sub)
{
    char buf[256];
    struct tj j;
    tj_begin(&j, buf, sizeof(buf), raft_node_wall_ms(), "lost", t->node, 0);
    tj_u64(&j, "count", sub->lost);
    size_t len = tj_end(&j);
    sub->lost = 0;
    return len ? sub->write(sub, buf, len) : 0;
}

static void sub_offer(struct kv_trace *t, struct kv_trace_sub *sub, const char *line, size_t len)
{
    size_t q = sub->queued(sub);
    if (q > t->queued_max)
        t->queued_max = q;
    if (q + len > KV_TRACE_SUB_QUEUE) {
        sub->lost++;
        t->sub_dropped++;
        t->sub_dropped_bytes += len;
        return;
    }
    if (sub->lost && tell_lost(t, sub) != 0)
        return;
    sub->write(sub, line, len);
}

void kv_trace_emit(struct kv_trace *t, uint64_t group, const char *line, size_t len)
{
    t->records++;
    if (t->file)
        file_write(t, line, len);
    struct kv_trace_sub *next;
    for (struct kv_trace_sub *sub = t->subs; sub; sub = next) {
        next = sub->next; /* a write may end the subscription */
        if (sub->all_groups || sub->group == group)
            sub_offer(t, sub, line, len);
    }
}

bool kv_trace_subscribe(struct kv_trace *t, struct kv_trace_sub *sub)
{
    if (t->n_subs >= KV_TRACE_MAX_SUBS)
        return false;
    sub->prev = NULL;
    sub->next = t->subs;
    if (t->subs)
        t->subs->prev = sub;
    t->subs = sub;
    t->n_subs++;
    return true;
}

void kv_trace_unsubscribe(struct kv_trace *t, struct kv_trace_sub *sub)
{
    if (sub->prev)
        sub->prev->next = sub->next;
    else if (t->subs == sub)
        t->subs = sub->next;
    else
        return; /* not subscribed */
    if (sub->next)
        sub->next->prev = sub->prev;
    sub->prev = sub->next = NULL;
    t->n_subs--;
}

void kv_trace_detach_all(struct kv_trace *t)
{
    while (t->subs) {
        struct kv_trace_sub *sub = t->subs;
        kv_trace_unsubscribe(t, sub);
        sub->detached = true;
    }
}

void kv_trace_drained(struct kv_trace *t, struct kv_trace_sub *sub)
{
    if (sub->lost && sub->queued(sub) < KV_TRACE_SUB_QUEUE / 2)
        tell_lost(t, sub);
}
