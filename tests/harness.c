/* harness.c — runs the tests of one suite; see harness.h. */
#include "harness.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static jmp_buf current_test;
static int seed_used;
static uint64_t seed_value;

void harness_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    longjmp(current_test, 1);
}

uint64_t harness_seed(uint64_t dflt)
{
    const char *env = getenv("HARNESS_SEED");
    seed_used = 1;
    seed_value = env ? strtoull(env, NULL, 0) : dflt;
    return seed_value;
}

/* Run one test; true if it passed. Kept apart from the loop so that no
 * local of the caller lives across setjmp/longjmp. */
static bool run_one(const struct harness_test *t, const char *prog)
{
    seed_used = 0;
    if (setjmp(current_test) == 0) {
        t->fn();
        printf("  ok    %s\n", t->name);
        fflush(stdout);
        return true;
    }
    printf("  FAIL  %s", t->name);
    if (seed_used)
        printf("  (replay: HARNESS_SEED=%" PRIu64 " %s %s)", seed_value, prog, t->name);
    printf("\n");
    fflush(stdout);
    return false;
}

int harness_main(int argc, char **argv, const char *suite, const struct harness_test *tests,
                 size_t n_tests)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    unsigned passed = 0, failed = 0;

    for (size_t i = 0; i < n_tests; i++) {
        if (only && !strstr(tests[i].name, only))
            continue;
        if (run_one(&tests[i], argv[0]))
            passed++;
        else
            failed++;
    }
    printf("%s: %u passed, %u failed\n", suite, passed, failed);
    return failed ? 1 : 0;
}
