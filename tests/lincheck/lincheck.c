/* lincheck.c — the command line of the linearizability checker.
 *
 *   lincheck HISTORY [--budget-seconds S] [--html OUT.html] [--json] [--no-shrink]
 *   lincheck --generate OUT [--ops N] [--clients C] [--keys K] [--seed S] ... [--check]
 *
 * Exit status: 0 LINEARIZABLE, 1 VIOLATION, 2 UNKNOWN, 3 bad usage or input.
 */
#include "lincheck.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_BAD_INPUT 3

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lincheck HISTORY [options]     check a history (JSON lines, '-' for stdin)\n"
            "       lincheck --generate OUT [gen]  write a history of a simulated linearizable\n"
            "                                      KV service ('-' for stdout)\n"
            "\n"
            "Is there one order of all operations that respects real time and that a register\n"
            "per key would produce? docs/lincheck.md has the history format and the method.\n"
            "\n"
            "options:\n"
            "  --budget-seconds S   give up after S seconds with UNKNOWN (default 60)\n"
            "  --html OUT.html      also write a self-contained page: a timeline per key\n"
            "  --json               print the report as JSON instead of text\n"
            "  --no-shrink          on a violation, do not look for the shortest failing prefix\n"
            "\n"
            "gen (with --generate):\n"
            "  --ops N              operations (default 100000)\n"
            "  --clients C          concurrent clients (default 5)\n"
            "  --keys K             keys (default 20)\n"
            "  --seed S             random seed (default 1)\n"
            "  --info-permille P    outcomes unknown, per thousand (default 5)\n"
            "  --fail-permille P    requests refused, per thousand (default 5)\n"
            "  --nemeses N          synthetic nemesis lines, for the report (default 3)\n"
            "  --mutate KIND        break one read: phantom (a value never written) or\n"
            "                       stale (a value certainly overwritten before it began)\n"
            "  --check              check what was generated, and print both times\n"
            "\n"
            "exit status: 0 LINEARIZABLE, 1 VIOLATION, 2 UNKNOWN, 3 bad usage or input\n");
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct cli {
    const char *history;
    const char *html;
    const char *generate;
    bool is_json, is_check;
    struct lc_options check;
    struct lc_gen_options gen;
};

static int parse_number(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || *s == '\0' || *end != '\0' || errno || v < lo || v > hi) {
        fprintf(stderr, "lincheck: %s wants a number in [%g, %g], not \"%s\"\n", flag, lo, hi,
                s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct cli *c)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x = 0;
        int rc = 0;
        bool takes_value = true;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--json") == 0) {
            c->is_json = true, takes_value = false;
        } else if (strcmp(a, "--check") == 0) {
            c->is_check = true, takes_value = false;
        } else if (strcmp(a, "--no-shrink") == 0) {
            c->check.minimize = false, takes_value = false;
        } else if (strcmp(a, "--budget-seconds") == 0) {
            rc = parse_number(a, v, 1e-6, 1e6, &c->check.budget_seconds);
        } else if (strcmp(a, "--html") == 0 || strcmp(a, "--generate") == 0) {
            if (!v) {
                fprintf(stderr, "lincheck: %s wants a file\n", a);
                return -1;
            }
            *(a[2] == 'h' ? &c->html : &c->generate) = v;
        } else if (strcmp(a, "--ops") == 0) {
            rc = parse_number(a, v, 1, 1e8, &x);
            c->gen.n_ops = (size_t)x;
        } else if (strcmp(a, "--clients") == 0) {
            rc = parse_number(a, v, 1, 1000, &x);
            c->gen.n_clients = (unsigned)x;
        } else if (strcmp(a, "--keys") == 0) {
            rc = parse_number(a, v, 1, 1e6, &x);
            c->gen.n_keys = (unsigned)x;
        } else if (strcmp(a, "--seed") == 0) {
            rc = parse_number(a, v, 0, 1e18, &x);
            c->gen.seed = (uint64_t)x;
        } else if (strcmp(a, "--info-permille") == 0) {
            rc = parse_number(a, v, 0, 500, &x);
            c->gen.info_permille = (unsigned)x;
        } else if (strcmp(a, "--fail-permille") == 0) {
            rc = parse_number(a, v, 0, 500, &x);
            c->gen.fail_permille = (unsigned)x;
        } else if (strcmp(a, "--nemeses") == 0) {
            rc = parse_number(a, v, 0, 1000, &x);
            c->gen.n_nemeses = (unsigned)x;
        } else if (strcmp(a, "--mutate") == 0) {
            if (v && strcmp(v, "phantom") == 0)
                c->gen.mutate = LC_MUTATE_PHANTOM;
            else if (v && strcmp(v, "stale") == 0)
                c->gen.mutate = LC_MUTATE_STALE;
            else
                rc = -1, fprintf(stderr, "lincheck: --mutate phantom or stale\n");
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "lincheck: unknown option %s (lincheck --help)\n", a);
            return -1;
        } else if (!c->history) {
            c->history = a, takes_value = false;
        } else {
            fprintf(stderr, "lincheck: one history at a time (%s?)\n", a);
            return -1;
        }
        if (rc != 0)
            return -1;
        if (takes_value)
            i++;
    }
    if (!c->history && !c->generate) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int run_generate(struct cli *c)
{
    char err[256];
    FILE *f = strcmp(c->generate, "-") == 0 ? stdout : fopen(c->generate, "w");
    if (!f) {
        fprintf(stderr, "lincheck: %s: %s\n", c->generate, strerror(errno));
        return EXIT_BAD_INPUT;
    }
    double t0 = now_seconds();
    int rc = lc_generate(&c->gen, f, err, sizeof(err));
    if (f != stdout && fclose(f) != 0 && rc == 0) {
        snprintf(err, sizeof(err), "%s: %s", c->generate, strerror(errno));
        rc = -1;
    }
    if (rc != 0) {
        fprintf(stderr, "lincheck: %s\n", err);
        return EXIT_BAD_INPUT;
    }
    fprintf(stderr,
            "lincheck: generated %zu ops (%u clients, %u keys, seed %llu) into %s in %.2f s\n",
            c->gen.n_ops, c->gen.n_clients, c->gen.n_keys, (unsigned long long)c->gen.seed,
            c->generate, now_seconds() - t0);
    return 0;
}

static int run_check(struct cli *c)
{
    char err[512];
    struct lc_history *h;
    double t0 = now_seconds();
    if (lc_history_load(c->history, &h, err, sizeof(err)) != 0) {
        fprintf(stderr, "lincheck: %s\n", err);
        return EXIT_BAD_INPUT;
    }
    double t_read = now_seconds() - t0;
    struct lc_result r;
    if (lc_check(h, &c->check, &r) != 0) {
        fprintf(stderr, "lincheck: out of memory\n");
        lc_history_free(h);
        return EXIT_BAD_INPUT;
    }
    fprintf(stderr, "lincheck: read %zu ops in %.2f s, checked in %.2f s, %.2f s in all\n",
            h->n_ops, t_read, r.seconds, now_seconds() - t0);
    int status = r.verdict == LC_LINEARIZABLE ? 0 : r.verdict == LC_VIOLATION ? 1 : 2;
    if (c->is_json) {
        if (lc_report_json(stdout, h, &r) != 0)
            status = EXIT_BAD_INPUT;
    } else {
        lc_report_text(stdout, h, &r);
    }
    if (c->html) {
        FILE *f = fopen(c->html, "w");
        int rc = f ? lc_report_html(f, h, &r) : -1;
        if (f && fclose(f) != 0)
            rc = -1;
        if (rc != 0) {
            fprintf(stderr, "lincheck: %s: %s\n", c->html, strerror(errno));
            status = EXIT_BAD_INPUT;
        } else {
            fprintf(stderr, "lincheck: wrote %s\n", c->html);
        }
    }
    lc_result_free(&r);
    lc_history_free(h);
    return status;
}

int main(int argc, char **argv)
{
    struct cli c = {
        .check = {.minimize = true},
        .gen = {.seed = 1,
                .n_ops = 100000,
                .n_clients = 5,
                .n_keys = 20,
                .info_permille = 5,
                .fail_permille = 5,
                .n_nemeses = 3},
    };
    if (parse_args(argc, argv, &c) != 0)
        return EXIT_BAD_INPUT;
    if (c.generate) {
        int rc = run_generate(&c);
        if (rc != 0 || !c.is_check)
            return rc;
        if (strcmp(c.generate, "-") == 0) {
            fprintf(stderr, "lincheck: --check needs a file, not stdout\n");
            return EXIT_BAD_INPUT;
        }
        c.history = c.generate;
    }
    return run_check(&c);
}
