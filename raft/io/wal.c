/* wal.c — the append-only log (wal.h).
 *
 * Why the records replay to the right log (the argument docs/kvd.md,
 * section 4, gives in prose):
 *
 *  - Every record is applied in memory by the same function at recovery
 *    and after its commit (apply_payload), so what a restart rebuilds is
 *    what the running node had.
 *  - An entry slot in memory names the segment that holds its bytes; each
 *    segment counts the slots that name it (`live`). A segment with no live
 *    slot that is not the one being written is deleted.
 *  - That loses nothing: every segment begins with a checkpoint of every
 *    group's term, vote, log range, snapshot meta and base, so the records
 *    a deleted segment held are summed up by the checkpoint of a later one
 *    (the segment being written is never deleted, and it began after all of
 *    them). A stale entry record left in a kept older segment is replayed
 *    before that checkpoint: either the checkpoint's range cuts it, or the
 *    entry that replaced it is live -- so in a kept segment -- and written
 *    after it, so replayed after it.
 *  - A frame is written and synced before the next one is written (the log
 *    thread commits one batch at a time), so a crash tears at most the last
 *    frame of the segment being written. Recovery drops a torn frame and
 *    opens a new segment, whose header records where the old one ended;
 *    valid-looking bytes after a bad frame are damage, and are refused.
 */
#define _GNU_SOURCE
#include "wal.h"

#include "le.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>

enum {
    FRAME_MAGIC = 0x314c4157, /* "WAL1" */
    FRAME_HEADER = 32,        /* magic, length, sequence, hash, reserved */
    MAX_MEMBERS = 64,
    MAX_BASE = 64,
};

/* Record types. */
enum {
    R_SEGMENT = 1, /* first record of a segment: the end of the one before */
    R_CHECKPOINT,  /* a group's whole state */
    R_HARD,        /* term, vote */
    R_TRUNCATE,    /* delete entries >= from */
    R_ENTRY,       /* append one entry */
    R_INSTALL,     /* a received snapshot replaces the log (Figure 13, 6-7) */
    R_SNAPSHOT,    /* the latest snapshot's meta */
    R_COMPACT,     /* delete entries <= index, remember its term */
    R_BASE,        /* the group's base configuration */
    R_DROP,        /* the node left the group: forget all but term and vote */
    R_REWRITE,     /* a live entry copied out of an old segment (same bytes) */
};

#define SEG_NONE UINT32_MAX

struct slot {
    uint64_t off; /* the entry's data in its segment file */
    uint32_t seg; /* the segment's number, SEG_NONE: not seen yet (recovery) */
    uint32_t len;
    raft_term term;
    uint8_t type;
};

struct group {
    uint64_t id;
    raft_term term;
    raft_id vote;
    raft_index first; /* entries first .. first + n - 1 */
    raft_term prev_term;
    struct slot *slots;
    size_t n, cap;
    bool has_snap;
    struct raft_snapshot_meta snap;
    struct raft_member members[MAX_MEMBERS];
    bool has_base;
    raft_id base[MAX_BASE];
    size_t n_base;
};

struct segment {
    uint32_t number;
    int fd;
    uint64_t live;       /* slots naming it */
    uint64_t live_bytes; /* their data */
    uint64_t end;        /* bytes of valid frames */
    /* The seed of its frames' hashes but the first (which records it):
     * random, so that no client can write bytes that pass for a frame of
     * it (recovery would take a torn frame for damage). */
    uint64_t salt;
};

struct wal {
    char dir[4096];
    int dir_fd;
    size_t seg_bytes;
    struct segment *segs; /* in number order; the last is written */
    size_t n_segs, cap_segs;
    uint64_t seq; /* the next frame's sequence number */
    struct group *groups;
    size_t n_groups, cap_groups;
    uint8_t *buf; /* the frame being built: header, then payload */
    size_t len, cap;
    uint8_t *cbuf; /* a checkpoint frame, when a commit starts a segment */
    size_t clen, ccap;
    bool failed;
    uint8_t *rbuf; /* rewrite records (add_rewrites) */
    size_t rlen, rcap;
    struct storage_cost last;
    uint64_t frames_recovered;
    bool torn;
};

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* What a damaged log means (as storage.c says it for LMDB's log). */
#define WAL_DAMAGED_ADVICE                                                                         \
    "; this node may have acknowledged entries it no longer holds, so it must not rejoin with "    \
    "this log. Move its data directory aside and start it empty only while the other nodes alone " \
    "are a majority and are caught up with their leader (docs/kvd.md, \"A node that will not "     \
    "start\")"

/* ------------------------------------------------------------------------
 * Encoding
 * ------------------------------------------------------------------------ */

struct out {
    uint8_t **buf;
    size_t *len, *cap;
    bool oom;
};

static uint8_t *room(struct out *o, size_t n)
{
    if (o->oom)
        return NULL;
    if (*o->len + n > *o->cap) {
        size_t cap = *o->cap ? *o->cap : 4096;
        while (cap < *o->len + n)
            cap *= 2;
        uint8_t *b = realloc(*o->buf, cap);
        if (!b) {
            o->oom = true;
            return NULL;
        }
        *o->buf = b;
        *o->cap = cap;
    }
    uint8_t *p = *o->buf + *o->len;
    *o->len += n;
    return p;
}

static void out8(struct out *o, uint8_t v)
{
    uint8_t *p = room(o, 1);
    if (p)
        *p = v;
}

static void out32(struct out *o, uint32_t v)
{
    uint8_t *p = room(o, 4);
    if (p)
        put32(p, v);
}

static void out64(struct out *o, uint64_t v)
{
    uint8_t *p = room(o, 8);
    if (p)
        put64(p, v);
}

static void out_bytes(struct out *o, const void *data, size_t n)
{
    uint8_t *p = room(o, n);
    if (p && n)
        memcpy(p, data, n);
}

static void out_head(struct out *o, uint8_t type, uint64_t group)
{
    out8(o, type);
    out64(o, group);
}

static void out_snapshot(struct out *o, const struct raft_snapshot_meta *s)
{
    out64(o, s->index);
    out64(o, s->term);
    out64(o, s->size);
    out64(o, s->checksum);
    out32(o, (uint32_t)s->n_members);
    for (size_t i = 0; i < s->n_members; i++) {
        out64(o, s->members[i].id);
        out8(o, s->members[i].is_voter ? 1 : 0);
    }
}

/* A reader over a frame's payload; any overrun marks it bad. */
struct in {
    const uint8_t *p, *end;
    bool bad;
};

static const uint8_t *take(struct in *in, size_t n)
{
    if (in->bad || (size_t)(in->end - in->p) < n) {
        in->bad = true;
        return NULL;
    }
    const uint8_t *p = in->p;
    in->p += n;
    return p;
}

static uint8_t in8(struct in *in)
{
    const uint8_t *p = take(in, 1);
    return p ? *p : 0;
}

static uint32_t in32(struct in *in)
{
    const uint8_t *p = take(in, 4);
    return p ? get32(p) : 0;
}

static uint64_t in64(struct in *in)
{
    const uint8_t *p = take(in, 8);
    return p ? get64(p) : 0;
}

/* ------------------------------------------------------------------------
 * The in-memory state, and applying records to it
 * ------------------------------------------------------------------------ */

static struct segment *segment_of(struct wal *w, uint32_t number)
{
    for (size_t i = w->n_segs; i-- > 0;)
        if (w->segs[i].number == number)
            return &w->segs[i];
    return NULL;
}

/* A slot stops naming its segment. */
static void slot_kill(struct wal *w, struct slot *s)
{
    if (s->seg == SEG_NONE)
        return;
    struct segment *seg = segment_of(w, s->seg);
    if (seg && seg->live) {
        seg->live--;
        seg->live_bytes -= s->len;
    }
    s->seg = SEG_NONE;
}

static void kill_range(struct wal *w, struct group *g, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        slot_kill(w, &g->slots[i]);
}

static struct group *find_group(struct wal *w, uint64_t id)
{
    for (size_t i = 0; i < w->n_groups; i++)
        if (w->groups[i].id == id)
            return &w->groups[i];
    return NULL;
}

static struct group *get_group(struct wal *w, uint64_t id)
{
    struct group *g = find_group(w, id);
    if (g)
        return g;
    if (w->n_groups == w->cap_groups) {
        size_t cap = w->cap_groups ? 2 * w->cap_groups : 16;
        struct group *gs = realloc(w->groups, cap * sizeof(*gs));
        if (!gs)
            return NULL;
        w->groups = gs;
        w->cap_groups = cap;
        /* A snapshot meta points at its group's own members array, which
         * moved with the table. */
        for (size_t i = 0; i < w->n_groups; i++)
            gs[i].snap.members = gs[i].members;
    }
    g = &w->groups[w->n_groups++];
    memset(g, 0, sizeof(*g));
    g->id = id;
    g->first = 1;
    return g;
}

static bool reserve_slots(struct group *g, size_t n)
{
    if (n <= g->cap)
        return true;
    size_t cap = g->cap ? g->cap : 64;
    while (cap < n)
        cap *= 2;
    struct slot *s = realloc(g->slots, cap * sizeof(*s));
    if (!s)
        return false;
    g->slots = s;
    g->cap = cap;
    return true;
}

/* Keep slots [from, to) only, renumbered from 0. */
static void keep_range(struct wal *w, struct group *g, size_t from, size_t to)
{
    if (to > g->n)
        to = g->n;
    if (from > to)
        from = to;
    kill_range(w, g, 0, from);
    kill_range(w, g, to, g->n);
    if (from)
        memmove(g->slots, g->slots + from, (to - from) * sizeof(*g->slots));
    g->n = to - from;
}

static raft_index last_index(const struct group *g)
{
    return g->first + g->n - 1;
}

/* Decode a snapshot meta into the group. */
static void in_snapshot(struct in *in, struct group *g)
{
    struct raft_snapshot_meta s = {0};
    s.index = in64(in);
    s.term = in64(in);
    s.size = in64(in);
    s.checksum = in64(in);
    uint32_t n = in32(in);
    if (n > MAX_MEMBERS) {
        in->bad = true;
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        g->members[i].id = in64(in);
        g->members[i].is_voter = in8(in) & 1;
    }
    s.members = g->members;
    s.n_members = n;
    if (!in->bad) {
        g->snap = s;
        g->has_snap = true;
    }
}

static void in_base(struct in *in, struct group *g)
{
    uint32_t n = in32(in);
    if (n > MAX_BASE) {
        in->bad = true;
        return;
    }
    for (uint32_t i = 0; i < n; i++)
        g->base[i] = in64(in);
    g->n_base = n;
    g->has_base = true;
}

/* An entry record's fields, and the slot that names its bytes (R_ENTRY,
 * R_REWRITE). */
static raft_index in_entry(struct in *in, const uint8_t *payload, uint32_t seg, uint64_t base,
                           struct slot *out)
{
    raft_index index = in64(in);
    raft_term term = in64(in);
    uint8_t type = in8(in);
    uint32_t n = in32(in);
    const uint8_t *data = take(in, n);
    *out = (struct slot){.off = data ? base + (uint64_t)(data - payload) : 0,
                         .seg = seg,
                         .len = n,
                         .term = term,
                         .type = type};
    return index;
}

static void count_live(struct segment *sg, const struct slot *s)
{
    if (sg) {
        sg->live++;
        sg->live_bytes += s->len;
    }
}

/* Apply a frame's records. `seg` is the segment number and `base` the
 * file offset of the payload, so entry slots can name their bytes. On a
 * record that does not decode or breaks the log's shape, fills why and
 * returns false (recovery: the log is damaged; after a commit: cannot
 * happen, wal_commit checked it first). */
static bool apply_payload(struct wal *w, const uint8_t *p, size_t len, uint32_t seg, uint64_t base,
                          char *why, size_t whylen)
{
    struct in in = {p, p + len, false};
    struct segment *sg = segment_of(w, seg);
    while (in.p < in.end && !in.bad) {
        uint8_t type = in8(&in);
        uint64_t id = in64(&in);
        if (in.bad)
            break;
        if (type == R_SEGMENT) {
            (void)in64(&in); /* read by recovery */
            (void)in64(&in);
            continue;
        }
        struct group *g = get_group(w, id);
        if (!g) {
            snprintf(why, whylen, "out of memory");
            return false;
        }
        switch (type) {
        case R_CHECKPOINT: {
            g->term = in64(&in);
            g->vote = in64(&in);
            raft_index first = in64(&in);
            g->prev_term = in64(&in);
            uint64_t n = in64(&in);
            if (in.bad || first == 0 || n > (uint64_t)1 << 40)
                break;
            /* Keep what is already known of [first, first + n) -- the
             * entries written before, in segments still here -- and
             * make room for the rest: later records fill it, or nothing
             * does and the log is damaged (checked at the end). */
            raft_index lo = first > g->first ? first : g->first;
            raft_index hi = first + n < g->first + g->n ? first + n : g->first + g->n;
            size_t known = 0, shift = 0;
            if (g->n && lo < hi) {
                keep_range(w, g, (size_t)(lo - g->first), (size_t)(hi - g->first));
                known = g->n;
                shift = (size_t)(lo - first);
            } else {
                keep_range(w, g, 0, 0);
            }
            if (!reserve_slots(g, (size_t)n)) {
                snprintf(why, whylen, "out of memory");
                return false;
            }
            if (shift)
                memmove(g->slots + shift, g->slots, known * sizeof(*g->slots));
            for (size_t i = 0; i < shift; i++)
                g->slots[i] = (struct slot){.seg = SEG_NONE};
            for (size_t i = shift + known; i < n; i++)
                g->slots[i] = (struct slot){.seg = SEG_NONE};
            g->n = (size_t)n;
            g->first = first;
            g->has_snap = false;
            if (in8(&in))
                in_snapshot(&in, g);
            g->has_base = false;
            g->n_base = 0;
            if (in8(&in))
                in_base(&in, g);
            break;
        }
        case R_HARD:
            g->term = in64(&in);
            g->vote = in64(&in);
            break;
        case R_TRUNCATE: {
            raft_index from = in64(&in);
            if (!in.bad && from <= last_index(g))
                keep_range(w, g, 0, from > g->first ? (size_t)(from - g->first) : 0);
            break;
        }
        case R_ENTRY: {
            struct slot sl;
            raft_index index = in_entry(&in, p, seg, base, &sl);
            if (in.bad)
                break;
            if (index != last_index(g) + 1) {
                snprintf(why, whylen,
                         "group %" PRIu64 ": entry %" PRIu64 " appended to a log of %" PRIu64
                         "..%" PRIu64,
                         id, index, g->first, last_index(g));
                return false;
            }
            if (!reserve_slots(g, g->n + 1)) {
                snprintf(why, whylen, "out of memory");
                return false;
            }
            g->slots[g->n++] = sl;
            count_live(sg, &sl);
            break;
        }
        case R_REWRITE: {
            struct slot sl;
            raft_index index = in_entry(&in, p, seg, base, &sl);
            /* The entry at index when it was copied: in range then, so in
             * range now (replay rebuilds ranges exactly). */
            if (in.bad || index < g->first || index > last_index(g))
                break;
            slot_kill(w, &g->slots[index - g->first]);
            g->slots[index - g->first] = sl;
            count_live(sg, &sl);
            break;
        }
        case R_INSTALL: {
            raft_index index = in64(&in);
            raft_term term = in64(&in);
            /* Whether the stored log agreed at index was decided at the
             * commit and recorded: at recovery the entry there may be in
             * a segment deleted since. */
            bool agrees = in8(&in) != 0;
            if (in.bad)
                break;
            if (agrees && (index < g->first || index > last_index(g))) {
                snprintf(why, whylen,
                         "group %" PRIu64 ": a snapshot at %" PRIu64 " kept a log of %" PRIu64
                         "..%" PRIu64,
                         id, index, g->first, last_index(g));
                return false;
            }
            if (agrees)
                keep_range(w, g, (size_t)(index - g->first) + 1, g->n);
            else
                keep_range(w, g, 0, 0);
            g->first = index + 1;
            g->prev_term = term;
            break;
        }
        case R_SNAPSHOT:
            in_snapshot(&in, g);
            break;
        case R_COMPACT: {
            raft_index index = in64(&in);
            raft_term term = in64(&in);
            if (in.bad || index + 1 <= g->first)
                break;
            keep_range(w, g, (size_t)(index + 1 - g->first), g->n);
            g->first = index + 1;
            g->prev_term = term;
            break;
        }
        case R_BASE:
            in_base(&in, g);
            break;
        case R_DROP:
            keep_range(w, g, 0, 0);
            g->first = 1;
            g->prev_term = 0;
            g->has_snap = false;
            g->has_base = true; /* hosted again: it joins, from no voters */
            g->n_base = 0;
            break;
        default:
            snprintf(why, whylen, "a record of unknown type %u", type);
            return false;
        }
    }
    if (in.bad) {
        snprintf(why, whylen, "a record does not decode");
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------
 * Checking a commit before it is written
 * ------------------------------------------------------------------------ */

/* A group's log range as the batch being checked leaves it. */
struct shadow {
    uint64_t group;
    raft_index first, last, snap;
};

/* The term of entry `index` as writes ws[0..i] of one batch leave the
 * group's log (0: not there): the newest write of the group that wrote
 * or truncated it decides, else what is stored. */
static raft_term term_in(const struct wal *w, const struct storage_group_write *ws, size_t i,
                         raft_index index)
{
    for (size_t j = i + 1; j-- > 0;) {
        const struct storage_group_write *x = &ws[j];
        if (x->group != ws[i].group)
            continue;
        for (size_t k = 0; k < x->n_entries; k++)
            if (x->entries[k].index == index)
                return x->entries[k].term;
        if (x->truncate_from && x->truncate_from <= index)
            return 0;
    }
    const struct group *g = NULL;
    for (size_t k = 0; k < w->n_groups; k++)
        if (w->groups[k].id == ws[i].group)
            g = &w->groups[k];
    if (g && index >= g->first && index <= last_index(g))
        return g->slots[index - g->first].term;
    return 0;
}

static int check_write(const struct wal *w, struct shadow *sh, const struct storage_group_write *ws,
                       size_t i, bool *agrees_out, char *err, size_t errlen)
{
    const struct storage_group_write *x = &ws[i];
    unsigned long long gid = x->group;
    if (x->truncate_from && x->truncate_from <= sh->last)
        sh->last = x->truncate_from > sh->first ? x->truncate_from - 1 : sh->first - 1;
    for (size_t k = 0; k < x->n_entries; k++) {
        const struct raft_entry *e = &x->entries[k];
        if (e->index != sh->last + 1)
            return fail(err, errlen, STORAGE_ECORRUPT,
                        "storage: group %llu: entry %llu would follow a log that ends at %llu "
                        "(first %llu); nothing of this write was stored",
                        gid, (unsigned long long)e->index, (unsigned long long)sh->last,
                        (unsigned long long)sh->first);
        if (e->len > UINT32_MAX)
            return fail(err, errlen, STORAGE_EIO, "storage: group %llu: entry %llu too large", gid,
                        (unsigned long long)e->index);
        sh->last = e->index;
    }
    if (x->snapshot && x->install) {
        raft_index s = x->snapshot->index;
        bool agrees = s >= sh->first && s <= sh->last && term_in(w, ws, i, s) == x->snapshot->term;
        *agrees_out = agrees;
        if (!agrees)
            sh->last = s;
        sh->first = s + 1;
    }
    if (x->snapshot) {
        if (x->snapshot->n_members > MAX_MEMBERS)
            return fail(err, errlen, STORAGE_EIO, "storage: group %llu: %zu members (at most %d)",
                        gid, x->snapshot->n_members, MAX_MEMBERS);
        sh->snap = x->snapshot->index;
    }
    if (x->compact_index && x->compact_index + 1 > sh->first) {
        if (sh->last < x->compact_index)
            sh->last = x->compact_index;
        sh->first = x->compact_index + 1;
    }
    /* What the log dropped, the snapshot must hold (§7). */
    if (sh->first - 1 > sh->snap)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: group %llu: this write would leave the log starting at %llu after "
                    "its snapshot at %llu; nothing of it was stored",
                    gid, (unsigned long long)sh->first, (unsigned long long)sh->snap);
    return STORAGE_OK;
}

static void encode_write(struct out *o, const struct storage_group_write *x, bool agrees)
{
    uint64_t g = x->group;
    if (x->hard_state) {
        out_head(o, R_HARD, g);
        out64(o, x->term);
        out64(o, x->vote);
    }
    if (x->truncate_from) {
        out_head(o, R_TRUNCATE, g);
        out64(o, x->truncate_from);
    }
    for (size_t i = 0; i < x->n_entries; i++) {
        const struct raft_entry *e = &x->entries[i];
        out_head(o, R_ENTRY, g);
        out64(o, e->index);
        out64(o, e->term);
        out8(o, (uint8_t)e->type);
        out32(o, (uint32_t)e->len);
        out_bytes(o, e->data, e->len);
    }
    if (x->snapshot && x->install) {
        out_head(o, R_INSTALL, g);
        out64(o, x->snapshot->index);
        out64(o, x->snapshot->term);
        out8(o, agrees);
    }
    if (x->snapshot) {
        out_head(o, R_SNAPSHOT, g);
        out_snapshot(o, x->snapshot);
    }
    if (x->compact_index) {
        out_head(o, R_COMPACT, g);
        out64(o, x->compact_index);
        out64(o, x->compact_term);
    }
}

static void encode_checkpoint(struct out *o, const struct wal *w, uint64_t prev_end, uint64_t salt)
{
    out_head(o, R_SEGMENT, 0);
    out64(o, prev_end);
    out64(o, salt);
    for (size_t i = 0; i < w->n_groups; i++) {
        const struct group *g = &w->groups[i];
        out_head(o, R_CHECKPOINT, g->id);
        out64(o, g->term);
        out64(o, g->vote);
        out64(o, g->first);
        out64(o, g->prev_term);
        out64(o, g->n);
        out8(o, g->has_snap);
        if (g->has_snap)
            out_snapshot(o, &g->snap);
        out8(o, g->has_base);
        if (g->has_base) {
            out32(o, (uint32_t)g->n_base);
            for (size_t j = 0; j < g->n_base; j++)
                out64(o, g->base[j]);
        }
    }
}

/* ------------------------------------------------------------------------
 * Frames and segments
 * ------------------------------------------------------------------------ */

static size_t round8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static uint64_t frame_hash(const uint8_t *h, const uint8_t *payload, size_t len, uint64_t seed)
{
    return XXH64(payload, len, XXH64(h, 16, seed));
}

/* Fill the header of a frame whose payload follows it in buf; pad to 8.
 * seed: 0 for a segment's first frame, its salt for the others. */
static bool seal_frame(struct out *o, uint64_t seq, uint64_t seed)
{
    size_t len = *o->len - FRAME_HEADER;
    size_t pad = round8(*o->len) - *o->len;
    uint8_t *z = room(o, pad);
    if (o->oom || len > UINT32_MAX)
        return false;
    if (pad)
        memset(z, 0, pad);
    uint8_t *h = *o->buf;
    put32(h, FRAME_MAGIC);
    put32(h + 4, (uint32_t)len);
    put64(h + 8, seq);
    put64(h + 16, frame_hash(h, h + FRAME_HEADER, len, seed));
    put64(h + 24, 0);
    return true;
}

static void segment_path(const struct wal *w, uint32_t number, char *out, size_t len)
{
    snprintf(out, len, "%s/%016" PRIx32 ".seg", w->dir, number);
}

/* A failed system call on the log, said as what the operator does next:
 * after a failed write or sync this log refuses every later commit (the
 * file's end is unknown) and a restart recovers it. */
static int sys_error(char *err, size_t errlen, const char *what, const char *path)
{
    int e = errno;
    if (e == ENOSPC || e == EFBIG || e == EDQUOT)
        return fail(err, errlen, STORAGE_EIO,
                    "storage: no space left on device while %s %s (%s): nothing of this write "
                    "was acknowledged; free space on the data directory's file system, then "
                    "restart the node",
                    what, path, strerror(e));
    if (e == EIO)
        return fail(err, errlen, STORAGE_EIO,
                    "storage: I/O error while %s %s: nothing of this write was acknowledged; "
                    "check the disk (dmesg) and free space (df), then restart the node",
                    what, path);
    return fail(err, errlen, STORAGE_EIO, "storage: %s %s: %s", what, path, strerror(e));
}

/* Write frames (iov) at the end of the current segment and sync. */
static int write_frames(struct wal *w, struct iovec *iov, int n, char *err, size_t errlen)
{
    struct segment *s = &w->segs[w->n_segs - 1];
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    uint64_t off = s->end;
    while (total) {
        ssize_t k = pwritev(s->fd, iov, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            char path[4200];
            segment_path(w, s->number, path, sizeof(path));
            return sys_error(err, errlen, "writing", path);
        }
        off += (uint64_t)k;
        total -= (size_t)k;
        while (n && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n && k) {
            iov->iov_base = (uint8_t *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    /* The sync is the acknowledgement's durability (host contract 1). */
    if (fdatasync(s->fd) != 0) {
        char path[4200];
        segment_path(w, s->number, path, sizeof(path));
        return sys_error(err, errlen, "syncing", path);
    }
    return STORAGE_OK;
}

/* Start segment `number` and write its checkpoint frame, built in cbuf
 * (prev_end: where the segment before it ends). Synced, with the
 * directory. */
static int start_segment(struct wal *w, uint32_t number, uint64_t prev_end, char *err,
                         size_t errlen)
{
    char path[4200];
    segment_path(w, number, path, sizeof(path));
    if (w->n_segs == w->cap_segs) {
        size_t cap = w->cap_segs ? 2 * w->cap_segs : 8;
        struct segment *s = realloc(w->segs, cap * sizeof(*s));
        if (!s)
            return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
        w->segs = s;
        w->cap_segs = cap;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return sys_error(err, errlen, "creating", path);
    /* Preallocated, an append does not grow the file, so its fdatasync
     * has less metadata to write. Only a speed-up: on a file system that
     * cannot (or a disk too full to) the segment grows as it is written,
     * and a full disk shows at the write that does not fit. */
    int rc = posix_fallocate(fd, 0, (off_t)w->seg_bytes);
    if (rc && ftruncate(fd, 0) != 0) {
        close(fd);
        unlink(path);
        return sys_error(err, errlen, "creating", path);
    }
    uint64_t salt = 0;
    if (getrandom(&salt, sizeof(salt), 0) != (ssize_t)sizeof(salt))
        salt = storage_clock_ns() ^ ((uint64_t)getpid() << 32); /* unpredictable enough */
    w->segs[w->n_segs++] =
        (struct segment){.number = number, .fd = fd, .live = 0, .end = 0, .salt = salt};
    w->clen = 0;
    struct out o = {&w->cbuf, &w->clen, &w->ccap, false};
    room(&o, FRAME_HEADER);
    encode_checkpoint(&o, w, prev_end, salt);
    if (!seal_frame(&o, w->seq, 0))
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
    struct iovec iov = {w->cbuf, w->clen};
    if ((rc = write_frames(w, &iov, 1, err, errlen)))
        return rc;
    if (fsync(w->dir_fd) != 0)
        return sys_error(err, errlen, "syncing", w->dir);
    w->segs[w->n_segs - 1].end = w->clen;
    w->seq++;
    return STORAGE_OK;
}

/* Delete every segment but the last with no live slot. */
static void collect(struct wal *w)
{
    size_t k = 0;
    for (size_t i = 0; i < w->n_segs; i++) {
        struct segment *s = &w->segs[i];
        if (s->live == 0 && i + 1 < w->n_segs) {
            char path[4200];
            segment_path(w, s->number, path, sizeof(path));
            close(s->fd);
            unlink(path); /* a crash may bring it back: replay is right either way */
            continue;
        }
        w->segs[k++] = *s;
    }
    w->n_segs = k;
}

/* ------------------------------------------------------------------------
 * Recovery
 * ------------------------------------------------------------------------ */

static int read_all(int fd, uint8_t *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t k = pread(fd, buf + done, len - done, (off_t)done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        done += (size_t)k;
    }
    return 0;
}

/* Is there a frame at p (of `avail` bytes)? Its payload length in *len. */
static bool frame_at(const uint8_t *p, size_t avail, uint64_t seed, size_t *len)
{
    if (avail < FRAME_HEADER || get32(p) != FRAME_MAGIC)
        return false;
    size_t n = get32(p + 4);
    if (n > avail - FRAME_HEADER)
        return false;
    if (get64(p + 16) != frame_hash(p, p + FRAME_HEADER, n, seed))
        return false;
    *len = n;
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static int recover_segment(struct wal *w, struct segment *s, bool *torn, uint64_t *prev_end_said,
                           char *err, size_t errlen)
{
    char path[4200];
    segment_path(w, s->number, path, sizeof(path));
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        return sys_error(err, errlen, "reading", path);
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory reading %s", path);
    if (read_all(s->fd, buf, size) != 0) {
        free(buf);
        return sys_error(err, errlen, "reading", path);
    }
    size_t pos = 0, frames = 0;
    uint64_t prev_seq = 0;
    int rc = STORAGE_OK;
    *prev_end_said = UINT64_MAX;
    *torn = false;
    while (pos + FRAME_HEADER <= size) {
        size_t len;
        const uint8_t *p = buf + pos;
        if (!frame_at(p, size - pos, frames ? s->salt : 0, &len)) {
            /* A torn frame is the last thing written; a good frame after
             * a bad one means bytes changed after they were synced. That
             * holds for zeros too: the preallocated rest, or a frame
             * whose first sector never landed -- or a synced frame lost
             * (a lost or misdirected write), which must not silently
             * drop the acknowledged frames after it. */
            /* (A bad first frame has nothing after it: the checkpoint is
             * synced before anything else is written to a segment, and
             * its salt, the seed of the others, is unknown.) */
            bool zeros = all_zero(p, FRAME_HEADER);
            size_t junk;
            for (size_t q = pos + 8; frames && q + FRAME_HEADER <= size; q += 8)
                if (frame_at(buf + q, size - q, s->salt, &junk) && get64(buf + q + 8) > prev_seq) {
                    rc = fail(err, errlen, STORAGE_ECORRUPT,
                              "storage: %s: the frame at byte %zu is damaged and a good one "
                              "follows at byte %zu (not a torn write: the disk changed synced "
                              "data)" WAL_DAMAGED_ADVICE,
                              path, pos, q);
                    goto out;
                }
            *torn = !zeros;
            break;
        }
        uint64_t seq = get64(p + 8);
        const uint8_t *payload = p + FRAME_HEADER;
        if (frames == 0) {
            if (len < 25 || payload[0] != R_SEGMENT) {
                rc = fail(err, errlen, STORAGE_ECORRUPT,
                          "storage: %s does not begin with a segment header" WAL_DAMAGED_ADVICE,
                          path);
                goto out;
            }
            *prev_end_said = get64(payload + 9);
            s->salt = get64(payload + 17);
        } else if (seq != prev_seq + 1) {
            rc = fail(err, errlen, STORAGE_ECORRUPT,
                      "storage: %s: frame %" PRIu64
                      " at byte %zu follows frame %" PRIu64 WAL_DAMAGED_ADVICE,
                      path, seq, pos, prev_seq);
            goto out;
        }
        char why[200];
        if (!apply_payload(w, payload, len, s->number, pos + FRAME_HEADER, why, sizeof(why))) {
            rc = fail(err, errlen, STORAGE_ECORRUPT,
                      "storage: %s: frame at byte %zu: %s" WAL_DAMAGED_ADVICE, path, pos, why);
            goto out;
        }
        prev_seq = seq;
        if (seq >= w->seq)
            w->seq = seq + 1;
        frames++;
        pos += FRAME_HEADER + round8(len);
    }
    /* No frame at all: created, but its checkpoint never became durable
     * (a crash while starting it); the segment after it, if any, says so
     * (wal_open). */
    s->end = pos;
    w->frames_recovered += frames;
out:
    free(buf);
    return rc;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int list_segments(struct wal *w, uint32_t **out, size_t *n_out, char *err, size_t errlen)
{
    DIR *d = opendir(w->dir);
    if (!d)
        return sys_error(err, errlen, "opening", w->dir);
    uint32_t *nums = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        unsigned long long v = strtoull(de->d_name, &end, 16);
        if (end != de->d_name + 16 || strcmp(end, ".seg") != 0 || v >= SEG_NONE)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            uint32_t *m = realloc(nums, cap * sizeof(*m));
            if (!m) {
                free(nums);
                closedir(d);
                return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
            }
            nums = m;
        }
        nums[n++] = (uint32_t)v;
    }
    closedir(d);
    if (n)
        qsort(nums, n, sizeof(*nums), cmp_u32);
    *out = nums;
    *n_out = n;
    return STORAGE_OK;
}

int wal_open(const char *dir, size_t segment_bytes, struct wal **out, char *err, size_t errlen)
{
    struct wal *w = calloc(1, sizeof(*w));
    if (!w)
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
    w->dir_fd = -1;
    w->seg_bytes = segment_bytes ? segment_bytes : WAL_SEGMENT_BYTES;
    w->seq = 1;
    snprintf(w->dir, sizeof(w->dir), "%s", dir);
    int rc;
    uint32_t *nums = NULL;
    size_t n = 0;
    if (mkdir(dir, 0700) == 0) {
        /* The new directory's own entry must be durable before the first
         * segment in it is acknowledged: sync its parent. */
        char parent[4096];
        snprintf(parent, sizeof(parent), "%s", dir);
        char *slash = strrchr(parent, '/');
        if (slash == parent)
            slash[1] = '\0';
        else if (slash)
            *slash = '\0';
        else
            snprintf(parent, sizeof(parent), ".");
        int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (pfd < 0 || fsync(pfd) != 0) {
            rc = sys_error(err, errlen, "syncing", parent);
            if (pfd >= 0)
                close(pfd);
            goto fail;
        }
        close(pfd);
    } else if (errno != EEXIST) {
        rc = sys_error(err, errlen, "creating", dir);
        goto fail;
    }
    if ((w->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = sys_error(err, errlen, "opening", dir);
        goto fail;
    }
    if ((rc = list_segments(w, &nums, &n, err, errlen)))
        goto fail;
    uint64_t prev_end = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        segment_path(w, nums[i], path, sizeof(path));
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            rc = sys_error(err, errlen, "opening", path);
            goto fail;
        }
        if (w->n_segs == w->cap_segs) {
            size_t cap = w->cap_segs ? 2 * w->cap_segs : 8;
            struct segment *s = realloc(w->segs, cap * sizeof(*s));
            if (!s) {
                close(fd);
                rc = fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
                goto fail;
            }
            w->segs = s;
            w->cap_segs = cap;
        }
        struct segment *s = &w->segs[w->n_segs++];
        *s = (struct segment){.number = nums[i], .fd = fd};
        uint64_t said = UINT64_MAX;
        bool torn = false;
        if ((rc = recover_segment(w, s, &torn, &said, err, errlen)))
            goto fail;
        /* A segment says where the one before it ended. Where they differ,
         * frames of the one before were lost after they were synced (a torn
         * frame is only ever the last, and the next segment starts after
         * it). With a segment deleted in between nothing can be compared. */
        if (i > 0 && nums[i - 1] + 1 == nums[i] && said != UINT64_MAX && said != prev_end) {
            rc = fail(err, errlen, STORAGE_ECORRUPT,
                      "storage: segment %016" PRIx32 " ends at byte %" PRIu64 " but the next "
                      "one recorded %" PRIu64 WAL_DAMAGED_ADVICE,
                      nums[i - 1], prev_end, said);
            goto fail;
        }
        w->torn = torn;
        prev_end = s->end;
    }
    /* Every slot a checkpoint promised must have been filled. */
    for (size_t i = 0; i < w->n_groups; i++) {
        struct group *g = &w->groups[i];
        for (size_t j = 0; j < g->n; j++)
            if (g->slots[j].seg == SEG_NONE) {
                rc =
                    fail(err, errlen, STORAGE_ECORRUPT,
                         "storage: log of group %" PRIu64 ": entry %" PRIu64 " (of %" PRIu64
                         "..%" PRIu64 ") is in no segment: a segment is missing" WAL_DAMAGED_ADVICE,
                         g->id, g->first + j, g->first, last_index(g));
                goto fail;
            }
    }
    /* Append in a segment of our own: bytes after a torn frame are never
     * written over, so they cannot pass for a later frame. */
    uint32_t next = n ? nums[n - 1] + 1 : 0;
    if ((rc = start_segment(w, next, prev_end, err, errlen)))
        goto fail;
    collect(w);
    free(nums);
    *out = w;
    return STORAGE_OK;
fail:
    free(nums);
    wal_close(w);
    return rc;
}

void wal_close(struct wal *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_segs; i++)
        close(w->segs[i].fd);
    for (size_t i = 0; i < w->n_groups; i++)
        free(w->groups[i].slots);
    if (w->dir_fd >= 0)
        close(w->dir_fd);
    free(w->segs);
    free(w->groups);
    free(w->buf);
    free(w->cbuf);
    free(w->rbuf);
    free(w);
}

/* ------------------------------------------------------------------------
 * Commit
 * ------------------------------------------------------------------------ */

static int add_rewrites(struct wal *w, char *err, size_t errlen);

/* Write the frame in buf (payload built), starting a segment first if it
 * does not fit, then apply it in memory. */
static int append_frame(struct wal *w, char *err, size_t errlen)
{
    uint64_t t0 = storage_clock_ns();
    int rrc = add_rewrites(w, err, errlen);
    if (rrc)
        return rrc; /* nothing written */
    struct out o = {&w->buf, &w->len, &w->cap, false};
    struct segment *s = &w->segs[w->n_segs - 1];
    size_t frame = round8(w->len);
    /* A frame larger than a segment gets a segment to itself (the file
     * grows past its preallocation). */
    if (s->end + frame > w->seg_bytes && s->end > w->clen) {
        uint64_t end = s->end;
        int rc = start_segment(w, s->number + 1, end, err, errlen);
        if (rc) {
            w->failed = true;
            return rc;
        }
        s = &w->segs[w->n_segs - 1];
    }
    if (!seal_frame(&o, w->seq, s->salt)) {
        w->failed = true;
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
    }
    uint64_t t1 = storage_clock_ns(), b1 = storage_thread_bytes_written();
    struct iovec iov = {w->buf, w->len};
    int rc = write_frames(w, &iov, 1, err, errlen);
    if (rc) {
        /* The file's end is now unknown: a later frame could land after
         * half of this one. Refuse to go on; a restart recovers. */
        w->failed = true;
        return rc;
    }
    uint64_t off = s->end;
    s->end += w->len;
    w->seq++;
    w->last.build_ns = t1 - t0;
    w->last.commit_ns = storage_clock_ns() - t1;
    w->last.bytes = storage_thread_bytes_written() - b1;
    char why[200];
    if (!apply_payload(w, w->buf + FRAME_HEADER, get32(w->buf + 4), s->number, off + FRAME_HEADER,
                       why, sizeof(why))) {
        w->failed = true;
        return fail(err, errlen, STORAGE_ECORRUPT, "storage: after a commit: %s", why);
    }
    collect(w);
    return STORAGE_OK;
}

/* A segment stays while any live entry is in it, and every group's
 * entries share the stream: a group that writes rarely and never compacts
 * (group 0, the members table) would keep every segment it ever wrote to.
 * So once there are more than a few segments, the live entries of the
 * oldest segment whose live entries are few are copied to the end (same
 * index, term and bytes) and the segment dies: what raft-engine calls a
 * rewrite. A segment still mostly live (a group far from its next
 * snapshot) is left alone. */
enum { REWRITE_AFTER_SEGMENTS = 4 };

/* Put the rewrite records in front of the payload in buf (before the
 * commit's own records: they copy the entries as they are before it, and
 * a truncation in the commit must still apply after them). One frame per
 * commit still, so a crash tears at most that one. */
static int add_rewrites(struct wal *w, char *err, size_t errlen)
{
    if (w->n_segs <= REWRITE_AFTER_SEGMENTS)
        return STORAGE_OK;
    /* The oldest segment whose live entries are few. Not only the very
     * oldest: a segment kept mostly live by a quiet group with a long log
     * would otherwise stop every later one from being copied, and the
     * log would grow without bound. The newest few are left to die of
     * their own compactions. */
    struct segment *old = NULL;
    for (size_t i = 0; i + REWRITE_AFTER_SEGMENTS < w->n_segs && !old; i++)
        if (w->segs[i].live && w->segs[i].live_bytes <= w->seg_bytes / 4)
            old = &w->segs[i];
    if (!old)
        return STORAGE_OK;
    uint32_t number = old->number;
    int fd = old->fd;
    w->rlen = 0;
    struct out o = {&w->rbuf, &w->rlen, &w->rcap, false};
    for (size_t i = 0; i < w->n_groups && !o.oom; i++) {
        const struct group *g = &w->groups[i];
        for (size_t j = 0; j < g->n && !o.oom; j++) {
            const struct slot *sl = &g->slots[j];
            if (sl->seg != number)
                continue;
            out_head(&o, R_REWRITE, g->id);
            out64(&o, g->first + j);
            out64(&o, sl->term);
            out8(&o, sl->type);
            out32(&o, sl->len);
            uint8_t *data = room(&o, sl->len);
            if (data && sl->len && pread(fd, data, sl->len, (off_t)sl->off) != (ssize_t)sl->len) {
                char path[4200];
                segment_path(w, number, path, sizeof(path));
                return sys_error(err, errlen, "reading", path);
            }
        }
    }
    struct out b = {&w->buf, &w->len, &w->cap, false};
    size_t had = w->len;
    if (o.oom || !room(&b, w->rlen))
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
    memmove(w->buf + FRAME_HEADER + w->rlen, w->buf + FRAME_HEADER, had - FRAME_HEADER);
    memcpy(w->buf + FRAME_HEADER, w->rbuf, w->rlen);
    return STORAGE_OK;
}

static int refuse_failed(char *err, size_t errlen)
{
    return fail(err, errlen, STORAGE_EIO,
                "storage: an earlier write to the log failed; restart the node to recover it");
}

int wal_commit(struct wal *w, const struct storage_group_write *ws, size_t n, char *err,
               size_t errlen)
{
    if (w->failed)
        return refuse_failed(err, errlen);
    struct shadow local[16], *sh = n <= 16 ? local : calloc(n, sizeof(*sh));
    bool keep_local[16], *keep = n <= 16 ? keep_local : calloc(n, sizeof(*keep));
    if (!sh || !keep) {
        if (sh != local)
            free(sh);
        if (keep != keep_local)
            free(keep);
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
    }
    size_t n_sh = 0;
    int rc = STORAGE_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        struct shadow *x = NULL;
        for (size_t j = 0; j < n_sh; j++)
            if (sh[j].group == ws[i].group)
                x = &sh[j];
        if (!x) {
            const struct group *g = find_group(w, ws[i].group);
            x = &sh[n_sh++];
            *x = (struct shadow){ws[i].group, g ? g->first : 1, g ? last_index(g) : 0,
                                 g && g->has_snap ? g->snap.index : 0};
        }
        keep[i] = false;
        rc = check_write(w, x, ws, i, &keep[i], err, errlen);
    }
    if (sh != local)
        free(sh);
    w->len = 0;
    struct out o = {&w->buf, &w->len, &w->cap, false};
    room(&o, FRAME_HEADER);
    for (size_t i = 0; i < n && !rc; i++)
        encode_write(&o, &ws[i], keep[i]);
    if (keep != keep_local)
        free(keep);
    if (rc)
        return rc; /* nothing written: the caller stops (its state is wrong) */
    if (o.oom)
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
    if (w->len == FRAME_HEADER)
        return STORAGE_OK; /* nothing to persist */
    return append_frame(w, err, errlen);
}

int wal_set_base(struct wal *w, uint64_t group, const raft_id *voters, size_t n, char *err,
                 size_t errlen)
{
    if (w->failed)
        return refuse_failed(err, errlen);
    if (n > MAX_BASE)
        return fail(err, errlen, STORAGE_EIO, "storage: group %llu: %zu voters (at most %d)",
                    (unsigned long long)group, n, MAX_BASE);
    w->len = 0;
    struct out o = {&w->buf, &w->len, &w->cap, false};
    room(&o, FRAME_HEADER);
    out_head(&o, R_BASE, group);
    out32(&o, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        out64(&o, voters[i]);
    if (o.oom)
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
    return append_frame(w, err, errlen);
}

int wal_drop_group(struct wal *w, uint64_t group, char *err, size_t errlen)
{
    if (w->failed)
        return refuse_failed(err, errlen);
    w->len = 0;
    struct out o = {&w->buf, &w->len, &w->cap, false};
    room(&o, FRAME_HEADER);
    out_head(&o, R_DROP, group);
    if (o.oom)
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
    return append_frame(w, err, errlen);
}

/* ------------------------------------------------------------------------
 * Load
 * ------------------------------------------------------------------------ */

int wal_load(struct wal *w, uint64_t group, struct storage_loaded *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->persisted.first_index = 1;
    const struct group *g = find_group(w, group);
    if (!g)
        return STORAGE_OK; /* a group never written here: empty */
    unsigned long long gid = group;
    out->persisted.current_term = g->term;
    out->persisted.voted_for = g->vote;
    out->persisted.first_index = g->first;
    out->persisted.prev_term = g->prev_term;
    if (g->has_base) {
        out->base = calloc(g->n_base ? g->n_base : 1, sizeof(*out->base));
        if (!out->base)
            goto oom;
        memcpy(out->base, g->base, g->n_base * sizeof(*out->base));
        out->n_base = g->n_base;
        out->has_base = true;
    }
    if (g->has_snap) {
        size_t m = g->snap.n_members;
        out->members = calloc(m ? m : 1, sizeof(*out->members));
        if (!out->members)
            goto oom;
        memcpy(out->members, g->members, m * sizeof(*out->members));
        out->snapshot = g->snap;
        out->snapshot.members = out->members;
        out->persisted.snapshot = &out->snapshot;
        out->persisted.applied_index = g->snap.index;
    }
    raft_index snap = g->has_snap ? g->snap.index : 0;
    if (g->first - 1 > snap) {
        storage_loaded_free(out);
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu starts at %llu but its snapshot is at %llu: "
                    "entries %llu..%llu are in neither" WAL_DAMAGED_ADVICE,
                    gid, (unsigned long long)g->first, (unsigned long long)snap,
                    (unsigned long long)snap + 1, (unsigned long long)g->first - 1);
    }
    size_t bytes = 0;
    for (size_t i = 0; i < g->n; i++)
        bytes += g->slots[i].len;
    out->entries = calloc(g->n ? g->n : 1, sizeof(*out->entries));
    out->arena = malloc(bytes ? bytes : 1);
    if (!out->entries || !out->arena)
        goto oom;
    uint8_t *at = out->arena;
    raft_term prev = g->prev_term;
    for (size_t i = 0; i < g->n; i++) {
        const struct slot *s = &g->slots[i];
        struct segment *seg = segment_of(w, s->seg);
        raft_index index = g->first + i;
        /* Log Matching (§5.3) makes terms non-decreasing along a log. */
        if (s->term < prev) {
            storage_loaded_free(out);
            return fail(err, errlen, STORAGE_ECORRUPT,
                        "storage: log of group %llu: entry %llu has term %llu after term "
                        "%llu" WAL_DAMAGED_ADVICE,
                        gid, (unsigned long long)index, (unsigned long long)s->term,
                        (unsigned long long)prev);
        }
        prev = s->term;
        ssize_t k = seg ? pread(seg->fd, at, s->len, (off_t)s->off) : -1;
        if (k != (ssize_t)s->len) {
            storage_loaded_free(out);
            return fail(err, errlen, STORAGE_EIO,
                        "storage: log of group %llu: reading entry %llu: %s", gid,
                        (unsigned long long)index, k < 0 ? strerror(errno) : "short read");
        }
        out->entries[i] = (struct raft_entry){.term = s->term,
                                              .index = index,
                                              .type = (enum raft_entry_type)s->type,
                                              .data = at,
                                              .len = s->len};
        at += s->len;
    }
    out->persisted.entries = out->entries;
    out->persisted.n_entries = g->n;
    return STORAGE_OK;
oom:
    storage_loaded_free(out);
    return fail(err, errlen, STORAGE_ENOMEM, "storage: group %llu: out of memory", gid);
}

void wal_last_cost(const struct wal *w, struct storage_cost *out)
{
    *out = w->last;
}

void wal_stats(const struct wal *w, struct wal_stats *out)
{
    out->segments = w->n_segs;
    out->frames_recovered = w->frames_recovered;
    out->torn_tail = w->torn;
}
