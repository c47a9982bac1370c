/* fuzz.h — what the libFuzzer targets share. */
#ifndef TESTS_FUZZ_H
#define TESTS_FUZZ_H

#include <stdlib.h>

/* A property every input must keep; libFuzzer reports a broken one with
 * the input that broke it. */
static inline void fuzz_assert(int ok)
{
    if (!ok)
        abort();
}

#endif /* TESTS_FUZZ_H */
