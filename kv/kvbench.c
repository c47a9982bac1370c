/* kvbench — a closed-loop load generator for kvd: N connections, each
 * sending its next command when the last one is answered, for a bounded
 * time. Prints throughput and latency percentiles, and -- given a node's
 * HTTP address -- fsyncs per second and entries per fsync from its /metrics.
 *
 * Three protocols: RESP (hiredis' async client on libuv; works against any
 * Redis-protocol server), kvd's HTTP/JSON API, and etcd's v3 JSON gateway,
 * so that `make bench` can put kvd and etcd side by side on the same load.
 * The HTTP client is a keep-alive connection on libuv whose answers are
 * framed by http-parser. */
#include <errno.h>
#include <http_parser.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char usage_text[] =
    "usage: kvbench [--node HOST:PORT]... [--proto resp|http|etcd] [--op set|get|incr]\n"
    "               [--connections N] [--seconds S] [--keys K] [--value-size B]\n"
    "               [--metrics HOST:PORT]... [--auth FILE] [--csv]\n"
    "               [--kill PID --kill-after S]\n"
    "\n"
    "Closed loop: each of N connections (default 16) sends its next command as soon as the\n"
    "last is answered, for S seconds (default 5, at most 600), on keys key:0..K-1 (default\n"
    "10000) with values of B bytes (default 100). Prints requests per second and latency\n"
    "percentiles; with --metrics (a kvd node's HTTP address, normally the leader's) also\n"
    "fsyncs per second and entries per fsync during the run. Errors are counted, not retried.\n"
    "Several --node: the connections are spread over them in turn (a sharded cluster, where\n"
    "every node coordinates); several --metrics: fsyncs and entries summed over the nodes.\n"
    "\n"
    "--proto resp (default) speaks the Redis protocol (--node is a RESP port); http speaks\n"
    "kvd's HTTP API (PUT/GET /v1/kv/KEY; --node is an HTTP port); etcd speaks etcd's v3 JSON\n"
    "gateway (POST /v3/kv/put and /v3/kv/range, linearizable; --node is a client URL's\n"
    "HOST:PORT). incr is RESP only.\n"
    "\n"
    "--kill PID --kill-after S: failover. S seconds into the run, send SIGKILL to PID (the\n"
    "leader, which the connections must not talk to) and print how long after the kill the\n"
    "commands then in flight were answered, and when the first command sent after the kill\n"
    "was.\n";

enum proto { PROTO_RESP, PROTO_HTTP, PROTO_ETCD };

struct bench;

struct client {
    struct bench *b;
    const char *host; /* the node it talks to */
    int port;
    redisAsyncContext *ac; /* PROTO_RESP */
    uint64_t sent_ns;
    uint64_t seq;
    bool waiting;     /* a command is out */
    bool out_at_kill; /* ...and was when --kill fired */
    bool connected;
    /* PROTO_HTTP and PROTO_ETCD */
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    http_parser parser;
    char *req; /* a whole request: headers and body, written at once */
    size_t req_cap;
    char rbuf[64 * 1024];
    bool tcp_open;
};

enum { MAX_NODES = 16 };

struct bench {
    uv_loop_t *loop;
    char hosts[MAX_NODES][64];
    int ports[MAX_NODES];
    int n_nodes;
    const char *metrics[MAX_NODES]; /* kvd HTTP addresses whose /metrics are summed */
    int n_metrics;
    const char *op;
    enum proto proto;
    char *value_b64; /* the value, base64-encoded, for etcd */
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
    /* --kill: the failover measurement */
    int kill_pid;
    double kill_after;
    uv_timer_t kill_timer;
    uint64_t kill_ns;
    uint64_t inflight_done_ns; /* the last command out at the kill answered (after it) */
    uint64_t first_after_ns;   /* the first command sent after the kill answered OK */
    uint64_t kill_errors;      /* errors answered after the kill */
    char password[256];        /* --auth: AUTH on each RESP connection, Bearer over HTTP */
    char auth_header[300];
};

static void send_next(struct client *c);
static void http_send_next(struct client *c, const char *key);

/* One answer came: an error (counted, the first one kept) or a success
 * (its latency recorded); then the connection's next command. */
static void answered(struct client *c, const char *error)
{
    struct bench *b = c->b;
    uint64_t now = uv_hrtime();
    c->waiting = false;
    if (b->kill_ns) {
        if (c->out_at_kill) {
            c->out_at_kill = false;
            if (now - b->kill_ns > b->inflight_done_ns)
                b->inflight_done_ns = now - b->kill_ns;
        } else if (!error && !b->first_after_ns && c->sent_ns > b->kill_ns) {
            b->first_after_ns = now - b->kill_ns;
        }
        if (error)
            b->kill_errors++;
    }
    if (error) {
        if (!b->errors)
            snprintf(b->first_error, sizeof(b->first_error), "%s", error);
        b->errors++;
    } else {
        b->done++;
        if (b->n_lat < b->cap_lat)
            b->lat[b->n_lat++] = now - c->sent_ns;
    }
    if (!b->stopping)
        send_next(c);
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct client *c = priv;
    (void)ac;
    if (!r) /* disconnected */
        return;
    redisReply *reply = r;
    answered(c, reply->type == REDIS_REPLY_ERROR ? reply->str : NULL);
}

static void send_next(struct client *c)
{
    struct bench *b = c->b;
    char key[32];
    snprintf(key, sizeof(key), "key:%u",
             (unsigned)((c->seq++ * 2654435761u + (uint64_t)(c - b->clients) * 7919u) % b->keys));
    c->sent_ns = uv_hrtime();
    c->waiting = true;
    if (b->proto != PROTO_RESP) {
        http_send_next(c, key);
        return;
    }
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

/* ---- HTTP (kvd's API and etcd's gateway) ---- */

static size_t base64(char *out, const void *in, size_t n)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = in;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = i + 1 < n ? alphabet[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? alphabet[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static void http_close(struct client *c)
{
    if (!c->tcp_open)
        return;
    c->tcp_open = false;
    c->b->open--;
    uv_close((uv_handle_t *)&c->tcp, NULL);
}

static void http_fail(struct client *c, const char *what)
{
    struct bench *b = c->b;
    if (!b->stopping) {
        if (!b->errors)
            snprintf(b->first_error, sizeof(b->first_error), "%s", what);
        b->errors++;
    }
    http_close(c);
}

static void on_http_written(uv_write_t *w, int status)
{
    struct client *c = w->data;
    if (status < 0)
        http_fail(c, uv_strerror(status));
}

/* The request is built whole into c->req with its body: one write each. */
static void http_send_next(struct client *c, const char *key)
{
    struct bench *b = c->b;
    bool set = !strcmp(b->op, "set");
    size_t cap = c->req_cap;
    char *req = c->req;
    int n;
    if (b->proto == PROTO_HTTP) {
        n = set ? snprintf(req, cap,
                           "PUT /v1/kv/%s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %zu\r\n\r\n%s",
                           key, c->host, b->auth_header, b->value_len, b->value)
                : snprintf(req, cap, "GET /v1/kv/%s HTTP/1.1\r\nHost: %s\r\n%s\r\n", key, c->host,
                           b->auth_header);
    } else {
        char k64[64];
        base64(k64, key, strlen(key));
        char body[96];
        const char *path = set ? "/v3/kv/put" : "/v3/kv/range";
        int blen =
            snprintf(body, sizeof(body), "{\"key\":\"%s\"%s", k64, set ? ",\"value\":\"" : "}");
        size_t total = (size_t)blen + (set ? strlen(b->value_b64) + 2 : 0);
        n = snprintf(req, cap,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s%s%s",
                     path, c->host, total, body, set ? b->value_b64 : "", set ? "\"}" : "");
    }
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "kvbench: request too large\n");
        exit(3);
    }
    uv_buf_t buf = uv_buf_init(req, (unsigned)n);
    c->write.data = c;
    int rc = uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, on_http_written);
    if (rc < 0)
        http_fail(c, uv_strerror(rc));
}

static int on_http_message(http_parser *p)
{
    struct client *c = p->data;
    /* A GET of a key never written is a 404 from kvd: an answer, not an error. */
    bool ok = p->status_code / 100 == 2 || (p->status_code == 404 && strcmp(c->b->op, "set"));
    char why[32];
    snprintf(why, sizeof(why), "HTTP %u", p->status_code);
    answered(c, ok ? NULL : why);
    return 0;
}

static const http_parser_settings http_settings = {.on_message_complete = on_http_message};

static void on_http_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct client *c = h->data;
    (void)hint;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_http_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;
    if (n < 0) {
        http_fail(c, n == UV_EOF ? "server closed the connection" : uv_strerror((int)n));
        return;
    }
    size_t used = http_parser_execute(&c->parser, &http_settings, buf->base, (size_t)n);
    if (c->parser.http_errno != HPE_OK || used != (size_t)n)
        http_fail(c, http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
}

static void on_http_connect(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    if (status < 0) {
        fprintf(stderr, "kvbench: connect to %s:%d: %s\n", c->host, c->port, uv_strerror(status));
        http_close(c);
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_http_alloc, on_http_read);
    if (!c->b->stopping)
        send_next(c);
}

static int http_open(struct client *c)
{
    struct sockaddr_in sa;
    int rc = uv_ip4_addr(c->host, c->port, &sa);
    if (rc < 0)
        return rc;
    uv_tcp_init(c->b->loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = true;
    c->b->open++;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    c->connect.data = c;
    rc = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&sa, on_http_connect);
    if (rc < 0)
        http_close(c);
    return rc;
}

static void on_timer(uv_timer_t *t)
{
    struct bench *b = t->data;
    b->stopping = true;
    b->end_ns = uv_hrtime();
    for (int i = 0; i < b->conns; i++) {
        if (b->clients[i].ac)
            redisAsyncDisconnect(b->clients[i].ac);
        http_close(&b->clients[i]);
    }
    uv_close((uv_handle_t *)t, NULL);
}

static void on_kill(uv_timer_t *t)
{
    struct bench *b = t->data;
    b->kill_ns = uv_hrtime();
    for (int i = 0; i < b->conns; i++)
        b->clients[i].out_at_kill = b->clients[i].waiting;
    if (kill(b->kill_pid, SIGKILL) != 0)
        fprintf(stderr, "kvbench: kill %d: %s\n", b->kill_pid, strerror(errno));
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

/* The sums over every --metrics node. */
static bool read_all_metrics(const struct bench *b, double *fsyncs, double *entries)
{
    *fsyncs = *entries = 0;
    for (int i = 0; i < b->n_metrics; i++) {
        double f, e;
        if (!read_metrics(b->metrics[i], &f, &e))
            return false;
        *fsyncs += f;
        *entries += e;
    }
    return true;
}

int main(int argc, char **argv)
{
    struct bench b = {.op = "set", .conns = 16, .seconds = 5, .keys = 10000, .value_len = 100};
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
            const char *colon = strrchr(v, ':');
            if (b.n_nodes == MAX_NODES || !colon || (size_t)(colon - v) >= sizeof(b.hosts[0])) {
                fprintf(stderr, "kvbench: --node wants HOST:PORT (at most %d)\n", MAX_NODES);
                return 2;
            }
            memcpy(b.hosts[b.n_nodes], v, (size_t)(colon - v));
            b.hosts[b.n_nodes][colon - v] = '\0';
            b.ports[b.n_nodes++] = atoi(colon + 1);
        } else if (!strcmp(a, "--op")) {
            b.op = v;
        } else if (!strcmp(a, "--proto")) {
            if (!strcmp(v, "resp"))
                b.proto = PROTO_RESP;
            else if (!strcmp(v, "http"))
                b.proto = PROTO_HTTP;
            else if (!strcmp(v, "etcd"))
                b.proto = PROTO_ETCD;
            else {
                fprintf(stderr, "kvbench: --proto is resp, http or etcd\n");
                return 2;
            }
        } else if (!strcmp(a, "--connections")) {
            b.conns = atoi(v);
        } else if (!strcmp(a, "--seconds")) {
            b.seconds = atoi(v);
        } else if (!strcmp(a, "--keys")) {
            b.keys = (unsigned)atoi(v);
        } else if (!strcmp(a, "--value-size")) {
            b.value_len = (size_t)atol(v);
        } else if (!strcmp(a, "--kill")) {
            b.kill_pid = atoi(v);
        } else if (!strcmp(a, "--kill-after")) {
            b.kill_after = atof(v);
        } else if (!strcmp(a, "--metrics")) {
            if (b.n_metrics == MAX_NODES) {
                fprintf(stderr, "kvbench: at most %d --metrics\n", MAX_NODES);
                return 2;
            }
            b.metrics[b.n_metrics++] = v;
        } else if (!strcmp(a, "--auth")) {
            /* A node's --requirepass: the first line of FILE. */
            FILE *f = v ? fopen(v, "r") : NULL;
            if (!f || !fgets(b.password, sizeof(b.password), f)) {
                fprintf(stderr, "kvbench: cannot read the password in %s\n", v ? v : "(none)");
                return 2;
            }
            fclose(f);
            b.password[strcspn(b.password, "\r\n")] = '\0';
            snprintf(b.auth_header, sizeof(b.auth_header), "Authorization: Bearer %s\r\n",
                     b.password);
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
    if ((b.kill_pid > 0) != (b.kill_after > 0) || b.kill_pid < 0 || b.kill_after >= b.seconds) {
        fprintf(stderr, "kvbench: --kill PID needs --kill-after S, less than --seconds\n");
        return 2;
    }
    if (b.proto != PROTO_RESP && !strcmp(b.op, "incr")) {
        fprintf(stderr, "kvbench: --op incr needs --proto resp\n");
        return 2;
    }
    b.value = malloc(b.value_len + 1);
    memset(b.value, 'x', b.value_len);
    b.value[b.value_len] = '\0';
    b.value_b64 = malloc(b.value_len / 3 * 4 + 8);
    base64(b.value_b64, b.value, b.value_len);
    b.cap_lat = 20u << 20;
    b.lat = malloc(b.cap_lat * sizeof(*b.lat));
    b.clients = calloc((size_t)b.conns, sizeof(*b.clients));
    b.loop = uv_default_loop();
    if (!b.n_nodes) {
        snprintf(b.hosts[0], sizeof(b.hosts[0]), "127.0.0.1");
        b.ports[b.n_nodes++] = 6381;
    }
    double f0 = 0, e0 = 0, f1 = 0, e1 = 0;
    bool have_metrics = b.n_metrics && read_all_metrics(&b, &f0, &e0);
    for (int i = 0; i < b.conns; i++) {
        struct client *c = &b.clients[i];
        c->b = &b;
        c->host = b.hosts[i % b.n_nodes];
        c->port = b.ports[i % b.n_nodes];
        if (b.proto != PROTO_RESP) {
            c->req_cap = 512 + b.value_len * 2;
            c->req = malloc(c->req_cap);
            int rc = c->req ? http_open(c) : UV_ENOMEM;
            if (rc < 0) {
                fprintf(stderr, "kvbench: cannot connect to %s:%d: %s\n", c->host, c->port,
                        uv_strerror(rc));
                return 3;
            }
            continue;
        }
        c->ac = redisAsyncConnect(c->host, c->port);
        if (!c->ac || c->ac->err) {
            fprintf(stderr, "kvbench: cannot connect to %s:%d\n", c->host, c->port);
            return 3;
        }
        c->ac->data = c;
        redisLibuvAttach(c->ac, b.loop);
        redisAsyncSetConnectCallback(c->ac, on_connect);
        redisAsyncSetDisconnectCallback(c->ac, on_disconnect);
        if (b.password[0]) /* first on the connection; its answer is not counted */
            redisAsyncCommand(c->ac, NULL, NULL, "AUTH %s", b.password);
        b.open++;
    }
    b.start_ns = uv_hrtime();
    if (b.proto == PROTO_RESP) /* HTTP clients start when connected */
        for (int i = 0; i < b.conns; i++)
            send_next(&b.clients[i]);
    uv_timer_init(b.loop, &b.timer);
    b.timer.data = &b;
    uv_timer_start(&b.timer, on_timer, (uint64_t)b.seconds * 1000, 0);
    if (b.kill_pid) {
        uv_timer_init(b.loop, &b.kill_timer);
        b.kill_timer.data = &b;
        uv_timer_start(&b.kill_timer, on_kill, (uint64_t)(b.kill_after * 1000), 0);
    }
    uv_run(b.loop, UV_RUN_DEFAULT);
    if (!b.end_ns)
        b.end_ns = uv_hrtime();
    if (have_metrics)
        have_metrics = read_all_metrics(&b, &f1, &e1);
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
    if (b.kill_ns) {
        bool stuck = false;
        for (int i = 0; i < b.conns; i++)
            stuck |= b.clients[i].out_at_kill;
        printf("failover: in flight at the kill: answered after %s%.0f ms; first command sent "
               "after it: answered after ",
               stuck ? "more than " : "",
               (double)(stuck ? b.end_ns - b.kill_ns : b.inflight_done_ns) / 1e6);
        if (b.first_after_ns)
            printf("%.0f ms", (double)b.first_after_ns / 1e6);
        else
            printf("(none by the end)");
        printf("; errors after the kill %" PRIu64 "\n", b.kill_errors);
    }
    free(b.value);
    free(b.value_b64);
    for (int i = 0; i < b.conns; i++)
        free(b.clients[i].req);
    free(b.lat);
    free(b.clients);
    return b.done ? 0 : 3;
}
