/* kvbench — a closed-loop load generator for kvd: N connections, each
 * sending its next command when the last one is answered, for a bounded
 * time. Prints throughput and latency percentiles, and -- given a node's
 * HTTP address -- fsyncs per second and entries per fsync from its /metrics.
 *
 * Three protocols: RESP (works against any Redis-protocol server), kvd's
 * HTTP/JSON API, and etcd's v3 JSON gateway, so that `make bench` can put
 * kvd and etcd side by side on the same load. Every protocol has the same
 * client: a keep-alive connection on libuv that writes a request with one
 * system call and frames answers with hiredis' reader (RESP) or
 * http-parser. The load generator runs on the cores it measures, so its own
 * cost is the same for every server it is compared against. */
#include <errno.h>
#include <http_parser.h>
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
    redisReader *reader; /* PROTO_RESP */
    unsigned skip;       /* answers to skip (AUTH's) */
    uint64_t sent_ns;
    uint64_t seq;
    bool waiting;     /* a command is out */
    bool out_at_kill; /* ...and was when --kill fired */
    bool connected;
    uv_tcp_t tcp;
    uv_connect_t connect;
    http_parser parser; /* PROTO_HTTP and PROTO_ETCD */
    char *req;          /* a whole request: headers and body, written at once */
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
static void resp_send_next(struct client *c, const char *key);

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

static void send_next(struct client *c)
{
    struct bench *b = c->b;
    char key[32];
    snprintf(key, sizeof(key), "key:%u",
             (unsigned)((c->seq++ * 2654435761u + (uint64_t)(c - b->clients) * 7919u) % b->keys));
    c->sent_ns = uv_hrtime();
    c->waiting = true;
    if (b->proto == PROTO_RESP)
        resp_send_next(c, key);
    else
        http_send_next(c, key);
}

/* ---- Requests: encoding and writing them ---- */

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

static void conn_close(struct client *c)
{
    if (!c->tcp_open)
        return;
    c->tcp_open = false;
    c->b->open--;
    uv_close((uv_handle_t *)&c->tcp, NULL);
}

static void conn_fail(struct client *c, const char *what)
{
    struct bench *b = c->b;
    if (!b->stopping) {
        if (!b->errors)
            snprintf(b->first_error, sizeof(b->first_error), "%s", what);
        b->errors++;
    }
    conn_close(c);
}

struct write_req {
    uv_write_t req;
    struct client *c;
    char data[]; /* what the socket did not take at once */
};

static void on_written(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct client *c = w->c;
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        conn_fail(c, uv_strerror(status));
}

/* c->req's first len bytes, with one system call when the socket takes
 * them whole (it nearly always does: one request is out at a time); the
 * rest, if any, copied, so that c->req is free for the next request. */
static void write_request(struct client *c, size_t len)
{
    uv_buf_t buf = uv_buf_init(c->req, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    if (n == (int)len)
        return;
    if (n < 0 && n != UV_EAGAIN) {
        conn_fail(c, uv_strerror(n));
        return;
    }
    size_t sent = n > 0 ? (size_t)n : 0;
    struct write_req *w = malloc(sizeof(*w) + len - sent);
    if (!w) {
        conn_fail(c, "out of memory");
        return;
    }
    w->c = c;
    memcpy(w->data, c->req + sent, len - sent);
    buf = uv_buf_init(w->data, (unsigned)(len - sent));
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written);
    if (rc < 0) {
        free(w);
        conn_fail(c, uv_strerror(rc));
    }
}

/* ---- RESP ---- */

static size_t resp_arg(char *out, size_t cap, const char *arg, size_t len)
{
    int n = snprintf(out, cap, "$%zu\r\n", len);
    if (n < 0 || (size_t)n + len + 2 > cap)
        return cap; /* too large: the caller sees it */
    memcpy(out + n, arg, len);
    memcpy(out + n + len, "\r\n", 2);
    return (size_t)n + len + 2;
}

static void resp_send_next(struct client *c, const char *key)
{
    struct bench *b = c->b;
    const char *verb = !strcmp(b->op, "set") ? "SET" : !strcmp(b->op, "get") ? "GET" : "INCR";
    bool set = verb[0] == 'S';
    size_t cap = c->req_cap, n = (size_t)snprintf(c->req, cap, "*%d\r\n", set ? 3 : 2);
    n += resp_arg(c->req + n, cap - n, verb, strlen(verb));
    if (n < cap)
        n += resp_arg(c->req + n, cap - n, key, strlen(key));
    if (set && n < cap)
        n += resp_arg(c->req + n, cap - n, b->value, b->value_len);
    if (n >= cap) {
        fprintf(stderr, "kvbench: request too large\n");
        exit(3);
    }
    write_request(c, n);
}

static void resp_read(struct client *c, const char *data, size_t len)
{
    if (redisReaderFeed(c->reader, data, len) != REDIS_OK) {
        conn_fail(c, "out of memory");
        return;
    }
    for (;;) {
        void *r = NULL;
        if (redisReaderGetReply(c->reader, &r) != REDIS_OK) {
            conn_fail(c, c->reader->errstr[0] ? c->reader->errstr : "bad reply");
            return;
        }
        if (!r)
            return;
        redisReply *reply = r;
        char why[160] = "";
        if (reply->type == REDIS_REPLY_ERROR)
            snprintf(why, sizeof(why), "%s", reply->str);
        freeReplyObject(r);
        if (c->skip) { /* AUTH's: a refusal ends the run for this connection */
            c->skip--;
            if (why[0]) {
                conn_fail(c, why);
                return;
            }
            continue;
        }
        answered(c, why[0] ? why : NULL);
        if (!c->tcp_open)
            return;
    }
}

/* ---- HTTP (kvd's API and etcd's gateway) ---- */

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
    write_request(c, (size_t)n);
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

/* ---- The connection ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct client *c = h->data;
    (void)hint;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;
    if (n < 0) {
        char why[160];
        snprintf(why, sizeof(why), "%s:%d: %s", c->host, c->port,
                 n == UV_EOF ? "the server closed the connection" : uv_strerror((int)n));
        conn_fail(c, why);
        return;
    }
    if (c->b->proto == PROTO_RESP) {
        resp_read(c, buf->base, (size_t)n);
        return;
    }
    size_t used = http_parser_execute(&c->parser, &http_settings, buf->base, (size_t)n);
    if (c->parser.http_errno != HPE_OK || used != (size_t)n)
        conn_fail(c, http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
}

static void on_connected(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    struct bench *b = c->b;
    if (status < 0) {
        fprintf(stderr, "kvbench: connect to %s:%d: %s\n", c->host, c->port, uv_strerror(status));
        conn_close(c);
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (b->proto == PROTO_RESP && b->password[0]) {
        /* First on the connection; its answer is not counted. */
        size_t n = (size_t)snprintf(c->req, c->req_cap, "*2\r\n");
        n += resp_arg(c->req + n, c->req_cap - n, "AUTH", 4);
        n += resp_arg(c->req + n, c->req_cap - n, b->password, strlen(b->password));
        if (n >= c->req_cap) {
            fprintf(stderr, "kvbench: password too long\n");
            exit(3);
        }
        c->skip = 1;
        write_request(c, n);
    }
    if (!b->stopping && c->tcp_open)
        send_next(c);
}

static int conn_open(struct client *c)
{
    struct sockaddr_in sa;
    int rc = uv_ip4_addr(c->host, c->port, &sa);
    if (rc < 0)
        return rc;
    uv_tcp_init(c->b->loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = true;
    c->b->open++;
    if (c->b->proto == PROTO_RESP) {
        c->reader = redisReaderCreate();
        if (!c->reader) {
            conn_close(c);
            return UV_ENOMEM;
        }
    } else {
        http_parser_init(&c->parser, HTTP_RESPONSE);
        c->parser.data = c;
    }
    c->connect.data = c;
    rc = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&sa, on_connected);
    if (rc < 0)
        conn_close(c);
    return rc;
}

static void on_timer(uv_timer_t *t)
{
    struct bench *b = t->data;
    b->stopping = true;
    b->end_ns = uv_hrtime();
    for (int i = 0; i < b->conns; i++)
        conn_close(&b->clients[i]);
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
        c->req_cap = 512 + b.value_len * 2;
        c->req = malloc(c->req_cap);
        int rc = c->req ? conn_open(c) : UV_ENOMEM;
        if (rc < 0) {
            fprintf(stderr, "kvbench: cannot connect to %s:%d: %s\n", c->host, c->port,
                    uv_strerror(rc));
            return 3;
        }
    }
    b.start_ns = uv_hrtime(); /* each connection starts when connected */
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
    for (int i = 0; i < b.conns; i++) {
        free(b.clients[i].req);
        if (b.clients[i].reader)
            redisReaderFree(b.clients[i].reader);
    }
    free(b.lat);
    free(b.clients);
    return b.done ? 0 : 3;
}
