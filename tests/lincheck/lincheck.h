/* lincheck.h — a linearizability checker for histories of the key-value store.
 *
 * A history is what clients saw: for every operation, when it was invoked,
 * when (and how) it completed. The checker answers one question: is there a
 * single order of all the operations that (a) respects real time -- an
 * operation that completed before another was invoked comes first -- and
 * (b) is a legal run of a register per key, starting absent? If so the
 * history is LINEARIZABLE (Herlihy and Wing 1990). The search is Wing and
 * Gong's (1993) with Lowe's (2017) memoisation of (linearized set, state),
 * as Porcupine does it, run key by key: a history is linearizable iff each
 * key's sub-history is (Herlihy and Wing's locality; Horn and Kroening's
 * P-compositionality). docs/lincheck.md tells the whole story.
 *
 * THE HISTORY FORMAT (JSON lines; the workload runner writes it)
 *
 * One JSON object per line; blank lines and lines whose first non-blank
 * character is '#' are skipped. Fields not named here are ignored.
 *
 *   invoke      {"type":"invoke","process":P,"op":OP,"key":K,...args,"time":T[,"node":N]}
 *   completion  {"type":"ok"|"fail"|"info","process":P,"time":T[,"op":OP,"key":K]
 *                [,"value":RESULT][,"error":E]}
 *   nemesis     {"type":"nemesis","what":TEXT,"start":T1,"end":T2}   (report only)
 *
 *   P        non-negative integer: the logical client. A process has at most
 *            one operation outstanding; a completion belongs to the latest
 *            invoke of its process. "op" and "key", if repeated on the
 *            completion, must match.
 *   T        integer, monotonic nanoseconds (CLOCK_MONOTONIC of the runner's
 *            machine; only differences matter). completion time >= invoke time.
 *   N        optional integer: the node the request was sent to (report only).
 *   K        string: the key. Every key starts absent.
 *   OP, its arguments and its result on "ok":
 *     "get"                             ok: "value": string, or null if absent
 *     "set"  "value": string            ok: nothing
 *     "cas"  "expected": string|null,   ok: it swapped. null expects the key
 *            "value": string                absent (SET NX).
 *     "incr" "delta": integer           ok: "value": the new integer (a JSON
 *                                           integer; a decimal string is taken too).
 *                                           An absent key counts as 0.
 *   "ok"     took effect, exactly once, between invoke and completion.
 *   "fail"   certainly did NOT take effect. Two fails also observed something
 *            and are checked: a cas with "error":"mismatch" (the key did not
 *            hold "expected") and an incr with "error":"not-integer" (the key
 *            held a value that is not a decimal int64). Any other fail (e.g.
 *            "error":"noquorum") is left out of the check.
 *   "info"   unknown (timeout, connection lost): it may take effect at any
 *            time after its invoke, or never. Its result is unknown.
 *   An invoke with no completion by the end of the file counts as "info".
 *
 *   After "info", the process is gone: the runner continues that client
 *   under a NEW process id (Jepsen's rule; e.g. P + number of clients), so
 *   that a late effect of the lost request is never confused with the next
 *   one. The checker rejects a history that invokes again under a process
 *   whose last operation ended in "info".
 *
 *   Values are strings; incr treats a value as an integer when it is a
 *   canonical decimal int64 ("-12", "0", "7"; not "+7", "07" or " 7"), like
 *   Redis' INCR.
 *
 * Ownership: a struct lc_history from lc_history_parse()/load() owns every
 * string it points to (in an arena, freed by lc_history_free()). A program
 * may also fill one itself (the simulator does, raft/sim/client.c: arena
 * NULL, ops in invoke order, strings its own) and pass it to lc_check() and
 * lc_could_have_seen(), which only read it; it then frees it itself. check.c
 * needs libc alone, so such a program links without jansson. Results own
 * their arrays (freed by lc_result_free()). Nothing is global; calls on
 * different histories may run in different threads.
 */
#ifndef LINCHECK_H
#define LINCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The completion time of an op whose outcome is unknown: it may take effect
 * at any time after its invoke. */
#define LC_TIME_INFINITE INT64_MAX

enum lc_kind { LC_GET, LC_SET, LC_CAS, LC_INCR };
enum lc_outcome { LC_OK, LC_FAIL, LC_INFO };
enum lc_verdict { LC_LINEARIZABLE, LC_VIOLATION, LC_UNKNOWN };

/* One operation: an invoke and its completion. */
struct lc_op {
    int64_t process;
    int node; /* the node the request went to; -1 if not given */
    enum lc_kind kind;
    enum lc_outcome outcome;
    uint32_t key;           /* index into lc_history.keys */
    const char *value;      /* set: written; cas: new value; get ok: read (NULL: absent) */
    const char *expected;   /* cas: the value expected (NULL: expects the key absent) */
    int64_t delta;          /* incr: the increment */
    int64_t result;         /* incr ok: the new value */
    const char *error;      /* fail/info: the "error" field, or NULL */
    bool is_checked_fail;   /* a fail that observed the key (cas mismatch, incr not-integer) */
    int64_t invoke_ns;      /* the invoke's "time" */
    int64_t complete_ns;    /* the completion's "time"; LC_TIME_INFINITE for info */
    int64_t info_ns;        /* info: the time the runner gave up (report only), else 0 */
    uint32_t invoke_line;   /* line numbers in the file, for messages (1-based) */
    uint32_t complete_line; /* 0 if it never completed */
};

/* A fault injected during the run; shown in reports, never checked. */
struct lc_nemesis {
    const char *what;
    int64_t start_ns, end_ns;
};

struct lc_history {
    struct lc_op *ops; /* in invoke order (line order of their invokes) */
    size_t n_ops;
    const char **keys; /* distinct keys, in order of first appearance */
    size_t n_keys;
    struct lc_nemesis *nemeses;
    size_t n_nemeses;
    int64_t first_ns, last_ns; /* the earliest and latest time in the file */
    struct lc_arena *arena;    /* owns every string above */
};

/* Parse a history. `text` is the whole file (NUL-terminated), `path` names it
 * in messages (may be NULL). On success returns 0 and sets *out (free with
 * lc_history_free). On a malformed history returns -1 and writes
 * "LINE: what is wrong" into err. */
int lc_history_parse(const char *text, const char *path, struct lc_history **out, char *err,
                     size_t err_len);
/* Read and parse the file at `path` ("-" is stdin). As lc_history_parse. */
int lc_history_load(const char *path, struct lc_history **out, char *err, size_t err_len);
void lc_history_free(struct lc_history *h);
/* Copy a string into the history's arena (for tools and tests that edit a
 * history). NULL if out of memory. */
const char *lc_history_strdup(struct lc_history *h, const char *s);

/* ------------------------------------------------------------------------ */
/* Checking */

struct lc_options {
    double budget_seconds;  /* wall-clock budget for the whole check; <= 0: 60 s */
    size_t max_cache_bytes; /* memory budget of one key's search; 0: 2 GiB */
    bool minimize;          /* on violation, look for the shortest failing prefix */
};

/* What the check found for one key. */
struct lc_key_result {
    uint32_t key;
    enum lc_verdict verdict;
    size_t n_checked;  /* ops in the search (after leaving out what cannot matter) */
    size_t n_dropped;  /* fails, unknown reads and unknown writes no one could have seen */
    uint64_t n_states; /* (linearized set, state) configurations explored */
    double seconds;
    const char *unknown_reason; /* UNKNOWN: "time budget" or "memory budget" (static) */
    /* VIOLATION: the shortest failing prefix of the key's events, by time
     * (each invoke and each completion is an event). */
    size_t window_events;   /* events in it */
    size_t total_events;    /* events of the key */
    bool window_is_minimal; /* false if the shrinking ran out of budget */
    uint32_t culprit;       /* index of the op whose completion closes the window */
    uint32_t *window_ops;   /* indexes of the ops invoked in the window, in invoke order */
    size_t n_window_ops;
};

struct lc_result {
    enum lc_verdict verdict;    /* VIOLATION if any key has one, else UNKNOWN if any key, else OK */
    struct lc_key_result *keys; /* one per key of the history, same order */
    size_t n_keys;
    double seconds;
    uint64_t n_states;
};

/* Check a history. Returns 0 and fills *out (free with lc_result_free), or
 * -1 if out of memory before anything could be decided. Never answers
 * LINEARIZABLE or VIOLATION without having proved it: when a budget runs out
 * the key's verdict is UNKNOWN. */
int lc_check(const struct lc_history *h, const struct lc_options *opt, struct lc_result *out);
void lc_result_free(struct lc_result *r);

const char *lc_verdict_name(enum lc_verdict v);
const char *lc_kind_name(enum lc_kind k);
const char *lc_outcome_name(enum lc_outcome o);

/* ------------------------------------------------------------------------ */
/* Reports (report.c, html.c) */

/* The verdict line, then the counts (ops ok/fail/info per type, nemesis
 * events) or, on a violation, the failing window: its ops with processes,
 * nodes and times, what each read saw and the writes it could have seen. */
void lc_report_text(FILE *f, const struct lc_history *h, const struct lc_result *r);
/* The same as one JSON object. 0, or -1 on an I/O error. */
int lc_report_json(FILE *f, const struct lc_history *h, const struct lc_result *r);
/* A self-contained HTML page: a timeline per key, a lane per process,
 * nemesis windows shaded, the failing window highlighted. 0, or -1. */
int lc_report_html(FILE *f, const struct lc_history *h, const struct lc_result *r);

/* An op in a few words for reports: `get -> "5"`, `set "5"`, `cas "5" -> "6"`,
 * `cas absent -> "6"`, `incr +1 -> 7`, `incr +1 -> ?`. Long values are cut
 * to `max_value` characters. Returns buf. */
char *lc_op_describe(const struct lc_op *op, size_t max_value, char *buf, size_t len);

/* The writes a read (`op`, an index) could have returned by real time alone:
 * those not certainly overwritten before it began, as indexes of ops;
 * UINT32_MAX stands for the initial absent value. Returns how many were
 * found (at most max; more are not counted). */
size_t lc_could_have_seen(const struct lc_history *h, uint32_t op, uint32_t *out, size_t max);

/* ------------------------------------------------------------------------ */
/* A generator of histories (generate.c): a simulated linearizable KV service
 * with random latencies, unknown outcomes and refusals. */

enum lc_mutation {
    LC_MUTATE_NONE,
    LC_MUTATE_PHANTOM, /* one read returns a value never written */
    LC_MUTATE_STALE,   /* one read returns a value certainly overwritten before it began */
};

struct lc_gen_options {
    uint64_t seed;
    size_t n_ops;       /* operations (invokes) in all */
    unsigned n_clients; /* concurrent clients (not processes: a client gets a new
                           process id after each info) */
    unsigned n_keys;
    unsigned info_permille; /* outcomes unknown (half of them took effect) */
    unsigned fail_permille; /* refused (noquorum), no effect */
    unsigned n_nemeses;     /* synthetic nemesis lines (report only) */
    enum lc_mutation mutate;
};

/* Write a history as JSON lines. 0, or -1 with a message in err (no
 * candidate read for the mutation, I/O error, out of memory). */
int lc_generate(const struct lc_gen_options *o, FILE *out, char *err, size_t err_len);

#endif /* LINCHECK_H */
