/* The in-memory log: raft/core/log.c. */
#include "../../raft/core/core.h"
#include "harness.h"

#include <stdio.h>

static void append_n(struct raft_log *l, raft_term term, int n, size_t len)
{
    char buf[4096];
    for (int i = 0; i < n; i++) {
        memset(buf, 'a' + (int)(log_last_index(l) % 26), len);
        CHECK_EQ(log_append(l, term, RAFT_ENTRY_NORMAL, buf, len), RAFT_OK);
    }
}

/* Every entry keeps its own bytes, whatever growth and wrapping happened. */
static void check_contents(const struct raft_log *l, size_t len)
{
    for (raft_index i = l->offset + 1; i <= log_last_index(l); i++) {
        struct raft_entry e;
        log_get(l, i, &e);
        CHECK_EQ(e.index, i);
        CHECK_EQ(e.len, len);
        for (size_t k = 0; k < len; k++)
            CHECK_EQ(((const char *)e.data)[k], 'a' + (int)((i - 1) % 26));
    }
}

static void test_append_get_terms(void)
{
    struct raft_log l;
    log_init(&l);
    CHECK_EQ(log_last_index(&l), 0);
    CHECK_EQ(log_last_term(&l), 0);
    append_n(&l, 1, 3, 5);
    append_n(&l, 3, 2, 5);
    CHECK_EQ(log_last_index(&l), 5);
    CHECK_EQ(log_term_at(&l, 0), 0);
    CHECK_EQ(log_term_at(&l, 3), 1);
    CHECK_EQ(log_term_at(&l, 4), 3);
    CHECK_EQ(log_term_at(&l, 6), 0);
    check_contents(&l, 5);
    log_free(&l);
}

static void test_truncate(void)
{
    struct raft_log l;
    log_init(&l);
    append_n(&l, 1, 10, 7);
    log_truncate(&l, 4);
    CHECK_EQ(log_last_index(&l), 3);
    CHECK_EQ(l.bytes_used, 21);
    append_n(&l, 2, 2, 7);
    CHECK_EQ(log_term_at(&l, 5), 2);
    check_contents(&l, 7);
    log_free(&l);
}

/* Thousands of entries: slot and byte rings grow and data survives. */
static void test_growth_preserves_data(void)
{
    struct raft_log l;
    log_init(&l);
    append_n(&l, 1, 5000, 100);
    CHECK_EQ(log_last_index(&l), 5000);
    CHECK(l.bytes_cap >= 500000);
    check_contents(&l, 100);
    log_free(&l);
}

/* Truncating and appending again reuses the rings without allocating. */
static void test_steady_state_reuses_memory(void)
{
    struct raft_log l;
    log_init(&l);
    append_n(&l, 1, 100, 64);
    uint8_t *bytes = l.bytes;
    struct log_slot *slots = l.slots;
    for (int round = 0; round < 100; round++) {
        log_truncate(&l, 51);
        append_n(&l, 1, 50, 64);
    }
    CHECK(l.bytes == bytes && l.slots == slots);
    check_contents(&l, 64);
    log_free(&l);
}

/* Terms never decrease along the log, so searches are binary. */
static void test_term_searches(void)
{
    struct raft_log l;
    log_init(&l);
    append_n(&l, 1, 3, 1); /* 1..3 */
    append_n(&l, 2, 3, 1); /* 4..6 */
    append_n(&l, 5, 3, 1); /* 7..9 */
    CHECK_EQ(log_last_index_with_term_le(&l, 9, 2), 6);
    CHECK_EQ(log_last_index_with_term_le(&l, 9, 4), 6);
    CHECK_EQ(log_last_index_with_term_le(&l, 5, 5), 5);
    CHECK_EQ(log_last_index_with_term_le(&l, 9, 0), 0);
    CHECK_EQ(log_first_index_with_term_ge(&l, 2), 4);
    CHECK_EQ(log_first_index_with_term_ge(&l, 3), 7);
    CHECK_EQ(log_first_index_with_term_ge(&l, 6), 10);
    log_free(&l);
}

static void test_empty_and_zero_length_entries(void)
{
    struct raft_log l;
    log_init(&l);
    for (int i = 0; i < 200; i++)
        CHECK_EQ(log_append(&l, 1, RAFT_ENTRY_NOOP, NULL, 0), RAFT_OK);
    append_n(&l, 1, 1, 10);
    struct raft_entry e;
    log_get(&l, 1, &e);
    CHECK_EQ(e.len, 0);
    CHECK_EQ(e.type, RAFT_ENTRY_NOOP);
    log_get(&l, 201, &e);
    CHECK_EQ(e.len, 10);
    log_free(&l);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_append_get_terms),      HARNESS_TEST(test_truncate),
        HARNESS_TEST(test_growth_preserves_data), HARNESS_TEST(test_steady_state_reuses_memory),
        HARNESS_TEST(test_term_searches),         HARNESS_TEST(test_empty_and_zero_length_entries),
    };
    return harness_main(argc, argv, "log", tests, sizeof(tests) / sizeof(tests[0]));
}
