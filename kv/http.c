/* http.c — the HTTP/JSON front door; see http.h. */
#include "http.h"

#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "commands.h"
#include "tcp.h"
#include "ui.h"

enum {
    MAX_URL = 8 << 10,
    MAX_BODY = TCP_MAX_REQUEST_BYTES, /* the most --max-request-bytes may allow */
    MAX_HEADER = 8 << 10,
    MAX_BUFFERED = MAX_BODY + (64 << 10), /* unparsed bytes kept per connection */
    /* Fed to the parser at most this much at a time, so that a URL or a header over its
     * limit reaches our callbacks (414, 431) before the parser's own 80 KiB header cap. */
    PARSE_SLICE = 16 << 10,
    /* Bytes read and dropped after the last answer: a client still sending the body we
     * refused then reads its 413, where closing at once could reset the connection under
     * it; a client sending more than this is cut off. */
    MAX_DRAIN = 4 * MAX_BODY,
    OUT_PAUSE = 1 << 20, /* unsent replies beyond which requests wait */
};

struct conn {
    struct tcp_conn base; /* first: the door's connection (tcp.h) */
    struct http_server *hs;
    http_parser parser;
    struct buf in; /* bytes received, not yet parsed */
    size_t in_at;  /* parsed up to here */
    struct buf url, body, field, value;
    bool value_done; /* the header value just ended: the next field starts a pair */
    uint64_t hdr_client, hdr_seq;
    bool complete; /* a whole request is parsed and waits */
    bool keep_alive;
    int refused; /* 413, 414 or 431: why a callback stopped the parser */
    /* Nothing more is parsed: the request answered last is the connection's last, or the
     * bytes could not be parsed and the next request would start at a guess. */
    bool done;
    size_t drained; /* bytes dropped since done */
    uv_shutdown_t shutdown;
    struct buf out;
    struct kv_session session; /* the connection's own (server.h) */
    bool in_message;           /* a request has begun and is not complete (the partial timeout) */
    enum kv_access access;     /* this request's: what its Authorization header opens */
    char origin[128];          /* this request's Origin header, "" if none */
    const char *cors;          /* header lines this answer adds for a browser (CORS), or "" */
    char cors_buf[384];
    /* GET /v1/events: the connection is a stream of trace records (trace.h). */
    bool streaming;
    struct kv_trace_sub sub;
};

struct http_server {
    struct tcp_door door; /* first */
    struct kv_server *kv;
    http_parser_settings settings;
};

/* ------------------------------------------------------------------------
 * Connections
 * ------------------------------------------------------------------------ */

static void conn_release(struct tcp_conn *base)
{
    struct conn *c = (struct conn *)base;
    if (c->streaming && !c->sub.detached) /* detached: the server may be gone */
        kv_server_trace_unsubscribe(c->hs->kv, &c->sub);
    buf_free(&c->in);
    buf_free(&c->url);
    buf_free(&c->body);
    buf_free(&c->field);
    buf_free(&c->value);
    buf_free(&c->out);
    kv_session_release(&c->session);
}

static void conn_close(struct conn *c)
{
    tcp_conn_close(&c->base);
}

static void drive(struct conn *c);

/* Replies the kernel has not taken yet. */
static size_t unsent(struct conn *c)
{
    return tcp_write_queue((uv_stream_t *)&c->base.tcp);
}

/* A reply went out: the client reads, and the next request may run
 * (drive() waits while replies pile up). */
static void on_written(uv_stream_t *s)
{
    struct conn *c = s->data;
    if (c->base.closing)
        return;
    if (c->streaming) { /* no requests any more: only the stream's bound matters */
        if (!c->sub.detached)
            kv_server_trace_drained(c->hs->kv, &c->sub);
        return;
    }
    tcp_conn_stalled(&c->base, false); /* it reads: the clock starts again... */
    if (!c->base.busy)
        drive(c);
    if (!c->base.closing) /* ...if replies still wait */
        tcp_conn_stalled(&c->base, unsent(c) > 0);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    if (status)
        conn_close(req->data);
}

/* Stop parsing: the buffered bytes are dropped and so is whatever comes next, and the
 * answer on its way is the last one. */
static void stop_parsing(struct conn *c)
{
    c->done = true;
    c->keep_alive = false;
    buf_free(&c->in);
    c->in_at = 0;
}

static const char *status_text(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

/* An answer, with extra header lines (each ending in CRLF) or NULL. */
static void respond_with(struct conn *c, int code, const char *type, const char *extra,
                         const char *body, size_t len)
{
    buf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s\r\n",
               code, status_text(code), type, len, extra ? extra : "", c->cors ? c->cors : "",
               c->keep_alive ? "" : "Connection: close\r\n");
    buf_append(&c->out, body, len);
    if (tcp_conn_write(&c->base, &c->out, on_written)) {
        conn_close(c);
        return;
    }
    const struct tcp_limits *lim = c->base.door->limits;
    if (lim && lim->output_limit && unsent(c) > lim->output_limit) {
        c->base.door->limits->output_closed++;
        conn_close(c);
        return;
    }
    tcp_conn_stalled(&c->base, unsent(c) > 0); /* tcp.c closes it if no write completes */
    if (c->keep_alive)
        return;
    /* Half-close once the answer is out, and read on until the client closes (on_read):
     * closing with its bytes unread would reset the connection, and the client could
     * lose the answer. */
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->base.tcp, on_shutdown))
        conn_close(c);
}

static void respond(struct conn *c, int code, const char *type, const char *body, size_t len)
{
    respond_with(c, code, type, NULL, body, len);
}

/* Respond with a JSON object (taking the reference). */
static void respond_json(struct conn *c, int code, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        respond(c, 503, "application/json", "{\"error\":\"out of memory\"}\n", 26);
        return;
    }
    size_t len = strlen(text);
    text[len] = '\0';
    struct buf b = {0};
    buf_append(&b, text, len);
    buf_puts(&b, "\n");
    free(text);
    respond(c, code, "application/json", b.p ? b.p : "", b.len);
    buf_free(&b);
}

static void respond_error(struct conn *c, int code, const char *message)
{
    respond_json(c, code, json_pack("{s:s}", "error", message));
}

/* Whether this request may go on; if not, it is answered (401: who are
 * you; 403: not with that secret). */
static bool allowed(struct conn *c, enum kv_access need)
{
    if (c->access >= need)
        return true;
    if (c->access == KV_ACCESS_NONE) {
        static const char msg[] =
            "{\"error\":\"authentication required: Authorization: Bearer PASSWORD\"}\n";
        respond_with(c, 401, "application/json", "WWW-Authenticate: Bearer realm=\"kvd\"\r\n", msg,
                     sizeof(msg) - 1);
        return false;
    }
    respond_error(c, 403,
                  "a control operation: it needs the admin token (Authorization: Bearer "
                  "ADMIN-TOKEN)");
    return false;
}

/* ------------------------------------------------------------------------
 * Values in JSON
 * ------------------------------------------------------------------------ */

static json_t *base64(const uint8_t *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    struct buf b = {0};
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        char out[4] = {tab[v >> 18], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                       i + 2 < n ? tab[v & 63] : '='};
        buf_append(&b, out, 4);
    }
    json_t *s = json_stringn(b.p ? b.p : "", b.len);
    buf_free(&b);
    return s;
}

/* o["value"] = the value if it is UTF-8, else o["value_base64"]: the shape depends on the
 * bytes alone. An empty value read through another node has no buffer behind it (data is
 * NULL once protobuf decoded it), which json_stringn refuses. */
static void set_value(json_t *o, const char *name, const struct kv_value *v)
{
    json_t *s = json_stringn(v->len ? (const char *)v->data : "", v->len);
    if (s) {
        json_object_set_new(o, name, s);
    } else {
        char alt[64];
        snprintf(alt, sizeof(alt), "%s_base64", name);
        json_object_set_new(o, alt, base64(v->data, v->len));
    }
}

/* ------------------------------------------------------------------------
 * Requests
 * ------------------------------------------------------------------------ */

/* A key-value request on its way: the RESP command it is (commands.h),
 * which says what its answer holds. */
struct pending {
    struct conn *c;
    const struct kv_command *cmd;
    char *key;
};

static void drive(struct conn *c);

static void on_done(void *ctx, const struct kv_reply *r)
{
    struct pending *p = ctx;
    struct conn *c = p->c;
    if (tcp_conn_answered(&c->base) || c->base.closing) {
        free(p->key); /* freed, or going: nobody to answer */
        free(p);
        return;
    }
    if (r->code != KV_DONE || !r->result) {
        respond_error(c, r->code == KV_BAD ? 400 : 503, r->message ? r->message : "failed");
    } else {
        const struct kv_result *res = r->result;
        json_t *o = json_object();
        json_object_set_new(o, "key", json_string(p->key));
        switch (res->status) {
        case KVPB__STATUS__STATUS_OK:
            if (kv_command_id(p->cmd) == KV_ID_GET) {
                set_value(o, "value", &res->values[0]);
            } else if (kv_command_id(p->cmd) == KV_ID_DEL) {
                json_object_set_new(o, "deleted", json_integer(res->integer));
            } else {
                json_object_set_new(o, "ok", json_true());
                json_object_set_new(o, "index", json_integer((json_int_t)res->index));
            }
            respond_json(c, 200, o);
            break;
        case KVPB__STATUS__STATUS_NOT_FOUND:
            json_object_set_new(o, "error", json_string("not found"));
            respond_json(c, 404, o);
            break;
        case KVPB__STATUS__STATUS_CAS_MISMATCH:
            json_object_set_new(o, "ok", json_false());
            if (res->n_values && res->values[0].present)
                set_value(o, "current", &res->values[0]);
            else
                json_object_set_new(o, "current", json_null());
            respond_json(c, 409, o);
            break;
        default:
            json_decref(o);
            respond_error(c, 400,
                          res->status == KVPB__STATUS__STATUS_SESSION_EXPIRED
                              ? "session expired: " SESSION_EXPIRED_WHY
                              : "bad request (keys must be 1 to 511 bytes)");
            break;
        }
    }
    free(p->key);
    free(p);
    drive(c);
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decode in place; false on a bad escape. */
static bool url_decode(char *s, size_t *len)
{
    size_t o = 0;
    for (size_t i = 0; i < *len; i++) {
        if (s[i] != '%') {
            s[o++] = s[i];
            continue;
        }
        int hi = i + 2 < *len ? hexval((unsigned char)s[i + 1]) : -1;
        int lo = i + 2 < *len ? hexval((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0)
            return false;
        s[o++] = (char)(hi << 4 | lo);
        i += 2;
    }
    *len = o;
    return true;
}

static void submit(struct conn *c, Kvpb__Command *cmd, const struct kv_command *what,
                   const char *key, int flags)
{
    if (c->hdr_client) {
        cmd->client_id = c->hdr_client;
        cmd->seq = c->hdr_seq;
    }
    struct pending *p = malloc(sizeof(*p));
    char *k = strdup(key);
    if (!p || !k) {
        free(p);
        free(k);
        respond_error(c, 503, "out of memory");
        return;
    }
    *p = (struct pending){c, what, k};
    c->base.busy = true;
    /* A connection's own session is renewed when it expires; one named in
     * X-Client-Id is the client's to handle. */
    kv_server_submit(c->hs->kv, cmd, c->hdr_client ? NULL : &c->session, flags, on_done, p);
}

/* /v1/kv/KEY is GET key, SET key body or DEL key, by its method. */
static const struct kv_command *kv_route_command(int method)
{
    switch (method) {
    case HTTP_GET:
        return &kv_commands[KV_ID_GET];
    case HTTP_PUT:
        return &kv_commands[KV_ID_SET];
    case HTTP_DELETE:
        return &kv_commands[KV_ID_DEL];
    default:
        return NULL;
    }
}

/* ?consistency= of a read: linearizable (the default: ReadIndex, or the
 * leader's lease with --read-mode lease), lease (only where the node runs
 * lease reads), local (any replica's own state, maybe stale). Sets *flags;
 * false, answered, when the value is not one of those. */
static bool read_consistency(struct conn *c, const char *query, int *flags)
{
    *flags = 0;
    const char *v = query ? strstr(query, "consistency=") : NULL;
    if (v && v != query && v[-1] != '&')
        v = NULL;
    if (!v)
        return true;
    v += strlen("consistency=");
    size_t n = strcspn(v, "&");
    if (n == strlen("linearizable") && !strncmp(v, "linearizable", n))
        return true;
    if (n == strlen("local") && !strncmp(v, "local", n)) {
        *flags = KV_SUBMIT_LOCAL_READ;
        return true;
    }
    if (n == strlen("lease") && !strncmp(v, "lease", n)) {
        if (kv_server_config(c->hs->kv)->read_mode == KV_READ_LEASE)
            return true;
        respond_error(c, 400,
                      "consistency=lease needs every node started with --read-mode lease "
                      "(the lease must hold on all of them); use linearizable or local");
        return false;
    }
    respond_error(c, 400, "consistency= takes linearizable, lease or local");
    return false;
}

static void handle_kv(struct conn *c, int method, char *key, size_t keylen, const char *query)
{
    if (!url_decode(key, &keylen) || keylen == 0 || memchr(key, '\0', keylen)) {
        respond_error(c, 400, "bad key in the URL");
        return;
    }
    key[keylen] = '\0';
    const struct kv_command *what = kv_route_command(method);
    if (!what) {
        respond_error(c, 405, "use GET, PUT or DELETE on /v1/kv/KEY");
        return;
    }
    Kvpb__Command cmd = KVPB__COMMAND__INIT;
    ProtobufCBinaryData k = {keylen, (uint8_t *)key};
    cmd.op = what->op;
    cmd.keys = &k;
    cmd.n_keys = 1;
    if (kv_command_id(what) == KV_ID_SET)
        cmd.value = (ProtobufCBinaryData){c->body.len, (uint8_t *)c->body.p};
    int flags = 0;
    if (kv_command_id(what) == KV_ID_GET && !read_consistency(c, query, &flags))
        return;
    submit(c, &cmd, what, key, flags);
}

static void handle_cas(struct conn *c, int method, char *key, size_t keylen)
{
    if (method != HTTP_POST) {
        respond_error(c, 405, "use POST on /v1/cas/KEY");
        return;
    }
    if (!url_decode(key, &keylen) || keylen == 0 || memchr(key, '\0', keylen)) {
        respond_error(c, 400, "bad key in the URL");
        return;
    }
    key[keylen] = '\0';
    json_error_t jerr;
    json_t *o = json_loadb(c->body.p ? c->body.p : "", c->body.len, 0, &jerr);
    json_t *expected = o ? json_object_get(o, "expected") : NULL;
    json_t *absent = o ? json_object_get(o, "expect_absent") : NULL;
    json_t *value = o ? json_object_get(o, "value") : NULL;
    if (!o || !json_is_string(value) || (!json_is_string(expected) && !json_is_true(absent))) {
        json_decref(o);
        respond_error(c, 400,
                      "CAS body: {\"expected\": \"old\", \"value\": \"new\"} or "
                      "{\"expect_absent\": true, \"value\": \"new\"}");
        return;
    }
    const struct kv_command *what = &kv_commands[KV_ID_CAS];
    Kvpb__Command cmd = KVPB__COMMAND__INIT;
    ProtobufCBinaryData k = {keylen, (uint8_t *)key};
    cmd.op = what->op;
    cmd.keys = &k;
    cmd.n_keys = 1;
    cmd.value =
        (ProtobufCBinaryData){json_string_length(value), (uint8_t *)json_string_value(value)};
    if (json_is_string(expected))
        cmd.expected = (ProtobufCBinaryData){json_string_length(expected),
                                             (uint8_t *)json_string_value(expected)};
    else
        cmd.expect_absent = true;
    submit(c, &cmd, what, key, 0);
    json_decref(o);
}

/* ------------------------------------------------------------------------
 * Members (docs/membership.md)
 * ------------------------------------------------------------------------ */

static void on_members_done(void *ctx, enum kv_code code, const char *message, json_t *table)
{
    struct conn *c = ctx;
    if (tcp_conn_answered(&c->base) || c->base.closing)
        return; /* freed, or going: nobody to answer */
    if (code == KV_DONE)
        respond_json(c, 200, json_incref(table));
    else
        respond_error(c, code == KV_BAD ? 400 : 503, message ? message : "failed");
}

/* GET /v1/nodes: the table. POST /v1/nodes {"id": 4, "host": "127.0.0.4",
 * "raft_port": .., "resp_port": .., "http_port": .., "client_host": ..}:
 * add a node. DELETE /v1/nodes/ID: remove one. */
static void handle_nodes(struct conn *c, int method, const char *url)
{
    struct kv_server *kv = c->hs->kv;
    bool one = url[9] == '/';
    if (method == HTTP_GET && !one) {
        respond_json(c, 200, kv_server_members(kv));
        return;
    }
    struct kv_peer node = {0};
    if (method == HTTP_DELETE && one) {
        char *end;
        errno = 0;
        unsigned long long id = strtoull(url + 10, &end, 10);
        if (errno || *end || id == 0 || id > 65535) {
            respond_error(c, 400, "use DELETE /v1/nodes/ID (a node id, 1..65535)");
            return;
        }
        node.id = id;
        c->base.busy = true;
        kv_server_members_change(kv, false, &node, on_members_done, c);
        return;
    }
    if (method != HTTP_POST || one) {
        respond_error(c, 405, "use GET or POST on /v1/nodes, DELETE on /v1/nodes/ID");
        return;
    }
    json_error_t jerr;
    json_t *o = json_loadb(c->body.p ? c->body.p : "", c->body.len, 0, &jerr);
    json_int_t id = 0, ports[3] = {0};
    const char *host = NULL, *client_host = NULL;
    bool ok = o && !json_unpack(o, "{s:I,s:s,s:I,s:I,s:I,s?s}", "id", &id, "host", &host,
                                "raft_port", &ports[0], "resp_port", &ports[1], "http_port",
                                &ports[2], "client_host", &client_host);
    ok = ok && id > 0 && id <= 65535 && strlen(host) < sizeof(node.host) &&
         (!client_host || strlen(client_host) < sizeof(node.client_host));
    for (int i = 0; ok && i < 3; i++)
        ok = ports[i] > 0 && ports[i] <= 65535;
    struct sockaddr_in sa;
    ok = ok && !uv_ip4_addr(host, 0, &sa) && (!client_host || !uv_ip4_addr(client_host, 0, &sa));
    if (!ok) {
        json_decref(o);
        respond_error(c, 400,
                      "body: {\"id\": 4, \"host\": \"127.0.0.1\", \"raft_port\": 9384, "
                      "\"resp_port\": 6384, \"http_port\": 8384} (\"client_host\" optional; "
                      "IPv4 addresses, ports 1..65535)");
        return;
    }
    node.id = (raft_id)id;
    snprintf(node.host, sizeof(node.host), "%s", host);
    if (client_host)
        snprintf(node.client_host, sizeof(node.client_host), "%s", client_host);
    node.raft_port = (uint16_t)ports[0];
    node.resp_port = (uint16_t)ports[1];
    node.http_port = (uint16_t)ports[2];
    json_decref(o);
    c->base.busy = true;
    kv_server_members_change(kv, true, &node, on_members_done, c);
}

static const struct {
    const char *name;
    int type;
} message_types[] = {
    {"any", 0},
    {"RequestVote", RAFT_MSG_REQUEST_VOTE},
    {"RequestVoteResult", RAFT_MSG_REQUEST_VOTE_RESULT},
    {"AppendEntries", RAFT_MSG_APPEND_ENTRIES},
    {"AppendEntriesResult", RAFT_MSG_APPEND_ENTRIES_RESULT},
    {"TimeoutNow", RAFT_MSG_TIMEOUT_NOW},
    {"InstallSnapshot", RAFT_MSG_INSTALL_SNAPSHOT},
    {"InstallSnapshotResult", RAFT_MSG_INSTALL_SNAPSHOT_RESULT},
    {"Forward", TRANSPORT_FORWARD},
};

static const char *type_name(int type)
{
    for (size_t i = 0; i < sizeof(message_types) / sizeof(message_types[0]); i++)
        if (message_types[i].type == type)
            return message_types[i].name;
    return "?";
}

static json_t *faults_json(struct kv_server *kv)
{
    size_t n;
    const struct transport_fault *f = kv_server_faults(kv, &n);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *dir = f[i].directions == (TRANSPORT_IN | TRANSPORT_OUT) ? "both"
                          : f[i].directions == TRANSPORT_IN                 ? "in"
                                                                            : "out";
        json_array_append_new(
            a, json_pack("{s:I,s:s,s:s,s:i,s:i,s:i}", "peer", (json_int_t)f[i].peer, "direction",
                         dir, "type", type_name(f[i].message_type), "drop", (int)f[i].drop_pct,
                         "duplicate", (int)f[i].dup_pct, "delay_ms", (int)f[i].delay_ms));
    }
    return json_pack("{s:o}", "rules", a);
}

/* Body: {"rules": [{"peer": 2, "direction": "out|in|both", "type": "AppendEntries|...|any",
 * "drop": 0-100, "duplicate": 0-100, "delay_ms": N}, ...]} */
static void handle_faults(struct conn *c, int method)
{
    struct kv_server *kv = c->hs->kv;
    if (method == HTTP_GET) {
        respond_json(c, 200, faults_json(kv));
        return;
    }
    if (method == HTTP_DELETE) {
        kv_server_set_faults(kv, NULL, 0);
        respond_json(c, 200, faults_json(kv));
        return;
    }
    if (method != HTTP_PUT && method != HTTP_POST) {
        respond_error(c, 405, "use GET, PUT or DELETE on /v1/admin/faults");
        return;
    }
    json_error_t jerr;
    json_t *o = json_loadb(c->body.p ? c->body.p : "", c->body.len, 0, &jerr);
    json_t *rules = o ? json_object_get(o, "rules") : NULL;
    struct transport_fault fs[TRANSPORT_MAX_FAULTS];
    size_t n = 0;
    const char *bad = NULL;
    char why[160];
    if (!json_is_array(rules))
        bad = "expected {\"rules\": [...]}";
    else if (json_array_size(rules) > TRANSPORT_MAX_FAULTS)
        bad = "too many rules (at most 32)";
    for (size_t i = 0; !bad && i < json_array_size(rules); i++) {
        json_t *r = json_array_get(rules, i);
        json_t *peer = json_object_get(r, "peer"), *dir = json_object_get(r, "direction");
        json_t *type = json_object_get(r, "type"), *drop = json_object_get(r, "drop");
        json_t *dup = json_object_get(r, "duplicate"), *delay = json_object_get(r, "delay_ms");
        struct transport_fault f = {0};
        f.peer = json_is_integer(peer) ? (raft_id)json_integer_value(peer) : 0;
        const char *d = json_is_string(dir) ? json_string_value(dir) : "both";
        f.directions = !strcmp(d, "in")     ? TRANSPORT_IN
                       : !strcmp(d, "out")  ? TRANSPORT_OUT
                       : !strcmp(d, "both") ? TRANSPORT_IN | TRANSPORT_OUT
                                            : 0;
        f.message_type = -1;
        const char *t = json_is_string(type) ? json_string_value(type) : "any";
        for (size_t k = 0; k < sizeof(message_types) / sizeof(message_types[0]); k++)
            if (!strcmp(t, message_types[k].name))
                f.message_type = message_types[k].type;
        json_int_t pd = json_is_integer(drop) ? json_integer_value(drop) : 0;
        json_int_t pu = json_is_integer(dup) ? json_integer_value(dup) : 0;
        json_int_t dl = json_is_integer(delay) ? json_integer_value(delay) : 0;
        if (!f.directions || f.message_type < 0 || pd < 0 || pd > 100 || pu < 0 || pu > 100 ||
            dl < 0 || dl > 600000 || (peer && !json_is_integer(peer))) {
            snprintf(why, sizeof(why),
                     "rule %zu: direction in|out|both, type a Raft message name or any, drop and "
                     "duplicate 0-100, delay_ms 0-600000",
                     i);
            bad = why;
            break;
        }
        f.drop_pct = (unsigned)pd;
        f.dup_pct = (unsigned)pu;
        f.delay_ms = (uint32_t)dl;
        fs[n++] = f;
    }
    json_decref(o);
    if (bad) {
        respond_error(c, 400, bad);
        return;
    }
    kv_server_set_faults(kv, fs, n);
    respond_json(c, 200, faults_json(kv));
}

/* ------------------------------------------------------------------------
 * The dashboard (docs/dashboard.md): its files, its stream, its browser
 * ------------------------------------------------------------------------ */

/* Browsers let a page read another origin's answers only when that origin
 * says so. The dashboard served by one node reads every node: what is
 * read-only (status, events, members) is open to any page, as curl is;
 * what changes something (the fault filter, transfers) is open only to
 * pages served by a member, and still needs its token. */
static void cors(struct conn *c, const char *url, int method)
{
    if (!c->origin[0])
        return;
    bool read_only =
        (method == HTTP_GET || method == HTTP_OPTIONS) &&
        (!strcmp(url, "/v1/status") || !strcmp(url, "/v1/events") || !strcmp(url, "/v1/nodes") ||
         !strcmp(url, "/v1/ring") || !strcmp(url, "/metrics"));
    bool member = kv_server_member_origin(c->hs->kv, c->origin);
    if (!read_only && !member)
        return;
    snprintf(c->cors_buf, sizeof(c->cors_buf),
             "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n%s", member ? c->origin : "*",
             method == HTTP_OPTIONS
                 ? "Access-Control-Allow-Methods: GET, PUT, POST, DELETE\r\n"
                   "Access-Control-Allow-Headers: Authorization, Content-Type\r\n"
                   "Access-Control-Max-Age: 600\r\n"
                 : "");
    c->cors = c->cors_buf;
}

/* One record as a server-sent event. */
static int sse_write(struct kv_trace_sub *sub, const char *line, size_t len)
{
    struct conn *c = (struct conn *)((char *)sub - offsetof(struct conn, sub));
    if (c->base.closing)
        return -1;
    buf_puts(&c->out, "data: ");
    buf_append(&c->out, line, len && line[len - 1] == '\n' ? len - 1 : len);
    buf_puts(&c->out, "\n\n");
    if (c->out.oom || tcp_conn_write(&c->base, &c->out, on_written)) {
        buf_free(&c->out);
        conn_close(c);
        return -1;
    }
    return 0;
}

static size_t sse_queued(struct kv_trace_sub *sub)
{
    struct conn *c = (struct conn *)((char *)sub - offsetof(struct conn, sub));
    return unsent(c);
}

/* GET /v1/events[?group=N]: the node's trace records as they happen, as
 * server-sent events (one JSON record each, docs/trace.md), until the
 * client goes. A client that reads too slowly loses records and is told
 * how many (trace.h). */
static void handle_events(struct conn *c, int method, const char *query)
{
    if (method != HTTP_GET) {
        respond_error(c, 405, "use GET /v1/events[?group=N]");
        return;
    }
    memset(&c->sub, 0, sizeof(c->sub));
    c->sub.all_groups = true;
    if (query && *query) {
        char *end;
        errno = 0;
        if (strncmp(query, "group=", 6) != 0 || !query[6] ||
            (c->sub.group = strtoull(query + 6, &end, 10), errno || *end)) {
            respond_error(c, 400, "use GET /v1/events or /v1/events?group=N (a Raft group)");
            return;
        }
        c->sub.all_groups = false;
    }
    c->sub.write = sse_write;
    c->sub.queued = sse_queued;
    /* The header goes first: subscribing writes the first records at once. */
    buf_printf(&c->out,
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
               "%s\r\n: trace records of this node, one JSON object per event (docs/trace.md)\n\n",
               c->cors ? c->cors : "");
    c->streaming = true;
    if (!kv_server_trace_subscribe(c->hs->kv, &c->sub)) {
        c->streaming = false;
        c->out.len = 0;
        respond_error(c, 503, "too many event streams open on this node (at most 16)");
        return;
    }
    stop_parsing(c); /* the connection is the stream's from now on */
    if (c->out.len && !c->base.closing && tcp_conn_write(&c->base, &c->out, on_written))
        conn_close(c);
}

/* GET /ui/...: the dashboard's files, built into kvd (ui.h). */
static void handle_ui(struct conn *c, int method, const char *url)
{
    if (method != HTTP_GET) {
        respond_error(c, 405, "use GET /ui/");
        return;
    }
    if (!strcmp(url, "/ui")) {
        respond_with(c, 301, "text/plain", "Location: /ui/\r\n", "", 0);
        return;
    }
    const char *name = url + 4;
    if (!*name)
        name = "index.html";
    const struct ui_file *f = ui_file_find(name);
    if (!f) {
        respond_error(c, 404, "no such file of the dashboard; open /ui/");
        return;
    }
    respond_with(c, 200, f->type, "Cache-Control: no-cache\r\n", (const char *)f->data, f->len);
}

static void emit_metrics(void *arg, const char *text)
{
    buf_puts(arg, text);
}

/* What a path needs, as commands.h flags: one that does what a RESP
 * command does, what that command needs (the same table decides for both
 * doors). Unknown paths need the password too, to be told they are. */
static unsigned route_flags(const char *path, int method)
{
    if (!strcmp(path, "/v1/transfer"))
        return kv_commands[KV_ID_RAFT_TRANSFER].flags;
    if (!strcmp(path, "/v1/nodes") || !strncmp(path, "/v1/nodes/", 10))
        return kv_commands[method == HTTP_GET ? KV_ID_RAFT_NODES : KV_ID_RAFT_NODE].flags;
    if (!strcmp(path, "/v1/rebalance"))
        return kv_commands[KV_ID_RAFT_REBALANCE].flags;
    /* The dashboard's files hold nothing of the cluster's: the page asks for what it
     * shows with the password, if the node wants one. */
    if (!strcmp(path, "/ui") || !strncmp(path, "/ui/", 4))
        return KV_CMD_NO_AUTH;
    if (!strcmp(path, "/v1/status") || !strcmp(path, "/v1/ring") ||
        !strncmp(path, "/v1/locate/", 11) || !strcmp(path, "/v1/events"))
        return kv_commands[KV_ID_RAFT_STATUS].flags; /* what the cluster looks like */
    /* The fault filter, which RESP has no command for. */
    if (!strcmp(path, "/v1/admin/faults"))
        return KV_CMD_ADMIN;
    /* The data path (/v1/kv/, /v1/cas/), /metrics. */
    return 0;
}

static void dispatch(struct conn *c)
{
    struct kv_server *kv = c->hs->kv;
    int method = c->parser.method;
    buf_append(&c->url, "", 1); /* NUL-terminate */
    if (c->url.oom || c->body.oom) {
        respond_error(c, 503, "out of memory");
        return;
    }
    char *url = c->url.p;
    char *query = strchr(url, '?');
    if (query)
        *query++ = '\0';
    size_t len = strlen(url);
    cors(c, url, method);
    if (method == HTTP_OPTIONS) { /* a browser's preflight: cors() said what it may do */
        respond(c, 204, "text/plain", "", 0);
        return;
    }
    if (!allowed(c, kv_command_access(route_flags(url, method))))
        return;
    if (!strcmp(url, "/v1/events")) {
        handle_events(c, method, query);
    } else if (!strcmp(url, "/ui") || !strncmp(url, "/ui/", 4)) {
        handle_ui(c, method, url);
    } else if (!strncmp(url, "/v1/kv/", 7)) {
        handle_kv(c, method, url + 7, len - 7, query);
    } else if (!strncmp(url, "/v1/cas/", 8)) {
        handle_cas(c, method, url + 8, len - 8);
    } else if (!strcmp(url, "/v1/status")) {
        json_t *st = kv_server_status(kv);
        respond_json(c, 200, st);
    } else if (!strcmp(url, "/v1/ring")) {
        respond_json(c, 200, kv_server_ring(kv));
    } else if (!strncmp(url, "/v1/locate/", 11)) {
        size_t keylen = len - 11;
        if (!url_decode(url + 11, &keylen) || keylen == 0)
            respond_error(c, 400, "use GET /v1/locate/KEY (KEY percent-encoded, not empty)");
        else
            respond_json(c, 200, kv_server_locate(kv, url + 11, keylen));
    } else if (!strcmp(url, "/metrics")) {
        struct buf b = {0};
        kv_server_metrics(kv, emit_metrics, &b);
        respond(c, 200, "text/plain; version=0.0.4", b.p ? b.p : "", b.len);
        buf_free(&b);
    } else if (!strcmp(url, "/v1/transfer")) {
        uint64_t to = 0, shard = 0;
        bool one = false;
        /* ?to=N, ?shard=S, or both: "shard=S&to=N" (either order). */
        for (char *save = NULL, *p = query ? strtok_r(query, "&", &save) : NULL; p;
             p = strtok_r(NULL, "&", &save)) {
            bool is_to = !strncmp(p, "to=", 3), is_shard = !strncmp(p, "shard=", 6);
            char *v = p + (is_to ? 3 : 6), *end;
            errno = 0;
            uint64_t n = (is_to || is_shard) && *v ? strtoull(v, &end, 10) : 0;
            if ((!is_to && !is_shard) || !*v || errno || *end || (is_shard && n > INT32_MAX)) {
                respond_error(c, 400, "use POST /v1/transfer[?to=N][&shard=S] (numbers)");
                return;
            }
            if (is_to)
                to = n;
            else
                shard = n, one = true;
        }
        if (method != HTTP_POST) {
            respond_error(c, 405, "use POST /v1/transfer[?to=N][&shard=S]");
            return;
        }
        int rv = kv_server_transfer(kv, one ? (int)shard : -1, to);
        if (rv == RAFT_OK)
            respond_json(c, 200, json_pack("{s:b}", "ok", 1));
        else
            respond_error(c, rv == RAFT_ENOTLEADER ? 409 : 400,
                          rv == RAFT_ENOTLEADER ? "not the leader: send it to the leader"
                                                : raft_strerror(rv));
    } else if (!strcmp(url, "/v1/nodes") || !strncmp(url, "/v1/nodes/", 10)) {
        handle_nodes(c, method, url);
    } else if (!strcmp(url, "/v1/rebalance")) {
        respond_json(c, 200, kv_server_rebalance(kv));
    } else if (!strcmp(url, "/v1/admin/faults")) {
        if (kv_server_auth(kv)->fault_injection)
            handle_faults(c, method);
        else
            respond_error(c, 404,
                          "fault injection is off: start kvd with "
                          "--enable-fault-injection (the cluster scripts do)");
    } else {
        respond_error(c, 404,
                      "no such path; try /v1/kv/KEY, /v1/cas/KEY, /v1/status, /v1/ring, "
                      "/v1/locate/KEY, /v1/nodes, /v1/rebalance, /metrics, /v1/transfer, "
                      "/v1/admin/faults, /v1/events, /ui/");
    }
}

/* ------------------------------------------------------------------------
 * Parsing
 * ------------------------------------------------------------------------ */

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    c->url.len = c->body.len = c->field.len = c->value.len = 0;
    c->url.oom = c->body.oom = false;
    c->hdr_client = c->hdr_seq = 0;
    c->value_done = false;
    c->refused = 0;
    c->in_message = true;
    c->origin[0] = '\0';
    c->cors = "";
    c->access = kv_auth_default(kv_server_auth(c->hs->kv));
    return 0;
}

/* Stop the parser (any non-zero return of a data callback) and say why. */
static int refuse(struct conn *c, int code)
{
    c->refused = code;
    if (code == 413 && c->base.door->limits)
        c->base.door->limits->too_large++;
    return 1;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->url.len + len > MAX_URL)
        return refuse(c, 414);
    buf_append(&c->url, at, len);
    return 0;
}

static void header_done(struct conn *c)
{
    if (!c->field.len)
        return;
    buf_append(&c->value, "", 1);
    if (c->value.oom)
        return;
    uint64_t *slot = NULL;
    if (c->field.len == 11 && !strncasecmp(c->field.p, "X-Client-Id", 11))
        slot = &c->hdr_client;
    else if (c->field.len == 5 && !strncasecmp(c->field.p, "X-Seq", 5))
        slot = &c->hdr_seq;
    if (slot)
        *slot = strtoull(c->value.p, NULL, 10);
    if (c->field.len == 6 && !strncasecmp(c->field.p, "Origin", 6))
        snprintf(c->origin, sizeof(c->origin), "%s", c->value.p);
    if (c->field.len == 13 && !strncasecmp(c->field.p, "Authorization", 13) &&
        !strncasecmp(c->value.p, "Bearer ", 7)) {
        enum kv_access a =
            kv_auth_check(kv_server_auth(c->hs->kv), NULL, c->value.p + 7, strlen(c->value.p + 7));
        if (a > c->access)
            c->access = a;
    }
    c->field.len = c->value.len = 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->value_done) {
        header_done(c);
        c->value_done = false;
    }
    if (c->field.len + len > MAX_HEADER)
        return refuse(c, 431);
    buf_append(&c->field, at, len);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->value.len + len > MAX_HEADER)
        return refuse(c, 431);
    buf_append(&c->value, at, len);
    c->value_done = true;
    return 0;
}

/* The largest body taken (--max-request-bytes); a larger one is refused
 * with 413 and counted. */
static size_t body_limit(const struct conn *c)
{
    return tcp_request_limit(c->base.door->limits);
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    header_done(c);
    c->keep_alive = http_should_keep_alive(p);
    /* Not 1: to http-parser that means "there is no body", and the body would then be
     * parsed as the next requests. Any other non-zero value is an error. */
    if (p->content_length != ULLONG_MAX && p->content_length > body_limit(c)) {
        refuse(c, 413);
        return -1;
    }
    return 0;
}

/* A chunked body has no length up front: it is refused as it grows past the limit. */
static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->body.len + len > body_limit(c))
        return refuse(c, 413);
    buf_append(&c->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->complete = true;
    c->in_message = false;
    if (p->upgrade)
        c->keep_alive = false; /* what follows is another protocol, which we do not speak */
    http_parser_pause(p, 1);   /* one request at a time: the rest waits in c->in */
    return 0;
}

static void refuse_request(struct conn *c, enum http_errno e)
{
    int code = c->refused ? c->refused : e == HPE_HEADER_OVERFLOW ? 431 : 400;
    stop_parsing(c);
    switch (code) {
    case 413:
        respond_error(c, code, "request body over 16 MiB");
        break;
    case 414:
        respond_error(c, code, "URL over 8 KiB");
        break;
    case 431:
        respond_error(c, code, "request header over 8 KiB, or headers over 80 KiB in all");
        break;
    default:
        respond_error(c, code, http_errno_description(e));
    }
}

/* Parse what is buffered and run the requests, one at a time. */
static void drive(struct conn *c)
{
    /* Not while replies wait for the client to read them: a client that
     * pipelines requests and does not read gets nothing more made for it. */
    while (!c->base.closing && !c->base.busy && !c->done && unsent(c) <= OUT_PAUSE) {
        if (c->complete) {
            c->complete = false;
            http_parser_pause(&c->parser, 0);
            if (!c->keep_alive)
                stop_parsing(c); /* anything after this request is not ours to run */
            dispatch(c);
            continue;
        }
        if (c->in_at >= c->in.len) {
            c->in.len = c->in_at = 0;
            return;
        }
        size_t len = c->in.len - c->in_at;
        size_t n = http_parser_execute(&c->parser, &c->hs->settings, c->in.p + c->in_at,
                                       len < PARSE_SLICE ? len : PARSE_SLICE);
        c->in_at += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e != HPE_OK && e != HPE_PAUSED) {
            refuse_request(c, e);
            return;
        }
        if (!n && !c->complete)
            return;
    }
}

static void alloc_buf(uv_handle_t *h, size_t size, uv_buf_t *b)
{
    (void)h;
    b->base = malloc(size);
    b->len = b->base ? size : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n < 0) {
        free(b->base);
        conn_close(c);
        return;
    }
    if (c->done) {
        free(b->base);
        c->drained += (size_t)n;
        if (c->drained > MAX_DRAIN)
            conn_close(c);
        return;
    }
    if (c->in_at > 0 && c->in_at == c->in.len)
        c->in.len = c->in_at = 0;
    buf_append(&c->in, b->base, (size_t)n);
    free(b->base);
    if (c->in.oom || c->in.len - c->in_at > MAX_BUFFERED) {
        conn_close(c);
        return;
    }
    drive(c);
    if (!c->base.closing)
        tcp_conn_partial(&c->base, !c->done && c->in_message && !c->complete);
}

static void on_accepted(struct tcp_conn *base)
{
    struct conn *c = (struct conn *)base;
    c->hs = (struct http_server *)base->door;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->keep_alive = true;
    if (kv_session_init(c->hs->kv, &c->session)) {
        tcp_conn_close(base);
        return;
    }
    uv_read_start((uv_stream_t *)&base->tcp, alloc_buf, on_read);
}

static void on_stopped(struct tcp_door *d)
{
    free(d); /* the http_server, whose first member it is */
}

/* The parser's callbacks (also tests/fuzz/fuzz_http.c's). */
static void settings_init(http_parser_settings *s)
{
    http_parser_settings_init(s);
    s->on_message_begin = on_message_begin;
    s->on_url = on_url;
    s->on_header_field = on_header_field;
    s->on_header_value = on_header_value;
    s->on_headers_complete = on_headers_complete;
    s->on_body = on_body;
    s->on_message_complete = on_message_complete;
}

int http_start(struct http_server **out, uv_loop_t *loop, struct kv_server *kv, const char *host,
               uint16_t port)
{
    struct http_server *hs = calloc(1, sizeof(*hs));
    if (!hs)
        return UV_ENOMEM;
    hs->kv = kv;
    hs->door.conn_size = sizeof(struct conn);
    hs->door.accepted = on_accepted;
    hs->door.release = conn_release;
    hs->door.stopped = on_stopped;
    hs->door.limits = kv_server_limits(kv);
    hs->door.full_reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                          "Content-Length: 42\r\nConnection: close\r\n\r\n"
                          "{\"error\":\"max number of clients reached\"}\n";
    settings_init(&hs->settings);
    int rc = tcp_door_start(&hs->door, loop, host, port);
    if (rc)
        return rc; /* freed by on_stopped */
    *out = hs;
    return 0;
}

void http_stop(struct http_server *hs)
{
    if (!hs)
        return;
    tcp_door_stop(&hs->door);
}
