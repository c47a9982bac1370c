/* kvbench — a closed-loop load generator for kvd (or any Redis-protocol
 * server): N connections, each sending its next command when the last one
 * is answered, for a bounded time. Prints throughput and latency
 * percentiles, and -- given a node's HTTP address -- fsyncs per second and
 * entries per fsync from its /metrics. hiredis' async client on libuv. */
#include <errno.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char usage_text[] =
    "usage: kvbench [--node HOST:PORT] [--op set|get|incr] [--connections N] [--seconds S]\n"
    "               [--keys K] [--value-size B] [--metrics HOST:PORT] [--csv]\n"
    "\n"
    "Closed loop: each of N connections (default 16) sends its next command as soon as the\n"
    "last is answered, for S seconds (default 5, at most 600), on keys key:0..K-1 (default\n"
    "10000) with values of B bytes (default 100). Prints requests per second and latency\n"
    "percentiles; with --metrics (a kvd node's HTTP address, normally the leader's) also\n"
    "fsyncs per second and entries per fsync during the run. Errors are counted, not retried.\n";

struct bench;

struct client {
    struct bench *b;
    redisAsyncContext *ac;
    uint64_t sent_ns;
    uint64_t seq;
    bool connected;
};

struct bench {
    uv_loop_t *loop;
    const char *host;
    int port;
    const char *op;
    int conns;
    int seconds;
    unsigned keys;
    char *value;
    size_t value_len;
    struct client *clients;
    uint64_t *lat; /* nanoseconds, one per answered command (capped) */
    size_t n_lat, cap_lat;
    uint64_t done, errors, start_ns, end_ns;
    bool stopping;
    int open;
    char first_error[160];
    uv_timer_t timer;
};

static void send_next(struct client *c);

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct client *c = priv;
    struct bench *b = c->b;
    (void)ac;
    uint64_t now = uv_hrtime();
    if (!r) /* disconnected */
        return;
    redisReply *reply = r;
    if (reply->type == REDIS_REPLY_ERROR) {
        if (!b->errors)
            snprintf(b->first_error, sizeof(b->first_error), "%s", reply->str);
        b->errors++;
    } else {
        b->done++;
        if (b->n_lat < b->cap_lat)
            b->lat[b->n_lat++] = now - c->sent_ns;
    }
    if (!b->stopping)
        send_next(c);
}

static void send_next(struct client *c)
{
    struct bench *b = c->b;
    char key[32];
    snprintf(key, sizeof(key), "key:%u",
             (unsigned)((c->seq++ * 2654435761u + (uint64_t)(c - b->clients) * 7919u) % b->keys));
    c->sent_ns = uv_hrtime();
    const char *argv[3];
    size_t lens[3];
    int argc;
    if (!strcmp(b->op, "set")) {
        argv[0] = "SET", argv[1] = key, argv[2] = b->value;
        lens[0] = 3, lens[1] = strlen(key), lens[2] = b->value_len;
        argc = 3;
    } else {
        argv[0] = !strcmp(b->op, "get") ? "GET" : "INCR", argv[1] = key;
        lens[0] = strlen(argv[0]), lens[1] = strlen(key);
        argc = 2;
    }
    redisAsyncCommandArgv(c->ac, on_reply, c, argc, argv, lens);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct client *c = ac->data;
    if (status != REDIS_OK) {
        fprintf(stderr, "kvbench: connect: %s\n", ac->errstr);
        c->b->open--;
        return;
    }
    c->connected = true;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct client *c = ac->data;
    (void)status;
    c->connected = false;
    c->ac = NULL;
    c->b->open--;
}

static void on_timer(uv_timer_t *t)
{
    struct bench *b = t->data;
    b->stopping = true;
    b->end_ns = uv_hrtime();
    for (int i = 0; i < b->conns; i++)
        if (b->clients[i].ac)
            redisAsyncDisconnect(b->clients[i].ac);
    uv_close((uv_handle_t *)t, NULL);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)v[i] / 1e6;
}

/* Two numbers from a kvd's /metrics, by a tiny HTTP GET. */
static bool read_metrics(const char *addr, double *fsyncs, double *entries)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof(host))
        return false;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "curl -s --max-time 5 http://%s:%s/metrics", host, colon + 1);
    FILE *f = popen(cmd, "r");
    if (!f)
        return false;
    char line[512];
    bool got1 = false, got2 = false;
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "raftkv_fsyncs_total ", 20))
            got1 = sscanf(line + 20, "%lf", fsyncs) == 1;
        else if (!strncmp(line, "raftkv_entries_persisted_total ", 31))
            got2 = sscanf(line + 31, "%lf", entries) == 1;
    }
    pclose(f);
    return got1 && got2;
}

int main(int argc, char **argv)
{
    struct bench b = {.host = "127.0.0.1",
                      .port = 6381,
                      .op = "set",
                      .conns = 16,
                      .seconds = 5,
                      .keys = 10000,
                      .value_len = 100};
    const char *metrics = NULL;
    bool csv = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(a, "--csv")) {
            csv = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "kvbench: %s needs a value (kvbench --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--node")) {
            static char host[64];
            const char *colon = strrchr(v, ':');
            if (!colon || (size_t)(colon - v) >= sizeof(host)) {
                fprintf(stderr, "kvbench: --node wants HOST:PORT\n");
                return 2;
            }
            memcpy(host, v, (size_t)(colon - v));
            host[colon - v] = '\0';
            b.host = host;
            b.port = atoi(colon + 1);
        } else if (!strcmp(a, "--op")) {
            b.op = v;
        } else if (!strcmp(a, "--connections")) {
            b.conns = atoi(v);
        } else if (!strcmp(a, "--seconds")) {
            b.seconds = atoi(v);
        } else if (!strcmp(a, "--keys")) {
            b.keys = (unsigned)atoi(v);
        } else if (!strcmp(a, "--value-size")) {
            b.value_len = (size_t)atol(v);
        } else if (!strcmp(a, "--metrics")) {
            metrics = v;
        } else {
            fprintf(stderr, "kvbench: unknown option %s (kvbench --help)\n", a);
            return 2;
        }
    }
    if (b.conns < 1 || b.conns > 4096 || b.seconds < 1 || b.seconds > 600 || b.keys < 1 ||
        b.value_len > (8 << 20) ||
        (strcmp(b.op, "set") && strcmp(b.op, "get") && strcmp(b.op, "incr"))) {
        fprintf(stderr, "kvbench: bad option value (kvbench --help)\n");
        return 2;
    }
    b.value = malloc(b.value_len + 1);
    memset(b.value, 'x', b.value_len);
    b.value[b.value_len] = '\0';
    b.cap_lat = 20u << 20;
    b.lat = malloc(b.cap_lat * sizeof(*b.lat));
    b.clients = calloc((size_t)b.conns, sizeof(*b.clients));
    b.loop = uv_default_loop();
    double f0 = 0, e0 = 0, f1 = 0, e1 = 0;
    bool have_metrics = metrics && read_metrics(metrics, &f0, &e0);
    for (int i = 0; i < b.conns; i++) {
        struct client *c = &b.clients[i];
        c->b = &b;
        c->ac = redisAsyncConnect(b.host, b.port);
        if (!c->ac || c->ac->err) {
            fprintf(stderr, "kvbench: cannot connect to %s:%d\n", b.host, b.port);
            return 3;
        }
        c->ac->data = c;
        redisLibuvAttach(c->ac, b.loop);
        redisAsyncSetConnectCallback(c->ac, on_connect);
        redisAsyncSetDisconnectCallback(c->ac, on_disconnect);
        b.open++;
    }
    b.start_ns = uv_hrtime();
    for (int i = 0; i < b.conns; i++)
        send_next(&b.clients[i]);
    uv_timer_init(b.loop, &b.timer);
    b.timer.data = &b;
    uv_timer_start(&b.timer, on_timer, (uint64_t)b.seconds * 1000, 0);
    uv_run(b.loop, UV_RUN_DEFAULT);
    if (!b.end_ns)
        b.end_ns = uv_hrtime();
    if (have_metrics)
        have_metrics = read_metrics(metrics, &f1, &e1);
    double secs = (double)(b.end_ns - b.start_ns) / 1e9;
    qsort(b.lat, b.n_lat, sizeof(*b.lat), cmp_u64);
    double rps = (double)b.done / secs;
    if (csv) {
        printf("%s,%d,%.0f,%.3f,%.3f,%.3f,%" PRIu64, b.op, b.conns, rps, pct(b.lat, b.n_lat, 50),
               pct(b.lat, b.n_lat, 99), pct(b.lat, b.n_lat, 99.9), b.errors);
        if (have_metrics)
            printf(",%.0f,%.2f", (f1 - f0) / secs, f1 > f0 ? (e1 - e0) / (f1 - f0) : 0.0);
        printf("\n");
    } else {
        printf("%-4s %4d conns: %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  p99.9 %7.3f ms", b.op,
               b.conns, rps, pct(b.lat, b.n_lat, 50), pct(b.lat, b.n_lat, 99),
               pct(b.lat, b.n_lat, 99.9));
        if (have_metrics)
            printf("  fsyncs/s %6.0f  entries/fsync %6.2f", (f1 - f0) / secs,
                   f1 > f0 ? (e1 - e0) / (f1 - f0) : 0.0);
        if (b.errors)
            printf("  errors %" PRIu64 " (first: %s)", b.errors, b.first_error);
        printf("\n");
    }
    free(b.value);
    free(b.lat);
    free(b.clients);
    return b.done ? 0 : 3;
}
