/* log.c — the in-memory Raft log.
 *
 * Raft §5.3 treats the log as an array indexed from 1. Here it is a ring of
 * slots (term, type, where the data is) over a ring of bytes, because a log
 * only ever grows at the tail, shrinks at the tail (a follower dropping
 * conflicting entries, Figure 2 AppendEntries receiver step 3) or shrinks at
 * the head (compaction, §7). Both rings double when full and never shrink, so
 * a log in a steady state performs no allocation per entry; entry data is
 * kept contiguous so the host gets one pointer per entry.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

enum {
    LOG_MIN_SLOTS = 64,       /* first allocation of the slot ring */
    LOG_MIN_BYTES = 64 * 1024 /* first allocation of the byte ring */
};

void log_init(struct raft_log *l)
{
    memset(l, 0, sizeof(*l));
}

void log_free(struct raft_log *l)
{
    raft_free(l->slots);
    raft_free(l->bytes);
    log_init(l);
}

static struct log_slot *slot_at(const struct raft_log *l, raft_index index)
{
    size_t i = (size_t)(index - l->offset - 1);
    return &l->slots[(l->head + i) & (l->slots_cap - 1)];
}

raft_term log_term_at(const struct raft_log *l, raft_index index)
{
    if (index == l->offset)
        return l->offset_term;
    if (index < l->offset || index > log_last_index(l))
        return 0;
    return slot_at(l, index)->term;
}

raft_term log_last_term(const struct raft_log *l)
{
    return log_term_at(l, log_last_index(l));
}

void log_get(const struct raft_log *l, raft_index index, struct raft_entry *e)
{
    const struct log_slot *s = slot_at(l, index);
    e->term = s->term;
    e->index = index;
    e->type = (enum raft_entry_type)s->type;
    e->data = l->bytes + s->offset;
    e->len = s->len;
}

size_t log_entry_len(const struct raft_log *l, raft_index index)
{
    return slot_at(l, index)->len;
}

static int grow_slots(struct raft_log *l)
{
    size_t cap = l->slots_cap ? l->slots_cap * 2 : LOG_MIN_SLOTS;
    struct log_slot *slots = raft_malloc(cap * sizeof(*slots));
    if (!slots)
        return RAFT_ENOMEM;
    for (size_t i = 0; i < l->n; i++)
        slots[i] = l->slots[(l->head + i) & (l->slots_cap - 1)];
    raft_free(l->slots);
    l->slots = slots;
    l->slots_cap = cap;
    l->head = 0;
    return RAFT_OK;
}

/* Re-pack every entry's data at the start of a larger byte ring. */
static int grow_bytes(struct raft_log *l, size_t need)
{
    size_t cap = l->bytes_cap ? l->bytes_cap * 2 : LOG_MIN_BYTES;
    while (cap < l->bytes_used + need)
        cap *= 2;
    uint8_t *bytes = raft_malloc(cap);
    if (!bytes)
        return RAFT_ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < l->n; i++) {
        struct log_slot *s = &l->slots[(l->head + i) & (l->slots_cap - 1)];
        if (s->len) /* a zero-length entry may predate any byte buffer */
            memcpy(bytes + at, l->bytes + s->offset, s->len);
        s->offset = at;
        at += s->len;
    }
    raft_free(l->bytes);
    l->bytes = bytes;
    l->bytes_cap = cap;
    return RAFT_OK;
}

/* Where `len` bytes fit without wrapping, or SIZE_MAX. */
static size_t find_room(const struct raft_log *l, size_t len)
{
    if (l->n == 0)
        return len <= l->bytes_cap ? 0 : SIZE_MAX;
    const struct log_slot *first = slot_at(l, l->offset + 1);
    const struct log_slot *last = slot_at(l, log_last_index(l));
    size_t head = first->offset, tail = last->offset + last->len;
    if (last->offset >= first->offset) { /* used: [head, tail) */
        if (len <= l->bytes_cap - tail)
            return tail;
        if (len <= head)
            return 0;
        return SIZE_MAX;
    }
    /* wrapped; used: [head, cap) and [0, tail) */
    return len <= head - tail ? tail : SIZE_MAX;
}

static void mark_dirty(struct raft_log *l, raft_index index)
{
    if (l->dirty_from == 0 || index < l->dirty_from)
        l->dirty_from = index;
}

int log_append(struct raft_log *l, raft_term term, uint8_t type, const void *data, size_t len)
{
    int rv;
    if (len > UINT32_MAX)
        return RAFT_ETOOBIG;
    if (l->n == l->slots_cap && (rv = grow_slots(l)) != RAFT_OK)
        return rv;
    size_t at = find_room(l, len);
    if (at == SIZE_MAX) {
        if ((rv = grow_bytes(l, len)) != RAFT_OK)
            return rv;
        at = find_room(l, len);
    }
    l->n++;
    mark_dirty(l, log_last_index(l));
    struct log_slot *s = slot_at(l, log_last_index(l));
    s->term = term;
    s->type = type;
    s->offset = at;
    s->len = (uint32_t)len;
    if (len)
        memcpy(l->bytes + at, data, len);
    l->bytes_used += len;
    return RAFT_OK;
}

void log_truncate(struct raft_log *l, raft_index index)
{
    mark_dirty(l, index);
    while (log_last_index(l) >= index && l->n > 0) {
        l->bytes_used -= slot_at(l, log_last_index(l))->len;
        l->n--;
    }
}

void log_compact(struct raft_log *l, raft_index index)
{
    raft_term term = log_term_at(l, index);
    while (l->offset < index && l->n > 0) {
        l->bytes_used -= slot_at(l, l->offset + 1)->len;
        l->head = (l->head + 1) & (l->slots_cap - 1);
        l->n--;
        l->offset++;
    }
    l->offset_term = term;
}

void log_reset(struct raft_log *l, raft_index index, raft_term term)
{
    l->n = 0;
    l->head = 0;
    l->bytes_used = 0;
    l->offset = index;
    l->offset_term = term;
    mark_dirty(l, index + 1);
}

raft_index log_last_index_with_term_le(const struct raft_log *l, raft_index at, raft_term term)
{
    raft_index lo = l->offset + 1, hi = at < log_last_index(l) ? at : log_last_index(l);
    raft_index found = l->offset;
    /* Terms never decrease along the log (Raft §5.3), so binary search. */
    while (lo <= hi) {
        raft_index mid = lo + (hi - lo) / 2;
        if (slot_at(l, mid)->term <= term) {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return found;
}

raft_index log_first_index_with_term_ge(const struct raft_log *l, raft_term term)
{
    raft_index lo = l->offset + 1, hi = log_last_index(l);
    raft_index found = log_last_index(l) + 1;
    while (lo <= hi) {
        raft_index mid = lo + (hi - lo) / 2;
        if (slot_at(l, mid)->term >= term) {
            found = mid;
            hi = mid - 1;
        } else {
            lo = mid + 1;
        }
    }
    return found;
}
