/* html.c — a check's report as one self-contained HTML page.
 *
 * No script, no style sheet or font from elsewhere: inline CSS and SVG only,
 * so the page opens from file:// on a machine with no network. Each key gets
 * a timeline: one lane per process, each op a bar from its invoke to its
 * completion (an unknown outcome runs to the right edge, dashed), nemesis
 * windows shaded behind, the failing window outlined and the op that closes
 * it in red. Hovering a bar shows the op (SVG <title>).
 */
#include "lincheck.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DRAWN 400 /* ops drawn per key (the page stays small and quick) */
#define WIDTH_PX 1100 /* the time axis */
#define LEFT_PX 80    /* lane labels */
#define LANE_PX 20    /* height of a lane */
#define TOP_PX 28     /* axis */

static void esc(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&#39;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

struct timeline {
    const struct lc_history *h;
    const struct lc_key_result *kr;
    uint32_t *ops; /* drawn */
    size_t n;
    int64_t t0, t1;
    int64_t *lanes; /* distinct processes, sorted */
    size_t n_lanes;
};

static double x_of(const struct timeline *tl, int64_t t)
{
    if (t == LC_TIME_INFINITE || t > tl->t1)
        t = tl->t1;
    if (t < tl->t0)
        t = tl->t0;
    return LEFT_PX + (double)(t - tl->t0) * WIDTH_PX / (double)(tl->t1 - tl->t0);
}

static size_t lane_of(const struct timeline *tl, int64_t process)
{
    size_t lo = 0, hi = tl->n_lanes;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (tl->lanes[mid] <= process)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static bool in_window(const struct lc_key_result *kr, uint32_t op)
{
    for (size_t i = 0; i < kr->n_window_ops; i++)
        if (kr->window_ops[i] == op)
            return true;
    return false;
}

/* Which ops of the key to draw: all, or the last MAX_DRAWN of a failing
 * window, or the first MAX_DRAWN. */
static int timeline_pick(struct timeline *tl)
{
    const struct lc_history *h = tl->h;
    size_t n = 0;
    for (size_t i = 0; i < h->n_ops; i++)
        n += h->ops[i].key == tl->kr->key;
    tl->ops = malloc((n ? n : 1) * sizeof(*tl->ops));
    tl->lanes = malloc((n ? n : 1) * sizeof(*tl->lanes));
    if (!tl->ops || !tl->lanes)
        return -1;
    const struct lc_key_result *kr = tl->kr;
    if (kr->verdict == LC_VIOLATION && kr->n_window_ops) {
        size_t from = kr->n_window_ops > MAX_DRAWN ? kr->n_window_ops - MAX_DRAWN : 0;
        for (size_t i = from; i < kr->n_window_ops; i++)
            tl->ops[tl->n++] = kr->window_ops[i];
    } else {
        for (size_t i = 0; i < h->n_ops && tl->n < MAX_DRAWN; i++)
            if (h->ops[i].key == kr->key)
                tl->ops[tl->n++] = (uint32_t)i;
    }
    tl->t0 = INT64_MAX;
    tl->t1 = INT64_MIN;
    for (size_t i = 0; i < tl->n; i++) {
        const struct lc_op *op = &h->ops[tl->ops[i]];
        int64_t end = op->complete_ns != LC_TIME_INFINITE ? op->complete_ns
                      : op->info_ns                       ? op->info_ns
                                                          : op->invoke_ns;
        if (op->invoke_ns < tl->t0)
            tl->t0 = op->invoke_ns;
        if (end > tl->t1)
            tl->t1 = end;
        tl->lanes[i] = op->process;
    }
    if (tl->n == 0)
        tl->t0 = tl->t1 = 0;
    tl->t1 += (tl->t1 - tl->t0) / 50 + 1; /* room for the unknown ones' tails */
    qsort(tl->lanes, tl->n, sizeof(*tl->lanes), cmp_i64);
    for (size_t i = 0; i < tl->n; i++)
        if (tl->n_lanes == 0 || tl->lanes[tl->n_lanes - 1] != tl->lanes[i])
            tl->lanes[tl->n_lanes++] = tl->lanes[i];
    return 0;
}

static void draw_axis(FILE *f, const struct timeline *tl, double height)
{
    const int ticks = 8;
    for (int i = 0; i <= ticks; i++) {
        int64_t t = tl->t0 + (tl->t1 - tl->t0) * i / ticks;
        double x = x_of(tl, t);
        fprintf(f, "<line x1='%.1f' y1='%d' x2='%.1f' y2='%.1f' class='tick'/>", x, TOP_PX - 6, x,
                height);
        fprintf(f, "<text x='%.1f' y='%d' class='axis'>%.4f s</text>\n", x, TOP_PX - 10,
                (double)(t - tl->h->first_ns) / 1e9);
    }
    for (size_t l = 0; l < tl->n_lanes; l++)
        fprintf(f, "<text x='4' y='%.1f' class='lane'>process %lld</text>\n",
                TOP_PX + (double)l * LANE_PX + 14, (long long)tl->lanes[l]);
}

static void draw_nemeses(FILE *f, const struct timeline *tl, double height)
{
    const struct lc_history *h = tl->h;
    for (size_t i = 0; i < h->n_nemeses; i++) {
        const struct lc_nemesis *n = &h->nemeses[i];
        if (n->end_ns < tl->t0 || n->start_ns > tl->t1)
            continue;
        double x0 = x_of(tl, n->start_ns), x1 = x_of(tl, n->end_ns);
        fprintf(f, "<rect x='%.1f' y='%d' width='%.1f' height='%.1f' class='nemesis'><title>", x0,
                TOP_PX, x1 - x0 > 1 ? x1 - x0 : 1, height - TOP_PX);
        esc(f, n->what);
        fprintf(f, "</title></rect><text x='%.1f' y='%.1f' class='nemtext'>", x0 + 2, height - 4);
        esc(f, n->what);
        fprintf(f, "</text>\n");
    }
}

static void draw_op(FILE *f, const struct timeline *tl, uint32_t i)
{
    const struct lc_history *h = tl->h;
    const struct lc_op *op = &h->ops[i];
    const struct lc_key_result *kr = tl->kr;
    double x0 = x_of(tl, op->invoke_ns), x1 = x_of(tl, op->complete_ns);
    double y = TOP_PX + (double)lane_of(tl, op->process) * LANE_PX + 3;
    double w = x1 - x0 > 2 ? x1 - x0 : 2;
    char d[160];
    lc_op_describe(op, 40, d, sizeof(d));
    const char *cls = op->outcome == LC_OK ? "ok" : op->outcome == LC_FAIL ? "fail" : "info";
    const char *mark = "";
    if (kr->verdict == LC_VIOLATION && i == kr->culprit)
        mark = " culprit";
    else if (kr->verdict == LC_VIOLATION && in_window(kr, i))
        mark = " window";
    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%d' class='%s%s'><title>", x0, y, w,
            LANE_PX - 6, cls, mark);
    esc(f, d);
    fprintf(f, " (%s%s%s) process %lld", lc_outcome_name(op->outcome), op->error ? ": " : "",
            op->error ? op->error : "", (long long)op->process);
    if (op->node >= 0)
        fprintf(f, " node %d", op->node);
    fprintf(f, ", invoked %.6f s", (double)(op->invoke_ns - h->first_ns) / 1e9);
    if (op->complete_ns != LC_TIME_INFINITE)
        fprintf(f, ", completed %.6f s", (double)(op->complete_ns - h->first_ns) / 1e9);
    else
        fprintf(f, ", outcome unknown");
    fprintf(f, ", line %u</title></rect>", op->invoke_line);
    if (w > 60) {
        fprintf(f, "<text x='%.1f' y='%.1f' class='label'>", x0 + 3, y + 11);
        size_t room = (size_t)(w / 6.5);
        if (strlen(d) > room && room > 3)
            d[room - 1] = '\0';
        esc(f, d);
        fprintf(f, "</text>");
    }
    fputc('\n', f);
}

static int draw_key(FILE *f, const struct lc_history *h, const struct lc_key_result *kr)
{
    struct timeline tl = {.h = h, .kr = kr};
    if (timeline_pick(&tl) != 0) {
        free(tl.ops);
        free(tl.lanes);
        return -1;
    }
    fprintf(f, "<h2 class='%s'>key &quot;", lc_verdict_name(kr->verdict));
    esc(f, h->keys[kr->key]);
    fprintf(f, "&quot;: %s</h2>\n<p>", lc_verdict_name(kr->verdict));
    if (kr->verdict == LC_VIOLATION) {
        char d[160];
        lc_op_describe(&h->ops[kr->culprit], 40, d, sizeof(d));
        fprintf(f,
                "The first %zu of the key's %zu events are already not linearizable%s; the "
                "window closes with the completion of <b>",
                kr->window_events, kr->total_events,
                kr->window_is_minimal ? " (the shortest such prefix)" : "");
        esc(f, d);
        fprintf(f, "</b> by process %lld (red). Outlined: the other ops of the window. ",
                (long long)h->ops[kr->culprit].process);
    } else if (kr->verdict == LC_UNKNOWN) {
        fprintf(f, "Undecided: the search ran out of its %s. ",
                kr->unknown_reason ? kr->unknown_reason : "budget");
    }
    fprintf(f, "%zu ops drawn", tl.n);
    if (tl.n == MAX_DRAWN)
        fprintf(f, " (at most %d per key)", MAX_DRAWN);
    fprintf(f, ".</p>\n");
    double height = TOP_PX + (double)tl.n_lanes * LANE_PX + 16;
    fprintf(f, "<svg width='%d' height='%.0f' xmlns='http://www.w3.org/2000/svg'>\n",
            LEFT_PX + WIDTH_PX + 20, height);
    draw_nemeses(f, &tl, height);
    draw_axis(f, &tl, height);
    for (size_t i = 0; i < tl.n; i++)
        draw_op(f, &tl, tl.ops[i]);
    fprintf(f, "</svg>\n");
    free(tl.ops);
    free(tl.lanes);
    return 0;
}

static const char STYLE[] =
    "body{font:14px sans-serif;margin:1.5em;color:#222}"
    "h1.VIOLATION,h2.VIOLATION{color:#b00}h1.UNKNOWN,h2.UNKNOWN{color:#a60}"
    "h1.LINEARIZABLE,h2.LINEARIZABLE{color:#070}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    "svg{border:1px solid #ddd;background:#fff}"
    ".tick{stroke:#eee}.axis{font-size:10px;fill:#666;text-anchor:middle}"
    ".lane{font-size:11px;fill:#444}.label{font-size:10px;fill:#111;pointer-events:none}"
    ".ok{fill:#b7dfb7;stroke:#4a4}.fail{fill:#e4e4e4;stroke:#999}"
    ".info{fill:#fde9b5;stroke:#c90;stroke-dasharray:4 2}"
    ".window{stroke:#e67e00;stroke-width:2}.culprit{fill:#f36;stroke:#900;stroke-width:2}"
    ".nemesis{fill:#c9b3ff;opacity:.35}.nemtext{font-size:10px;fill:#5a3ea8}";

int lc_report_html(FILE *f, const struct lc_history *h, const struct lc_result *r)
{
    const char *v = lc_verdict_name(r->verdict);
    fprintf(f,
            "<!doctype html>\n<html><head><meta charset='utf-8'><title>lincheck: %s</title>"
            "<style>%s</style></head><body>\n",
            v, STYLE);
    fprintf(f,
            "<h1 class='%s'>%s</h1>\n<p>%zu ops on %zu keys, checked in %.2f s (%llu "
            "states).</p>\n",
            v, v, h->n_ops, h->n_keys, r->seconds, (unsigned long long)r->n_states);
    fprintf(f, "<table><tr><th>op</th><th>ok</th><th>fail</th><th>unknown</th></tr>\n");
    for (int k = 0; k < 4; k++) {
        size_t n[3] = {0};
        for (size_t i = 0; i < h->n_ops; i++)
            if (h->ops[i].kind == (enum lc_kind)k)
                n[h->ops[i].outcome]++;
        fprintf(f, "<tr><th>%s</th><td>%zu</td><td>%zu</td><td>%zu</td></tr>\n",
                lc_kind_name((enum lc_kind)k), n[0], n[1], n[2]);
    }
    fprintf(f,
            "</table>\n<p>Nemesis events: %zu. Bars: green ok, grey fail, yellow dashed "
            "unknown (may take effect any time after its invoke), purple shading: "
            "nemesis.</p>\n",
            h->n_nemeses);
    /* Violations first, then undecided keys, then the rest. */
    static const enum lc_verdict order[] = {LC_VIOLATION, LC_UNKNOWN, LC_LINEARIZABLE};
    for (int o = 0; o < 3; o++)
        for (size_t k = 0; k < r->n_keys; k++)
            if (r->keys[k].verdict == order[o] && draw_key(f, h, &r->keys[k]) != 0)
                return -1;
    fprintf(f, "</body></html>\n");
    return ferror(f) ? -1 : 0;
}
