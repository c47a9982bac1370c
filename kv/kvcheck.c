/* kvcheck — the workload of a linearizability check (cluster-scripts/check,
 * docs/lincheck.md): K clients, each one connection at a time to a node
 * of the cluster, issue GET, SET, CAS and INCR on a few keys at a set
 * rate for a bounded time, and record every operation's invoke and
 * completion, with a monotonic clock, as the history lincheck reads
 * (tests/lincheck/lincheck.h has the format).
 *
 * What an answer means, for the checker -- the distinction it lives by:
 *
 *   ok    the command took effect, once (a write's OK, a read's value, a CAS
 *         that swapped, INCR's new value).
 *   fail  it certainly did not take effect: a CAS that did not match (":0"),
 *         INCR of a value that is not an integer, an expired session
 *         ("nothing was applied"), and NOQUORUM whose message says "it was
 *         not applied" (the node never handed it to any leader: kvd
 *         request.handed_to, docs/kvd.md). Reads that fail are left out of
 *         the check, whatever the error.
 *   info  unknown: a timeout or a lost connection (the command may be in a
 *         leader's log), NOQUORUM "handed to a leader and may still take
 *         effect", UNAVAILABLE (the node stopped; it may have forwarded the
 *         command) and any other error. It may take effect at any time after
 *         its invoke, or never; the client then goes on as a new process
 *         (process + K), as lincheck requires.
 *
 * Each client is a thread with a blocking hiredis connection (a timeout
 * longer than kvd's --request-timeout, so that kvd answers first), to a
 * node picked at random, and again after any error. Values are unique
 * ("p3-17"), so a read names the write it saw. Seeded: --seed picks the
 * operations, keys and nodes (the timing is the cluster's).
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: kvcheck --node HOST:PORT... [--clients K] [--keys N] [--rate OPS] [--seconds S]\n"
    "               [--seed N] [--out FILE] [--timeout MS] [--auth FILE]\n"
    "\n"
    "The workload of a linearizability check: K clients (default 5), each one operation\n"
    "at a time, on N keys (default 8): registers k0, k1, k2 (GET/SET/CAS 45/30/25%) and,\n"
    "every fourth, counters n3, n7, ... (GET/INCR 40/60%), OPS\n"
    "operations per second in all (default 50), for S seconds (default 30, at most 3600),\n"
    "each through a node picked at random among the --node RESP addresses. Writes the\n"
    "history (JSON lines, the format of lincheck: tests/lincheck/lincheck.h) to FILE\n"
    "(default stdout) and a summary to stderr. A reply the client cannot classify as\n"
    "certainly done or certainly not done is recorded as unknown (\"info\").\n"
    "kvcheck --now prints the history's clock (CLOCK_MONOTONIC, ns), for other lines of it.\n";

enum { MAX_NODES = 16, MAX_CLIENTS = 64 };

struct run {
    char hosts[MAX_NODES][64];
    int ports[MAX_NODES];
    int n_nodes;
    int clients, keys, rate, seconds, timeout_ms;
    uint64_t seed;
    char secret[256];
    FILE *out;
    pthread_mutex_t lock;
    int64_t end_ns;
    /* Totals, under lock. */
    uint64_t ok, fail, info;
};

struct client {
    struct run *r;
    int index;
    int64_t process;
    uint64_t prng;
    redisContext *c;
    int node;
    unsigned long written;
    char last_seen[64][48]; /* per key: the last value this client saw or wrote */
    pthread_t thread;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A JSON string literal of s (values and keys are ours: printable ASCII;
 * error texts are the server's: escaped). */
static void json_str(char *out, size_t len, const char *s)
{
    size_t at = 0;
    if (at < len)
        out[at++] = '"';
    for (; s && *s && at + 7 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[at++] = '\\';
            out[at++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            at += (size_t)snprintf(out + at, len - at, "\\u%04x", ch);
        } else {
            out[at++] = (char)ch;
        }
    }
    if (at < len)
        out[at++] = '"';
    out[at < len ? at : len - 1] = '\0';
}

static void emit(struct run *r, const char *line, char outcome)
{
    pthread_mutex_lock(&r->lock);
    fputs(line, r->out);
    fputc('\n', r->out);
    r->ok += outcome == 'o';
    r->fail += outcome == 'f';
    r->info += outcome == 'i';
    pthread_mutex_unlock(&r->lock);
}

static void disconnect(struct client *cl)
{
    if (cl->c)
        redisFree(cl->c);
    cl->c = NULL;
}

static bool connect_some(struct client *cl)
{
    struct run *r = cl->r;
    cl->node = (int)(next(&cl->prng) % (uint64_t)r->n_nodes);
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    cl->c = redisConnectWithTimeout(r->hosts[cl->node], r->ports[cl->node], tv);
    if (!cl->c || cl->c->err) {
        disconnect(cl);
        return false;
    }
    redisSetTimeout(cl->c, tv);
    if (r->secret[0]) {
        redisReply *a = redisCommand(cl->c, "AUTH %s", r->secret);
        bool ok = a && a->type != REDIS_REPLY_ERROR;
        if (a)
            freeReplyObject(a);
        if (!ok) {
            disconnect(cl);
            return false;
        }
    }
    return true;
}

/* What an error reply means for a write: certainly not applied? */
static bool not_applied(const char *err)
{
    return (strstr(err, "NOQUORUM") && strstr(err, "it was not applied")) ||
           strstr(err, "session expired");
}

static void one_op(struct client *cl)
{
    struct run *r = cl->r;
    /* Every fourth key is a counter (n3, n7, ...: INCR and GET), the others
     * registers (k0, k1, ...: GET, SET and CAS), so that INCR counts rather
     * than meets strings. */
    unsigned key = (unsigned)(next(&cl->prng) % (uint64_t)r->keys);
    unsigned pick = (unsigned)(next(&cl->prng) % 100);
    bool counter = key % 4 == 3;
    char k[16], v[48], jk[32], jv[64], je[64], line[1200], extra[160] = "";
    snprintf(k, sizeof(k), "%c%u", counter ? 'n' : 'k', key);
    json_str(jk, sizeof(jk), k);
    const char *op = counter ? (pick < 40 ? "get" : "incr")
                             : (pick < 45   ? "get"
                                : pick < 75 ? "set"
                                            : "cas");
    const char *argv[4];
    int argc = 0;
    if (!strcmp(op, "get")) {
        argv[argc++] = "GET";
        argv[argc++] = k;
    } else if (!strcmp(op, "set")) {
        snprintf(v, sizeof(v), "p%" PRId64 "-%lu", cl->process, ++cl->written);
        json_str(jv, sizeof(jv), v);
        snprintf(extra, sizeof(extra), ",\"value\":%s", jv);
        argv[argc++] = "SET";
        argv[argc++] = k;
        argv[argc++] = v;
    } else if (!strcmp(op, "cas")) {
        snprintf(v, sizeof(v), "p%" PRId64 "-%lu", cl->process, ++cl->written);
        json_str(jv, sizeof(jv), v);
        const char *exp = cl->last_seen[key];
        if (exp[0]) {
            json_str(je, sizeof(je), exp);
            snprintf(extra, sizeof(extra), ",\"expected\":%s,\"value\":%s", je, jv);
            argv[argc++] = "CAS";
            argv[argc++] = k;
            argv[argc++] = exp;
            argv[argc++] = v;
        } else { /* nothing seen yet: SETNX, a CAS that expects the key absent */
            snprintf(extra, sizeof(extra), ",\"expected\":null,\"value\":%s", jv);
            argv[argc++] = "SETNX";
            argv[argc++] = k;
            argv[argc++] = v;
        }
    } else {
        snprintf(extra, sizeof(extra), ",\"delta\":1");
        argv[argc++] = "INCR";
        argv[argc++] = k;
    }
    if (!cl->c && !connect_some(cl)) {
        /* No node to send it to: nothing was invoked. */
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        return;
    }
    int64_t t0 = now_ns();
    snprintf(line, sizeof(line),
             "{\"type\":\"invoke\",\"process\":%" PRId64
             ",\"op\":\"%s\",\"key\":%s%s,\"time\":%" PRId64 ",\"node\":%d}",
             cl->process, op, jk, extra, t0, cl->node + 1);
    emit(r, line, 0);
    redisReply *rep = redisCommandArgv(cl->c, argc, argv, NULL);
    int64_t t1 = now_ns();
    char res[200] = "";
    char outcome;
    if (!rep) {
        outcome = 'i';
        json_str(je, sizeof(je), cl->c->errstr[0] ? cl->c->errstr : "connection lost");
        snprintf(res, sizeof(res), ",\"error\":%s", je);
        disconnect(cl);
    } else if (rep->type == REDIS_REPLY_ERROR) {
        char err[64];
        snprintf(err, sizeof(err), "%.60s", rep->str);
        json_str(je, sizeof(je), err);
        bool is_read = !strcmp(op, "get");
        bool not_int = !strcmp(op, "incr") && strstr(rep->str, "not an integer");
        outcome = is_read || not_int || not_applied(rep->str) ? 'f' : 'i';
        snprintf(res, sizeof(res), ",\"error\":%s", not_int ? "\"not-integer\"" : je);
        disconnect(cl); /* another node next time */
    } else if (!strcmp(op, "get")) {
        outcome = 'o';
        if (rep->type == REDIS_REPLY_NIL) {
            snprintf(res, sizeof(res), ",\"value\":null");
        } else {
            json_str(jv, sizeof(jv), rep->str);
            snprintf(res, sizeof(res), ",\"value\":%s", jv);
            snprintf(cl->last_seen[key], sizeof(cl->last_seen[key]), "%s", rep->str);
        }
    } else if (!strcmp(op, "set")) {
        outcome = 'o';
        snprintf(cl->last_seen[key], sizeof(cl->last_seen[key]), "%s", v);
    } else if (!strcmp(op, "cas")) {
        bool swapped =
            rep->type == REDIS_REPLY_INTEGER ? rep->integer == 1 : rep->type == REDIS_REPLY_STATUS;
        outcome = swapped ? 'o' : 'f';
        if (swapped)
            snprintf(cl->last_seen[key], sizeof(cl->last_seen[key]), "%s", v);
        else
            snprintf(res, sizeof(res), ",\"error\":\"mismatch\"");
    } else {
        outcome = rep->type == REDIS_REPLY_INTEGER ? 'o' : 'i';
        if (outcome == 'o')
            snprintf(res, sizeof(res), ",\"value\":%lld", rep->integer);
    }
    if (rep)
        freeReplyObject(rep);
    snprintf(line, sizeof(line),
             "{\"type\":\"%s\",\"process\":%" PRId64 ",\"op\":\"%s\",\"key\":%s%s,\"time\":%" PRId64
             "}",
             outcome == 'o'   ? "ok"
             : outcome == 'f' ? "fail"
                              : "info",
             cl->process, op, jk, res, t1);
    emit(r, line, outcome);
    if (outcome == 'i') {
        cl->process += r->clients; /* the lost request may still act: a new process */
        disconnect(cl);
    }
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    struct run *r = cl->r;
    /* Each client runs rate/K operations a second, paced from its start. */
    double per_op_ns = 1e9 * r->clients / r->rate;
    int64_t start = now_ns();
    for (uint64_t n = 0; now_ns() < r->end_ns; n++) {
        int64_t due = start + (int64_t)(per_op_ns * (double)n);
        int64_t wait = due - now_ns();
        if (wait > 0) {
            struct timespec ts = {wait / 1000000000, wait % 1000000000};
            nanosleep(&ts, NULL);
        }
        if (now_ns() >= r->end_ns)
            break;
        one_op(cl);
    }
    disconnect(cl);
    return NULL;
}

static void usage_error(const char *msg)
{
    fprintf(stderr, "kvcheck: %s\n(kvcheck --help for the manual)\n", msg);
    exit(2);
}

static long num(const char *v, long lo, long hi, const char *what)
{
    char *end;
    errno = 0;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || n < lo || n > hi) {
        char msg[120];
        snprintf(msg, sizeof(msg), "%s: expected %ld..%ld", what, lo, hi);
        usage_error(msg);
    }
    return n;
}

int main(int argc, char **argv)
{
    static struct run r = {.clients = 5, .keys = 8, .rate = 50, .seconds = 30, .timeout_ms = 8000};
    r.seed = (uint64_t)now_ns();
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (!strcmp(a, "--now")) { /* the history's clock, for the nemesis' lines */
            printf("%" PRId64 "\n", now_ns());
            return 0;
        }
        if (!v)
            usage_error("an option needs a value");
        i++;
        if (!strcmp(a, "--node")) {
            const char *colon = strrchr(v, ':');
            if (r.n_nodes == MAX_NODES || !colon || (size_t)(colon - v) >= sizeof(r.hosts[0]))
                usage_error("--node HOST:PORT (at most 16)");
            memcpy(r.hosts[r.n_nodes], v, (size_t)(colon - v));
            r.hosts[r.n_nodes][colon - v] = '\0';
            r.ports[r.n_nodes++] = (int)num(colon + 1, 1, 65535, "--node port");
        } else if (!strcmp(a, "--clients")) {
            r.clients = (int)num(v, 1, MAX_CLIENTS, "--clients");
        } else if (!strcmp(a, "--keys")) {
            r.keys = (int)num(v, 1, 64, "--keys");
        } else if (!strcmp(a, "--rate")) {
            r.rate = (int)num(v, 1, 100000, "--rate");
        } else if (!strcmp(a, "--seconds")) {
            r.seconds = (int)num(v, 1, 3600, "--seconds");
        } else if (!strcmp(a, "--timeout")) {
            r.timeout_ms = (int)num(v, 100, 600000, "--timeout");
        } else if (!strcmp(a, "--seed")) {
            r.seed = (uint64_t)num(v, 0, 0x7fffffffffffffffL, "--seed");
        } else if (!strcmp(a, "--out")) {
            out = v;
        } else if (!strcmp(a, "--auth")) {
            FILE *f = fopen(v, "r");
            if (!f || !fgets(r.secret, sizeof(r.secret), f))
                usage_error("--auth: cannot read the file");
            fclose(f);
            r.secret[strcspn(r.secret, "\r\n")] = '\0';
        } else {
            usage_error("unknown option");
        }
    }
    if (!r.n_nodes)
        usage_error("give at least one --node HOST:PORT");
    r.out = out ? fopen(out, "w") : stdout;
    if (!r.out) {
        fprintf(stderr, "kvcheck: %s: %s\n", out, strerror(errno));
        return 2;
    }
    pthread_mutex_init(&r.lock, NULL);
    fprintf(r.out, "# kvcheck --seed %" PRIu64 " --clients %d --keys %d --rate %d --seconds %d\n",
            r.seed, r.clients, r.keys, r.rate, r.seconds);
    r.end_ns = now_ns() + (int64_t)r.seconds * 1000000000;
    static struct client cls[MAX_CLIENTS];
    for (int i = 0; i < r.clients; i++) {
        cls[i] = (struct client){.r = &r,
                                 .index = i,
                                 .process = i,
                                 .prng = r.seed ^ (uint64_t)(i + 1) * 0x2545f4914f6cdd1dULL};
        if (pthread_create(&cls[i].thread, NULL, client_main, &cls[i]) != 0) {
            fprintf(stderr, "kvcheck: cannot start client %d\n", i);
            return 2;
        }
    }
    for (int i = 0; i < r.clients; i++)
        pthread_join(cls[i].thread, NULL);
    if (out)
        fclose(r.out);
    fprintf(stderr,
            "kvcheck: seed %" PRIu64 ": %" PRIu64 " operations: %" PRIu64 " ok, %" PRIu64
            " failed (certainly not done), %" PRIu64 " unknown\n",
            r.seed, r.ok + r.fail + r.info, r.ok, r.fail, r.info);
    return 0;
}
