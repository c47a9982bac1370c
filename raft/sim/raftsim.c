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
#include <stddef.h>
#include <stdatomic.h>
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
          "          [--unsafe-trust-wiped] [--bug NAME] [--schedule 1|2] [--json]\n"
          "      One random fault schedule: prints the trace (unless -q) and a verdict;\n"
          "      a failure also prints its property, the trace lines before it (messages\n"
          "      of the nodes involved included), every log as a grid, and a replay line.\n"
          "      --json: the trace as JSON lines on stdout instead (docs/trace.md), the\n"
          "      verdict last as a record of kind verdict.\n"
          "      LIST is a comma list of partition,oneway,crash,pause,drop,dup,delay,\n"
          "      reorder,membership (default all; none for a calm network); with crash\n"
          "      and membership, some crashes lose the disk and the node is replaced\n"
          "      (--unsafe-trust-wiped: taken back at once). Same options, same output.\n"
          "  raftsim run [--rewrite] [--expect-only] [-v] [--json] FILE...\n"
          "      Run scenario files (tests/scenario/*.txt); --rewrite (or REWRITE=1)\n"
          "      regenerates the expected trace below the ---- line; --expect-only\n"
          "      judges only by the until/expect commands and the checker, not the\n"
          "      trace (the labs' grader, docs/labs.md). --json: each run as JSON lines\n"
          "      on stdout, its verdict last; the summary goes to stderr.\n"
          "  raftsim run --html OUT.html FILE\n"
          "      Run one scenario and write the dashboard's replay of it as one page\n"
          "      with the trace inside: it opens from file://, offline (docs/dashboard.md).\n"
          "  raftsim html OUT.html TRACE.jsonl\n"
          "      The same page for a recorded trace (raftsim --json, kvd --trace-file).\n"
          "  raftsim seeds [--from S] [--count N] [--nodes 3,5] [--jobs J] [--max-seconds T]\n"
          "          [--faults LIST] [--expect-violation PROPERTY] [unsafe options as above]\n"
          "      Many random schedules without traces; prints the replay command of each\n"
          "      failure and a summary. With --expect-violation, succeeds only when some\n"
          "      seed finds that violation (proof that the checker can fail); the seed\n"
          "      reported is the first that does, whatever --jobs.\n"
          "  raftsim soak ...        the same as seeds, with more seeds by default\n"
          "  raftsim mutants [--count N] [--max-seconds T] [--jobs J] [--bug NAME]\n"
          "          [--skip NAME,...]\n"
          "      Run every planted bug of the catalogue (or one) against the default\n"
          "      fault mix: a table of the first seed that catches each, the seeds\n"
          "      tried and the time; fails if a bug escapes N seeds (default 200).\n"
          "      --bug NAME plants one in any command; --schedule 1 replays seeds found\n"
          "      with the first random schedule. --history-only (a test knob, in any\n"
          "      command) turns the checker's index-level read check off, so that only\n"
          "      the clients' history can catch a stale read.\n"
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
    const char *skip; /* mutants: a comma list of bugs left out */
    bool quiet, messages, rewrite, verbose, expect_only, json;
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
        else if (strcmp(a, "--skip") == 0)
            c->skip = v, i++;
        else if (strcmp(a, "--prevote") == 0 && v && strcmp(v, "off") == 0)
            c->ro.prevote_off = true, i++;
        else if (strcmp(a, "--check-quorum") == 0 && v && strcmp(v, "off") == 0)
            c->ro.check_quorum_off = true, i++;
        else if (strcmp(a, "--unsafe-commit-old-term") == 0)
            c->ro.unsafe_commit_old_term = true;
        else if (strcmp(a, "--unsafe-trust-wiped") == 0)
            c->ro.unsafe_trust_wiped = true;
        else if (strcmp(a, "--history-only") == 0)
            c->ro.history_only = true;
        else if (strcmp(a, "--bug") == 0) {
            c->ro.bug = v ? sim_bug_find(v) : NULL;
            if (!c->ro.bug) {
                fprintf(stderr, "raftsim: --bug takes one of:");
                for (unsigned k = 0; k < sim_n_bugs; k++)
                    fprintf(stderr, " %s", sim_bugs[k].name);
                fprintf(stderr, "\n");
                exit(2);
            }
            i++;
        } else if (strcmp(a, "--schedule") == 0)
            c->ro.schedule = (unsigned)num(a, v), i++;
        else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0)
            c->quiet = true;
        else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)
            c->verbose = true;
        else if (strcmp(a, "--messages") == 0)
            c->messages = true;
        else if (strcmp(a, "--expect-only") == 0)
            c->expect_only = true;
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

/* How this program was started (argv[0]): replay lines must run as printed,
 * and `raftsim` is rarely on the PATH (it lives in the build folder). */
static const char *self = "raftsim";

static void replay_command(char *buf, size_t size, const struct sim_random_options *o)
{
    char schedule[32] = "";
    if (o->schedule && o->schedule != SIM_SCHEDULE_SWARM)
        snprintf(schedule, sizeof(schedule), " --schedule %u", o->schedule);
    snprintf(buf, size, "%s --seed %llu --nodes %u --faults %s%s%s%s%s%s%s%s%s", self,
             (unsigned long long)o->seed, o->nodes, o->faults ? o->faults : "all",
             o->unsafe_commit_old_term ? " --unsafe-commit-old-term" : "",
             o->unsafe_trust_wiped ? " --unsafe-trust-wiped" : "",
             o->prevote_off ? " --prevote off" : "",
             o->check_quorum_off ? " --check-quorum off" : "", o->bug ? " --bug " : "",
             o->bug ? o->bug->name : "", schedule, o->history_only ? " --history-only" : "");
}

/* Whether a line of the trace is a message line ("n1 -> n2 ...") and of
 * whom; the trace lines start with the time ("   178ms  "). */
static bool message_line(const char *line, unsigned *from, unsigned *to)
{
    const char *p = strstr(line, "ms  n");
    return p && sscanf(p, "ms  n%u -> n%u ", from, to) == 2;
}

/* The nodes a violation names ("n3 became leader ..."), as a bit set. */
static unsigned involved_nodes(const char *violation)
{
    unsigned set = 0;
    for (const char *p = violation; (p = strchr(p, 'n')) != NULL; p++) {
        unsigned id;
        if ((p == violation || p[-1] == ' ' || p[-1] == '(') && sscanf(p, "n%u", &id) == 1 &&
            id >= 1 && id <= SIM_MAX_NODES)
            set |= 1u << id;
    }
    return set;
}

enum { REPORT_LINES = 20 };

/* Print the last REPORT_LINES lines of buf..end, leaving out the message
 * lines of nodes outside the set `nodes`, after a header line that says
 * how many (header: "== the %zu ..."). */
static void print_tail(const char *buf, const char *end, unsigned nodes, const char *header)
{
    const char *kept[REPORT_LINES];
    size_t kept_len[REPORT_LINES], n_kept = 0, first = 0;
    const char *line = buf;
    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t l = nl ? (size_t)(nl - line) : (size_t)(end - line);
        unsigned from, to;
        bool keep = !message_line(line, &from, &to) ||
                    (from <= SIM_MAX_NODES && (nodes >> from & 1)) ||
                    (to <= SIM_MAX_NODES && (nodes >> to & 1));
        if (keep) {
            kept[(first + n_kept) % REPORT_LINES] = line;
            kept_len[(first + n_kept) % REPORT_LINES] = l;
            if (n_kept < REPORT_LINES)
                n_kept++;
            else
                first = (first + 1) % REPORT_LINES;
        }
        line += l + 1;
    }
    printf(header, n_kept);
    for (size_t k = 0; k < n_kept; k++) {
        size_t j = (first + k) % REPORT_LINES;
        printf("%.*s\n", (int)kept_len[j], kept[j]);
    }
}

/* A client history violation (client.c) is found at the end of the run;
 * the HISTORY lines before it narrate the failing window. Returns where
 * they start in buf (before `end`, the violation's line), or NULL. */
static const char *client_history_lines(const char *buf, const char *end, const char *what)
{
    if (!strstr(what, "client history not linearizable"))
        return NULL;
    const char *first = NULL;
    for (const char *p = buf; (p = strstr(p, "ms  HISTORY key ")) != NULL && p < end; p++)
        first = p;
    while (first && first > buf && first[-1] != '\n')
        first--;
    return first;
}

/* The end of the trace lines at or before the time the violation's op
 * completed ("... (A-B ms) ..."; "(A ms-?)" for an op that never did). */
static const char *trace_until(const char *buf, const char *limit, const char *what)
{
    unsigned long long from, to;
    const char *span = strchr(what, '(');
    if (!span)
        return limit;
    if (sscanf(span, "(%llu-%llu ms)", &from, &to) != 2 && sscanf(span, "(%llu ms-?)", &to) != 1)
        return limit;
    for (const char *line = buf; line < limit;) {
        unsigned long long t;
        if (sscanf(line, "%llums", &t) == 1 && t > to)
            return line;
        const char *nl = memchr(line, '\n', (size_t)(limit - line));
        line = nl ? nl + 1 : limit;
    }
    return limit;
}

/* A failure that teaches: run the seed again with every message traced,
 * and print the property, the REPORT_LINES lines of the trace before the
 * violation (messages only of the nodes it involves), every node's log as
 * a grid at that moment, and the replay line. */
static void report_failure(const struct sim_random_options *given)
{
    struct sim_random_options o = *given;
    char *buf = NULL, verdict[768], grid[8192] = "", replay[512];
    size_t len = 0;
    o.out = open_memstream(&buf, &len);
    if (!o.out)
        return;
    o.trace_messages = true;
    o.grid = grid;
    o.grid_size = sizeof(grid);
    int rv = sim_random_run(&o, verdict, sizeof(verdict), NULL);
    fclose(o.out);
    const char *violation = strstr(buf, "ms  VIOLATION ");
    if (rv == 1 && violation) {
        unsigned nodes = involved_nodes(violation);
        const char *end = violation;
        while (end > buf && end[-1] != '\n')
            end--;
        const char *vend = strchr(violation, '\n');
        const char *what = violation + strlen("ms  VIOLATION ");
        printf("== violated: %.*s\n", (int)(vend ? vend - what : (ptrdiff_t)strlen(what)), what);
        const char *history = client_history_lines(buf, end, what);
        if (history) {
            /* Found at the end of the run: the trace that matters is the
             * one up to the op that closes the failing window. */
            print_tail(buf, trace_until(buf, history, what), nodes,
                       "== the %zu trace lines up to the op that closes the failing window "
                       "(messages of the nodes it names only):\n");
            printf("== the client history's failing window:\n");
            end = history;
        } else {
            print_tail(buf, end, nodes,
                       "== the %zu trace lines before it (messages of the nodes it names only):\n");
        }
        printf("%.*s\n", (int)(vend ? vend - end : 0), end);
        printf("== every log at that moment (a cell is the entry's term; C: commitIndex):\n%s",
               grid);
    } else {
        printf("%s\n", verdict);
        if (rv == 1 && buf) {
            /* A liveness failure: the run ends with every node's state. */
            print_tail(buf, buf + len, 0, "== the last %zu trace lines (no messages):\n");
        }
    }
    replay_command(replay, sizeof(replay), &o);
    printf("== replay (the whole trace): %s\n", replay);
    free(buf);
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
    char verdict[768];
    int rv = sim_random_run(&c->ro, verdict, sizeof(verdict), NULL);
    if (c->json) {
        char replay[512];
        replay_command(replay, sizeof(replay), &c->ro);
        json_verdict(stdout, rv == 0, verdict, replay);
        return rv;
    }
    printf("%s\n", verdict);
    if (rv == 1)
        report_failure(&c->ro);
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

/* What a search stops at: nothing (every seed runs), a verdict that names
 * a property (--expect-violation), or any safety violation (mutants). */
enum stop { STOP_NEVER, STOP_EXPECTED, STOP_SAFETY };

struct search {
    struct sim_random_options ro; /* per seed: seed and nodes set */
    unsigned sizes[8], n_sizes;
    uint64_t from, count;
    unsigned jobs;
    double max_seconds;
    enum stop stop;
    const char *expect;
    /* Results. */
    uint64_t ran, passed, failed;
    uint64_t first;        /* offset of the first seed that stopped the search; count if none */
    bool timed_out;        /* --max-seconds ended it before every seed ran */
    bool crashed;          /* a worker died */
    char verdict[768];     /* that seed's verdict */
    struct failure *shown; /* the failures listed (STOP_NEVER), by seed */
    size_t n_shown;
};

/* Failures a worker lists; the rest are counted ("N more failures not shown"). */
enum { SHOWN_PER_JOB = 20 };

struct failure {
    uint64_t offset;
    char verdict[768];
};

static bool stops(const struct search *q, int rv, const char *verdict)
{
    if (rv != 1)
        return false;
    if (q->stop == STOP_EXPECTED)
        return strstr(verdict, q->expect) != NULL;
    return q->stop == STOP_SAFETY && strstr(verdict, " FAIL [") != NULL;
}

static void search_seed(const struct search *q, uint64_t offset, struct sim_random_options *o)
{
    *o = q->ro;
    o->seed = q->from + offset;
    o->nodes = q->sizes[o->seed % q->n_sizes];
    o->out = NULL;
}

/* One worker: offsets k, k + jobs, ... Workers share the lowest offset that
 * stopped the search so far (*best), and each stops only past it: every
 * offset below the final one has then been run by its worker, so the seed
 * reported is the first that stops the search whatever the number of jobs.
 * Writes "F offset verdict" lines and a summary line to out. */
static void search_worker(const struct search *q, unsigned k, FILE *out, double start,
                          _Atomic uint64_t *best)
{
    uint64_t passed = 0, failed = 0, ran = 0, listed = 0;
    bool timed_out = false;
    for (uint64_t i = k; i < q->count; i += q->jobs) {
        if (best && i >= atomic_load(best))
            break;
        if (q->max_seconds > 0 && wall_seconds() - start > q->max_seconds) {
            timed_out = true;
            break;
        }
        struct sim_random_options o;
        search_seed(q, i, &o);
        char verdict[768];
        int rv = sim_random_run(&o, verdict, sizeof(verdict), NULL);
        ran++;
        if (q->stop != STOP_NEVER) {
            if (stops(q, rv, verdict)) {
                fprintf(out, "F %llu %s\n", (unsigned long long)i, verdict);
                uint64_t b = atomic_load(best);
                while (i < b && !atomic_compare_exchange_weak(best, &b, i))
                    ;
                break;
            }
            continue;
        }
        if (rv == 0) {
            passed++;
        } else {
            failed++;
            if (listed++ < SHOWN_PER_JOB)
                fprintf(out, "F %llu %s\n", (unsigned long long)i, verdict);
        }
    }
    fprintf(out, "S %llu %llu %llu %d\n", (unsigned long long)ran, (unsigned long long)passed,
            (unsigned long long)failed, timed_out);
    fflush(out);
}

static int by_offset(const void *a, const void *b)
{
    const struct failure *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Run the seeds of q in q->jobs forked workers; fills q's results. */
static int search_run(struct search *q)
{
    double start = wall_seconds();
    _Atomic uint64_t *best = NULL;
    if (q->stop != STOP_NEVER) {
        void *shared =
            mmap(NULL, sizeof(*best), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (shared == MAP_FAILED) {
            perror("raftsim: mmap");
            return 2;
        }
        best = shared;
        atomic_init(best, q->count);
    }
    FILE *outs[64];
    pid_t pids[64];
    if (q->jobs > 64)
        q->jobs = 64;
    for (unsigned k = 0; k < q->jobs; k++) {
        outs[k] = tmpfile();
        if (!outs[k]) {
            perror("raftsim: tmpfile");
            return 2;
        }
        fflush(stdout);
        pids[k] = fork();
        if (pids[k] == 0) {
            search_worker(q, k, outs[k], start, best);
            _exit(0);
        }
        if (pids[k] < 0) {
            perror("raftsim: fork");
            return 2;
        }
    }
    q->ran = q->passed = q->failed = 0;
    q->first = q->count;
    q->timed_out = q->crashed = false;
    q->verdict[0] = '\0';
    q->n_shown = 0;
    size_t cap = 0;
    for (unsigned k = 0; k < q->jobs; k++) {
        int status;
        waitpid(pids[k], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            q->crashed = true;
        rewind(outs[k]);
        char line[1024];
        while (fgets(line, sizeof(line), outs[k])) {
            unsigned long long a, b, d;
            int t, at;
            line[strcspn(line, "\n")] = '\0';
            if (sscanf(line, "F %llu %n", &a, &at) == 1) {
                if (q->stop != STOP_NEVER) {
                    if (a < q->first) {
                        q->first = a;
                        snprintf(q->verdict, sizeof(q->verdict), "%s", line + at);
                    }
                    continue;
                }
                if (q->n_shown == cap) {
                    cap = cap ? cap * 2 : 32;
                    q->shown = realloc(q->shown, cap * sizeof(*q->shown));
                    if (!q->shown)
                        abort();
                }
                q->shown[q->n_shown].offset = a;
                snprintf(q->shown[q->n_shown].verdict, sizeof(q->shown[0].verdict), "%s",
                         line + at);
                q->n_shown++;
            } else if (sscanf(line, "S %llu %llu %llu %d", &a, &b, &d, &t) == 4) {
                q->ran += a, q->passed += b, q->failed += d;
                q->timed_out |= t != 0;
            }
        }
        fclose(outs[k]);
    }
    if (q->n_shown)
        qsort(q->shown, q->n_shown, sizeof(*q->shown), by_offset);
    if (best)
        munmap((void *)best, sizeof(*best));
    return 0;
}

static bool search_setup(struct search *q, struct common *c, uint64_t default_count)
{
    memset(q, 0, sizeof(*q));
    q->ro = c->ro;
    q->n_sizes = parse_sizes(c->nodes_list ? c->nodes_list : "3,5", q->sizes, 8);
    if (q->n_sizes == 0) {
        fprintf(stderr, "raftsim: --nodes takes a list like 3,5 (1..%d)\n", SIM_MAX_NODES);
        return false;
    }
    q->count = c->count ? c->count : default_count;
    q->from = c->from ? c->from : 1;
    q->jobs = c->jobs;
    if (q->jobs == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        q->jobs = cpus > 0 ? (unsigned)cpus : 1;
    }
    q->max_seconds = c->max_seconds;
    q->expect = c->expect;
    q->stop = c->expect ? STOP_EXPECTED : STOP_NEVER;
    return true;
}

static int cmd_seeds(struct common *c, uint64_t default_count)
{
    struct search q;
    if (!search_setup(&q, c, default_count))
        return 2;
    double start = wall_seconds();
    if (search_run(&q) != 0)
        return 2;
    double secs = wall_seconds() - start;
    char replay[512];
    struct sim_random_options o;
    if (q.crashed) {
        printf("raftsim seeds: a worker crashed (run the seeds alone to find which)\n");
        return 1;
    }
    if (q.stop == STOP_EXPECTED) {
        bool found = q.first < q.count;
        if (found) {
            search_seed(&q, q.first, &o);
            replay_command(replay, sizeof(replay), &o);
            printf("found: %s\nreplay: %s\n", q.verdict, replay);
            printf("raftsim seeds: found %s at the %llu-th seed (%.1f s)\n", q.expect,
                   (unsigned long long)q.first + 1, secs);
        } else {
            printf("raftsim seeds: did NOT find %s in %llu seeds (%.1f s)%s\n", q.expect,
                   (unsigned long long)q.ran, secs,
                   q.timed_out ? ", stopped at --max-seconds" : "");
        }
        return found ? 0 : 1;
    }
    for (size_t i = 0; i < q.n_shown; i++) {
        search_seed(&q, q.shown[i].offset, &o);
        replay_command(replay, sizeof(replay), &o);
        printf("%s\nreplay: %s\n", q.shown[i].verdict, replay);
    }
    if (q.failed > q.n_shown)
        printf("%llu more failures not shown (each of the %u jobs lists its first %d)\n",
               (unsigned long long)(q.failed - q.n_shown), q.jobs, SHOWN_PER_JOB);
    if (q.n_shown) {
        printf("The first failure, explained:\n");
        search_seed(&q, q.shown[0].offset, &o);
        report_failure(&o);
    }
    printf("raftsim seeds: %llu seeds from %llu (%s nodes), %llu passed, %llu failed, %.1f s\n",
           (unsigned long long)q.ran, (unsigned long long)q.from,
           c->nodes_list ? c->nodes_list : "3,5", (unsigned long long)q.passed,
           (unsigned long long)q.failed, secs);
    if (q.ran < q.count)
        printf("raftsim seeds: stopped at --max-seconds after %llu of %llu seeds\n",
               (unsigned long long)q.ran, (unsigned long long)q.count);
    free(q.shown);
    return q.failed ? 1 : 0;
}

/* Whether name is in the comma list. */
static bool listed(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
        if (strncmp(p, name, len) == 0 && (p[len] == ',' || p[len] == '\0'))
            return true;
    }
    return false;
}

/* The catalogue of planted bugs against the default fault mix: each one
 * must be caught (a safety property violated) within the seed budget. */
static int cmd_mutants(struct common *c)
{
    const struct sim_bug *only = c->ro.bug;
    if (c->max_seconds == 0)
        c->max_seconds = 10;
    printf("%-24s %-18s %12s %7s  %s\n", "bug", "first seed caught", "seeds tried", "seconds",
           "caught as");
    int escaped = 0;
    unsigned skipped = 0;
    char replays[32][512];
    unsigned n_replays = 0;
    for (unsigned b = 0; b < sim_n_bugs; b++) {
        if (only && only != &sim_bugs[b])
            continue;
        if (c->skip && listed(c->skip, sim_bugs[b].name)) {
            skipped++;
            continue;
        }
        struct search q;
        c->ro.bug = &sim_bugs[b];
        if (!search_setup(&q, c, 200))
            return 2;
        q.stop = STOP_SAFETY;
        double start = wall_seconds();
        if (search_run(&q) != 0)
            return 2;
        double secs = wall_seconds() - start;
        if (q.first < q.count) {
            struct sim_random_options o;
            search_seed(&q, q.first, &o);
            const char *prop = strstr(q.verdict, " FAIL [");
            char caught[128];
            snprintf(caught, sizeof(caught), "%s", prop ? prop + 7 : "?");
            caught[strcspn(caught, "]")] = '\0';
            printf("%-24s %-18llu %12llu %7.1f  %s\n", sim_bugs[b].name, (unsigned long long)o.seed,
                   (unsigned long long)q.first + 1, secs, caught);
            if (n_replays < 32)
                replay_command(replays[n_replays++], sizeof(replays[0]), &o);
        } else {
            escaped++;
            printf("%-24s %-18s %12llu %7.1f  ESCAPED%s\n", sim_bugs[b].name, "-",
                   (unsigned long long)q.ran, secs,
                   q.timed_out ? " (stopped at --max-seconds)" : "");
        }
        fflush(stdout);
    }
    printf("replay the catches:\n");
    for (unsigned i = 0; i < n_replays; i++)
        printf("  %s\n", replays[i]);
    unsigned ran = only ? 1 : sim_n_bugs - skipped;
    printf("mutants: %u passed, %d failed\n", ran - (unsigned)escaped, escaped);
    return escaped ? 1 : 0;
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
    int rv = sim_run_scenario_file_json(file, false, c->verbose, false, mem);
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
    int failures = 0, files = 0;
    for (; i < argc; i++) {
        i = parse(argc, argv, i, c);
        if (i >= argc)
            break;
        /* After parse: `raftsim run --rewrite FILE` names the option here. */
        bool rewrite = c->rewrite || (env && strcmp(env, "1") == 0);
        files++;
        int rv = sim_run_scenario_file_json(argv[i], rewrite, c->verbose, c->expect_only,
                                            c->json ? stdout : NULL);
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
    if (argc > 0 && strchr(argv[0], '/'))
        self = argv[0];
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
    if (strcmp(cmd, "mutants") == 0) {
        if (parse(argc, argv, i, &c) < argc) {
            fprintf(stderr, "raftsim mutants: unexpected argument\n");
            return 2;
        }
        return cmd_mutants(&c);
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
