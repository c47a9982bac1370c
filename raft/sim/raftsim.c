/* raftsim — run the Raft core in the deterministic simulator.
 *
 * See usage() below, docs/simulator.md for the scenario language, and
 * docs/trace.md for what the trace lines mean.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "sim.h"
#include "tracejson.h"
#include "ui.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fputs("usage:\n"
          "  raftsim [--seed S] [--nodes N] [--faults LIST] [--time MS] [-q] [--messages]\n"
          "          [--prevote off] [--check-quorum off] [--unsafe-commit-old-term]\n"
          "          [--unsafe-trust-wiped] [--json]\n"
          "      One random fault schedule: prints the trace (unless -q) and a verdict.\n"
          "      --json: the trace as JSON lines on stdout instead (docs/trace.md), the\n"
          "      verdict last as a record of kind verdict.\n"
          "      LIST is a comma list of partition,oneway,crash,pause,drop,dup,delay,\n"
          "      reorder,membership (default all; none for a calm network); with crash\n"
          "      and membership, some crashes lose the disk and the node is replaced\n"
          "      (--unsafe-trust-wiped: taken back at once). Same options, same output.\n"
          "  raftsim run [--rewrite] [-v] [--json] FILE...\n"
          "      Run scenario files (tests/scenario/*.txt); --rewrite (or REWRITE=1)\n"
          "      regenerates the expected trace below the ---- line. --json: each run as\n"
          "      JSON lines on stdout, its verdict last; the summary goes to stderr.\n"
          "  raftsim run --html OUT.html FILE\n"
          "      Run one scenario and write the dashboard's replay of it as one page\n"
          "      with the trace inside: it opens from file://, offline (docs/dashboard.md).\n"
          "  raftsim html OUT.html TRACE.jsonl\n"
          "      The same page for a recorded trace (raftsim --json, kvd --trace-file).\n"
          "  raftsim seeds [--from S] [--count N] [--nodes 3,5] [--jobs J] [--max-seconds T]\n"
          "          [--faults LIST] [--expect-violation PROPERTY] [unsafe options as above]\n"
          "      Many random schedules without traces; prints the replay command of each\n"
          "      failure and a summary. With --expect-violation, succeeds only when some\n"
          "      seed finds that violation (proof that the checker can fail).\n"
          "  raftsim soak ...        the same as seeds, with more seeds by default\n"
          "  raftsim bench [--entries N] [--batch B] [--size BYTES]\n"
          "      Throughput of the core alone (3 nodes, no I/O) and its allocations.\n",
          f);
}

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t num(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = s ? strtoull(s, &end, 10) : 0;
    if (!s || errno || *end || !*s) {
        fprintf(stderr, "raftsim: %s needs a number\n", opt);
        exit(2);
    }
    return v;
}

struct common {
    struct sim_random_options ro;
    const char *nodes_list;
    uint64_t from, count;
    double max_seconds;
    unsigned jobs;
    const char *expect;
    bool quiet, messages, rewrite, verbose, json;
    const char *html; /* run --html OUT.html */
};

/* Parse the options shared by the subcommands; returns the first non-option. */
static int parse(int argc, char **argv, int i, struct common *c)
{
    for (; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--seed") == 0 || strcmp(a, "--from") == 0)
            c->ro.seed = c->from = num(a, v), i++;
        else if (strcmp(a, "--nodes") == 0)
            c->nodes_list = v, c->ro.nodes = (unsigned)atoi(v ? v : "0"), i++;
        else if (strcmp(a, "--faults") == 0)
            c->ro.faults = v, i++;
        else if (strcmp(a, "--time") == 0)
            c->ro.chaos_ms = num(a, v), i++;
        else if (strcmp(a, "--count") == 0 || strcmp(a, "--seeds") == 0)
            c->count = num(a, v), i++;
        else if (strcmp(a, "--jobs") == 0)
            c->jobs = (unsigned)num(a, v), i++;
        else if (strcmp(a, "--max-seconds") == 0)
            c->max_seconds = (double)num(a, v), i++;
        else if (strcmp(a, "--expect-violation") == 0)
            c->expect = v, i++;
        else if (strcmp(a, "--prevote") == 0 && v && strcmp(v, "off") == 0)
            c->ro.prevote_off = true, i++;
        else if (strcmp(a, "--check-quorum") == 0 && v && strcmp(v, "off") == 0)
            c->ro.check_quorum_off = true, i++;
        else if (strcmp(a, "--unsafe-commit-old-term") == 0)
            c->ro.unsafe_commit_old_term = true;
        else if (strcmp(a, "--unsafe-trust-wiped") == 0)
            c->ro.unsafe_trust_wiped = true;
        else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0)
            c->quiet = true;
        else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)
            c->verbose = true;
        else if (strcmp(a, "--messages") == 0)
            c->messages = true;
        else if (strcmp(a, "--json") == 0)
            c->json = true;
        else if (strcmp(a, "--html") == 0)
            c->html = v, i++;
        else if (strcmp(a, "--rewrite") == 0)
            c->rewrite = true;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            usage(stdout), exit(0);
        else if (a[0] == '-') {
            fprintf(stderr, "raftsim: unknown option %s\n", a);
            usage(stderr);
            exit(2);
        } else
            return i;
        if (i >= argc) {
            fprintf(stderr, "raftsim: %s needs a value\n", a);
            exit(2);
        }
    }
    return i;
}

static void replay_command(char *buf, size_t size, const struct sim_random_options *o)
{
    snprintf(buf, size, "raftsim --seed %llu --nodes %u --faults %s%s%s%s%s",
             (unsigned long long)o->seed, o->nodes, o->faults ? o->faults : "all",
             o->unsafe_commit_old_term ? " --unsafe-commit-old-term" : "",
             o->unsafe_trust_wiped ? " --unsafe-trust-wiped" : "",
             o->prevote_off ? " --prevote off" : "",
             o->check_quorum_off ? " --check-quorum off" : "");
}

/* The last record of a run: what the checker concluded. */
static void json_verdict(FILE *f, bool ok, const char *text, const char *source)
{
    char buf[2048];
    struct tj j;
    tj_begin(&j, buf, sizeof(buf), 0, "verdict", 0, 0);
    tj_bool(&j, "ok", ok);
    tj_str(&j, "text", text);
    tj_str(&j, "source", source);
    size_t len = tj_end(&j);
    if (len)
        fwrite(buf, 1, len, f);
}

static int cmd_single(struct common *c)
{
    if (c->ro.nodes == 0)
        c->ro.nodes = 5;
    c->ro.out = c->quiet || c->json ? NULL : stdout;
    c->ro.json = c->json ? stdout : NULL;
    c->ro.trace_messages = c->messages;
    char verdict[768], replay[256];
    int rv = sim_random_run(&c->ro, verdict, sizeof(verdict), NULL);
    replay_command(replay, sizeof(replay), &c->ro);
    if (c->json) {
        json_verdict(stdout, rv == 0, verdict, replay);
        return rv;
    }
    printf("%s\n", verdict);
    if (rv == 1)
        printf("replay: %s\n", replay);
    return rv;
}

/* Parse "3,5" into a list of cluster sizes. */
static unsigned parse_sizes(const char *list, unsigned *sizes, unsigned max)
{
    unsigned n = 0;
    while (list && *list && n < max) {
        sizes[n] = (unsigned)strtoul(list, (char **)&list, 10);
        if (sizes[n] < 1 || sizes[n] > SIM_MAX_NODES)
            return 0;
        n++;
        if (*list == ',')
            list++;
        else if (*list)
            return 0;
    }
    return n;
}

/* One worker: seeds from+k, from+k+jobs, ... Writes failures and a summary
 * line to fd. */
/* Set by the first worker that finds the expected violation, so that the
 * others stop too (shared between the forked workers). */
static volatile int *found_flag;

static void seeds_worker(struct common *c, const unsigned *sizes, unsigned n_sizes, unsigned k,
                         FILE *out, double start)
{
    uint64_t passed = 0, failed = 0, found = 0, ran = 0;
    for (uint64_t i = k; i < c->count; i += c->jobs) {
        if (c->max_seconds > 0 && wall_seconds() - start > c->max_seconds)
            break;
        if (found_flag && *found_flag)
            break;
        struct sim_random_options o = c->ro;
        o.seed = c->from + i;
        o.nodes = sizes[o.seed % n_sizes];
        o.out = NULL;
        char verdict[768], replay[256];
        int rv = sim_random_run(&o, verdict, sizeof(verdict), NULL);
        ran++;
        replay_command(replay, sizeof(replay), &o);
        if (c->expect) {
            if (rv == 1 && strstr(verdict, c->expect)) {
                fprintf(out, "F found: %s\nF replay: %s\n", verdict, replay);
                found++;
                if (found_flag)
                    *found_flag = 1;
                break;
            }
            continue;
        }
        if (rv == 0) {
            passed++;
        } else {
            failed++;
            if (failed <= 20)
                fprintf(out, "F %s\nF replay: %s\n", verdict, replay);
        }
    }
    fprintf(out, "S %llu %llu %llu %llu\n", (unsigned long long)ran, (unsigned long long)passed,
            (unsigned long long)failed, (unsigned long long)found);
    fflush(out);
}

static int cmd_seeds(struct common *c, uint64_t default_count)
{
    unsigned sizes[8];
    unsigned n_sizes = parse_sizes(c->nodes_list ? c->nodes_list : "3,5", sizes, 8);
    if (n_sizes == 0) {
        fprintf(stderr, "raftsim: --nodes takes a list like 3,5 (1..%d)\n", SIM_MAX_NODES);
        return 2;
    }
    if (c->count == 0)
        c->count = default_count;
    if (c->from == 0)
        c->from = 1;
    if (c->jobs == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        c->jobs = cpus > 0 ? (unsigned)cpus : 1;
    }
    double start = wall_seconds();
    void *shared =
        mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    found_flag = shared == MAP_FAILED ? NULL : shared;
    if (found_flag)
        *found_flag = 0;
    FILE *results = tmpfile();
    if (!results) {
        perror("raftsim: tmpfile");
        return 2;
    }
    /* Each worker appends to its own temporary file; the parent reads them. */
    FILE *outs[64];
    pid_t pids[64];
    if (c->jobs > 64)
        c->jobs = 64;
    for (unsigned k = 0; k < c->jobs; k++) {
        outs[k] = k == 0 ? results : tmpfile();
        fflush(stdout);
        pids[k] = fork();
        if (pids[k] == 0) {
            seeds_worker(c, sizes, n_sizes, k, outs[k], start);
            _exit(0);
        }
        if (pids[k] < 0) {
            perror("raftsim: fork");
            return 2;
        }
    }
    uint64_t ran = 0, passed = 0, failed = 0, found = 0;
    int crashed = 0;
    for (unsigned k = 0; k < c->jobs; k++) {
        int status;
        waitpid(pids[k], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            crashed++;
        rewind(outs[k]);
        char line[1024];
        while (fgets(line, sizeof(line), outs[k])) {
            unsigned long long a, b, d, e;
            if (line[0] == 'F')
                fputs(line + 2, stdout);
            else if (sscanf(line, "S %llu %llu %llu %llu", &a, &b, &d, &e) == 4)
                ran += a, passed += b, failed += d, found += e;
        }
        fclose(outs[k]);
    }
    double secs = wall_seconds() - start;
    if (crashed) {
        printf("raftsim seeds: %d worker(s) crashed (run the seeds alone to find which)\n",
               crashed);
        return 1;
    }
    if (c->expect) {
        printf("raftsim seeds: %s %s in %llu seeds (%.1f s)\n", found ? "found" : "did NOT find",
               c->expect, (unsigned long long)ran, secs);
        return found ? 0 : 1;
    }
    printf("raftsim seeds: %llu seeds from %llu (%s nodes), %llu passed, %llu failed, %.1f s\n",
           (unsigned long long)ran, (unsigned long long)c->from,
           c->nodes_list ? c->nodes_list : "3,5", (unsigned long long)passed,
           (unsigned long long)failed, secs);
    if (ran < c->count)
        printf("raftsim seeds: stopped at --max-seconds after %llu of %llu seeds\n",
               (unsigned long long)ran, (unsigned long long)c->count);
    return failed ? 1 : 0;
}

/* Write text with every "</" as "<\/": inside a <script> element nothing
 * may close it early, and in JSON strings "\/" is "/". */
static void put_script_safe(FILE *f, const char *text, size_t len)
{
    for (size_t k = 0; k < len; k++) {
        if (text[k] == '<' && k + 1 < len && text[k + 1] == '/')
            fputs("<\\", f);
        else
            fputc(text[k], f);
    }
}

/* Text between the start of the page and a marker, then the rest after it. */
static const char *split_at(const char *page, const char *marker, size_t *before)
{
    const char *at = strstr(page, marker);
    if (!at)
        return NULL;
    *before = (size_t)(at - page);
    return at + strlen(marker);
}

/* The dashboard (ui/, built in) as one page: its style and script inline,
 * the trace (JSON lines) as a JSON array before the script. */
static int write_html(const char *out, const char *source, const char *trace, size_t trace_len)
{
    const struct ui_file *page = ui_file_find("index.html"), *css = ui_file_find("style.css"),
                         *js = ui_file_find("app.js");
    static const char link[] = "<link rel=\"stylesheet\" href=\"style.css\">";
    static const char script[] = "<script src=\"app.js\"></script>";
    char *html = page ? strndup((const char *)page->data, page->len) : NULL;
    size_t css_at, js_at;
    const char *after_css = html ? split_at(html, link, &css_at) : NULL;
    const char *after_js = after_css ? split_at(after_css, script, &js_at) : NULL;
    if (!css || !js || !after_js) {
        fprintf(stderr, "raftsim: the built-in dashboard lacks its page, style or script\n");
        free(html);
        return 2;
    }
    FILE *f = fopen(out, "wb");
    if (!f) {
        fprintf(stderr, "raftsim: %s: %s\n", out, strerror(errno));
        free(html);
        return 2;
    }
    fwrite(html, 1, css_at, f);
    fputs("<style>\n", f);
    put_script_safe(f, (const char *)css->data, css->len);
    fputs("</style>", f);
    fwrite(after_css, 1, js_at, f);
    fputs("<script type=\"application/json\" id=\"embedded-trace\" data-source=\"", f);
    for (const char *p = source; *p; p++) /* an attribute value */
        if (*p == '"' || *p == '&' || *p == '<' || *p == '>')
            fprintf(f, "&#%d;", *p);
        else
            fputc(*p, f);
    fputs("\">\n[", f);
    bool first = true;
    for (size_t at = 0; at < trace_len;) {
        const char *nl = memchr(trace + at, '\n', trace_len - at);
        size_t len = nl ? (size_t)(nl - (trace + at)) : trace_len - at;
        if (len) {
            fputs(first ? "" : ",\n", f);
            put_script_safe(f, trace + at, len);
            first = false;
        }
        at += len + 1;
    }
    fputs("]\n</script>\n<script>\n", f);
    put_script_safe(f, (const char *)js->data, js->len);
    fputs("</script>", f);
    fputs(after_js, f);
    free(html);
    if (fclose(f) != 0) {
        fprintf(stderr, "raftsim: %s: %s\n", out, strerror(errno));
        return 2;
    }
    return 0;
}

static int cmd_html(struct common *c, const char *file)
{
    char *trace = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&trace, &len);
    if (!mem) {
        perror("raftsim: open_memstream");
        return 2;
    }
    int rv = sim_run_scenario_file_json(file, false, c->verbose, mem);
    json_verdict(mem, rv == 0,
                 rv == 0 ? "the run matched its expected trace and expectations"
                         : "the run did not match its expected trace or expectations",
                 file);
    fclose(mem);
    int wrote = write_html(c->html, file, trace, len);
    free(trace);
    if (wrote == 0)
        printf("  %-5s %s -> %s\n", rv == 0 ? "ok" : "FAIL", file, c->html);
    return wrote ? wrote : rv ? 1 : 0;
}

static int cmd_html_trace(int argc, char **argv, int i)
{
    if (argc - i != 2) {
        fprintf(stderr, "raftsim html: expected OUT.html TRACE.jsonl\n");
        return 2;
    }
    FILE *f = fopen(argv[i + 1], "rb");
    char *text = NULL;
    size_t cap = 0;
    ssize_t len = f ? getdelim(&text, &cap, '\0', f) : -1;
    if (f)
        fclose(f);
    if (len <= 0) {
        fprintf(stderr, "raftsim html: %s: %s\n", argv[i + 1], f ? "empty" : strerror(errno));
        free(text);
        return 2;
    }
    /* A trace is JSON objects, one a line: refuse anything else before it is
     * put inside a page. */
    unsigned long lineno = 0;
    for (const char *p = text; p < text + len;) {
        const char *nl = memchr(p, '\n', (size_t)(text + len - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(text + len - p);
        lineno++;
        if (n && (p[0] != '{' || p[n - 1] != '}')) {
            fprintf(stderr, "raftsim html: %s:%lu: not a JSON trace record (docs/trace.md)\n",
                    argv[i + 1], lineno);
            free(text);
            return 2;
        }
        p += n + 1;
    }
    int rv = write_html(argv[i], argv[i + 1], text, (size_t)len);
    free(text);
    if (rv == 0)
        printf("  wrote %s (%lu records of %s)\n", argv[i], lineno, argv[i + 1]);
    return rv;
}

static int cmd_run(struct common *c, int argc, char **argv, int i)
{
    if (c->html || (i < argc && strcmp(argv[i], "--html") == 0)) {
        int k = parse(argc, argv, i, c);
        if (!c->html || !*c->html || k != argc - 1) {
            fprintf(stderr, "raftsim run --html: expected --html OUT.html and one scenario file\n");
            return 2;
        }
        return cmd_html(c, argv[k]);
    }
    const char *env = getenv("REWRITE");
    bool rewrite = c->rewrite || (env && strcmp(env, "1") == 0);
    int failures = 0, files = 0;
    for (; i < argc; i++) {
        i = parse(argc, argv, i, c);
        if (i >= argc)
            break;
        files++;
        int rv = sim_run_scenario_file_json(argv[i], rewrite, c->verbose, c->json ? stdout : NULL);
        if (c->json)
            json_verdict(stdout, rv == 0,
                         rv == 0 ? "the run matched its expected trace and expectations"
                                 : "the run did not match its expected trace or expectations",
                         argv[i]);
        fprintf(c->json ? stderr : stdout, "  %-5s %s\n",
                rv == 0 ? (rewrite ? "wrote" : "ok") : "FAIL", argv[i]);
        failures += rv != 0;
    }
    if (files == 0) {
        fprintf(stderr, "raftsim run: no scenario files given\n");
        return 2;
    }
    fprintf(c->json ? stderr : stdout, "scenarios: %d passed, %d failed\n", files - failures,
            failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct common c;
    memset(&c, 0, sizeof(c));
    sim_random_options_default(&c.ro, 1, 0);
    int i = parse(argc, argv, 1, &c);
    if (i >= argc)
        return cmd_single(&c);
    const char *cmd = argv[i++];
    if (strcmp(cmd, "run") == 0)
        return cmd_run(&c, argc, argv, i);
    if (strcmp(cmd, "html") == 0)
        return cmd_html_trace(argc, argv, i);
    if (strcmp(cmd, "seeds") == 0 || strcmp(cmd, "soak") == 0) {
        if (parse(argc, argv, i, &c) < argc) {
            fprintf(stderr, "raftsim %s: unexpected argument\n", cmd);
            return 2;
        }
        return cmd_seeds(&c, strcmp(cmd, "soak") == 0 ? 20000 : 1000);
    }
    if (strcmp(cmd, "bench") == 0) {
        uint64_t entries = 2000000, batch = 64, size = 64;
        for (; i < argc; i++) {
            const char *v = i + 1 < argc ? argv[i + 1] : NULL;
            if (strcmp(argv[i], "--entries") == 0)
                entries = num(argv[i], v), i++;
            else if (strcmp(argv[i], "--batch") == 0)
                batch = num(argv[i], v), i++;
            else if (strcmp(argv[i], "--size") == 0)
                size = num(argv[i], v), i++;
            else {
                usage(stderr);
                return 2;
            }
        }
        if (batch == 0 || batch > 4096) {
            fprintf(stderr, "raftsim bench: --batch must be 1..4096\n");
            return 2;
        }
        return sim_bench(entries, (unsigned)batch, (size_t)size);
    }
    fprintf(stderr, "raftsim: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
