/* harness.h — a small test harness for the C suites under tests/.
 *
 * A suite is a C file with a table of tests and a main() that hands it to
 * harness_main(). Each test is a void function; a failed CHECK prints the
 * file, line and values, marks the test failed and returns from it (through
 * longjmp), so the remaining tests still run. The last line a suite prints is
 *
 *     <suite>: N passed, M failed
 *
 * which tests/run.sh adds up. The exit status is non-zero when M > 0.
 * A test that uses randomness prints its seed with harness_seed() so a
 * failure can be replayed (HARNESS_SEED=... overrides it).
 */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <inttypes.h>
#include <stdint.h>
#include <string.h>

struct harness_test {
    const char *name;
    void (*fn)(void);
};

#define HARNESS_TEST(fn)                                                                           \
    {                                                                                              \
#fn, fn                                                                                    \
    }

int harness_main(int argc, char **argv, const char *suite, const struct harness_test *tests,
                 size_t n_tests);

/* Record a failure and leave the current test. */
_Noreturn void harness_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The seed for this test: HARNESS_SEED from the environment, or `dflt`.
 * Printed with the test's result when the test fails. */
uint64_t harness_seed(uint64_t dflt);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            harness_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                  \
    } while (0)

#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                                           \
        if (a_ != b_)                                                                              \
            harness_fail(__FILE__, __LINE__, "CHECK_EQ(%s, %s): %" PRIu64 " != %" PRIu64, #a, #b,  \
                         a_, b_);                                                                  \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (strcmp(a_, b_) != 0)                                                                   \
            harness_fail(__FILE__, __LINE__, "CHECK_STR(%s, %s): \"%s\" != \"%s\"", #a, #b, a_,    \
                         b_);                                                                      \
    } while (0)

#endif /* TESTS_HARNESS_H */
