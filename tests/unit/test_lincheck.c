/* The linearizability checker: tests/lincheck (docs/lincheck.md). A checker
 * is only worth something if it can fail, so most of these tests are
 * histories that must be refused: a stale read, a lost write, two cas that
 * both won, an incr that counted wrong, an unknown write that comes too
 * late to explain a read. The others must pass: overlapping ops in either
 * order, unknown writes that did or did not happen. Then generated
 * histories, linearizable by construction, with one read broken on purpose;
 * and budgets too small to decide, which must say UNKNOWN and nothing else.
 *
 * Hand-written histories use ' for " (q() swaps them); times are plain
 * integers, in invoke order. */
#include "harness.h"
#include "lincheck/lincheck.h"

#include <stdio.h>
#include <stdlib.h>

static char err[512];

/* Swap ' for " so that histories read as JSON lines in the source. */
static char *q(const char *text)
{
    char *s = strdup(text);
    if (!s)
        harness_fail(__FILE__, __LINE__, "out of memory");
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    return s;
}

static struct lc_history *parse_ok(const char *text)
{
    char *s = q(text);
    struct lc_history *h = NULL;
    int rc = lc_history_parse(s, "test", &h, err, sizeof(err));
    free(s);
    if (rc != 0)
        harness_fail(__FILE__, __LINE__, "history refused: %s", err);
    return h;
}

static enum lc_verdict verdict_with(struct lc_history *h, double budget, size_t max_bytes)
{
    struct lc_options o = {
        .budget_seconds = budget, .max_cache_bytes = max_bytes, .minimize = true};
    struct lc_result r;
    CHECK_EQ(lc_check(h, &o, &r), 0);
    enum lc_verdict v = r.verdict;
    lc_result_free(&r);
    return v;
}

static enum lc_verdict verdict_of(const char *text)
{
    struct lc_history *h = parse_ok(text);
    enum lc_verdict v = verdict_with(h, 10, 0);
    lc_history_free(h);
    return v;
}

#define EXPECT(text, v)                                                                            \
    do {                                                                                           \
        enum lc_verdict got_ = verdict_of(text);                                                   \
        if (got_ != (v))                                                                           \
            harness_fail(__FILE__, __LINE__, "expected %s, got %s", lc_verdict_name(v),            \
                         lc_verdict_name(got_));                                                   \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Hand-written histories */

static void test_sequential_history_is_linearizable(void)
{
    EXPECT("{'type':'invoke','process':1,'op':'get','key':'x','time':1}\n"
           "{'type':'ok','process':1,'op':'get','key':'x','value':null,'time':2}\n"
           "{'type':'invoke','process':1,'op':'set','key':'x','value':'5','time':3,'node':2}\n"
           "{'type':'ok','process':1,'op':'set','key':'x','time':4}\n"
           "{'type':'invoke','process':2,'op':'get','key':'x','time':5}\n"
           "{'type':'ok','process':2,'op':'get','key':'x','value':'5','time':6}\n",
           LC_LINEARIZABLE);
}

/* A read overlapping a write may return the old value or the new one. */
static void test_overlapping_ops_may_take_either_order(void)
{
    const char *prefix = "{'type':'invoke','process':1,'op':'set','key':'x','value':'1','time':1}\n"
                         "{'type':'ok','process':1,'time':2}\n"
                         "{'type':'invoke','process':1,'op':'set','key':'x','value':'2','time':3}\n"
                         "{'type':'invoke','process':2,'op':'get','key':'x','time':4}\n"
                         "{'type':'invoke','process':3,'op':'get','key':'x','time':5}\n";
    char buf[2048];
    /* Both reads inside the write: one sees the new value, the later one the old -- fine,
     * the reads overlap each other too. */
    snprintf(buf, sizeof(buf), "%s%s", prefix,
             "{'type':'ok','process':2,'value':'2','time':6}\n"
             "{'type':'ok','process':3,'value':'1','time':7}\n"
             "{'type':'ok','process':1,'time':8}\n");
    EXPECT(buf, LC_LINEARIZABLE);
    /* But once a read that saw the new value has completed, a read invoked later cannot
     * see the old one: process 4 starts after process 2 finished. */
    snprintf(buf, sizeof(buf), "%s%s", prefix,
             "{'type':'ok','process':2,'value':'2','time':6}\n"
             "{'type':'ok','process':3,'value':'2','time':7}\n"
             "{'type':'invoke','process':4,'op':'get','key':'x','time':8}\n"
             "{'type':'ok','process':4,'value':'1','time':9}\n"
             "{'type':'ok','process':1,'time':10}\n");
    EXPECT(buf, LC_VIOLATION);
}

static void test_stale_read_is_a_violation(void)
{
    EXPECT("{'type':'invoke','process':1,'op':'set','key':'x','value':'1','time':1}\n"
           "{'type':'ok','process':1,'time':2}\n"
           "{'type':'invoke','process':1,'op':'set','key':'x','value':'2','time':3}\n"
           "{'type':'ok','process':1,'time':4}\n"
           "{'type':'invoke','process':2,'op':'get','key':'x','time':5}\n"
           "{'type':'ok','process':2,'value':'1','time':6}\n",
           LC_VIOLATION);
}

/* An acknowledged write that a later read does not see, and no write after it. */
static void test_lost_write_is_a_violation(void)
{
    EXPECT("{'type':'invoke','process':1,'op':'set','key':'x','value':'1','time':1}\n"
           "{'type':'ok','process':1,'time':2}\n"
           "{'type':'invoke','process':2,'op':'get','key':'x','time':3}\n"
           "{'type':'ok','process':2,'value':null,'time':4}\n",
           LC_VIOLATION);
}

/* Two cas from the same expected value both succeed, one after the other. */
static void test_two_cas_winning_from_the_same_value_is_a_violation(void)
{
    const char *base = "{'type':'invoke','process':1,'op':'set','key':'x','value':'0','time':1}\n"
                       "{'type':'ok','process':1,'time':2}\n"
                       "{'type':'invoke','process':2,'op':'cas','key':'x','expected':'0',"
                       "'value':'a','time':3}\n"
                       "{'type':'ok','process':2,'time':4}\n"
                       "{'type':'invoke','process':3,'op':'cas','key':'x','expected':'0',"
                       "'value':'b','time':5}\n";
    char buf[2048];
    snprintf(buf, sizeof(buf), "%s{'type':'ok','process':3,'time':6}\n", base);
    EXPECT(buf, LC_VIOLATION);
    snprintf(buf, sizeof(buf), "%s{'type':'fail','process':3,'error':'mismatch','time':6}\n", base);
    EXPECT(buf, LC_LINEARIZABLE);
    /* A mismatch is checked too: nothing else could have changed "0" here. */
    EXPECT("{'type':'invoke','process':1,'op':'set','key':'x','value':'0','time':1}\n"
           "{'type':'ok','process':1,'time':2}\n"
           "{'type':'invoke','process':2,'op':'cas','key':'x','expected':'0','value':'a',"
           "'time':3}\n"
           "{'type':'fail','process':2,'error':'mismatch','time':4}\n",
           LC_VIOLATION);
    /* A cas expecting the key absent (SET NX). */
    EXPECT("{'type':'invoke','process':1,'op':'cas','key':'x','expected':null,'value':'a',"
           "'time':1}\n"
           "{'type':'ok','process':1,'time':2}\n"
           "{'type':'invoke','process':1,'op':'get','key':'x','time':3}\n"
           "{'type':'ok','process':1,'value':'a','time':4}\n",
           LC_LINEARIZABLE);
}

/* A write whose outcome is unknown may have happened, even long after its client gave up. */
static void test_unknown_write_can_explain_a_later_read(void)
{
    EXPECT("{'type':'invoke','process':1,'op':'set','key':'x','value':'1','time':1}\n"
           "{'type':'info','process':1,'error':'timeout','time':2}\n"
           "{'type':'invoke','process':2,'op':'get','key':'x','time':3}\n"
           "{'type':'ok','process':2,'value':null,'time':4}\n"
           "{'type':'invoke','process':2,'op':'get','key':'x','time':5}\n"
           "{'type':'ok','process':2,'value':'1','time':6}\n"
           "{'type':'invoke','process':2,'op':'get','key':'x','time':7}\n"
           "{'type':'ok','process':2,'value':'1','time':8}\n",
           LC_LINEARIZABLE);
    /* ... or never: an invoke with no completion at all counts as unknown. */
    EXPECT("{'type':'invoke','process':1,'op':'set','key':'x','value':'1','time':1}\n"
           "{'type':'invoke','process':2,'op':'get','key':'x','time':3}\n"
           "{'type':'ok','process':2,'value':null,'time':4}\n",
           LC_LINEARIZABLE);
}

static void test_unknown_write_cannot_explain_what_came_before_it(void)
{
    /* The read completed before the unknown write was even invoked. */
    EXPECT("{'type':'invoke','process':2,'op':'get','key':'x','time':1}\n"
           "{'type':'ok','process':2,'value':'1','time':2}\n"
           "{'type':'invoke','process':1,'op':'set','key':'x','value':'1','time':3}\n"
           "{'type':'info','process':1,'time':4}\n",
           LC_VIOLATION);
    /* And it takes effect once at most: 1, then 2, then 1 again is one write too many. */
    EXPECT("{'type':'invoke','process':1,'op':'set','key':'x','value':'1','time':1}\n"
           "{'type':'info','process':1,'time':2}\n"
           "{'type':'invoke','process':2,'op':'get','key':'x','time':3}\n"
           "{'type':'ok','process':2,'value':'1','time':4}\n"
           "{'type':'invoke','process':2,'op':'set','key':'x','value':'2','time':5}\n"
           "{'type':'ok','process':2,'time':6}\n"
           "{'type':'invoke','process':2,'op':'get','key':'x','time':7}\n"
           "{'type':'ok','process':2,'value':'1','time':8}\n",
           LC_VIOLATION);
}

static void test_incr(void)
{
    const char *two_incrs =
        "{'type':'invoke','process':1,'op':'incr','key':'n','delta':2,'time':1}\n"
        "{'type':'ok','process':1,'value':2,'time':2}\n"
        "{'type':'invoke','process':1,'op':'incr','key':'n','delta':3,'time':3}\n";
    char buf[2048];
    snprintf(buf, sizeof(buf), "%s{'type':'ok','process':1,'value':5,'time':4}\n", two_incrs);
    EXPECT(buf, LC_LINEARIZABLE);
    snprintf(buf, sizeof(buf), "%s{'type':'ok','process':1,'value':'5','time':4}\n", two_incrs);
    EXPECT(buf, LC_LINEARIZABLE); /* the result as a decimal string is taken too */
    snprintf(buf, sizeof(buf), "%s{'type':'ok','process':1,'value':4,'time':4}\n", two_incrs);
    EXPECT(buf, LC_VIOLATION);
    /* Two unknown incrs, one of which happened: 0 + 1 (unknown) + 1 (unknown) + 10 = 11. */
    EXPECT("{'type':'invoke','process':1,'op':'incr','key':'n','delta':1,'time':1}\n"
           "{'type':'info','process':1,'time':2}\n"
           "{'type':'invoke','process':2,'op':'incr','key':'n','delta':1,'time':3}\n"
           "{'type':'info','process':2,'time':4}\n"
           "{'type':'invoke','process':3,'op':'incr','key':'n','delta':10,'time':5}\n"
           "{'type':'ok','process':3,'value':11,'time':6}\n"
           "{'type':'invoke','process':3,'op':'incr','key':'n','delta':10,'time':7}\n"
           "{'type':'ok','process':3,'value':22,'time':8}\n",
           LC_LINEARIZABLE);
    /* ... but not three of them. */
    EXPECT("{'type':'invoke','process':1,'op':'incr','key':'n','delta':1,'time':1}\n"
           "{'type':'info','process':1,'time':2}\n"
           "{'type':'invoke','process':2,'op':'incr','key':'n','delta':1,'time':3}\n"
           "{'type':'info','process':2,'time':4}\n"
           "{'type':'invoke','process':3,'op':'incr','key':'n','delta':10,'time':5}\n"
           "{'type':'ok','process':3,'value':13,'time':6}\n",
           LC_VIOLATION);
    /* incr on a value that is not an integer fails, and that is checked. */
    const char *set_abc =
        "{'type':'invoke','process':1,'op':'set','key':'n','value':'abc','time':1}\n"
        "{'type':'ok','process':1,'time':2}\n"
        "{'type':'invoke','process':1,'op':'incr','key':'n','delta':1,'time':3}\n";
    snprintf(buf, sizeof(buf), "%s{'type':'fail','process':1,'error':'not-integer','time':4}\n",
             set_abc);
    EXPECT(buf, LC_LINEARIZABLE);
    snprintf(buf, sizeof(buf), "%s{'type':'ok','process':1,'value':1,'time':4}\n", set_abc);
    EXPECT(buf, LC_VIOLATION);
    /* "07" is not an integer to incr (Redis' rule), "7" is. */
    EXPECT("{'type':'invoke','process':1,'op':'set','key':'n','value':'07','time':1}\n"
           "{'type':'ok','process':1,'time':2}\n"
           "{'type':'invoke','process':1,'op':'incr','key':'n','delta':1,'time':3}\n"
           "{'type':'ok','process':1,'value':8,'time':4}\n",
           LC_VIOLATION);
}

/* Keys are independent: a violation on one is found among many good ones. */
static void test_keys_are_checked_apart(void)
{
    EXPECT("{'type':'invoke','process':1,'op':'set','key':'a','value':'1','time':1}\n"
           "{'type':'invoke','process':2,'op':'set','key':'b','value':'1','time':1}\n"
           "{'type':'ok','process':1,'time':2}\n"
           "{'type':'ok','process':2,'time':2}\n"
           "{'type':'invoke','process':1,'op':'get','key':'a','time':3}\n"
           "{'type':'invoke','process':2,'op':'get','key':'b','time':3}\n"
           "{'type':'ok','process':1,'value':'1','time':4}\n"
           "{'type':'ok','process':2,'value':null,'time':4}\n",
           LC_VIOLATION);
}

static void test_malformed_histories_are_refused_with_the_line(void)
{
    static const char *const bad[] = {
        /* a process invokes twice */
        "{'type':'invoke','process':1,'op':'get','key':'x','time':1}\n"
        "{'type':'invoke','process':1,'op':'get','key':'x','time':2}\n",
        /* a process comes back after info */
        "{'type':'invoke','process':1,'op':'set','key':'x','value':'1','time':1}\n"
        "{'type':'info','process':1,'time':2}\n"
        "{'type':'invoke','process':1,'op':'get','key':'x','time':3}\n",
        /* a completion before its invoke, one without an invoke, an unknown op */
        "{'type':'invoke','process':1,'op':'get','key':'x','time':5}\n"
        "{'type':'ok','process':1,'value':null,'time':4}\n",
        "{'type':'ok','process':1,'time':4}\n",
        "{'type':'invoke','process':1,'op':'append','key':'x','time':5}\n",
        /* a read with no value, a completion of another op */
        "{'type':'invoke','process':1,'op':'get','key':'x','time':1}\n"
        "{'type':'ok','process':1,'time':2}\n",
        "{'type':'invoke','process':1,'op':'get','key':'x','time':1}\n"
        "{'type':'ok','process':1,'op':'set','time':2}\n",
        "not json\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *s = q(bad[i]);
        struct lc_history *h = NULL;
        int rc = lc_history_parse(s, "bad", &h, err, sizeof(err));
        free(s);
        if (rc == 0) {
            lc_history_free(h);
            harness_fail(__FILE__, __LINE__, "history %zu was accepted", i);
        }
        CHECK(strncmp(err, "bad:", 4) == 0);
    }
}

/* ------------------------------------------------------------------------ */
/* Generated histories */

static struct lc_history *generated(uint64_t seed, size_t n_ops, unsigned info_permille,
                                    enum lc_mutation m)
{
    struct lc_gen_options o = {.seed = seed,
                               .n_ops = n_ops,
                               .n_clients = 5,
                               .n_keys = 4,
                               .info_permille = info_permille,
                               .fail_permille = 10,
                               .n_nemeses = 2,
                               .mutate = m};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL);
    int rc = lc_generate(&o, f, err, sizeof(err));
    fclose(f);
    if (rc != 0) {
        free(text);
        harness_fail(__FILE__, __LINE__, "generate: %s", err);
    }
    struct lc_history *h = NULL;
    rc = lc_history_parse(text, "generated", &h, err, sizeof(err));
    free(text);
    if (rc != 0)
        harness_fail(__FILE__, __LINE__, "generated history refused: %s", err);
    return h;
}

static void test_generated_histories_are_linearizable(void)
{
    uint64_t seed = harness_seed(42);
    for (uint64_t s = seed; s < seed + 20; s++) {
        /* Up to 5% unknown outcomes: far more than a healthy cluster gives. */
        struct lc_history *h = generated(s, 4000, (unsigned)(s % 6) * 10, LC_MUTATE_NONE);
        enum lc_verdict v = verdict_with(h, 20, 0);
        lc_history_free(h);
        if (v != LC_LINEARIZABLE)
            harness_fail(__FILE__, __LINE__, "seed %llu: %s", (unsigned long long)s,
                         lc_verdict_name(v));
    }
}

static void test_mutated_histories_are_violations(void)
{
    uint64_t seed = harness_seed(7);
    for (uint64_t s = seed; s < seed + 10; s++) {
        enum lc_mutation m = s % 2 ? LC_MUTATE_STALE : LC_MUTATE_PHANTOM;
        struct lc_history *h = generated(s, 4000, 5, m);
        enum lc_verdict v = verdict_with(h, 20, 0);
        lc_history_free(h);
        if (v != LC_VIOLATION)
            harness_fail(__FILE__, __LINE__, "seed %llu, %s: %s", (unsigned long long)s,
                         m == LC_MUTATE_STALE ? "stale" : "phantom", lc_verdict_name(v));
    }
}

/* The same by hand: a read changed to an old value of its key, one overwritten by a write
 * that completed before the read began (and written by no one else). */
static void test_read_changed_to_an_old_value_is_a_violation(void)
{
    uint64_t seed = harness_seed(3);
    struct lc_history *h = generated(seed, 3000, 0, LC_MUTATE_NONE);
    size_t changed = 0;
    for (size_t i = h->n_ops; i-- > 0 && !changed;) {
        struct lc_op *r = &h->ops[i];
        if (r->kind != LC_GET || r->outcome != LC_OK)
            continue;
        /* w1, then w2 invoked after w1 completed, and w2 completed before r began. */
        for (size_t j = 0; j < i && !changed; j++) {
            const struct lc_op *w1 = &h->ops[j];
            if (w1->key != r->key || w1->kind != LC_SET || w1->outcome != LC_OK)
                continue;
            size_t writers = 0;
            for (size_t k = 0; k < h->n_ops; k++)
                writers += h->ops[k].key == r->key && h->ops[k].value && h->ops[k].kind != LC_GET &&
                           strcmp(h->ops[k].value, w1->value) == 0;
            for (size_t k = j + 1; k < i && writers == 1; k++) {
                const struct lc_op *w2 = &h->ops[k];
                if (w2->key == r->key && w2->kind == LC_SET && w2->outcome == LC_OK &&
                    w2->invoke_ns > w1->complete_ns && w2->complete_ns < r->invoke_ns &&
                    strchr(w1->value, 'v')) {
                    r->value = w1->value;
                    changed = 1;
                    break;
                }
            }
        }
    }
    CHECK(changed);
    CHECK_EQ(verdict_with(h, 20, 0), LC_VIOLATION);
    /* And a value never written at all. */
    for (size_t i = 0; i < h->n_ops; i++)
        if (h->ops[i].kind == LC_GET && h->ops[i].outcome == LC_OK && h->ops[i].value)
            h->ops[i].value = lc_history_strdup(h, "never-written");
    CHECK_EQ(verdict_with(h, 20, 0), LC_VIOLATION);
    lc_history_free(h);
}

/* Out of budget: UNKNOWN, never a verdict the search did not prove. */
static void test_budget_too_small_says_unknown(void)
{
    uint64_t seed = harness_seed(11);
    struct lc_history *good = generated(seed, 20000, 20, LC_MUTATE_NONE);
    struct lc_history *bad = generated(seed, 20000, 20, LC_MUTATE_STALE);
    /* A microsecond: the clock is read every 1024 steps, so the larger keys run out. */
    enum lc_verdict v = verdict_with(good, 1e-6, 0);
    CHECK(v == LC_UNKNOWN);
    v = verdict_with(bad, 1e-6, 0);
    CHECK(v == LC_UNKNOWN || v == LC_VIOLATION);
    /* A memory budget too small for one key's memo. */
    v = verdict_with(good, 20, 4096);
    CHECK(v == LC_UNKNOWN);
    v = verdict_with(bad, 20, 4096);
    CHECK(v == LC_UNKNOWN || v == LC_VIOLATION);
    /* And with enough of both, the answers. */
    CHECK_EQ(verdict_with(good, 20, 0), LC_LINEARIZABLE);
    CHECK_EQ(verdict_with(bad, 20, 0), LC_VIOLATION);
    lc_history_free(good);
    lc_history_free(bad);
}

/* ------------------------------------------------------------------------ */
/* Reports */

static char *report(struct lc_history *h, int which)
{
    struct lc_result r;
    struct lc_options o = {.budget_seconds = 10, .minimize = true};
    CHECK_EQ(lc_check(h, &o, &r), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL);
    if (which == 0)
        lc_report_text(f, h, &r);
    else if (which == 1)
        CHECK_EQ(lc_report_json(f, h, &r), 0);
    else
        CHECK_EQ(lc_report_html(f, h, &r), 0);
    fclose(f);
    lc_result_free(&r);
    return text;
}

static void test_reports_show_the_failing_window(void)
{
    struct lc_history *h = parse_ok(
        "{'type':'nemesis','what':'partition 1,2 | 3','start':1,'end':9}\n"
        "{'type':'invoke','process':1,'op':'set','key':'x','value':'1','time':1,'node':1}\n"
        "{'type':'ok','process':1,'time':2}\n"
        "{'type':'invoke','process':1,'op':'set','key':'x','value':'2','time':3,'node':1}\n"
        "{'type':'ok','process':1,'time':4}\n"
        "{'type':'invoke','process':2,'op':'get','key':'x','time':5,'node':3}\n"
        "{'type':'ok','process':2,'value':'1','time':6}\n"
        "{'type':'invoke','process':1,'op':'get','key':'x','time':7,'node':1}\n"
        "{'type':'ok','process':1,'value':'2','time':8}\n");
    char *text = report(h, 0);
    CHECK(strncmp(text, "VIOLATION", 9) == 0);
    CHECK(strstr(text, "the first 6 of its 8 events") != NULL); /* the last read is not needed */
    CHECK(strstr(text, "=> ") && strstr(text, "get -> \"1\""));
    CHECK(strstr(text, "could have seen: set \"2\" (p1)") != NULL);
    free(text);
    text = report(h, 1);
    CHECK(strstr(text, "\"verdict\": \"VIOLATION\"") != NULL);
    CHECK(strstr(text, "\"events\": 6") != NULL);
    free(text);
    text = report(h, 2);
    CHECK(strstr(text, "<svg") && strstr(text, "class='nemesis'") && strstr(text, "culprit"));
    CHECK(strstr(text, "<script") == NULL && strstr(text, "src=") == NULL &&
          strstr(text, "href") == NULL); /* self-contained */
    free(text);
    lc_history_free(h);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_sequential_history_is_linearizable),
        HARNESS_TEST(test_overlapping_ops_may_take_either_order),
        HARNESS_TEST(test_stale_read_is_a_violation),
        HARNESS_TEST(test_lost_write_is_a_violation),
        HARNESS_TEST(test_two_cas_winning_from_the_same_value_is_a_violation),
        HARNESS_TEST(test_unknown_write_can_explain_a_later_read),
        HARNESS_TEST(test_unknown_write_cannot_explain_what_came_before_it),
        HARNESS_TEST(test_incr),
        HARNESS_TEST(test_keys_are_checked_apart),
        HARNESS_TEST(test_malformed_histories_are_refused_with_the_line),
        HARNESS_TEST(test_generated_histories_are_linearizable),
        HARNESS_TEST(test_mutated_histories_are_violations),
        HARNESS_TEST(test_read_changed_to_an_old_value_is_a_violation),
        HARNESS_TEST(test_budget_too_small_says_unknown),
        HARNESS_TEST(test_reports_show_the_failing_window),
    };
    return harness_main(argc, argv, "lincheck", tests, sizeof(tests) / sizeof(tests[0]));
}
