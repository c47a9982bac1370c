/* history.c — reading a history of JSON lines (the format is in lincheck.h
 * and docs/lincheck.md) into a struct lc_history.
 *
 * Each line is parsed by jansson on its own. An invoke opens an op for its
 * process; the completion that follows closes it. What the runner got wrong
 * is refused with the line and the reason, never guessed at: a checker that
 * silently repairs its input can pass a broken history.
 */
#include "lincheck.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* The arena: every string of a history, freed at once. */

#define ARENA_BLOCK_BYTES (64 * 1024) /* a block; larger strings get their own */

struct arena_block {
    struct arena_block *next;
    size_t used, size;
    char data[];
};

struct lc_arena {
    struct arena_block *head;
};

static void *arena_alloc(struct lc_arena *a, size_t n)
{
    struct arena_block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = n > ARENA_BLOCK_BYTES ? n : ARENA_BLOCK_BYTES;
        b = malloc(sizeof(*b) + size);
        if (!b)
            return NULL;
        b->used = 0;
        b->size = size;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

const char *lc_history_strdup(struct lc_history *h, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = arena_alloc(h->arena, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Small maps: key string -> key index, process -> its state. */

struct key_slot {
    const char *key; /* NULL: empty */
    uint32_t index;
};

struct proc_slot {
    int64_t process;
    bool used;
    bool is_gone;       /* its last op ended in info */
    uint32_t open_op;   /* UINT32_MAX: nothing outstanding */
    uint32_t info_line; /* the line of that info */
};

struct parser {
    struct lc_history *h;
    const char *path;
    char *err;
    size_t err_len;
    uint32_t line;
    size_t cap_ops, cap_keys, cap_nemeses;
    struct key_slot *key_map;
    size_t key_map_cap;
    struct proc_slot *procs;
    size_t procs_cap, n_procs;
};

static uint64_t hash_bytes(const char *s)
{
    uint64_t x = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        x = (x ^ (unsigned char)*s) * 1099511628211ULL;
    return x;
}

static uint64_t hash_int(int64_t v)
{
    uint64_t z = (uint64_t)v + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int fail_at(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail_at(struct parser *p, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (p->path)
        snprintf(p->err, p->err_len, "%s:%u: %s", p->path, p->line, msg);
    else
        snprintf(p->err, p->err_len, "line %u: %s", p->line, msg);
    return -1;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*arr, n * elem);
    if (!q)
        return -1;
    *arr = q;
    *cap = n;
    return 0;
}

/* The index of `key`, added if new; UINT32_MAX if out of memory. */
static uint32_t key_index(struct parser *p, const char *key)
{
    struct lc_history *h = p->h;
    if (h->n_keys * 2 >= p->key_map_cap) {
        size_t ncap = p->key_map_cap ? p->key_map_cap * 2 : 64;
        struct key_slot *m = calloc(ncap, sizeof(*m));
        if (!m)
            return UINT32_MAX;
        for (size_t i = 0; i < p->key_map_cap; i++) {
            if (!p->key_map[i].key)
                continue;
            size_t j = hash_bytes(p->key_map[i].key) & (ncap - 1);
            while (m[j].key)
                j = (j + 1) & (ncap - 1);
            m[j] = p->key_map[i];
        }
        free(p->key_map);
        p->key_map = m;
        p->key_map_cap = ncap;
    }
    size_t j = hash_bytes(key) & (p->key_map_cap - 1);
    for (; p->key_map[j].key; j = (j + 1) & (p->key_map_cap - 1))
        if (strcmp(p->key_map[j].key, key) == 0)
            return p->key_map[j].index;
    if (grow((void **)&h->keys, &p->cap_keys, h->n_keys + 1, sizeof(*h->keys)) != 0)
        return UINT32_MAX;
    const char *copy = lc_history_strdup(h, key);
    if (!copy)
        return UINT32_MAX;
    h->keys[h->n_keys] = copy;
    p->key_map[j].key = copy;
    p->key_map[j].index = (uint32_t)h->n_keys;
    return (uint32_t)h->n_keys++;
}

/* The slot of `process`, added if new; NULL if out of memory. */
static struct proc_slot *proc_slot(struct parser *p, int64_t process)
{
    if (p->n_procs * 2 >= p->procs_cap) {
        size_t ncap = p->procs_cap ? p->procs_cap * 2 : 64;
        struct proc_slot *m = calloc(ncap, sizeof(*m));
        if (!m)
            return NULL;
        for (size_t i = 0; i < p->procs_cap; i++) {
            if (!p->procs[i].used)
                continue;
            size_t j = hash_int(p->procs[i].process) & (ncap - 1);
            while (m[j].used)
                j = (j + 1) & (ncap - 1);
            m[j] = p->procs[i];
        }
        free(p->procs);
        p->procs = m;
        p->procs_cap = ncap;
    }
    size_t j = hash_int(process) & (p->procs_cap - 1);
    for (; p->procs[j].used; j = (j + 1) & (p->procs_cap - 1))
        if (p->procs[j].process == process)
            return &p->procs[j];
    p->procs[j] = (struct proc_slot){.process = process, .used = true, .open_op = UINT32_MAX};
    p->n_procs++;
    return &p->procs[j];
}

/* ------------------------------------------------------------------------ */
/* Fields */

static int get_int(struct parser *p, json_t *o, const char *name, bool required, int64_t *out)
{
    json_t *v = json_object_get(o, name);
    if (!v) {
        if (required)
            return fail_at(p, "\"%s\" is missing", name);
        return 1;
    }
    if (!json_is_integer(v))
        return fail_at(p, "\"%s\" must be an integer", name);
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* A string field or null. *out NULL for null. 1 if absent and not required. */
static int get_str_or_null(struct parser *p, json_t *o, const char *name, bool required,
                           const char **out)
{
    json_t *v = json_object_get(o, name);
    if (!v) {
        if (required)
            return fail_at(p, "\"%s\" is missing", name);
        return 1;
    }
    if (json_is_null(v)) {
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return fail_at(p, "\"%s\" must be a string or null", name);
    *out = lc_history_strdup(p->h, json_string_value(v));
    if (!*out)
        return fail_at(p, "out of memory");
    return 0;
}

static int get_str(struct parser *p, json_t *o, const char *name, const char **out)
{
    if (get_str_or_null(p, o, name, true, out) != 0)
        return -1;
    if (!*out)
        return fail_at(p, "\"%s\" must be a string, not null", name);
    return 0;
}

/* An integer or a decimal string (an incr's result). */
static int get_int_lenient(struct parser *p, json_t *o, const char *name, int64_t *out)
{
    json_t *v = json_object_get(o, name);
    if (v && json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (*s == '\0' || *end != '\0' || errno)
            return fail_at(p, "\"%s\" must be an integer", name);
        *out = x;
        return 0;
    }
    return get_int(p, o, name, true, out);
}

static void note_time(struct lc_history *h, int64_t t)
{
    if (t < h->first_ns)
        h->first_ns = t;
    if (t > h->last_ns)
        h->last_ns = t;
}

/* ------------------------------------------------------------------------ */
/* Lines */

static int parse_kind(struct parser *p, const char *s, enum lc_kind *out)
{
    static const char *const names[] = {"get", "set", "cas", "incr"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum lc_kind)i;
            return 0;
        }
    return fail_at(p, "unknown op \"%s\" (get, set, cas or incr)", s);
}

static int parse_invoke(struct parser *p, json_t *o, int64_t process)
{
    struct lc_history *h = p->h;
    struct proc_slot *ps = proc_slot(p, process);
    if (!ps)
        return fail_at(p, "out of memory");
    if (ps->open_op != UINT32_MAX)
        return fail_at(p, "process %lld invokes while its op of line %u is outstanding",
                       (long long)process, h->ops[ps->open_op].invoke_line);
    if (ps->is_gone)
        return fail_at(p,
                       "process %lld invokes again after its op ended in info on line %u; "
                       "continue under a new process id (docs/lincheck.md)",
                       (long long)process, ps->info_line);
    if (grow((void **)&h->ops, &p->cap_ops, h->n_ops + 1, sizeof(*h->ops)) != 0)
        return fail_at(p, "out of memory");
    struct lc_op *op = &h->ops[h->n_ops];
    memset(op, 0, sizeof(*op));
    op->process = process;
    op->invoke_line = p->line;
    op->outcome = LC_INFO;
    op->complete_ns = LC_TIME_INFINITE;
    const char *s;
    if (get_str(p, o, "op", &s) != 0 || parse_kind(p, s, &op->kind) != 0)
        return -1;
    if (get_str(p, o, "key", &s) != 0)
        return -1;
    if ((op->key = key_index(p, s)) == UINT32_MAX)
        return fail_at(p, "out of memory");
    if (get_int(p, o, "time", true, &op->invoke_ns) != 0)
        return -1;
    int64_t node = -1;
    if (get_int(p, o, "node", false, &node) < 0)
        return -1;
    op->node = (int)node;
    switch (op->kind) {
    case LC_GET:
        break;
    case LC_SET:
        if (get_str(p, o, "value", &op->value) != 0)
            return -1;
        break;
    case LC_CAS:
        if (get_str_or_null(p, o, "expected", true, &op->expected) != 0 ||
            get_str(p, o, "value", &op->value) != 0)
            return -1;
        break;
    case LC_INCR:
        if (get_int(p, o, "delta", true, &op->delta) != 0)
            return -1;
        break;
    }
    note_time(h, op->invoke_ns);
    ps->open_op = (uint32_t)h->n_ops++;
    return 0;
}

static int parse_result(struct parser *p, json_t *o, struct lc_op *op)
{
    if (op->outcome == LC_OK) {
        if (op->kind == LC_GET)
            return get_str_or_null(p, o, "value", true, &op->value);
        if (op->kind == LC_INCR)
            return get_int_lenient(p, o, "value", &op->result);
        return 0;
    }
    if (get_str_or_null(p, o, "error", false, &op->error) < 0)
        return -1;
    if (op->outcome == LC_FAIL && op->error) {
        op->is_checked_fail = (op->kind == LC_CAS && strcmp(op->error, "mismatch") == 0) ||
                              (op->kind == LC_INCR && strcmp(op->error, "not-integer") == 0);
    }
    return 0;
}

static int parse_completion(struct parser *p, json_t *o, int64_t process, enum lc_outcome outcome)
{
    struct lc_history *h = p->h;
    struct proc_slot *ps = proc_slot(p, process);
    if (!ps)
        return fail_at(p, "out of memory");
    if (ps->open_op == UINT32_MAX)
        return fail_at(p, "process %lld completes an op it never invoked", (long long)process);
    struct lc_op *op = &h->ops[ps->open_op];
    const char *s;
    enum lc_kind kind = op->kind;
    if (json_object_get(o, "op")) {
        if (get_str(p, o, "op", &s) != 0 || parse_kind(p, s, &kind) != 0)
            return -1;
        if (kind != op->kind)
            return fail_at(p, "completes a %s but line %u invoked a %s", s, op->invoke_line,
                           lc_kind_name(op->kind));
    }
    if (json_object_get(o, "key")) {
        if (get_str(p, o, "key", &s) != 0)
            return -1;
        if (strcmp(s, h->keys[op->key]) != 0)
            return fail_at(p, "key \"%s\" but line %u invoked on \"%s\"", s, op->invoke_line,
                           h->keys[op->key]);
    }
    int64_t t;
    if (get_int(p, o, "time", true, &t) != 0)
        return -1;
    if (t < op->invoke_ns)
        return fail_at(p, "completes at %lld, before its invoke (line %u) at %lld", (long long)t,
                       op->invoke_line, (long long)op->invoke_ns);
    note_time(h, t);
    op->outcome = outcome;
    op->complete_line = p->line;
    if (outcome == LC_INFO) {
        op->info_ns = t;
        ps->is_gone = true;
        ps->info_line = p->line;
    } else {
        op->complete_ns = t;
    }
    ps->open_op = UINT32_MAX;
    return parse_result(p, o, op);
}

static int parse_nemesis(struct parser *p, json_t *o)
{
    struct lc_history *h = p->h;
    if (grow((void **)&h->nemeses, &p->cap_nemeses, h->n_nemeses + 1, sizeof(*h->nemeses)) != 0)
        return fail_at(p, "out of memory");
    struct lc_nemesis *n = &h->nemeses[h->n_nemeses];
    if (get_str(p, o, "what", &n->what) != 0 || get_int(p, o, "start", true, &n->start_ns) != 0 ||
        get_int(p, o, "end", true, &n->end_ns) != 0)
        return -1;
    if (n->end_ns < n->start_ns)
        return fail_at(p, "nemesis ends before it starts");
    note_time(h, n->start_ns);
    note_time(h, n->end_ns);
    h->n_nemeses++;
    return 0;
}

static int parse_line(struct parser *p, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *o = json_loadb(line, len, 0, &jerr);
    if (!o)
        return fail_at(p, "not JSON: %s", jerr.text);
    int rc = -1;
    const char *type;
    int64_t process;
    if (!json_is_object(o)) {
        fail_at(p, "not a JSON object");
        goto out;
    }
    if (get_str(p, o, "type", &type) != 0)
        goto out;
    if (strcmp(type, "nemesis") == 0) {
        rc = parse_nemesis(p, o);
        goto out;
    }
    if (get_int(p, o, "process", true, &process) != 0)
        goto out;
    if (process < 0) {
        fail_at(p, "\"process\" must not be negative");
        goto out;
    }
    if (strcmp(type, "invoke") == 0)
        rc = parse_invoke(p, o, process);
    else if (strcmp(type, "ok") == 0)
        rc = parse_completion(p, o, process, LC_OK);
    else if (strcmp(type, "fail") == 0)
        rc = parse_completion(p, o, process, LC_FAIL);
    else if (strcmp(type, "info") == 0)
        rc = parse_completion(p, o, process, LC_INFO);
    else
        fail_at(p, "unknown type \"%s\" (invoke, ok, fail, info or nemesis)", type);
out:
    json_decref(o);
    return rc;
}

static bool is_blank_or_comment(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')
            continue;
        return s[i] == '#';
    }
    return true;
}

int lc_history_parse(const char *text, const char *path, struct lc_history **out, char *err,
                     size_t err_len)
{
    struct lc_history *h = calloc(1, sizeof(*h));
    struct parser p = {.h = h, .path = path, .err = err, .err_len = err_len};
    if (!h || !(h->arena = calloc(1, sizeof(*h->arena)))) {
        free(h);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    h->first_ns = INT64_MAX;
    h->last_ns = INT64_MIN;
    const char *s = text;
    int rc = 0;
    while (*s && rc == 0) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        p.line++;
        if (!is_blank_or_comment(s, len))
            rc = parse_line(&p, s, len);
        s += len + (nl ? 1 : 0);
    }
    free(p.key_map);
    free(p.procs);
    if (rc != 0) {
        lc_history_free(h);
        return -1;
    }
    if (h->n_ops == 0 && h->n_nemeses == 0)
        h->first_ns = h->last_ns = 0;
    *out = h;
    return 0;
}

int lc_history_load(const char *path, struct lc_history **out, char *err, size_t err_len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    int rc = -1;
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1)
            break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (!buf)
        snprintf(err, err_len, "%s: out of memory", path);
    else if (ferror(f))
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
    else {
        buf[len] = '\0';
        rc = lc_history_parse(buf, path, out, err, err_len);
    }
    free(buf);
    if (f != stdin)
        fclose(f);
    return rc;
}

void lc_history_free(struct lc_history *h)
{
    if (!h)
        return;
    if (h->arena) {
        struct arena_block *b = h->arena->head;
        while (b) {
            struct arena_block *next = b->next;
            free(b);
            b = next;
        }
        free(h->arena);
    }
    free(h->ops);
    free((void *)h->keys);
    free(h->nemeses);
    free(h);
}

const char *lc_kind_name(enum lc_kind k)
{
    switch (k) {
    case LC_GET:
        return "get";
    case LC_SET:
        return "set";
    case LC_CAS:
        return "cas";
    case LC_INCR:
        return "incr";
    }
    return "?";
}

const char *lc_outcome_name(enum lc_outcome o)
{
    switch (o) {
    case LC_OK:
        return "ok";
    case LC_FAIL:
        return "fail";
    case LC_INFO:
        return "info";
    }
    return "?";
}

const char *lc_verdict_name(enum lc_verdict v)
{
    switch (v) {
    case LC_LINEARIZABLE:
        return "LINEARIZABLE";
    case LC_VIOLATION:
        return "VIOLATION";
    case LC_UNKNOWN:
        return "UNKNOWN";
    }
    return "?";
}
