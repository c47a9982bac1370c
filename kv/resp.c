/* resp.c — the Redis-protocol front door; see resp.h. */
#include "resp.h"

#include <ctype.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tcp.h"

enum {
    MAX_ARGS = 1 << 16,           /* arguments per command */
    MAX_PENDING_BYTES = 16 << 20, /* unparsed bytes per connection */
    MAX_QUEUED = 1024,            /* parsed commands waiting; reading pauses beyond */
    MAX_QUEUED_BYTES = 16 << 20,  /* ...or beyond this many bytes of them */
    OUT_PAUSE = 1 << 20,          /* unsent replies beyond which commands wait */
    MAX_INLINE = 64 << 10,
};

/* One parsed command: argv[i] (argvlen[i] bytes, NUL-terminated too). */
struct cmd {
    struct cmd *next;
    size_t bytes; /* its size here, for the queue's bound */
    int argc;
    char **argv;
    size_t *argvlen;
};

struct conn {
    struct tcp_conn base; /* first: the door's connection (tcp.h) */
    struct resp_server *rs;
    redisReader *reader;
    struct cmd *head, *tail;
    size_t queued;
    bool running; /* inside run_queue (a synchronous answer must not recurse) */
    bool quit;    /* QUIT: close once the replies are written */
    bool reading;
    struct buf out;
    struct buf inl; /* an inline command line, until its newline */
    uint64_t client_id, seq;
    enum kv_access access; /* what this connection may do (auth.h) */
    size_t queued_bytes;   /* of the commands in head..tail */
    uint64_t parsed;       /* commands parsed so far (progress, for the partial timeout) */
    char name[64];         /* CLIENT SETNAME */
    uint64_t id;           /* CLIENT ID: small, as Redis' (client_id is the session's) */
};

struct resp_server {
    struct tcp_door door; /* first */
    struct kv_server *kv;
};

/* hiredis' reader builds arrays of the size a client announces; refuse
 * absurd ones before it allocates. */
static redisReplyObjectFunctions guarded;
static void *(*create_array)(const redisReadTask *, int);

static void *create_array_guarded(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > MAX_ARGS)
        return NULL; /* the reader reports out of memory: the connection closes */
    return create_array(task, elements);
}

static redisReader *reader_new(void)
{
    redisReader *r = redisReaderCreate();
    if (!r)
        return NULL;
    if (!create_array) {
        guarded = *r->fn;
        create_array = guarded.createArray;
        guarded.createArray = create_array_guarded;
    }
    r->fn = &guarded;
    /* hiredis frees an idle buffer with more than this free: a big command's
     * memory goes back, small ones reuse the buffer. */
    r->maxbuf = 1 << 20;
    return r;
}

/* ------------------------------------------------------------------------
 * Replies
 * ------------------------------------------------------------------------ */

static void reply_bulk(struct buf *b, const void *data, size_t len)
{
    buf_printf(b, "$%zu\r\n", len);
    buf_append(b, data, len);
    buf_puts(b, "\r\n");
}

static void reply_error(struct buf *b, const char *prefix, const char *msg)
{
    buf_printf(b, "-%s ", prefix);
    /* An error line cannot hold CR or LF. */
    for (const char *p = msg; *p; p++)
        buf_append(b, (*p == '\r' || *p == '\n') ? " " : p, 1);
    buf_puts(b, "\r\n");
}

/* ------------------------------------------------------------------------
 * Connections
 * ------------------------------------------------------------------------ */

static void cmd_free(struct cmd *c)
{
    free(c);
}

static void conn_release(struct tcp_conn *base)
{
    struct conn *c = (struct conn *)base;
    while (c->head) {
        struct cmd *k = c->head;
        c->head = k->next;
        cmd_free(k);
    }
    if (c->reader)
        redisReaderFree(c->reader);
    buf_free(&c->out);
    buf_free(&c->inl);
}

static void conn_close(struct conn *c)
{
    tcp_conn_close(&c->base);
}

static void on_quit_written(uv_stream_t *s)
{
    struct conn *c = s->data;
    conn_close(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void alloc_buf(uv_handle_t *h, size_t size, uv_buf_t *b);
static void run_queue(struct conn *c);
static void flush(struct conn *c);
static bool reader_idle(const redisReader *r);

/* Replies built or written but not yet taken by the kernel. */
static size_t unsent(struct conn *c)
{
    return c->out.len + tcp_write_queue((uv_stream_t *)&c->base.tcp);
}

/* A write finished: commands that waited for the client to read go on. */
static void on_written(uv_stream_t *s)
{
    struct conn *c = s->data;
    if (c->base.closing || c->running)
        return;
    tcp_conn_stalled(&c->base, false); /* it reads: the clock starts again */
    run_queue(c);
    flush(c);
}

static void flush(struct conn *c)
{
    if (c->base.closing)
        return;
    bool quit = c->quit && !c->base.busy && !c->head;
    if (c->out.len || quit)
        if (tcp_write_buf((uv_stream_t *)&c->base.tcp, &c->out,
                          quit ? on_quit_written : on_written))
            conn_close(c);
    if (quit && !c->base.closing && !c->out.len &&
        tcp_write_queue((uv_stream_t *)&c->base.tcp) == 0)
        conn_close(c);
    if (c->base.closing)
        return;
    /* A client that does not read: its replies are bounded (commands wait
     * beyond OUT_PAUSE), and once the kernel holds all it will take, a write
     * waits; if none completes for the output timeout, it is closed (tcp.c);
     * past the hard limit (one huge reply) at once. */
    size_t pending = unsent(c);
    const struct tcp_limits *lim = c->base.door->limits;
    if (lim && lim->output_limit && pending > lim->output_limit) {
        c->base.door->limits->output_closed++;
        conn_close(c);
        return;
    }
    tcp_conn_stalled(&c->base, tcp_write_queue((uv_stream_t *)&c->base.tcp) > 0);
    /* Reading resumes once the backlog is worked off. */
    if (!c->reading && !c->quit && c->queued < MAX_QUEUED / 2 &&
        c->queued_bytes < MAX_QUEUED_BYTES / 2) {
        c->reading = true;
        uv_read_start((uv_stream_t *)&c->base.tcp, alloc_buf, on_read);
        tcp_conn_partial(&c->base, c->inl.len || !reader_idle(c->reader));
    }
}

/* ------------------------------------------------------------------------
 * Commands
 * ------------------------------------------------------------------------ */

static bool arg_is(const struct cmd *k, int i, const char *word)
{
    return i < k->argc && strcasecmp(k->argv[i], word) == 0;
}

static bool parse_i64(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 20)
        return false;
    char tmp[24];
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (errno || *end || isspace((unsigned char)tmp[0]))
        return false;
    *out = v;
    return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!*s || !isdigit((unsigned char)*s))
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* What kind of answer a command wants (the Command op alone does not
 * say: SET NX is a CAS answered +OK or nil). */
enum shape {
    SHAPE_OK,
    SHAPE_BULK,
    SHAPE_INT,
    SHAPE_ARRAY,
    SHAPE_CAS,
    SHAPE_SETNX_OK,
    SHAPE_SETNX_INT
};

struct pending_cmd {
    struct conn *c;
    enum shape shape;
};

static void answer(struct buf *b, enum shape shape, const struct kv_reply *r)
{
    if (r->code == KV_TIMEOUT) {
        reply_error(b, "NOQUORUM", r->message ? r->message : "timed out");
        return;
    }
    if (r->code == KV_UNAVAILABLE) {
        reply_error(b, "UNAVAILABLE", r->message ? r->message : "unavailable");
        return;
    }
    if (r->code == KV_BAD || !r->result) {
        reply_error(b, "ERR", r->message ? r->message : "bad request");
        return;
    }
    const struct kv_result *res = r->result;
    switch (res->status) {
    case KVPB__STATUS__STATUS_OK:
        break;
    case KVPB__STATUS__STATUS_NOT_FOUND:
        buf_puts(b, "$-1\r\n");
        return;
    case KVPB__STATUS__STATUS_CAS_MISMATCH:
        buf_puts(b, shape == SHAPE_CAS || shape == SHAPE_SETNX_INT ? ":0\r\n" : "$-1\r\n");
        return;
    case KVPB__STATUS__STATUS_NOT_INTEGER:
        reply_error(b, "ERR", "value is not an integer or out of range");
        return;
    case KVPB__STATUS__STATUS_SESSION_EXPIRED:
        reply_error(b, "ERR", "session expired: " SESSION_EXPIRED_WHY);
        return;
    case KVPB__STATUS__STATUS_MAP_FULL:
        reply_error(b, "UNAVAILABLE", "storage full");
        return;
    default:
        reply_error(b, "ERR", "bad request (keys must be 1 to 511 bytes)");
        return;
    }
    switch (shape) {
    case SHAPE_OK:
    case SHAPE_SETNX_OK:
        buf_puts(b, "+OK\r\n");
        break;
    case SHAPE_CAS:
    case SHAPE_SETNX_INT:
        buf_puts(b, ":1\r\n");
        break;
    case SHAPE_INT:
        buf_printf(b, ":%" PRId64 "\r\n", res->integer);
        break;
    case SHAPE_BULK:
        if (res->n_values && res->values[0].present)
            reply_bulk(b, res->values[0].data, res->values[0].len);
        else
            buf_puts(b, "$-1\r\n");
        break;
    case SHAPE_ARRAY:
        buf_printf(b, "*%zu\r\n", res->n_values);
        for (size_t i = 0; i < res->n_values; i++) {
            if (res->values[i].present)
                reply_bulk(b, res->values[i].data, res->values[i].len);
            else
                buf_puts(b, "$-1\r\n");
        }
        break;
    }
}

static void run_queue(struct conn *c);

static void on_done(void *ctx, const struct kv_reply *r)
{
    struct pending_cmd *p = ctx;
    struct conn *c = p->c;
    enum shape shape = p->shape;
    free(p);
    if (tcp_conn_answered(&c->base) || c->base.closing)
        return; /* freed, or going: nobody to answer */
    if (r->renewed_client_id) {
        c->client_id = r->renewed_client_id;
        c->seq = 1;
    }
    answer(&c->out, shape, r);
    if (!c->running) {
        run_queue(c);
        flush(c);
    }
}

static void submit(struct conn *c, Kvpb__Command *cmd, enum shape shape, uint64_t client,
                   uint64_t seq)
{
    bool write = !kv_op_is_read(cmd->op);
    if (write) {
        cmd->client_id = client ? client : c->client_id;
        cmd->seq = client ? seq : ++c->seq;
    }
    struct pending_cmd *p = malloc(sizeof(*p));
    if (!p) {
        reply_error(&c->out, "ERR", "out of memory");
        return;
    }
    *p = (struct pending_cmd){c, shape};
    c->base.busy = true;
    /* A connection's own session is renewed when it expires; one the
     * user named (SESSION) is the user's to handle. */
    kv_server_submit(c->rs->kv, cmd, write && !client ? KV_SUBMIT_RENEW : 0, on_done, p);
}

static void info(struct conn *c)
{
    struct kv_server *kv = c->rs->kv;
    json_t *st = kv_server_status(kv);
    struct buf b = {0};
    buf_printf(&b,
               "# Server\r\nredis_version:7.0.0\r\nraftkv_version:0.2\r\nredis_mode:raft\r\n"
               "tcp_port:%u\r\n\r\n# Raft\r\n",
               kv_server_self(kv)->resp_port);
    const char *key;
    json_t *v;
    json_object_foreach(st, key, v)
    {
        if (json_is_integer(v))
            buf_printf(&b, "raft_%s:%" JSON_INTEGER_FORMAT "\r\n", key, json_integer_value(v));
        else if (json_is_string(v))
            buf_printf(&b, "raft_%s:%s\r\n", key, json_string_value(v));
    }
    const struct kv_peer *l = kv_server_leader(kv);
    if (l)
        buf_printf(&b, "raft_leader_resp:%s:%u\r\n", l->client_host, l->resp_port);
    json_decref(st);
    reply_bulk(&c->out, b.p ? b.p : "", b.len);
    buf_free(&b);
}

/* CLIENT: what redis-cli and client libraries send on connecting. */
static void cmd_client(struct conn *c, const struct cmd *k)
{
    struct buf *out = &c->out;
    if (arg_is(k, 1, "SETNAME") && k->argc == 3) {
        if (k->argvlen[2] >= sizeof(c->name) || memchr(k->argv[2], ' ', k->argvlen[2])) {
            reply_error(out, "ERR", "client names are at most 63 characters, without spaces");
            return;
        }
        memcpy(c->name, k->argv[2], k->argvlen[2] + 1);
        buf_puts(out, "+OK\r\n");
    } else if (arg_is(k, 1, "GETNAME") && k->argc == 2) {
        if (c->name[0])
            reply_bulk(out, c->name, strlen(c->name));
        else
            buf_puts(out, "$-1\r\n");
    } else if (arg_is(k, 1, "ID") && k->argc == 2) {
        buf_printf(out, ":%" PRIu64 "\r\n", c->id);
    } else if (arg_is(k, 1, "INFO") && k->argc == 2) {
        char line[160];
        int n = snprintf(line, sizeof(line), "id=%" PRIu64 " name=%s db=0 cmd=client|info\n", c->id,
                         c->name);
        reply_bulk(out, line, (size_t)n);
    } else if (arg_is(k, 1, "SETINFO") && k->argc == 4) {
        buf_puts(out, "+OK\r\n"); /* a library's name and version: nothing to do with them */
    } else {
        reply_error(out, "ERR",
                    "CLIENT: SETNAME, GETNAME, ID, INFO and SETINFO are supported, nothing else");
    }
}

/* Commands answered here, at once. True if k was one of them. */
static bool run_local(struct conn *c, const struct cmd *k)
{
    struct buf *out = &c->out;
    struct kv_server *kv = c->rs->kv;
    const char *name = k->argv[0];
    if (!strcasecmp(name, "PING")) {
        if (k->argc > 1)
            reply_bulk(out, k->argv[1], k->argvlen[1]);
        else
            buf_puts(out, "+PONG\r\n");
    } else if (!strcasecmp(name, "ECHO") && k->argc == 2) {
        reply_bulk(out, k->argv[1], k->argvlen[1]);
    } else if (!strcasecmp(name, "QUIT")) {
        buf_puts(out, "+OK\r\n");
        c->quit = true;
        /* What was pipelined after it is not run (as Redis): dropped, so
         * that the connection closes once the answers are out. */
        while (c->head) {
            struct cmd *next = c->head->next;
            c->queued_bytes -= c->head->bytes;
            c->queued--;
            cmd_free(c->head);
            c->head = next;
        }
        c->tail = NULL;
    } else if (!strcasecmp(name, "SELECT")) {
        if (k->argc == 2 && !strcmp(k->argv[1], "0"))
            buf_puts(out, "+OK\r\n");
        else
            reply_error(out, "ERR", "only database 0 exists");
    } else if (!strcasecmp(name, "CLIENT")) {
        cmd_client(c, k);
    } else if (!strcasecmp(name, "READONLY") || !strcasecmp(name, "READWRITE")) {
        buf_puts(out, "+OK\r\n");
    } else if (!strcasecmp(name, "MULTI") || !strcasecmp(name, "EXEC") ||
               !strcasecmp(name, "DISCARD") || !strcasecmp(name, "WATCH") ||
               !strcasecmp(name, "UNWATCH")) {
        /* Refused rather than half done: queued commands would run one by
         * one, each its own log entry, not as one atomic step. */
        reply_error(out, "ERR",
                    "transactions (MULTI/EXEC/WATCH) are not supported: each command is its own "
                    "Raft entry; use CAS for a conditional write");
    } else if (!strcasecmp(name, "COMMAND")) {
        buf_puts(out, "*0\r\n");
    } else if (!strcasecmp(name, "CONFIG")) {
        /* redis-benchmark asks for these two; answer as a Redis without
         * persistence would, and nothing else. */
        if (arg_is(k, 1, "GET") && k->argc == 3) {
            if (!strcasecmp(k->argv[2], "save"))
                buf_puts(out, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
            else if (!strcasecmp(k->argv[2], "appendonly"))
                buf_puts(out, "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
            else
                buf_puts(out, "*0\r\n");
        } else {
            reply_error(out, "ERR", "CONFIG: only CONFIG GET is supported");
        }
    } else if (!strcasecmp(name, "INFO")) {
        info(c);
    } else if (!strcasecmp(name, "RAFT.STATUS")) {
        json_t *st = kv_server_status(kv);
        char *text = json_dumps(st, JSON_COMPACT);
        json_decref(st);
        if (text)
            reply_bulk(out, text, strlen(text));
        else
            reply_error(out, "ERR", "out of memory");
        free(text);
    } else if (!strcasecmp(name, "RAFT.LEADER")) {
        const struct kv_peer *l = kv_server_leader(kv);
        if (!l) {
            buf_puts(out, "$-1\r\n");
        } else {
            char addr[96];
            int len = snprintf(addr, sizeof(addr), "%s:%u", l->client_host, l->resp_port);
            buf_printf(out, "*2\r\n:%" PRIu64 "\r\n", l->id);
            reply_bulk(out, addr, (size_t)len);
        }
    } else if (!strcasecmp(name, "RAFT.TRANSFER")) {
        uint64_t to = 0;
        if (c->access < KV_ACCESS_ADMIN) {
            reply_error(out, "NOPERM",
                        "RAFT.TRANSFER is a control command: AUTH admin <token> first");
            return true;
        }
        if (k->argc > 2 || (k->argc == 2 && !parse_u64(k->argv[1], &to))) {
            reply_error(out, "ERR", "usage: RAFT.TRANSFER [node-id]");
            return true;
        }
        int rv = kv_server_transfer(kv, to);
        if (rv == RAFT_OK)
            buf_puts(out, "+OK transfer started\r\n");
        else if (rv == RAFT_ENOTLEADER)
            reply_error(out, "NOTLEADER", "send RAFT.TRANSFER to the leader (RAFT.LEADER)");
        else
            reply_error(out, "ERR", raft_strerror(rv));
    } else {
        return false;
    }
    return true;
}

/* Key-value commands: built into a Command and sent to the server. */
static void run_kv(struct conn *c, struct cmd *k, int at, uint64_t client, uint64_t seq)
{
    struct buf *out = &c->out;
    const char *name = k->argv[at];
    int argc = k->argc - at;
    char **argv = k->argv + at;
    size_t *argvlen = k->argvlen + at;
    Kvpb__Command cmd = KVPB__COMMAND__INIT;
    ProtobufCBinaryData keys[KV_MAX_KEYS];
    ProtobufCBinaryData *many = NULL;
    enum shape shape;
    cmd.keys = keys;
#define KEY(i) ((ProtobufCBinaryData){argvlen[i], (uint8_t *)argv[i]})
    if (!strcasecmp(name, "GET") && argc == 2) {
        cmd.op = KVPB__OP__OP_GET;
        keys[0] = KEY(1);
        cmd.n_keys = 1;
        shape = SHAPE_BULK;
    } else if (!strcasecmp(name, "SET") && argc >= 3) {
        cmd.op = KVPB__OP__OP_SET;
        keys[0] = KEY(1);
        cmd.n_keys = 1;
        cmd.value = KEY(2);
        shape = SHAPE_OK;
        if (argc == 4 && !strcasecmp(argv[3], "NX")) {
            cmd.op = KVPB__OP__OP_CAS;
            cmd.expect_absent = true;
            shape = SHAPE_SETNX_OK;
        } else if (argc != 3) {
            reply_error(out, "ERR", "SET supports only NX (no expiry, no XX, no GET)");
            return;
        }
    } else if (!strcasecmp(name, "SETNX") && argc == 3) {
        cmd.op = KVPB__OP__OP_CAS;
        cmd.expect_absent = true;
        keys[0] = KEY(1);
        cmd.n_keys = 1;
        cmd.value = KEY(2);
        shape = SHAPE_SETNX_INT;
    } else if (!strcasecmp(name, "CAS") && argc == 4) {
        cmd.op = KVPB__OP__OP_CAS;
        keys[0] = KEY(1);
        cmd.n_keys = 1;
        cmd.expected = KEY(2);
        cmd.value = KEY(3);
        shape = SHAPE_CAS;
    } else if ((!strcasecmp(name, "INCR") || !strcasecmp(name, "DECR")) && argc == 2) {
        cmd.op = KVPB__OP__OP_INCR;
        keys[0] = KEY(1);
        cmd.n_keys = 1;
        cmd.delta = toupper((unsigned char)name[0]) == 'D' ? -1 : 1;
        shape = SHAPE_INT;
    } else if ((!strcasecmp(name, "INCRBY") || !strcasecmp(name, "DECRBY")) && argc == 3) {
        int64_t d;
        if (!parse_i64(argv[2], argvlen[2], &d) || d == 0 || d == INT64_MIN) {
            reply_error(out, "ERR", "value is not an integer or out of range");
            return;
        }
        cmd.op = KVPB__OP__OP_INCR;
        keys[0] = KEY(1);
        cmd.n_keys = 1;
        cmd.delta = toupper((unsigned char)name[0]) == 'D' ? -d : d;
        shape = SHAPE_INT;
    } else if ((!strcasecmp(name, "DEL") || !strcasecmp(name, "EXISTS") ||
                !strcasecmp(name, "MGET")) &&
               argc >= 2) {
        size_t n = (size_t)argc - 1;
        if (n > KV_MAX_KEYS && !(many = malloc(n * sizeof(*many)))) {
            reply_error(out, "ERR", "out of memory");
            return;
        }
        if (!strcasecmp(name, "MGET") && n > KV_MAX_KEYS) {
            free(many);
            reply_error(out, "ERR", "MGET takes at most 64 keys");
            return;
        }
        cmd.keys = many ? many : keys;
        for (size_t i = 0; i < n; i++)
            cmd.keys[i] = KEY(i + 1);
        cmd.n_keys = n;
        cmd.op = !strcasecmp(name, "DEL")      ? KVPB__OP__OP_DEL
                 : !strcasecmp(name, "EXISTS") ? KVPB__OP__OP_EXISTS
                                               : KVPB__OP__OP_MGET;
        shape = cmd.op == KVPB__OP__OP_MGET ? SHAPE_ARRAY : SHAPE_INT;
    } else {
        bool known =
            !strcasecmp(name, "GET") || !strcasecmp(name, "SET") || !strcasecmp(name, "SETNX") ||
            !strcasecmp(name, "CAS") || !strcasecmp(name, "INCR") || !strcasecmp(name, "DECR") ||
            !strcasecmp(name, "INCRBY") || !strcasecmp(name, "DECRBY") ||
            !strcasecmp(name, "DEL") || !strcasecmp(name, "EXISTS") || !strcasecmp(name, "MGET");
        char msg[128];
        if (known)
            snprintf(msg, sizeof(msg), "wrong number of arguments for '%.32s' command", name);
        else
            snprintf(msg, sizeof(msg), "unknown command '%.32s'", name);
        reply_error(out, "ERR", msg);
        return;
    }
#undef KEY
    submit(c, &cmd, shape, client, seq);
    free(many);
}

/* AUTH [user] password: user "admin" presents the admin token, any other
 * user (Redis' "default") the client password. */
static void cmd_auth(struct conn *c, int argc, char **argv, size_t *argvlen)
{
    const struct kv_auth *a = kv_server_auth(c->rs->kv);
    if (argc < 1 || argc > 2) {
        reply_error(&c->out, "ERR", "usage: AUTH [username] password");
        return;
    }
    if (!a->has_password && !a->has_admin) {
        reply_error(&c->out, "ERR",
                    "AUTH: this node has no password (kvd --requirepass, --admin-token)");
        return;
    }
    enum kv_access got =
        kv_auth_check(a, argc == 2 ? argv[0] : NULL, argv[argc - 1], argvlen[argc - 1]);
    if (got == KV_ACCESS_NONE) {
        reply_error(&c->out, "WRONGPASS", "invalid username-password pair");
        return;
    }
    if (got > c->access || kv_auth_default(a) == KV_ACCESS_NONE)
        c->access = got;
    buf_puts(&c->out, "+OK\r\n");
}

/* HELLO [protover [AUTH username password] [SETNAME name]]: RESP2 only. */
static void cmd_hello(struct conn *c, struct cmd *k)
{
    int i = 1;
    if (k->argc > 1) {
        uint64_t v;
        if (!parse_u64(k->argv[1], &v) || v != 2) {
            reply_error(&c->out, "NOPROTO", "this server speaks RESP2 only (HELLO 2)");
            return;
        }
        i = 2;
    }
    for (; i < k->argc; i++) {
        if (arg_is(k, i, "AUTH") && i + 2 < k->argc) {
            size_t before = c->out.len;
            cmd_auth(c, 2, k->argv + i + 1, k->argvlen + i + 1);
            if (c->out.len > before && c->out.p[before] == '-')
                return; /* the error is the answer */
            c->out.len = before;
            i += 2;
        } else if (arg_is(k, i, "SETNAME") && i + 1 < k->argc) {
            i++;
            if (k->argvlen[i] < sizeof(c->name) && !memchr(k->argv[i], ' ', k->argvlen[i]))
                memcpy(c->name, k->argv[i], k->argvlen[i] + 1);
        } else {
            reply_error(&c->out, "ERR", "usage: HELLO [2 [AUTH username password] [SETNAME name]]");
            return;
        }
    }
    if (c->access == KV_ACCESS_NONE) {
        reply_error(&c->out, "NOAUTH", "HELLO must be called with AUTH when a password is set");
        return;
    }
    buf_puts(&c->out, "*14\r\n$6\r\nserver\r\n$3\r\nkvd\r\n$7\r\nversion\r\n$5\r\n0.1.0\r\n"
                      "$5\r\nproto\r\n:2\r\n$2\r\nid\r\n");
    buf_printf(&c->out, ":%" PRIu64 "\r\n", c->id);
    buf_puts(&c->out, "$4\r\nmode\r\n$7\r\ncluster\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
                      "$7\r\nmodules\r\n*0\r\n");
}

static void run_one(struct conn *c, struct cmd *k)
{
    if (k->argc == 0)
        return;
    if (!strcasecmp(k->argv[0], "AUTH")) {
        cmd_auth(c, k->argc - 1, k->argv + 1, k->argvlen + 1);
        return;
    }
    if (!strcasecmp(k->argv[0], "HELLO")) {
        cmd_hello(c, k);
        return;
    }
    if (c->access == KV_ACCESS_NONE && strcasecmp(k->argv[0], "QUIT") != 0) {
        reply_error(&c->out, "NOAUTH", "Authentication required.");
        return;
    }
    if (!strcasecmp(k->argv[0], "SESSION")) {
        uint64_t client, seq;
        if (k->argc < 4 || !parse_u64(k->argv[1], &client) || !parse_u64(k->argv[2], &seq) ||
            client == 0 || seq == 0) {
            reply_error(&c->out, "ERR", "usage: SESSION client-id seq command [args...]");
            return;
        }
        run_kv(c, k, 3, client, seq);
        return;
    }
    if (!run_local(c, k))
        run_kv(c, k, 0, 0, 0);
}

static void run_queue(struct conn *c)
{
    c->running = true;
    while (!c->base.busy && c->head && !c->base.closing && !c->quit && unsent(c) < OUT_PAUSE) {
        struct cmd *k = c->head;
        c->head = k->next;
        if (!c->head)
            c->tail = NULL;
        c->queued--;
        c->queued_bytes -= k->bytes;
        run_one(c, k);
        cmd_free(k);
    }
    c->running = false;
}

/* ------------------------------------------------------------------------
 * Parsing
 * ------------------------------------------------------------------------ */

static struct cmd *cmd_new(int argc, const char **argv, const size_t *lens)
{
    size_t bytes = sizeof(struct cmd) + (size_t)argc * (sizeof(char *) + sizeof(size_t));
    for (int i = 0; i < argc; i++)
        bytes += lens[i] + 1;
    struct cmd *k = malloc(bytes);
    if (!k)
        return NULL;
    k->next = NULL;
    k->bytes = bytes;
    k->argc = argc;
    k->argv = (char **)(k + 1);
    k->argvlen = (size_t *)(k->argv + argc);
    char *at = (char *)(k->argvlen + argc);
    for (int i = 0; i < argc; i++) {
        k->argv[i] = at;
        k->argvlen[i] = lens[i];
        memcpy(at, argv[i], lens[i]);
        at[lens[i]] = '\0';
        at += lens[i] + 1;
    }
    return k;
}

static void enqueue(struct conn *c, struct cmd *k)
{
    if (c->tail)
        c->tail->next = k;
    else
        c->head = k;
    c->tail = k;
    c->queued++;
    c->queued_bytes += k->bytes;
    c->parsed++;
}

static bool take_array(struct conn *c, redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        reply_error(&c->out, "ERR", "Protocol error: expected an array of bulk strings");
        return false;
    }
    const char **argv = malloc(r->elements * sizeof(*argv));
    size_t *lens = malloc(r->elements * sizeof(*lens));
    struct cmd *k = NULL;
    bool ok = argv && lens;
    for (size_t i = 0; ok && i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS &&
            e->type != REDIS_REPLY_INTEGER) {
            reply_error(&c->out, "ERR", "Protocol error: expected bulk strings");
            ok = false;
            break;
        }
        argv[i] = e->str ? e->str : "";
        lens[i] = e->str ? e->len : 0;
    }
    if (ok && !(k = cmd_new((int)r->elements, argv, lens)))
        ok = false;
    free(argv);
    free(lens);
    if (k)
        enqueue(c, k);
    return ok;
}

/* A line typed by a person ("SET k v"): split on blanks. */
static bool take_inline(struct conn *c, char *line, size_t len)
{
    const char *argv[64];
    size_t lens[64];
    int argc = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && isspace((unsigned char)line[i]))
            i++;
        if (i == len)
            break;
        if (argc == 64) {
            reply_error(&c->out, "ERR", "too many arguments in an inline command");
            return false;
        }
        argv[argc] = line + i;
        while (i < len && !isspace((unsigned char)line[i]))
            i++;
        lens[argc] = (size_t)(line + i - argv[argc]);
        argc++;
    }
    if (argc == 0)
        return true;
    struct cmd *k = cmd_new(argc, argv, lens);
    if (!k)
        return false;
    enqueue(c, k);
    return true;
}

static bool reader_idle(const redisReader *r)
{
    return r->pos >= r->len && r->ridx == -1;
}

/* Feed bytes; false if the connection must close. */
static bool parse(struct conn *c, char *data, size_t len)
{
    while (len) {
        if (c->inl.len || (reader_idle(c->reader) && data[0] != '*')) {
            /* hiredis' reader parses RESP only: an inline line is kept
             * here until its newline arrives. */
            char *nl = memchr(data, '\n', len);
            size_t take = nl ? (size_t)(nl - data) : len;
            buf_append(&c->inl, data, take);
            if (c->inl.oom || c->inl.len > MAX_INLINE) {
                reply_error(&c->out, "ERR", "Protocol error: inline command too long");
                return false;
            }
            if (!nl)
                return true;
            size_t line = c->inl.len;
            if (line && c->inl.p[line - 1] == '\r')
                line--;
            bool ok = take_inline(c, c->inl.p, line);
            c->inl.len = 0;
            if (!ok)
                return false;
            data = nl + 1;
            len -= take + 1;
            continue;
        }
        /* RESP: give the reader everything up to the next point where it
         * could be idle again; simplest is all of it. */
        if (redisReaderFeed(c->reader, data, len) != REDIS_OK)
            return false;
        len = 0;
        for (;;) {
            void *reply = NULL;
            if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
                reply_error(&c->out, "ERR", "Protocol error");
                return false;
            }
            if (!reply)
                break;
            bool ok = take_array(c, reply);
            freeReplyObject(reply);
            if (!ok)
                return false;
        }
        if (c->reader->len - c->reader->pos > MAX_PENDING_BYTES) {
            reply_error(&c->out, "ERR", "command too large");
            return false;
        }
    }
    return true;
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
    uint64_t before = c->parsed;
    bool ok = parse(c, b->base, (size_t)n);
    free(b->base);
    /* The partial-request clock measures time without progress: a command
     * completed restarts it (a long pipelined load is not a slow client). */
    if (c->parsed != before)
        tcp_conn_partial(&c->base, false);
    tcp_conn_partial(&c->base, ok && (c->inl.len || !reader_idle(c->reader)));
    if (!ok) {
        /* Say why, then close (as Redis does on a protocol error). */
        c->quit = true;
        while (c->head) {
            struct cmd *k = c->head;
            c->head = k->next;
            cmd_free(k);
        }
        c->tail = NULL;
        c->queued = 0;
        c->queued_bytes = 0;
    }
    if ((c->queued >= MAX_QUEUED || c->queued_bytes >= MAX_QUEUED_BYTES) && c->reading) {
        uv_read_stop(s);
        c->reading = false;
        tcp_conn_partial(&c->base, false); /* we stopped reading: not its fault */
    }
    run_queue(c);
    flush(c);
}

static void on_accepted(struct tcp_conn *base)
{
    struct conn *c = (struct conn *)base;
    c->rs = (struct resp_server *)base->door;
    if (!(c->reader = reader_new())) {
        tcp_conn_close(base);
        return;
    }
    static uint64_t connections;
    c->id = ++connections;
    c->client_id = kv_server_new_client(c->rs->kv);
    c->access = kv_auth_default(kv_server_auth(c->rs->kv));
    c->reading = true;
    uv_read_start((uv_stream_t *)&base->tcp, alloc_buf, on_read);
}

static void on_stopped(struct tcp_door *d)
{
    free(d); /* the resp_server, whose first member it is */
}

int resp_start(struct resp_server **out, uv_loop_t *loop, struct kv_server *kv, const char *host,
               uint16_t port)
{
    struct resp_server *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return UV_ENOMEM;
    rs->kv = kv;
    rs->door.conn_size = sizeof(struct conn);
    rs->door.accepted = on_accepted;
    rs->door.release = conn_release;
    rs->door.stopped = on_stopped;
    rs->door.limits = kv_server_limits(kv);
    rs->door.full_reply = "-ERR max number of clients reached\r\n";
    int rc = tcp_door_start(&rs->door, loop, host, port);
    if (rc)
        return rc; /* freed by on_stopped */
    *out = rs;
    return 0;
}

void resp_stop(struct resp_server *rs)
{
    tcp_door_stop(&rs->door);
}
