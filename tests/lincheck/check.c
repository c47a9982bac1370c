/* check.c — is a history linearizable? Wing and Gong's search with Lowe's
 * memoisation, one key at a time.
 *
 * For one key, every op becomes two entries, its call and its return,
 * sorted by time into a doubly linked list (calls before returns at equal
 * times: ops that touch are concurrent, the lenient reading). The search
 * walks the list from its head and tries to *linearize* each call it meets:
 * apply the op to the register model; if the model accepts it, unlink the
 * call and its return and start again from the head. Meeting a return
 * means that op had to be linearized before anything invoked after it
 * returned, and was not: undo the last choice (backtrack) and try the next
 * call after it. An empty list is a linearization; backtracking past the
 * first choice proves there is none.
 *
 * Lowe's memo: a configuration is (the set of ops linearized, the model's
 * state). The rest of the search depends on nothing else, so a
 * configuration met a second time was already explored and failed; it is
 * skipped. The set is a bitset; its hash is kept incrementally (Zobrist:
 * one random word per op, XORed in and out).
 *
 * Unknown outcomes (info) return at +infinity: they may be linearized any
 * time after their invoke. The model makes their step total (an unknown
 * cas whose expected value does not match is a no-op), so "never" is the
 * same as "last", after every op that completed. Two refinements keep them
 * cheap, neither changes a verdict:
 *   - calls of info ops are tried after the others (pass 1 over the same
 *     window), since most unknown writes did not happen or were never seen;
 *   - an info set or cas whose value no op of the key could observe is left
 *     out: removing it from a linearization leaves a linearization (the
 *     proof is in docs/lincheck.md).
 * Fails that saw nothing, and unknown reads, constrain nothing: left out.
 *
 * The budget: the clock is read every CLOCK_EVERY steps and the memo's size
 * checked as it grows; running out ends the key's search with UNKNOWN.
 */
#include "lincheck.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLOCK_EVERY 1024                      /* search steps between two reads of the clock */
#define DEFAULT_BUDGET_SECONDS 60.0           /* lc_options.budget_seconds <= 0 */
#define DEFAULT_CACHE_BYTES ((size_t)2 << 30) /* lc_options.max_cache_bytes == 0 */
#define MIN_SHRINK_SECONDS 1.0                /* shrinking a violation gets at least this */
#define NIL UINT32_MAX

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------------------ */
/* Values of one key, interned: state 0 is "absent", 1.. are strings. */

struct value_table {
    char **str;   /* by id; str[0] unused */
    bool *is_int; /* a canonical decimal int64 */
    int64_t *as_int;
    size_t n, cap;
    uint32_t *map; /* open addressing: id, 0 = empty */
    size_t map_cap;
};

/* A canonical decimal int64, as Redis' INCR reads one. */
static bool parse_canonical_int(const char *s, int64_t *out)
{
    const char *p = s;
    bool neg = *p == '-';
    if (neg)
        p++;
    if (*p < '0' || *p > '9' || (*p == '0' && (p[1] != '\0' || neg)))
        return false;
    uint64_t v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static uint64_t hash_str(const char *s)
{
    uint64_t x = 1469598103934665603ULL;
    for (; *s; s++)
        x = (x ^ (unsigned char)*s) * 1099511628211ULL;
    return x;
}

static void values_free(struct value_table *t)
{
    for (size_t i = 1; i < t->n; i++)
        free(t->str[i]);
    free(t->str);
    free(t->is_int);
    free(t->as_int);
    free(t->map);
    memset(t, 0, sizeof(*t));
}

static int values_rehash(struct value_table *t)
{
    size_t cap = t->map_cap ? t->map_cap * 2 : 256;
    uint32_t *m = calloc(cap, sizeof(*m));
    if (!m)
        return -1;
    for (size_t id = 1; id < t->n; id++) {
        size_t j = hash_str(t->str[id]) & (cap - 1);
        while (m[j])
            j = (j + 1) & (cap - 1);
        m[j] = (uint32_t)id;
    }
    free(t->map);
    t->map = m;
    t->map_cap = cap;
    return 0;
}

/* The id of `s` (NULL: absent, 0), added if new; NIL if out of memory. */
static uint32_t values_intern(struct value_table *t, const char *s)
{
    if (!s)
        return 0;
    if (t->n == 0)
        t->n = 1;
    if ((t->n + 1) * 2 > t->map_cap && values_rehash(t) != 0)
        return NIL;
    size_t j = hash_str(s) & (t->map_cap - 1);
    for (; t->map[j]; j = (j + 1) & (t->map_cap - 1))
        if (strcmp(t->str[t->map[j]], s) == 0)
            return t->map[j];
    if (t->n >= t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        char **str = realloc(t->str, cap * sizeof(*str));
        if (str)
            t->str = str;
        bool *is_int = realloc(t->is_int, cap * sizeof(*is_int));
        if (is_int)
            t->is_int = is_int;
        int64_t *as_int = realloc(t->as_int, cap * sizeof(*as_int));
        if (as_int)
            t->as_int = as_int;
        if (!str || !is_int || !as_int)
            return NIL;
        t->cap = cap;
    }
    char *copy = strdup(s);
    if (!copy)
        return NIL;
    uint32_t id = (uint32_t)t->n++;
    t->str[id] = copy;
    t->is_int[id] = parse_canonical_int(s, &t->as_int[id]);
    t->map[j] = id;
    return id;
}

static uint32_t values_intern_int(struct value_table *t, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    return values_intern(t, buf);
}

/* The integer an incr reads from state `s`: absent counts as 0. */
static bool value_int(const struct value_table *t, uint32_t s, int64_t *out)
{
    if (s == 0) {
        *out = 0;
        return true;
    }
    if (!t->is_int[s])
        return false;
    *out = t->as_int[s];
    return true;
}

/* ------------------------------------------------------------------------ */
/* The register model */

enum mode {
    MODE_OK,      /* completed with this result */
    MODE_INFO,    /* may take effect any time after its invoke, or never */
    MODE_OBSERVE, /* a checked fail: did not take effect, saw the key */
};

struct sop {
    uint32_t op; /* index in the history */
    enum lc_kind kind;
    enum mode mode;
    uint32_t arg;    /* set/cas: the value written; get: the value read */
    uint32_t expect; /* cas: the value expected */
    int64_t delta;   /* incr */
    uint32_t result; /* incr ok: the new value */
    int64_t call_ns, return_ns;
};

/* Apply `o` to state `s`. False if the model refuses it (it cannot be
 * linearized here). *next is the state after. Sets *oom on out of memory. */
static bool model_step(struct value_table *t, const struct sop *o, uint32_t s, uint32_t *next,
                       bool *oom)
{
    int64_t v;
    *next = s;
    switch (o->kind) {
    case LC_GET:
        return s == o->arg;
    case LC_SET:
        *next = o->arg;
        return true;
    case LC_CAS:
        if (o->mode == MODE_OBSERVE)
            return s != o->expect;
        if (s == o->expect)
            *next = o->arg;
        return o->mode == MODE_INFO || s == o->expect;
    case LC_INCR:
        if (o->mode == MODE_OBSERVE)
            return !value_int(t, s, &v);
        if (!value_int(t, s, &v) || __builtin_add_overflow(v, o->delta, &v))
            return o->mode == MODE_INFO; /* it would fail: no effect */
        if (o->mode == MODE_OK) {
            *next = o->result;
            return t->is_int[o->result] && t->as_int[o->result] == v;
        }
        *next = values_intern_int(t, v);
        if (*next == NIL) {
            *oom = true;
            *next = s;
            return false;
        }
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* One key's problem: its ops up to a cut, as the search sees them. */

struct key_events {
    uint32_t *ops; /* the key's ops, in invoke order */
    size_t n_ops;
    uint32_t *call_at;  /* by position in ops: the index of its call in the time order */
    uint32_t *ret_at;   /* ... of its return (info: after every finite time) */
    uint32_t *event_op; /* by event index: position in ops of its op */
    size_t n_events;
};

struct problem {
    struct sop *ops;
    size_t n;
    size_t n_dropped;
    struct value_table values;
};

struct event_sort {
    int64_t t;
    uint32_t pos;
    bool is_return;
};

static int cmp_events(const void *a, const void *b)
{
    const struct event_sort *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    if (x->is_return != y->is_return)
        return x->is_return ? 1 : -1; /* calls first: touching ops are concurrent */
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int key_events_build(const struct lc_history *h, uint32_t key, struct key_events *ke)
{
    memset(ke, 0, sizeof(*ke));
    size_t n = 0;
    for (size_t i = 0; i < h->n_ops; i++)
        n += h->ops[i].key == key;
    ke->ops = malloc((n ? n : 1) * sizeof(*ke->ops));
    ke->call_at = malloc((n ? n : 1) * sizeof(*ke->call_at));
    ke->ret_at = malloc((n ? n : 1) * sizeof(*ke->ret_at));
    ke->event_op = malloc((2 * n + 1) * sizeof(*ke->event_op));
    struct event_sort *ev = malloc((2 * n + 1) * sizeof(*ev));
    if (!ke->ops || !ke->call_at || !ke->ret_at || !ke->event_op || !ev) {
        free(ev);
        return -1;
    }
    for (size_t i = 0; i < h->n_ops; i++)
        if (h->ops[i].key == key)
            ke->ops[ke->n_ops++] = (uint32_t)i;
    for (size_t p = 0; p < n; p++) {
        const struct lc_op *op = &h->ops[ke->ops[p]];
        ev[2 * p] = (struct event_sort){op->invoke_ns, (uint32_t)p, false};
        ev[2 * p + 1] = (struct event_sort){op->complete_ns, (uint32_t)p, true};
    }
    qsort(ev, 2 * n, sizeof(*ev), cmp_events);
    for (size_t e = 0; e < 2 * n; e++) {
        ke->event_op[e] = ev[e].pos;
        if (ev[e].is_return)
            ke->ret_at[ev[e].pos] = (uint32_t)e;
        else
            ke->call_at[ev[e].pos] = (uint32_t)e;
    }
    ke->n_events = 2 * n;
    free(ev);
    return 0;
}

static void key_events_free(struct key_events *ke)
{
    free(ke->ops);
    free(ke->call_at);
    free(ke->ret_at);
    free(ke->event_op);
}

/* Could some op other than `self` observe the key holding value `v`? */
static bool is_observable(const struct problem *pb, const struct sop *self, uint32_t v)
{
    const struct value_table *t = &pb->values;
    for (size_t i = 0; i < pb->n; i++) {
        const struct sop *o = &pb->ops[i];
        if (o == self)
            continue;
        if (o->mode == MODE_OBSERVE)
            return true; /* a failed cas or incr tells "not that": keep everything */
        if (o->kind == LC_GET && o->arg == v)
            return true;
        if (o->kind == LC_CAS && o->expect == v)
            return true;
        if (o->kind == LC_INCR && t->is_int[v])
            return true;
    }
    return false;
}

/* Build the search problem of the first `cut` events of a key. An op whose
 * completion is beyond the cut is pending there: unknown, as info. */
static int problem_build(const struct lc_history *h, const struct key_events *ke, size_t cut,
                         struct problem *pb)
{
    memset(pb, 0, sizeof(*pb));
    pb->ops = malloc((ke->n_ops ? ke->n_ops : 1) * sizeof(*pb->ops));
    if (!pb->ops)
        return -1;
    for (size_t p = 0; p < ke->n_ops; p++) {
        if (ke->call_at[p] >= cut)
            continue;
        const struct lc_op *op = &h->ops[ke->ops[p]];
        bool completed = ke->ret_at[p] < cut && op->outcome != LC_INFO;
        struct sop s = {.op = ke->ops[p], .kind = op->kind, .delta = op->delta};
        s.call_ns = op->invoke_ns;
        s.return_ns = LC_TIME_INFINITE;
        if (op->outcome == LC_FAIL && (!op->is_checked_fail || !completed)) {
            pb->n_dropped++; /* certainly no effect, and saw nothing we know of */
            continue;
        }
        if (!completed && op->kind == LC_GET) {
            pb->n_dropped++; /* a read with no result constrains nothing */
            continue;
        }
        if (completed) {
            s.mode = op->outcome == LC_OK ? MODE_OK : MODE_OBSERVE;
            s.return_ns = op->complete_ns;
        } else {
            s.mode = MODE_INFO;
        }
        s.arg = values_intern(&pb->values, op->value);
        s.expect = values_intern(&pb->values, op->expected);
        if (s.kind == LC_INCR && s.mode == MODE_OK)
            s.result = values_intern_int(&pb->values, op->result);
        if (s.arg == NIL || s.expect == NIL || s.result == NIL)
            return -1;
        pb->ops[pb->n++] = s;
    }
    /* Leave out unknown sets and cas no one could have seen. */
    size_t kept = 0;
    for (size_t i = 0; i < pb->n; i++) {
        struct sop *o = &pb->ops[i];
        bool is_unseen_write = o->mode == MODE_INFO && (o->kind == LC_SET || o->kind == LC_CAS) &&
                               !is_observable(pb, o, o->arg);
        if (is_unseen_write) {
            pb->n_dropped++;
            continue;
        }
        pb->ops[kept++] = *o;
    }
    pb->n = kept;
    return 0;
}

static void problem_free(struct problem *pb)
{
    free(pb->ops);
    values_free(&pb->values);
}

/* ------------------------------------------------------------------------ */
/* The memo: configurations seen. A configuration's set of linearized ops is
 * kept as two bitsets, the completed ops' (N) and the unknown ones' (I).
 *
 * Besides Lowe's "seen before", the memo prunes by dominance: (N, I, s) is
 * hopeless if (N, I', s) with I' a subset of I was explored to the end and
 * failed. Whatever order finishes from (N, I, s) also finishes from
 * (N, I', s), with the unknown ops of I \ I' appended (their steps are total
 * and, returning at +infinity, they never block another op). Without this,
 * k pending unknown writes make 2^k configurations of every stuck point. */

struct memo {
    size_t words_n, words_i; /* words of N and of I */
    /* Groups: one per (N, state) seen. */
    uint64_t *g_bits; /* N, by group */
    uint64_t *g_hash; /* of (N, state) */
    uint32_t *g_state;
    uint32_t *g_last; /* the unknown op linearized last, NIL if the last was known */
    uint32_t *g_head; /* its first member, NIL if none */
    size_t n_groups, cap_groups;
    uint32_t *table; /* group + 1, 0 = empty */
    size_t table_cap;
    /* Members: the I sets met with a group's (N, state). */
    uint64_t *m_bits;  /* I, by member */
    uint32_t *m_next;  /* the next member of the same group, NIL at the end */
    bool *m_is_failed; /* explored to the end, no linearization */
    size_t n_members, cap_members;
    size_t max_bytes;
};

static size_t memo_bytes(const struct memo *m)
{
    return m->cap_groups * (m->words_n * 8 + 20) + m->table_cap * 4 +
           m->cap_members * (m->words_i * 8 + 5);
}

static void memo_free(struct memo *m)
{
    free(m->g_bits);
    free(m->g_hash);
    free(m->g_state);
    free(m->g_last);
    free(m->g_head);
    free(m->table);
    free(m->m_bits);
    free(m->m_next);
    free(m->m_is_failed);
}

static int memo_grow_table(struct memo *m)
{
    size_t cap = m->table_cap ? m->table_cap * 2 : 1024;
    uint32_t *t = calloc(cap, sizeof(*t));
    if (!t)
        return -1;
    for (size_t i = 0; i < m->n_groups; i++) {
        size_t j = m->g_hash[i] & (cap - 1);
        while (t[j])
            j = (j + 1) & (cap - 1);
        t[j] = (uint32_t)i + 1;
    }
    free(m->table);
    m->table = t;
    m->table_cap = cap;
    return 0;
}

/* realloc each array to `cap` elements; -1 (nothing changed that matters) on failure. */
static int grow_array(void **p, size_t cap, size_t elem)
{
    void *q = realloc(*p, cap * elem + 8);
    if (!q)
        return -1;
    *p = q;
    return 0;
}

static int memo_grow_groups(struct memo *m)
{
    size_t cap = m->cap_groups ? m->cap_groups * 2 : 1024, old = m->cap_groups;
    m->cap_groups = cap;
    if (memo_bytes(m) > m->max_bytes || grow_array((void **)&m->g_bits, cap, m->words_n * 8) ||
        grow_array((void **)&m->g_hash, cap, 8) || grow_array((void **)&m->g_state, cap, 4) ||
        grow_array((void **)&m->g_last, cap, 4) || grow_array((void **)&m->g_head, cap, 4)) {
        m->cap_groups = old;
        return -1;
    }
    return 0;
}

static int memo_grow_members(struct memo *m)
{
    size_t cap = m->cap_members ? m->cap_members * 2 : 1024, old = m->cap_members;
    m->cap_members = cap;
    if (memo_bytes(m) > m->max_bytes || grow_array((void **)&m->m_bits, cap, m->words_i * 8) ||
        grow_array((void **)&m->m_next, cap, 4) || grow_array((void **)&m->m_is_failed, cap, 1)) {
        m->cap_members = old;
        return -1;
    }
    return 0;
}

static bool is_subset(const uint64_t *a, const uint64_t *b, size_t words)
{
    for (size_t w = 0; w < words; w++)
        if (a[w] & ~b[w])
            return false;
    return true;
}

/* The group of (N, state, last), added if new; NIL if the memory budget is spent. */
static uint32_t memo_group(struct memo *m, const uint64_t *n_bits, uint64_t hash, uint32_t state,
                           uint32_t last)
{
    if ((m->n_groups + 1) * 2 > m->table_cap && memo_grow_table(m) != 0)
        return NIL;
    size_t j = hash & (m->table_cap - 1);
    for (; m->table[j]; j = (j + 1) & (m->table_cap - 1)) {
        size_t g = m->table[j] - 1;
        if (m->g_hash[g] == hash && m->g_state[g] == state && m->g_last[g] == last &&
            memcmp(m->g_bits + g * m->words_n, n_bits, m->words_n * 8) == 0)
            return (uint32_t)g;
    }
    if (m->n_groups == m->cap_groups && memo_grow_groups(m) != 0)
        return NIL;
    size_t g = m->n_groups++;
    memcpy(m->g_bits + g * m->words_n, n_bits, m->words_n * 8);
    m->g_hash[g] = hash;
    m->g_state[g] = state;
    m->g_last[g] = last;
    m->g_head[g] = NIL;
    m->table[j] = (uint32_t)g + 1;
    return (uint32_t)g;
}

/* Is the configuration (bits = N then I, state) new? Then it is recorded:
 * returns 0 and sets *member. 1 if it was seen, or is dominated by one that
 * failed; -1 if the memory budget is spent. */
static int memo_visit(struct memo *m, const uint64_t *bits, uint64_t hash, uint32_t state,
                      uint32_t last, uint32_t *member)
{
    uint32_t g = memo_group(m, bits, hash, state, last);
    if (g == NIL)
        return -1;
    const uint64_t *i_bits = bits + m->words_n;
    for (uint32_t k = m->g_head[g]; k != NIL; k = m->m_next[k]) {
        const uint64_t *b = m->m_bits + (size_t)k * m->words_i;
        if (memcmp(b, i_bits, m->words_i * 8) == 0)
            return 1;
        if (m->m_is_failed[k] && is_subset(b, i_bits, m->words_i))
            return 1;
    }
    if (m->n_members == m->cap_members && memo_grow_members(m) != 0)
        return -1;
    size_t k = m->n_members++;
    memcpy(m->m_bits + k * m->words_i, i_bits, m->words_i * 8);
    m->m_is_failed[k] = false;
    m->m_next[k] = m->g_head[g];
    m->g_head[g] = (uint32_t)k;
    *member = (uint32_t)k;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The search */

struct entry_sort {
    int64_t t;
    uint32_t op;
    bool is_return;
};

static int cmp_entries(const void *a, const void *b)
{
    const struct entry_sort *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    if (x->is_return != y->is_return)
        return x->is_return ? 1 : -1;
    return x->op < y->op ? -1 : x->op > y->op;
}

struct frame {
    uint32_t entry; /* the call linearized */
    uint32_t state; /* the state before it */
    uint32_t memo;  /* the memo entry of the configuration after it */
    uint8_t pass;
};

struct search {
    struct problem *pb;
    double deadline;
    size_t max_bytes;
    uint64_t n_states;
    const char *unknown_reason;
    /* The list: entry 0 is the head; 1..2n are calls and returns. */
    uint32_t *next, *prev, *match, *op_of;
    bool *is_call;
    uint32_t *bit;  /* by op: its bit in the configuration's bitset */
    uint32_t *rank; /* by op: the position of its call in time order */
    uint32_t *twin; /* by unknown op: the one invoked just before it with the same
                       kind and arguments, or NIL (they are interchangeable) */
    size_t words_n, words_i;
    uint64_t *bits, *zobrist;
    struct frame *stack;
};

static void lift(struct search *s, uint32_t e)
{
    uint32_t r = s->match[e];
    s->next[s->prev[e]] = s->next[e];
    if (s->next[e] != NIL)
        s->prev[s->next[e]] = s->prev[e];
    s->next[s->prev[r]] = s->next[r];
    if (s->next[r] != NIL)
        s->prev[s->next[r]] = s->prev[r];
}

/* Undo lift(e), in the reverse order (dancing links). */
static void unlift(struct search *s, uint32_t e)
{
    uint32_t r = s->match[e];
    s->next[s->prev[r]] = r;
    if (s->next[r] != NIL)
        s->prev[s->next[r]] = r;
    s->next[s->prev[e]] = e;
    if (s->next[e] != NIL)
        s->prev[s->next[e]] = e;
}

static bool is_twin(const struct sop *a, const struct sop *b)
{
    return a->kind == b->kind && a->arg == b->arg && a->expect == b->expect && a->delta == b->delta;
}

/* Symmetry: unknown ops with the same kind and arguments are interchangeable
 * (they return at +infinity, so only their invokes differ). Any
 * linearization using a later-invoked one while an earlier twin is pending
 * can swap the two; so the search linearizes twins in invoke order only. */
static void find_twins(struct search *s, const struct entry_sort *es)
{
    size_t n = s->pb->n;
    for (size_t i = 0; i < n; i++)
        s->twin[i] = NIL;
    /* Unknown ops are few: compare each with the unknown ones invoked before it. */
    for (size_t k = 0; k < 2 * n; k++) {
        if (es[k].is_return || s->pb->ops[es[k].op].mode != MODE_INFO)
            continue;
        const struct sop *o = &s->pb->ops[es[k].op];
        for (size_t j = k; j-- > 0;) {
            const struct sop *p = &s->pb->ops[es[j].op];
            if (!es[j].is_return && p->mode == MODE_INFO && is_twin(o, p)) {
                s->twin[es[k].op] = es[j].op;
                break;
            }
        }
    }
}

static int search_init(struct search *s)
{
    size_t n = s->pb->n, ne = 2 * n + 1, n_info = 0;
    for (size_t i = 0; i < n; i++)
        n_info += s->pb->ops[i].mode == MODE_INFO;
    s->words_n = (n - n_info + 63) / 64 + 1;
    s->words_i = (n_info + 63) / 64;
    s->next = malloc(ne * sizeof(*s->next));
    s->prev = malloc(ne * sizeof(*s->prev));
    s->match = malloc(ne * sizeof(*s->match));
    s->op_of = malloc(ne * sizeof(*s->op_of));
    s->is_call = malloc(ne * sizeof(*s->is_call));
    s->bit = malloc((n + 1) * sizeof(*s->bit));
    s->twin = malloc((n + 1) * sizeof(*s->twin));
    s->rank = malloc((n + 1) * sizeof(*s->rank));
    s->bits = calloc(s->words_n + s->words_i, sizeof(*s->bits));
    s->zobrist = malloc((n + 1) * sizeof(*s->zobrist));
    s->stack = malloc((n + 1) * sizeof(*s->stack));
    struct entry_sort *es = malloc(ne * sizeof(*es));
    uint32_t *call_entry = malloc((n + 1) * sizeof(*call_entry));
    if (!s->next || !s->prev || !s->match || !s->op_of || !s->is_call || !s->bit || !s->twin ||
        !s->rank || !s->bits || !s->zobrist || !s->stack || !es || !call_entry) {
        free(es);
        free(call_entry);
        return -1;
    }
    size_t k_n = 0, k_i = 0;
    for (size_t i = 0; i < n; i++) {
        const struct sop *o = &s->pb->ops[i];
        es[2 * i] = (struct entry_sort){o->call_ns, (uint32_t)i, false};
        es[2 * i + 1] = (struct entry_sort){o->return_ns, (uint32_t)i, true};
        /* Only N is hashed: entries differing in I share a chain. */
        bool is_info = o->mode == MODE_INFO;
        s->bit[i] = is_info ? (uint32_t)(s->words_n * 64 + k_i++) : (uint32_t)k_n++;
        s->zobrist[i] = is_info ? 0 : mix64(i * 0x2545f4914f6cdd1dULL + 0x1234567ULL);
    }
    qsort(es, 2 * n, sizeof(*es), cmp_entries);
    find_twins(s, es);
    s->next[0] = n ? 1 : NIL;
    s->prev[0] = NIL;
    for (size_t k = 0; k < 2 * n; k++) {
        uint32_t e = (uint32_t)k + 1;
        s->op_of[e] = es[k].op;
        s->is_call[e] = !es[k].is_return;
        s->prev[e] = e - 1;
        s->next[e] = k + 1 < 2 * n ? e + 1 : NIL;
        if (s->is_call[e]) {
            call_entry[es[k].op] = e;
            s->rank[es[k].op] = e;
        } else {
            s->match[e] = call_entry[es[k].op];
            s->match[call_entry[es[k].op]] = e;
        }
    }
    free(call_entry);
    free(es);
    return 0;
}

static void search_free(struct search *s)
{
    free(s->next);
    free(s->prev);
    free(s->match);
    free(s->op_of);
    free(s->is_call);
    free(s->bit);
    free(s->twin);
    free(s->rank);
    free(s->bits);
    free(s->zobrist);
    free(s->stack);
}

static void flip(struct search *s, uint32_t o)
{
    uint32_t b = s->bit[o];
    s->bits[b / 64] ^= 1ULL << (b % 64);
}

/* Canonical forms: some orders need not be tried, because another order
 * that is tried does the same. For an unknown op x about to be linearized
 * right after the unknown op `last` (NIL if the last one was known):
 *   - a step that changes nothing is never needed (move x to the end);
 *   - a set right after an unknown op wipes out that op's effect (the
 *     earlier one could have been left to the end instead);
 *   - two incrs in a row commute: only in the order of their invokes (the
 *     order twins take too).
 * None of these looks at real time: unknown ops return at +infinity, so
 * moving them later, or swapping two adjacent ones, never breaks it. */
static bool is_canonical(const struct search *s, uint32_t x, uint32_t last, uint32_t state,
                         uint32_t next_state)
{
    const struct sop *o = &s->pb->ops[x];
    if (next_state == state && o->kind != LC_GET)
        return false;
    if (last == NIL)
        return true;
    if (o->kind == LC_SET)
        return false;
    return !(o->kind == LC_INCR && s->pb->ops[last].kind == LC_INCR && s->rank[x] < s->rank[last]);
}

static bool is_twin_pending(const struct search *s, uint32_t o)
{
    uint32_t t = s->twin[o];
    return t != NIL && !(s->bits[s->bit[t] / 64] >> (s->bit[t] % 64) & 1);
}

static enum lc_verdict search_run(struct search *s)
{
    struct problem *pb = s->pb;
    struct memo memo = {.words_n = s->words_n, .words_i = s->words_i, .max_bytes = s->max_bytes};
    size_t sp = 0, n_known = 0, n_known_done = 0;
    uint32_t state = 0, e, pass = 0, last = NIL;
    uint64_t hz = 0, steps = 0;
    bool oom = false;
    enum lc_verdict verdict = LC_LINEARIZABLE;

    for (size_t i = 0; i < pb->n; i++)
        n_known += pb->ops[i].mode != MODE_INFO;
    e = s->next[0];
    /* Done when every known op is placed: the unknown ones left never happened. */
    while (n_known_done < n_known) {
        if (++steps % CLOCK_EVERY == 0 && now_seconds() > s->deadline) {
            s->unknown_reason = "time budget";
            verdict = LC_UNKNOWN;
            break;
        }
        if (e == NIL || !s->is_call[e]) {
            /* A return: its op had to be linearized by now. */
            if (pass == 0) {
                pass = 1; /* the same window again, for the unknown ops */
                e = s->next[0];
                continue;
            }
            if (sp == 0) {
                verdict = LC_VIOLATION;
                break;
            }
            struct frame f = s->stack[--sp];
            memo.m_is_failed[f.memo] = true;
            uint32_t o = s->op_of[f.entry];
            flip(s, o);
            hz ^= s->zobrist[o];
            n_known_done -= pb->ops[o].mode != MODE_INFO;
            state = f.state;
            unlift(s, f.entry);
            e = s->next[f.entry];
            pass = f.pass;
            last = sp && pb->ops[s->op_of[s->stack[sp - 1].entry]].mode == MODE_INFO
                       ? s->op_of[s->stack[sp - 1].entry]
                       : NIL;
            continue;
        }
        uint32_t o = s->op_of[e];
        const struct sop *op = &pb->ops[o];
        bool is_info = op->mode == MODE_INFO;
        uint32_t next_state, member = 0;
        if (is_info == (pass == 1) && !(is_info && is_twin_pending(s, o)) &&
            model_step(&pb->values, op, state, &next_state, &oom) &&
            (!is_info || is_canonical(s, o, last, state, next_state))) {
            uint32_t next_last = is_info ? o : NIL;
            uint64_t h2 = hz ^ s->zobrist[o];
            flip(s, o);
            int seen = memo_visit(&memo, s->bits, h2 ^ mix64(next_state) ^ mix64(next_last),
                                  next_state, next_last, &member);
            if (seen < 0) {
                oom = true;
                break;
            }
            if (seen == 0) {
                s->n_states++;
                s->stack[sp++] = (struct frame){e, state, member, (uint8_t)pass};
                state = next_state;
                last = next_last;
                hz = h2;
                n_known_done += !is_info;
                lift(s, e);
                e = s->next[0];
                pass = 0;
                continue;
            }
            flip(s, o);
        }
        if (oom)
            break;
        e = s->next[e];
    }
    if (oom) {
        s->unknown_reason = "memory budget";
        verdict = LC_UNKNOWN;
    }
    memo_free(&memo);
    return verdict;
}

/* Check the first `cut` events of a key. */
static enum lc_verdict check_prefix(const struct lc_history *h, const struct key_events *ke,
                                    size_t cut, double deadline, size_t max_bytes,
                                    struct lc_key_result *kr)
{
    struct problem pb;
    struct search s = {.pb = &pb, .deadline = deadline, .max_bytes = max_bytes};
    enum lc_verdict v = LC_UNKNOWN;
    kr->unknown_reason = "memory budget";
    if (problem_build(h, ke, cut, &pb) == 0 && search_init(&s) == 0) {
        v = search_run(&s);
        kr->unknown_reason = s.unknown_reason;
    }
    kr->n_checked = pb.n;
    kr->n_dropped = pb.n_dropped;
    kr->n_states += s.n_states;
    search_free(&s);
    problem_free(&pb);
    return v;
}

/* The shortest failing prefix, by bisection: a prefix of a linearizable
 * history is linearizable (its pending ops may take effect or not), so
 * failing is monotone in the prefix's length. */
static void shrink(const struct lc_history *h, const struct key_events *ke, double deadline,
                   size_t max_bytes, struct lc_key_result *kr)
{
    size_t lo = 0, hi = ke->n_events; /* prefix lo is not known to fail; hi fails */
    kr->window_is_minimal = true;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        struct lc_key_result probe = {0};
        enum lc_verdict v = check_prefix(h, ke, mid, deadline, max_bytes, &probe);
        kr->n_states += probe.n_states;
        if (v == LC_VIOLATION) {
            hi = mid;
        } else {
            if (v == LC_UNKNOWN)
                kr->window_is_minimal = false;
            lo = mid;
        }
    }
    kr->window_events = hi;
    kr->total_events = ke->n_events;
    kr->culprit = ke->ops[ke->event_op[hi - 1]];
    kr->window_ops = malloc(ke->n_ops * sizeof(*kr->window_ops));
    if (!kr->window_ops)
        return;
    for (size_t p = 0; p < ke->n_ops; p++)
        if (ke->call_at[p] < hi)
            kr->window_ops[kr->n_window_ops++] = ke->ops[p];
}

static int check_key(const struct lc_history *h, uint32_t key, double deadline,
                     const struct lc_options *o, struct lc_key_result *kr)
{
    struct key_events ke;
    size_t max_bytes = o->max_cache_bytes ? o->max_cache_bytes : DEFAULT_CACHE_BYTES;
    double t0 = now_seconds();
    if (key_events_build(h, key, &ke) != 0) {
        key_events_free(&ke);
        return -1;
    }
    free(kr->window_ops);
    *kr = (struct lc_key_result){.key = key};
    kr->total_events = ke.n_events;
    kr->verdict = check_prefix(h, &ke, ke.n_events, deadline, max_bytes, kr);
    if (kr->verdict != LC_UNKNOWN)
        kr->unknown_reason = NULL;
    if (kr->verdict == LC_VIOLATION) {
        if (o->minimize) {
            double d = now_seconds() + MIN_SHRINK_SECONDS;
            shrink(h, &ke, deadline > d ? deadline : d, max_bytes, kr);
        } else {
            kr->window_events = ke.n_events;
            kr->culprit = ke.ops[ke.event_op[ke.n_events - 1]];
        }
    }
    kr->seconds = now_seconds() - t0;
    key_events_free(&ke);
    return 0;
}

int lc_check(const struct lc_history *h, const struct lc_options *opt, struct lc_result *out)
{
    struct lc_options o = opt ? *opt : (struct lc_options){.minimize = true};
    double budget = o.budget_seconds > 0 ? o.budget_seconds : DEFAULT_BUDGET_SECONDS;
    double t0 = now_seconds(), end = t0 + budget;
    memset(out, 0, sizeof(*out));
    out->keys = calloc(h->n_keys ? h->n_keys : 1, sizeof(*out->keys));
    if (!out->keys)
        return -1;
    out->n_keys = h->n_keys;
    /* First round: each key its share of what is left; second round: the
     * keys that ran out of time get all that remains. */
    for (size_t k = 0; k < h->n_keys; k++) {
        double now = now_seconds();
        double share = (end - now) / (double)(h->n_keys - k);
        if (check_key(h, (uint32_t)k, now + (share > 0 ? share : 0), &o, &out->keys[k]) != 0)
            goto oom;
    }
    for (size_t k = 0; k < h->n_keys; k++) {
        struct lc_key_result *kr = &out->keys[k];
        if (kr->verdict != LC_UNKNOWN || now_seconds() >= end)
            continue;
        double spent = kr->seconds;
        uint64_t states = kr->n_states;
        if (check_key(h, (uint32_t)k, end, &o, kr) != 0)
            goto oom;
        kr->seconds += spent;
        kr->n_states += states;
    }
    out->verdict = LC_LINEARIZABLE;
    for (size_t k = 0; k < h->n_keys; k++) {
        out->n_states += out->keys[k].n_states;
        if (out->keys[k].verdict == LC_VIOLATION)
            out->verdict = LC_VIOLATION;
        else if (out->keys[k].verdict == LC_UNKNOWN && out->verdict != LC_VIOLATION)
            out->verdict = LC_UNKNOWN;
    }
    out->seconds = now_seconds() - t0;
    return 0;
oom:
    lc_result_free(out);
    return -1;
}

void lc_result_free(struct lc_result *r)
{
    for (size_t k = 0; k < r->n_keys; k++)
        free(r->keys[k].window_ops);
    free(r->keys);
    memset(r, 0, sizeof(*r));
}

size_t lc_could_have_seen(const struct lc_history *h, uint32_t op, uint32_t *out, size_t max)
{
    const struct lc_op *r = &h->ops[op];
    int64_t latest = INT64_MIN; /* the latest invoke of a write certainly done before r */
    bool any_before = false;
    for (size_t i = 0; i < h->n_ops; i++) {
        const struct lc_op *w = &h->ops[i];
        bool is_done_write = w->key == r->key && w->kind != LC_GET && w->outcome == LC_OK &&
                             i != op && w->complete_ns < r->invoke_ns;
        if (is_done_write) {
            any_before = true;
            if (w->invoke_ns > latest)
                latest = w->invoke_ns;
        }
    }
    size_t n = 0;
    if (!any_before && n < max)
        out[n++] = UINT32_MAX;
    for (size_t i = 0; i < h->n_ops && n < max; i++) {
        const struct lc_op *w = &h->ops[i];
        bool may_write = w->key == r->key && w->kind != LC_GET && w->outcome != LC_FAIL &&
                         i != op && w->invoke_ns <= r->complete_ns;
        if (may_write && w->complete_ns >= latest)
            out[n++] = (uint32_t)i;
    }
    return n;
}
