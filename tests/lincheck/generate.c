/* generate.c — histories of a simulated linearizable KV service.
 *
 * Clients run closed loops: invoke, wait a random latency, complete, think,
 * invoke again. The service is one register per key that applies each op
 * atomically at a random instant inside the op's interval (its
 * linearization point), so every history it produces is linearizable by
 * construction -- with the ops' effects ordered by those points, the results
 * are what a register gives. Some outcomes are unknown (info: the client
 * gave up; half of those took effect anyway, possibly after the client gave
 * up), some are refused (fail, no effect). A mutation can then break one
 * read on purpose, so that the checker has something to find.
 */
#include "lincheck.h"

#include <stdlib.h>
#include <string.h>

#define BASE_NS 5000000000000LL /* the first time of a history (any monotonic origin) */
#define VALUE_LEN 24            /* "v" and a 20-digit counter, NUL */
#define RECENT 4                /* values per key a cas may expect */
#define MAX_MUTATION_TRIES 2000 /* reads tried as the stale one */

struct gop {
    int64_t invoke, lin, complete; /* ns; lin: when it took effect */
    int64_t process;
    int node;
    enum lc_kind kind;
    enum lc_outcome outcome;
    const char *error;
    bool took_effect; /* info: whether it did (unknown to the checker) */
    uint32_t key;
    char value[VALUE_LEN];    /* set/cas: written; get ok: read ("" + is_absent) */
    char expected[VALUE_LEN]; /* cas */
    bool is_absent;           /* get: read absent; cas: expects absent */
    int64_t delta, result;
};

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rng_below(struct rng *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}

/* A latency in ns: mostly 0.2-5 ms, one in twenty 5-50 ms. */
static int64_t latency_ns(struct rng *r)
{
    if (rng_below(r, 20) == 0)
        return 5000000 + (int64_t)rng_below(r, 45000000);
    return 200000 + (int64_t)rng_below(r, 4800000);
}

/* ------------------------------------------------------------------------ */
/* 1. The clients' schedule and what they ask */

struct gen {
    const struct lc_gen_options *o;
    struct rng rng;
    struct gop *ops;
    size_t n;
    uint64_t counter;
    char (*recent)[RECENT][VALUE_LEN]; /* by key: values lately asked to be written */
    unsigned *n_recent;
};

static void choose_op(struct gen *g, struct gop *op)
{
    struct rng *r = &g->rng;
    uint64_t dice = rng_below(r, 100);
    op->key = (uint32_t)rng_below(r, g->o->n_keys);
    op->node = 1 + (int)rng_below(r, 5);
    op->kind = dice < 40 ? LC_GET : dice < 65 ? LC_SET : dice < 85 ? LC_CAS : LC_INCR;
    if (op->kind == LC_SET || op->kind == LC_CAS) {
        /* Mostly integers (incr can use them), sometimes not. */
        g->counter++;
        if (rng_below(r, 5) == 0)
            snprintf(op->value, VALUE_LEN, "v%llu", (unsigned long long)g->counter);
        else
            snprintf(op->value, VALUE_LEN, "%llu", (unsigned long long)g->counter);
    }
    if (op->kind == LC_CAS) {
        unsigned n = g->n_recent[op->key];
        uint64_t pick = rng_below(r, n + 1);
        op->is_absent = pick == n;
        if (!op->is_absent)
            memcpy(op->expected, g->recent[op->key][pick], VALUE_LEN);
    }
    if (op->kind == LC_SET || op->kind == LC_CAS) {
        unsigned slot =
            g->n_recent[op->key] < RECENT ? g->n_recent[op->key]++ : (unsigned)rng_below(r, RECENT);
        memcpy(g->recent[op->key][slot], op->value, VALUE_LEN);
    }
    if (op->kind == LC_INCR)
        op->delta = 1 + (int64_t)rng_below(r, 5);
}

static int schedule(struct gen *g)
{
    int rc = -1;
    const struct lc_gen_options *o = g->o;
    int64_t *next_ns = calloc(o->n_clients, sizeof(*next_ns));
    int64_t *process = calloc(o->n_clients, sizeof(*process));
    if (!next_ns || !process)
        goto out;
    for (unsigned c = 0; c < o->n_clients; c++) {
        next_ns[c] = BASE_NS + (int64_t)rng_below(&g->rng, 1000000);
        process[c] = c;
    }
    for (g->n = 0; g->n < o->n_ops; g->n++) {
        unsigned c = 0;
        for (unsigned i = 1; i < o->n_clients; i++)
            if (next_ns[i] < next_ns[c])
                c = i;
        struct gop *op = &g->ops[g->n];
        memset(op, 0, sizeof(*op));
        choose_op(g, op);
        int64_t lat = latency_ns(&g->rng);
        op->invoke = next_ns[c];
        op->complete = op->invoke + lat;
        op->lin = op->invoke + (int64_t)rng_below(&g->rng, (uint64_t)lat + 1);
        op->process = process[c];
        op->outcome = LC_OK;
        uint64_t dice = rng_below(&g->rng, 1000);
        if (dice < o->info_permille) {
            op->outcome = LC_INFO;
            op->error = "timeout";
            op->took_effect = rng_below(&g->rng, 2) == 0;
            /* An unknown op may take effect long after the client gave up. */
            op->lin = op->invoke + (int64_t)rng_below(&g->rng, 3 * (uint64_t)lat + 1);
            process[c] += o->n_clients; /* the process is gone; the client goes on anew */
        } else if (dice < o->info_permille + o->fail_permille) {
            op->outcome = LC_FAIL;
            op->error = "noquorum";
        }
        next_ns[c] = op->complete + (int64_t)rng_below(&g->rng, 1000000);
    }
    rc = 0;
out:
    free(next_ns);
    free(process);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* 2. The service: apply the ops in the order of their linearization points */

struct reg {
    char value[VALUE_LEN];
    bool is_present;
};

struct by_lin {
    int64_t lin;
    uint32_t op;
};

static int cmp_lin(const void *a, const void *b)
{
    const struct by_lin *x = a, *y = b;
    if (x->lin != y->lin)
        return x->lin < y->lin ? -1 : 1;
    return x->op < y->op ? -1 : x->op > y->op;
}

static bool reg_int(const struct reg *r, int64_t *v)
{
    if (!r->is_present) {
        *v = 0;
        return true;
    }
    char *end;
    long long x = strtoll(r->value, &end, 10);
    if (*end || !r->value[0] || (r->value[0] == '0' && r->value[1]))
        return false;
    *v = x;
    return true;
}

static void apply(struct gop *op, struct reg *r)
{
    int64_t v;
    bool is_unknown = op->outcome == LC_INFO;
    switch (op->kind) {
    case LC_GET:
        op->is_absent = !r->is_present;
        memcpy(op->value, r->value, VALUE_LEN);
        break;
    case LC_SET:
        memcpy(r->value, op->value, VALUE_LEN);
        r->is_present = true;
        break;
    case LC_CAS:
        if (op->is_absent ? !r->is_present : r->is_present && strcmp(r->value, op->expected) == 0) {
            memcpy(r->value, op->value, VALUE_LEN);
            r->is_present = true;
        } else if (!is_unknown) {
            op->outcome = LC_FAIL;
            op->error = "mismatch";
        }
        break;
    case LC_INCR:
        if (reg_int(r, &v)) {
            op->result = v + op->delta;
            snprintf(r->value, VALUE_LEN, "%lld", (long long)op->result);
            r->is_present = true;
        } else if (!is_unknown) {
            op->outcome = LC_FAIL;
            op->error = "not-integer";
        }
        break;
    }
}

static int serve(struct gen *g)
{
    struct by_lin *order = malloc((g->n ? g->n : 1) * sizeof(*order));
    struct reg *regs = calloc(g->o->n_keys, sizeof(*regs));
    if (!order || !regs) {
        free(order);
        free(regs);
        return -1;
    }
    for (size_t i = 0; i < g->n; i++)
        order[i] = (struct by_lin){g->ops[i].lin, (uint32_t)i};
    qsort(order, g->n, sizeof(*order), cmp_lin);
    for (size_t i = 0; i < g->n; i++) {
        struct gop *op = &g->ops[order[i].op];
        if (op->outcome == LC_FAIL || (op->outcome == LC_INFO && !op->took_effect))
            continue;
        apply(op, &regs[op->key]);
    }
    free(order);
    free(regs);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 3. Mutations */

static bool is_write_ok(const struct gop *w)
{
    return w->kind != LC_GET && w->outcome == LC_OK;
}

/* Ops of r's key that write `v` (or may: unknown ones count). */
static size_t writers_of(const struct gen *g, uint32_t key, const char *v)
{
    size_t n = 0;
    for (size_t i = 0; i < g->n; i++) {
        const struct gop *w = &g->ops[i];
        if (w->key == key && (w->kind == LC_SET || w->kind == LC_CAS) && strcmp(w->value, v) == 0)
            n++;
    }
    return n;
}

/* A read r that can be made stale: w1 (an ok write of a non-integer value
 * no other op writes) completed before w2 (an ok write) was invoked, and w2
 * completed before r was invoked. r returning w1's value is then impossible
 * in any order. */
static bool make_stale(struct gen *g, struct gop *r)
{
    int64_t latest = INT64_MIN; /* the latest invoke of a write done before r */
    for (size_t i = 0; i < g->n; i++) {
        const struct gop *w = &g->ops[i];
        if (w->key == r->key && is_write_ok(w) && w->complete < r->invoke && w->invoke > latest)
            latest = w->invoke;
    }
    const struct gop *best = NULL;
    for (size_t i = 0; i < g->n; i++) {
        const struct gop *w = &g->ops[i];
        bool ok = w->key == r->key && is_write_ok(w) && w->kind != LC_INCR &&
                  w->complete < latest && w->value[0] == 'v' &&
                  (!best || w->complete > best->complete);
        if (ok && writers_of(g, r->key, w->value) == 1)
            best = w;
    }
    if (!best || (!r->is_absent && strcmp(r->value, best->value) == 0))
        return false;
    memcpy(r->value, best->value, VALUE_LEN);
    r->is_absent = false;
    return true;
}

static int mutate(struct gen *g, char *err, size_t err_len)
{
    if (g->o->mutate == LC_MUTATE_NONE)
        return 0;
    size_t start = (size_t)rng_below(&g->rng, g->n), tries = 0;
    for (size_t k = 0; k < g->n && tries < MAX_MUTATION_TRIES; k++) {
        struct gop *r = &g->ops[(start + k) % g->n];
        if (r->kind != LC_GET || r->outcome != LC_OK)
            continue;
        tries++;
        if (g->o->mutate == LC_MUTATE_PHANTOM) {
            snprintf(r->value, VALUE_LEN, "phantom");
            r->is_absent = false;
            return 0;
        }
        if (make_stale(g, r))
            return 0;
    }
    snprintf(err, err_len, "no read could be mutated (a longer history may have one)");
    return -1;
}

/* ------------------------------------------------------------------------ */
/* 4. Writing it out, in time order */

struct event {
    int64_t t;
    uint32_t op;
    bool is_completion;
};

static int cmp_event(const void *a, const void *b)
{
    const struct event *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    if (x->op != y->op)
        return x->op < y->op ? -1 : 1;
    return x->is_completion - y->is_completion;
}

static void write_invoke(FILE *f, const struct gop *op, int64_t t)
{
    fprintf(f, "{\"type\":\"invoke\",\"process\":%lld,\"op\":\"%s\",\"key\":\"k%u\"",
            (long long)op->process, lc_kind_name(op->kind), op->key);
    if (op->kind == LC_SET)
        fprintf(f, ",\"value\":\"%s\"", op->value);
    if (op->kind == LC_CAS) {
        if (op->is_absent)
            fprintf(f, ",\"expected\":null");
        else
            fprintf(f, ",\"expected\":\"%s\"", op->expected);
        fprintf(f, ",\"value\":\"%s\"", op->value);
    }
    if (op->kind == LC_INCR)
        fprintf(f, ",\"delta\":%lld", (long long)op->delta);
    fprintf(f, ",\"time\":%lld,\"node\":%d}\n", (long long)t, op->node);
}

static void write_completion(FILE *f, const struct gop *op, int64_t t)
{
    fprintf(f, "{\"type\":\"%s\",\"process\":%lld,\"op\":\"%s\",\"key\":\"k%u\"",
            lc_outcome_name(op->outcome), (long long)op->process, lc_kind_name(op->kind), op->key);
    if (op->outcome == LC_OK && op->kind == LC_GET) {
        if (op->is_absent)
            fprintf(f, ",\"value\":null");
        else
            fprintf(f, ",\"value\":\"%s\"", op->value);
    }
    if (op->outcome == LC_OK && op->kind == LC_INCR)
        fprintf(f, ",\"value\":%lld", (long long)op->result);
    if (op->outcome != LC_OK && op->error)
        fprintf(f, ",\"error\":\"%s\"", op->error);
    fprintf(f, ",\"time\":%lld}\n", (long long)t);
}

static int write_history(const struct gen *g, FILE *f)
{
    struct event *ev = malloc(2 * g->n * sizeof(*ev) + 1);
    if (!ev)
        return -1;
    for (size_t i = 0; i < g->n; i++) {
        ev[2 * i] = (struct event){g->ops[i].invoke, (uint32_t)i, false};
        ev[2 * i + 1] = (struct event){g->ops[i].complete, (uint32_t)i, true};
    }
    qsort(ev, 2 * g->n, sizeof(*ev), cmp_event);
    int64_t end = g->n ? g->ops[g->n - 1].complete : BASE_NS;
    for (unsigned i = 0; i < g->o->n_nemeses; i++) {
        int64_t span = (end - BASE_NS) / (2 * (int64_t)g->o->n_nemeses + 1);
        int64_t start = BASE_NS + span * (2 * i + 1);
        static const char *const what[] = {"partition 1,2 | 3,4,5", "kill 3", "pause 1",
                                           "partition 1 | 2,3,4,5"};
        fprintf(f, "{\"type\":\"nemesis\",\"what\":\"%s\",\"start\":%lld,\"end\":%lld}\n",
                what[i % 4], (long long)start, (long long)(start + span));
    }
    for (size_t e = 0; e < 2 * g->n; e++) {
        const struct gop *op = &g->ops[ev[e].op];
        if (ev[e].is_completion)
            write_completion(f, op, ev[e].t);
        else
            write_invoke(f, op, ev[e].t);
    }
    free(ev);
    return ferror(f) ? -1 : 0;
}

int lc_generate(const struct lc_gen_options *o, FILE *out, char *err, size_t err_len)
{
    if (o->n_clients == 0 || o->n_keys == 0) {
        snprintf(err, err_len, "need at least one client and one key");
        return -1;
    }
    struct gen g = {.o = o, .rng = {o->seed}};
    g.ops = malloc((o->n_ops ? o->n_ops : 1) * sizeof(*g.ops));
    g.recent = calloc(o->n_keys, sizeof(*g.recent));
    g.n_recent = calloc(o->n_keys, sizeof(*g.n_recent));
    int rc = -1;
    if (!g.ops || !g.recent || !g.n_recent) {
        snprintf(err, err_len, "out of memory");
        goto out;
    }
    if (schedule(&g) != 0 || serve(&g) != 0) {
        snprintf(err, err_len, "out of memory");
        goto out;
    }
    if (mutate(&g, err, err_len) != 0)
        goto out;
    if (write_history(&g, out) != 0) {
        snprintf(err, err_len, "cannot write the history");
        goto out;
    }
    rc = 0;
out:
    free(g.ops);
    free(g.recent);
    free(g.n_recent);
    return rc;
}
