/* report.c — what a check found, for people (text) and programs (JSON).
 *
 * The text report starts with one verdict line. A violation is shown as its
 * smallest failing window: the shortest prefix of the key's events that is
 * already not linearizable, the op whose completion closes it, and the ops
 * of the window with their processes, nodes and times; each read with the
 * value it saw and the writes it could have seen by real time alone.
 */
#include "lincheck.h"

#include <jansson.h>
#include <string.h>

#define WINDOW_SHOWN 25 /* ops of a failing window listed (the last ones) */
#define VALUE_SHOWN 40  /* characters of a value shown */
#define SEEN_SHOWN 8    /* writes a read could have seen, listed */

/* ------------------------------------------------------------------------ */
/* Words */

static void quoted(const char *v, size_t max, char *buf, size_t len)
{
    if (!v) {
        snprintf(buf, len, "absent");
        return;
    }
    size_t n = strlen(v);
    if (n > max)
        snprintf(buf, len, "\"%.*s...\"", (int)max, v);
    else
        snprintf(buf, len, "\"%s\"", v);
}

char *lc_op_describe(const struct lc_op *op, size_t max_value, char *buf, size_t len)
{
    char a[96], b[96];
    switch (op->kind) {
    case LC_GET:
        if (op->outcome == LC_OK) {
            quoted(op->value, max_value, a, sizeof(a));
            snprintf(buf, len, "get -> %s", a);
        } else {
            snprintf(buf, len, "get -> ?");
        }
        break;
    case LC_SET:
        quoted(op->value, max_value, a, sizeof(a));
        snprintf(buf, len, "set %s", a);
        break;
    case LC_CAS:
        quoted(op->expected, max_value, a, sizeof(a));
        quoted(op->value, max_value, b, sizeof(b));
        snprintf(buf, len, "cas %s -> %s", a, b);
        break;
    case LC_INCR:
        if (op->outcome == LC_OK)
            snprintf(buf, len, "incr %+lld -> %lld", (long long)op->delta, (long long)op->result);
        else
            snprintf(buf, len, "incr %+lld -> ?", (long long)op->delta);
        break;
    }
    return buf;
}

static double rel_seconds(const struct lc_history *h, int64_t t)
{
    return (double)(t - h->first_ns) / 1e9;
}

/* "1.234567-1.240000" or "1.234567-?" for an unknown outcome. */
static void time_span(const struct lc_history *h, const struct lc_op *op, char *buf, size_t len)
{
    if (op->complete_ns == LC_TIME_INFINITE)
        snprintf(buf, len, "%.6f-?", rel_seconds(h, op->invoke_ns));
    else
        snprintf(buf, len, "%.6f-%.6f", rel_seconds(h, op->invoke_ns),
                 rel_seconds(h, op->complete_ns));
}

static void outcome_word(const struct lc_op *op, char *buf, size_t len)
{
    if (op->outcome != LC_OK && op->error)
        snprintf(buf, len, "%s (%s)", lc_outcome_name(op->outcome), op->error);
    else if (op->outcome == LC_INFO && !op->complete_line)
        snprintf(buf, len, "info (never completed)");
    else
        snprintf(buf, len, "%s", lc_outcome_name(op->outcome));
}

/* The writes `op` (a read) could have seen, in words. */
static void seen_words(const struct lc_history *h, uint32_t op, char *buf, size_t len)
{
    uint32_t seen[SEEN_SHOWN + 1];
    size_t n = lc_could_have_seen(h, op, seen, SEEN_SHOWN + 1);
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && i < SEEN_SHOWN && used < len; i++) {
        char v[256];
        if (seen[i] == UINT32_MAX) {
            snprintf(v, sizeof(v), "absent");
        } else {
            const struct lc_op *w = &h->ops[seen[i]];
            char d[128];
            lc_op_describe(w, VALUE_SHOWN, d, sizeof(d));
            snprintf(v, sizeof(v), "%s (p%lld%s)", d, (long long)w->process,
                     w->outcome == LC_INFO ? ", info" : "");
        }
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", v);
    }
    if (n > SEEN_SHOWN && used < len)
        snprintf(buf + used, len - used, ", ...");
}

/* ------------------------------------------------------------------------ */
/* Text */

static void text_counts(FILE *f, const struct lc_history *h)
{
    size_t count[4][3] = {{0}};
    for (size_t i = 0; i < h->n_ops; i++)
        count[h->ops[i].kind][h->ops[i].outcome]++;
    fprintf(f, "  %-6s %9s %9s %9s\n", "op", "ok", "fail", "unknown");
    for (int k = 0; k < 4; k++)
        fprintf(f, "  %-6s %9zu %9zu %9zu\n", lc_kind_name((enum lc_kind)k), count[k][LC_OK],
                count[k][LC_FAIL], count[k][LC_INFO]);
    fprintf(f, "  nemesis events: %zu\n", h->n_nemeses);
    for (size_t i = 0; i < h->n_nemeses; i++)
        fprintf(f, "    %.6f-%.6f s  %s\n", rel_seconds(h, h->nemeses[i].start_ns),
                rel_seconds(h, h->nemeses[i].end_ns), h->nemeses[i].what);
}

static void text_op_line(FILE *f, const struct lc_history *h, uint32_t i, bool is_culprit)
{
    const struct lc_op *op = &h->ops[i];
    char span[64], d[128], oc[64], node[16];
    time_span(h, op, span, sizeof(span));
    lc_op_describe(op, VALUE_SHOWN, d, sizeof(d));
    outcome_word(op, oc, sizeof(oc));
    if (op->node >= 0)
        snprintf(node, sizeof(node), "%d", op->node);
    else
        snprintf(node, sizeof(node), "-");
    fprintf(f, "  %s %-24s %7lld %4s  %-30s %-16s line %u\n", is_culprit ? "=>" : "  ", span,
            (long long)op->process, node, d, oc, op->invoke_line);
    if (op->kind == LC_GET && op->outcome == LC_OK) {
        char seen[1024];
        seen_words(h, i, seen, sizeof(seen));
        fprintf(f, "     %-24s could have seen: %s\n", "", seen);
    }
}

static void text_violation(FILE *f, const struct lc_history *h, const struct lc_key_result *kr)
{
    const char *key = h->keys[kr->key];
    fprintf(f, "\nkey \"%s\": VIOLATION\n", key);
    fprintf(f,
            "  the first %zu of its %zu events (invokes and completions, by time) are already\n"
            "  not linearizable%s. The window closes with the completion of:\n",
            kr->window_events, kr->total_events,
            kr->window_is_minimal ? " and no shorter prefix is" : " (shrinking ran out of budget)");
    text_op_line(f, h, kr->culprit, true);
    fprintf(f,
            "  No order of the %zu ops invoked in the window respects real time and gives\n"
            "  every op its result.\n",
            kr->n_window_ops);
    size_t from = kr->n_window_ops > WINDOW_SHOWN ? kr->n_window_ops - WINDOW_SHOWN : 0;
    fprintf(f, "\n  the window's ops, in invoke order%s:\n", from ? " (the last ones)" : "");
    fprintf(f, "     %-24s %7s %4s  %-30s %-16s\n", "time (s)", "process", "node", "op", "outcome");
    if (from)
        fprintf(f, "     ... %zu earlier ops\n", from);
    for (size_t i = from; i < kr->n_window_ops; i++)
        text_op_line(f, h, kr->window_ops[i], kr->window_ops[i] == kr->culprit);
}

void lc_report_text(FILE *f, const struct lc_history *h, const struct lc_result *r)
{
    size_t n_bad = 0, n_unknown = 0;
    for (size_t k = 0; k < r->n_keys; k++) {
        n_bad += r->keys[k].verdict == LC_VIOLATION;
        n_unknown += r->keys[k].verdict == LC_UNKNOWN;
    }
    fprintf(f, "%s: %zu ops on %zu keys", lc_verdict_name(r->verdict), h->n_ops, h->n_keys);
    if (n_bad)
        fprintf(f, ", %zu key%s not linearizable", n_bad, n_bad > 1 ? "s" : "");
    if (n_unknown)
        fprintf(f, ", %zu key%s undecided", n_unknown, n_unknown > 1 ? "s" : "");
    fprintf(f, " (%.2f s, %llu states)\n", r->seconds, (unsigned long long)r->n_states);
    text_counts(f, h);
    for (size_t k = 0; k < r->n_keys; k++) {
        const struct lc_key_result *kr = &r->keys[k];
        if (kr->verdict == LC_UNKNOWN)
            fprintf(f, "\nkey \"%s\": UNKNOWN (%s after %.2f s, %llu states, %zu ops)\n",
                    h->keys[kr->key], kr->unknown_reason ? kr->unknown_reason : "budget",
                    kr->seconds, (unsigned long long)kr->n_states, kr->n_checked);
    }
    for (size_t k = 0; k < r->n_keys; k++)
        if (r->keys[k].verdict == LC_VIOLATION)
            text_violation(f, h, &r->keys[k]);
    if (r->verdict == LC_UNKNOWN)
        fprintf(f, "\nUNKNOWN is not a pass: the search ran out of budget before it could prove\n"
                   "either answer (try --budget-seconds, or a shorter history).\n");
}

/* ------------------------------------------------------------------------ */
/* JSON */

static json_t *json_str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *json_op(const struct lc_history *h, uint32_t i, bool with_seen)
{
    const struct lc_op *op = &h->ops[i];
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(i));
    json_object_set_new(o, "line", json_integer(op->invoke_line));
    json_object_set_new(o, "process", json_integer(op->process));
    if (op->node >= 0)
        json_object_set_new(o, "node", json_integer(op->node));
    json_object_set_new(o, "op", json_string(lc_kind_name(op->kind)));
    json_object_set_new(o, "key", json_string(h->keys[op->key]));
    json_object_set_new(o, "outcome", json_string(lc_outcome_name(op->outcome)));
    if (op->error)
        json_object_set_new(o, "error", json_string(op->error));
    switch (op->kind) {
    case LC_GET:
        if (op->outcome == LC_OK)
            json_object_set_new(o, "value", json_str_or_null(op->value));
        break;
    case LC_SET:
        json_object_set_new(o, "value", json_string(op->value));
        break;
    case LC_CAS:
        json_object_set_new(o, "expected", json_str_or_null(op->expected));
        json_object_set_new(o, "value", json_string(op->value));
        break;
    case LC_INCR:
        json_object_set_new(o, "delta", json_integer(op->delta));
        if (op->outcome == LC_OK)
            json_object_set_new(o, "value", json_integer(op->result));
        break;
    }
    json_object_set_new(o, "invoke", json_integer(op->invoke_ns));
    json_object_set_new(o, "complete",
                        op->complete_ns == LC_TIME_INFINITE ? json_null()
                                                            : json_integer(op->complete_ns));
    if (with_seen && op->kind == LC_GET && op->outcome == LC_OK) {
        uint32_t seen[SEEN_SHOWN * 4];
        size_t n = lc_could_have_seen(h, i, seen, SEEN_SHOWN * 4);
        json_t *a = json_array();
        for (size_t j = 0; j < n; j++)
            json_array_append_new(a, seen[j] == UINT32_MAX ? json_null() : json_integer(seen[j]));
        json_object_set_new(o, "could_have_seen", a);
    }
    return o;
}

static json_t *json_key(const struct lc_history *h, const struct lc_key_result *kr)
{
    json_t *o = json_object();
    json_object_set_new(o, "key", json_string(h->keys[kr->key]));
    json_object_set_new(o, "verdict", json_string(lc_verdict_name(kr->verdict)));
    json_object_set_new(o, "checked", json_integer((json_int_t)kr->n_checked));
    json_object_set_new(o, "dropped", json_integer((json_int_t)kr->n_dropped));
    json_object_set_new(o, "states", json_integer((json_int_t)kr->n_states));
    json_object_set_new(o, "seconds", json_real(kr->seconds));
    if (kr->verdict == LC_UNKNOWN)
        json_object_set_new(o, "unknown_reason", json_str_or_null(kr->unknown_reason));
    if (kr->verdict != LC_VIOLATION)
        return o;
    json_t *w = json_object();
    json_object_set_new(w, "events", json_integer((json_int_t)kr->window_events));
    json_object_set_new(w, "total_events", json_integer((json_int_t)kr->total_events));
    json_object_set_new(w, "minimal", json_boolean(kr->window_is_minimal));
    json_object_set_new(w, "culprit", json_op(h, kr->culprit, true));
    json_t *ops = json_array();
    for (size_t i = 0; i < kr->n_window_ops; i++) {
        bool with_seen = i + WINDOW_SHOWN * 4 >= kr->n_window_ops; /* the last ones */
        json_array_append_new(ops, json_op(h, kr->window_ops[i], with_seen));
    }
    json_object_set_new(w, "ops", ops);
    json_object_set_new(o, "window", w);
    return o;
}

int lc_report_json(FILE *f, const struct lc_history *h, const struct lc_result *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "verdict", json_string(lc_verdict_name(r->verdict)));
    json_object_set_new(o, "ops", json_integer((json_int_t)h->n_ops));
    json_object_set_new(o, "seconds", json_real(r->seconds));
    json_object_set_new(o, "states", json_integer((json_int_t)r->n_states));
    json_t *counts = json_object();
    for (int k = 0; k < 4; k++) {
        json_t *c = json_object();
        size_t n[3] = {0};
        for (size_t i = 0; i < h->n_ops; i++)
            if (h->ops[i].kind == (enum lc_kind)k)
                n[h->ops[i].outcome]++;
        json_object_set_new(c, "ok", json_integer((json_int_t)n[LC_OK]));
        json_object_set_new(c, "fail", json_integer((json_int_t)n[LC_FAIL]));
        json_object_set_new(c, "info", json_integer((json_int_t)n[LC_INFO]));
        json_object_set_new(counts, lc_kind_name((enum lc_kind)k), c);
    }
    json_object_set_new(o, "counts", counts);
    json_t *nem = json_array();
    for (size_t i = 0; i < h->n_nemeses; i++) {
        json_t *n = json_object();
        json_object_set_new(n, "what", json_string(h->nemeses[i].what));
        json_object_set_new(n, "start", json_integer(h->nemeses[i].start_ns));
        json_object_set_new(n, "end", json_integer(h->nemeses[i].end_ns));
        json_array_append_new(nem, n);
    }
    json_object_set_new(o, "nemeses", nem);
    json_t *keys = json_array();
    for (size_t k = 0; k < r->n_keys; k++)
        json_array_append_new(keys, json_key(h, &r->keys[k]));
    json_object_set_new(o, "keys", keys);
    int rc = json_dumpf(o, f, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (rc == 0 && fputc('\n', f) == EOF)
        rc = -1;
    return rc;
}
