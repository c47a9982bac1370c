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

#include "commands.h"
#include "tcp.h"

enum {
    MAX_ARGS = 1 << 16,          /* arguments per command */
    MAX_QUEUED = 1024,           /* parsed commands waiting; reading pauses beyond */
    MAX_QUEUED_BYTES = 16 << 20, /* ...or beyond this many bytes of them */
    OUT_PAUSE = 1 << 20,         /* unsent replies beyond which commands wait */
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
    bool running;  /* inside run_queue (a synchronous answer must not recurse) */
    bool quit;     /* QUIT: close once the replies are written */
    bool draining; /* QUIT answered and half-closed: reading on, discarding, until EOF */
    uv_shutdown_t shutdown;
    bool reading;
    struct buf out;
    struct buf inl;            /* an inline command line, until its newline */
    struct kv_session session; /* the connection's own (server.h) */
    bool readonly;             /* READONLY: reads may be stale (KV_SUBMIT_LOCAL_READ) */
    enum kv_access access;     /* what this connection may do (auth.h) */
    size_t queued_bytes;       /* of the commands in head..tail */
    uint64_t parsed;           /* commands parsed so far (progress, for the partial timeout) */
    char name[64];             /* CLIENT SETNAME */
    uint64_t id;               /* CLIENT ID: small, as Redis' (not the session's client id) */
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
    kv_session_release(&c->session);
}

static void conn_close(struct conn *c)
{
    tcp_conn_close(&c->base);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    if (status)
        conn_close(req->data);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void alloc_buf(uv_handle_t *h, size_t size, uv_buf_t *b);

/* The answers are out: half-close, and read on (discarding) until the
 * client closes. Closing with its pipelined bytes unread would reset the
 * connection, and the client could lose the answers it has not read yet.
 * A client that never closes is a partial request to tcp.c, closed after
 * --client-timeout. */
static void quit_gracefully(struct conn *c)
{
    if (c->draining || c->base.closing)
        return;
    c->draining = true;
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->base.tcp, on_shutdown)) {
        conn_close(c);
        return;
    }
    if (!c->reading) {
        c->reading = true;
        uv_read_start((uv_stream_t *)&c->base.tcp, alloc_buf, on_read);
    }
    tcp_conn_partial(&c->base, true);
}

static void on_quit_written(uv_stream_t *s)
{
    quit_gracefully(s->data);
}

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
    if (c->base.closing || c->draining)
        return;
    bool quit = c->quit && !c->base.busy && !c->head;
    if (c->out.len || quit)
        if (tcp_conn_write(&c->base, &c->out, quit ? on_quit_written : on_written))
            conn_close(c);
    if (quit && !c->base.closing && !c->out.len &&
        tcp_write_queue((uv_stream_t *)&c->base.tcp) == 0)
        quit_gracefully(c);
    if (c->base.closing || c->draining)
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

/* One command being run: its row in the table (commands.h) and its
 * arguments, its name first. Under SESSION, the command after SESSION's
 * own arguments, and the session it names. */
struct call {
    struct conn *c;
    const struct kv_command *cmd;
    int argc;
    char **argv;     /* NUL-terminated too */
    size_t *argvlen; /* their lengths */
    uint64_t client; /* SESSION's client id; 0: the connection's own session */
    uint64_t seq;    /* SESSION's seq */
};

static bool arg_is(const struct call *x, int i, const char *word)
{
    return i < x->argc && strcasecmp(x->argv[i], word) == 0;
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
    answer(&c->out, shape, r);
    if (!c->running) {
        run_queue(c);
        flush(c);
    }
}

/* Send x's Command, in the session SESSION named or else the connection's. */
static void submit(const struct call *x, Kvpb__Command *cmd, enum shape shape)
{
    struct conn *c = x->c;
    uint64_t client = x->client;
    if (client) {
        cmd->client_id = client;
        cmd->seq = x->seq;
    }
    struct pending_cmd *p = malloc(sizeof(*p));
    if (!p) {
        reply_error(&c->out, "ERR", "out of memory");
        return;
    }
    *p = (struct pending_cmd){c, shape};
    c->base.busy = true;
    /* The connection's own session numbers its writes (per shard) and is
     * renewed when it expires; one the user named (SESSION) is the user's
     * to handle. */
    kv_server_submit(c->rs->kv, cmd, client ? NULL : &c->session,
                     c->readonly ? KV_SUBMIT_LOCAL_READ : 0, on_done, p);
}

/* ------------------------------------------------------------------------
 * Commands answered here, at once
 * ------------------------------------------------------------------------ */

/* The answer to arguments the command's syntax does not allow: its usage
 * (commands.h), the same text a wrong argument count gets. */
static void reply_usage(const struct call *x)
{
    char err[KV_COMMAND_ERR_SIZE];
    kv_command_arity_error(x->cmd, x->argv[0], err);
    reply_error(&x->c->out, "ERR", err);
}

static void cmd_ping(struct call *x)
{
    if (x->argc > 1)
        reply_bulk(&x->c->out, x->argv[1], x->argvlen[1]);
    else
        buf_puts(&x->c->out, "+PONG\r\n");
}

static void cmd_echo(struct call *x)
{
    reply_bulk(&x->c->out, x->argv[1], x->argvlen[1]);
}

static void cmd_quit(struct call *x)
{
    struct conn *c = x->c;
    buf_puts(&c->out, "+OK\r\n");
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
}

static void cmd_select(struct call *x)
{
    if (!strcmp(x->argv[1], "0"))
        buf_puts(&x->c->out, "+OK\r\n");
    else
        reply_error(&x->c->out, "ERR", "only database 0 exists");
}

/* CLIENT: what redis-cli and client libraries send on connecting. */
static void cmd_client(struct call *x)
{
    struct conn *c = x->c;
    struct buf *out = &c->out;
    if (arg_is(x, 1, "SETNAME") && x->argc == 3) {
        if (x->argvlen[2] >= sizeof(c->name) || memchr(x->argv[2], ' ', x->argvlen[2])) {
            reply_error(out, "ERR", "client names are at most 63 characters, without spaces");
            return;
        }
        memcpy(c->name, x->argv[2], x->argvlen[2] + 1);
        buf_puts(out, "+OK\r\n");
    } else if (arg_is(x, 1, "GETNAME") && x->argc == 2) {
        if (c->name[0])
            reply_bulk(out, c->name, strlen(c->name));
        else
            buf_puts(out, "$-1\r\n");
    } else if (arg_is(x, 1, "ID") && x->argc == 2) {
        buf_printf(out, ":%" PRIu64 "\r\n", c->id);
    } else if (arg_is(x, 1, "INFO") && x->argc == 2) {
        char line[160];
        int n = snprintf(line, sizeof(line), "id=%" PRIu64 " name=%s db=0 cmd=client|info\n", c->id,
                         c->name);
        reply_bulk(out, line, (size_t)n);
    } else if (arg_is(x, 1, "SETINFO") && x->argc == 4) {
        buf_puts(out, "+OK\r\n"); /* a library's name and version: nothing to do with them */
    } else {
        reply_error(out, "ERR",
                    "CLIENT: SETNAME, GETNAME, ID, INFO and SETINFO are supported, nothing else");
    }
}

/* READONLY: as in Redis Cluster, the connection's reads may be served by
 * any replica of the key's shard from its own state -- stale, but no round
 * of messages (KV_SUBMIT_LOCAL_READ). READWRITE: back to linearizable. */
static void cmd_readonly(struct call *x)
{
    x->c->readonly = kv_command_id(x->cmd) == KV_ID_READONLY;
    buf_puts(&x->c->out, "+OK\r\n");
}

/* MULTI, EXEC, DISCARD, WATCH, UNWATCH (KV_CMD_REFUSED). */
static void cmd_transaction(struct call *x)
{
    /* Refused rather than half done: queued commands would run one by
     * one, each its own log entry, not as one atomic step. */
    reply_error(&x->c->out, "ERR",
                "transactions (MULTI/EXEC/WATCH) are not supported: each command is its own "
                "Raft entry; use CAS for a conditional write");
}

/* One command as Redis' COMMAND INFO describes it: name, arity, flags,
 * first key, last key, step, then ACL categories, tips, key specs and
 * subcommands (Redis 7), which kvd has none of. */
static void command_info(struct buf *out, const struct kv_command *cmd)
{
    char name[32];
    size_t len = strlen(cmd->name);
    for (size_t i = 0; i < len && i < sizeof(name); i++)
        name[i] = (char)tolower((unsigned char)cmd->name[i]);
    const char *words[8];
    size_t n = kv_command_flag_words(cmd, words, sizeof(words) / sizeof(words[0]));
    buf_puts(out, "*10\r\n");
    reply_bulk(out, name, len < sizeof(name) ? len : sizeof(name));
    buf_printf(out, ":%d\r\n*%zu\r\n", kv_command_arity(cmd), n);
    for (size_t i = 0; i < n; i++)
        buf_printf(out, "+%s\r\n", words[i]);
    buf_printf(out, ":%d\r\n:%d\r\n:%d\r\n*0\r\n*0\r\n*0\r\n*0\r\n", cmd->first_key, cmd->last_key,
               cmd->first_key ? 1 : 0);
}

/* COMMAND COUNT and COMMAND INFO [name...] answer from the table; the
 * rest (COMMAND, COMMAND DOCS, which redis-cli sends on connecting) an
 * empty list, which clients take as "no documentation". */
static void cmd_command(struct call *x)
{
    struct buf *out = &x->c->out;
    if (arg_is(x, 1, "COUNT") && x->argc == 2) {
        buf_printf(out, ":%d\r\n", (int)KV_ID_COUNT);
    } else if (arg_is(x, 1, "INFO") && x->argc == 2) {
        buf_printf(out, "*%d\r\n", (int)KV_ID_COUNT);
        for (size_t i = 0; i < KV_ID_COUNT; i++)
            command_info(out, &kv_commands[i]);
    } else if (arg_is(x, 1, "INFO")) {
        buf_printf(out, "*%d\r\n", x->argc - 2);
        for (int i = 2; i < x->argc; i++) {
            const struct kv_command *cmd = kv_command_lookup(x->argv[i], x->argvlen[i]);
            if (cmd)
                command_info(out, cmd);
            else
                buf_puts(out, "*-1\r\n");
        }
    } else {
        buf_puts(out, "*0\r\n");
    }
}

static void cmd_config(struct call *x)
{
    struct buf *out = &x->c->out;
    /* redis-benchmark asks for these two; answer as a Redis without
     * persistence would, and nothing else. */
    if (arg_is(x, 1, "GET") && x->argc == 3) {
        if (!strcasecmp(x->argv[2], "save"))
            buf_puts(out, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
        else if (!strcasecmp(x->argv[2], "appendonly"))
            buf_puts(out, "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
        else
            buf_puts(out, "*0\r\n");
    } else {
        reply_error(out, "ERR", "CONFIG: only CONFIG GET is supported");
    }
}

static void cmd_info(struct call *x)
{
    struct conn *c = x->c;
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
    const struct kv_peer *l = kv_server_leader(kv, NULL, 0);
    if (l)
        buf_printf(&b, "raft_leader_resp:%s:%u\r\n", l->client_host, l->resp_port);
    /* One line per group hosted here, as Redis prints its keyspace:
     * raft_group_3:shard=2,role=leader,term=4,leader=1,commit=80,applied=80,keys=17 */
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(st, "groups"), i, g)
    {
        buf_printf(&b, "raft_group_%" JSON_INTEGER_FORMAT ":",
                   json_integer_value(json_object_get(g, "group")));
        static const char *const fields[] = {"shard",  "role",    "term", "leader",
                                             "commit", "applied", "keys"};
        for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
            json_t *f = json_object_get(g, fields[k]);
            if (json_is_integer(f))
                buf_printf(&b, "%s%s=%" JSON_INTEGER_FORMAT, k ? "," : "", fields[k],
                           json_integer_value(f));
            else if (json_is_string(f))
                buf_printf(&b, "%s%s=%s", k ? "," : "", fields[k], json_string_value(f));
        }
        buf_puts(&b, "\r\n");
    }
    json_decref(st);
    reply_bulk(&c->out, b.p ? b.p : "", b.len);
    buf_free(&b);
}

/* A JSON document as a bulk string. Takes doc. */
static void reply_json(struct buf *out, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text)
        reply_bulk(out, text, strlen(text));
    else
        reply_error(out, "ERR", "out of memory");
    free(text);
}

static void cmd_raft_status(struct call *x)
{
    reply_json(&x->c->out, kv_server_status(x->c->rs->kv));
}

/* RAFT.RING: the shards, their replicas and leaders (kvctl ring). */
static void cmd_raft_ring(struct call *x)
{
    reply_json(&x->c->out, kv_server_ring(x->c->rs->kv));
}

/* RAFT.LOCATE key: its hash, shard, replicas and leader (kvctl locate). */
static void cmd_raft_locate(struct call *x)
{
    reply_json(&x->c->out, kv_server_locate(x->c->rs->kv, x->argv[1], x->argvlen[1]));
}

/* RAFT.LEADER [key]: the leader of the key's shard (without one, of shard
 * 0: the only one of a single-group cluster). */
static void cmd_raft_leader(struct call *x)
{
    struct buf *out = &x->c->out;
    const struct kv_peer *l = x->argc == 2
                                  ? kv_server_leader(x->c->rs->kv, x->argv[1], x->argvlen[1])
                                  : kv_server_leader(x->c->rs->kv, NULL, 0);
    if (!l) {
        buf_puts(out, "$-1\r\n");
        return;
    }
    char addr[96];
    int len = snprintf(addr, sizeof(addr), "%s:%u", l->client_host, l->resp_port);
    buf_printf(out, "*2\r\n:%" PRIu64 "\r\n", l->id);
    reply_bulk(out, addr, (size_t)len);
}

/* RAFT.FORGET node-id [REPLACED] (KV_CMD_ADMIN): this node forgets the
 * node's data-dir incarnation, so that the node, started again with an
 * empty data dir, is taken back (kvctl forget sends it to every node);
 * REPLACED: it was removed from every group and joins as a new member
 * (kvctl node replace, docs/membership.md). */
static void cmd_raft_forget(struct call *x)
{
    uint64_t id;
    char err[256];
    bool replaced = x->argc == 3 && x->argvlen[2] == 8 && !strncasecmp(x->argv[2], "REPLACED", 8);
    if (!parse_u64(x->argv[1], &id) || (x->argc == 3 && !replaced)) {
        reply_usage(x);
        return;
    }
    if (kv_server_forget_peer(x->c->rs->kv, id, replaced, err, sizeof(err)) != 0)
        reply_error(&x->c->out, "ERR", err);
    else
        buf_puts(&x->c->out, "+OK\r\n");
}

/* RAFT.NODES: the members table in force here (kvctl node list). */
static void cmd_raft_nodes(struct call *x)
{
    reply_json(&x->c->out, kv_server_members(x->c->rs->kv));
}

/* RAFT.REBALANCE: the groups this node leads, and their moves. */
static void cmd_raft_rebalance(struct call *x)
{
    reply_json(&x->c->out, kv_server_rebalance(x->c->rs->kv));
}

static void on_members_done(void *ctx, enum kv_code code, const char *message, json_t *table)
{
    struct conn *c = ctx;
    if (tcp_conn_answered(&c->base) || c->base.closing)
        return; /* freed, or going: nobody to answer */
    if (code == KV_DONE)
        reply_json(&c->out, json_incref(table));
    else
        reply_error(&c->out,
                    code == KV_TIMEOUT       ? "NOQUORUM"
                    : code == KV_UNAVAILABLE ? "UNAVAILABLE"
                                             : "ERR",
                    message ? message : "failed");
    if (!c->running) {
        run_queue(c);
        flush(c);
    }
}

/* RAFT.NODE ADD id host raft resp http [client-host] | RAFT.NODE REMOVE id
 * (KV_CMD_ADMIN): change the members table; the answer, once it is
 * changed, is the new table (the shards then move in the background). */
static void cmd_raft_node(struct call *x)
{
    struct kv_peer node = {0};
    bool add = x->argvlen[1] == 3 && !strncasecmp(x->argv[1], "ADD", 3);
    bool remove = x->argvlen[1] == 6 && !strncasecmp(x->argv[1], "REMOVE", 6);
    uint64_t id = 0, ports[3] = {0};
    bool ok = (add || remove) && parse_u64(x->argv[2], &id) && id > 0 && id <= 65535;
    if (ok && remove)
        ok = x->argc == 3;
    if (ok && add) {
        ok = (x->argc == 7 || x->argc == 8) && x->argvlen[3] < sizeof(node.host);
        for (int i = 0; ok && i < 3; i++)
            ok = parse_u64(x->argv[4 + i], &ports[i]) && ports[i] > 0 && ports[i] <= 65535;
        ok = ok && (x->argc == 7 || x->argvlen[7] < sizeof(node.client_host));
    }
    if (!ok) {
        reply_usage(x);
        return;
    }
    node.id = id;
    if (add) {
        memcpy(node.host, x->argv[3], x->argvlen[3]);
        if (x->argc == 8)
            memcpy(node.client_host, x->argv[7], x->argvlen[7]);
        node.raft_port = (uint16_t)ports[0];
        node.resp_port = (uint16_t)ports[1];
        node.http_port = (uint16_t)ports[2];
        struct sockaddr_in sa;
        if (uv_ip4_addr(node.host, 0, &sa) ||
            (node.client_host[0] && uv_ip4_addr(node.client_host, 0, &sa))) {
            reply_error(&x->c->out, "ERR", "hosts are IPv4 addresses (127.0.0.4)");
            return;
        }
    }
    x->c->base.busy = true;
    kv_server_members_change(x->c->rs->kv, add, &node, on_members_done, x->c);
}

/* RAFT.TRANSFER [node-id [shard]] (KV_CMD_ADMIN: run_one checked the
 * token): of the shard, or of every shard this node leads. */
static void cmd_raft_transfer(struct call *x)
{
    struct buf *out = &x->c->out;
    uint64_t to = 0, shard = 0;
    if ((x->argc >= 2 && !parse_u64(x->argv[1], &to)) ||
        (x->argc == 3 && (!parse_u64(x->argv[2], &shard) || shard >= INT32_MAX))) {
        reply_usage(x);
        return;
    }
    int rv = kv_server_transfer(x->c->rs->kv, x->argc == 3 ? (int)shard : -1, to);
    if (rv == RAFT_OK)
        buf_puts(out, "+OK transfer started\r\n");
    else if (rv == RAFT_ENOTLEADER)
        reply_error(out, "NOTLEADER",
                    x->argc == 3 ? "this node does not lead that shard (RAFT.RING says who does)"
                                 : "send RAFT.TRANSFER to the leader (RAFT.LEADER)");
    else
        reply_error(out, "ERR", raft_strerror(rv));
}

/* ------------------------------------------------------------------------
 * Authentication
 * ------------------------------------------------------------------------ */

/* Present a secret: user "admin" the admin token, any other user (Redis'
 * "default") the client password, NULL either. False if it was refused
 * (the error is the answer). */
static bool authenticate(struct conn *c, const char *user, const char *secret, size_t len)
{
    const struct kv_auth *a = kv_server_auth(c->rs->kv);
    if (!a->has_password && !a->has_admin) {
        reply_error(&c->out, "ERR",
                    "AUTH: this node has no password (kvd --requirepass, --admin-token)");
        return false;
    }
    enum kv_access got = kv_auth_check(a, user, secret, len);
    if (got == KV_ACCESS_NONE) {
        reply_error(&c->out, "WRONGPASS", "invalid username-password pair");
        return false;
    }
    if (got > c->access || kv_auth_default(a) == KV_ACCESS_NONE)
        c->access = got;
    return true;
}

/* AUTH [user] password. */
static void cmd_auth(struct call *x)
{
    int last = x->argc - 1;
    if (authenticate(x->c, x->argc == 3 ? x->argv[1] : NULL, x->argv[last], x->argvlen[last]))
        buf_puts(&x->c->out, "+OK\r\n");
}

/* HELLO [protover [AUTH username password] [SETNAME name]]: RESP2 only. */
static void cmd_hello(struct call *x)
{
    struct conn *c = x->c;
    int i = 1;
    if (x->argc > 1) {
        uint64_t v;
        if (!parse_u64(x->argv[1], &v) || v != 2) {
            reply_error(&c->out, "NOPROTO", "this server speaks RESP2 only (HELLO 2)");
            return;
        }
        i = 2;
    }
    for (; i < x->argc; i++) {
        if (arg_is(x, i, "AUTH") && i + 2 < x->argc) {
            if (!authenticate(c, x->argv[i + 1], x->argv[i + 2], x->argvlen[i + 2]))
                return;
            i += 2;
        } else if (arg_is(x, i, "SETNAME") && i + 1 < x->argc) {
            i++;
            if (x->argvlen[i] < sizeof(c->name) && !memchr(x->argv[i], ' ', x->argvlen[i]))
                memcpy(c->name, x->argv[i], x->argvlen[i] + 1);
        } else {
            reply_usage(x);
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

/* ------------------------------------------------------------------------
 * Key-value commands: built into a Command and sent to the server
 * ------------------------------------------------------------------------ */

#define ARG(x, i) ((ProtobufCBinaryData){(x)->argvlen[i], (uint8_t *)(x)->argv[i]})

/* A Command with the op of x's command (the table's) and its one key. */
static Kvpb__Command one_key(const struct call *x, ProtobufCBinaryData *key)
{
    Kvpb__Command cmd = KVPB__COMMAND__INIT;
    cmd.op = x->cmd->op;
    *key = ARG(x, 1);
    cmd.keys = key;
    cmd.n_keys = 1;
    return cmd;
}

static void cmd_get(struct call *x)
{
    ProtobufCBinaryData key;
    Kvpb__Command cmd = one_key(x, &key);
    submit(x, &cmd, SHAPE_BULK);
}

/* SET key value [NX]: with NX, a CAS expecting the key absent. */
static void cmd_set(struct call *x)
{
    ProtobufCBinaryData key;
    Kvpb__Command cmd = one_key(x, &key);
    cmd.value = ARG(x, 2);
    if (x->argc == 3) {
        submit(x, &cmd, SHAPE_OK);
    } else if (x->argc == 4 && !strcasecmp(x->argv[3], "NX")) {
        cmd.op = KVPB__OP__OP_CAS;
        cmd.expect_absent = true;
        submit(x, &cmd, SHAPE_SETNX_OK);
    } else {
        reply_error(&x->c->out, "ERR", "SET supports only NX (no expiry, no XX, no GET)");
    }
}

static void cmd_setnx(struct call *x)
{
    ProtobufCBinaryData key;
    Kvpb__Command cmd = one_key(x, &key);
    cmd.expect_absent = true;
    cmd.value = ARG(x, 2);
    submit(x, &cmd, SHAPE_SETNX_INT);
}

/* CAS key expected new: 1 if it was set, 0 if the value was not expected. */
static void cmd_cas(struct call *x)
{
    ProtobufCBinaryData key;
    Kvpb__Command cmd = one_key(x, &key);
    cmd.expected = ARG(x, 2);
    cmd.value = ARG(x, 3);
    submit(x, &cmd, SHAPE_CAS);
}

static void incr_by(struct call *x, int64_t delta)
{
    ProtobufCBinaryData key;
    Kvpb__Command cmd = one_key(x, &key);
    cmd.delta = delta;
    submit(x, &cmd, SHAPE_INT);
}

static void cmd_incr(struct call *x)
{
    incr_by(x, 1);
}

static void cmd_decr(struct call *x)
{
    incr_by(x, -1);
}

/* INCRBY and DECRBY key delta. */
static void cmd_incrby(struct call *x)
{
    int64_t d;
    if (!parse_i64(x->argv[2], x->argvlen[2], &d) || d == 0 || d == INT64_MIN) {
        reply_error(&x->c->out, "ERR", "value is not an integer or out of range");
        return;
    }
    incr_by(x, kv_command_id(x->cmd) == KV_ID_DECRBY ? -d : d);
}

/* DEL, EXISTS, MGET key [key...]: how many keys MGET may name is the
 * table's (run_checked checked it). */
static void cmd_keys(struct call *x)
{
    Kvpb__Command cmd = KVPB__COMMAND__INIT;
    ProtobufCBinaryData keys[KV_MAX_KEYS];
    size_t n = (size_t)x->argc - 1;
    cmd.op = x->cmd->op;
    cmd.keys = n <= KV_MAX_KEYS ? keys : malloc(n * sizeof(*cmd.keys));
    if (!cmd.keys) {
        reply_error(&x->c->out, "ERR", "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        cmd.keys[i] = ARG(x, i + 1);
    cmd.n_keys = n;
    submit(x, &cmd, cmd.op == KVPB__OP__OP_MGET ? SHAPE_ARRAY : SHAPE_INT);
    if (cmd.keys != keys)
        free(cmd.keys);
}

#undef ARG

/* ------------------------------------------------------------------------
 * Dispatch
 * ------------------------------------------------------------------------ */

static void cmd_session(struct call *x);

/* Each command's handler, by its id in the table (commands.h). */
static void (*const handlers[KV_ID_COUNT])(struct call *x) = {
    [KV_ID_GET] = cmd_get,
    [KV_ID_SET] = cmd_set,
    [KV_ID_SETNX] = cmd_setnx,
    [KV_ID_CAS] = cmd_cas,
    [KV_ID_INCR] = cmd_incr,
    [KV_ID_DECR] = cmd_decr,
    [KV_ID_INCRBY] = cmd_incrby,
    [KV_ID_DECRBY] = cmd_incrby,
    [KV_ID_DEL] = cmd_keys,
    [KV_ID_EXISTS] = cmd_keys,
    [KV_ID_MGET] = cmd_keys,
    [KV_ID_SESSION] = cmd_session,
    [KV_ID_AUTH] = cmd_auth,
    [KV_ID_HELLO] = cmd_hello,
    [KV_ID_PING] = cmd_ping,
    [KV_ID_ECHO] = cmd_echo,
    [KV_ID_QUIT] = cmd_quit,
    [KV_ID_SELECT] = cmd_select,
    [KV_ID_CLIENT] = cmd_client,
    [KV_ID_READONLY] = cmd_readonly,
    [KV_ID_READWRITE] = cmd_readonly,
    [KV_ID_COMMAND] = cmd_command,
    [KV_ID_CONFIG] = cmd_config,
    [KV_ID_INFO] = cmd_info,
    [KV_ID_RAFT_STATUS] = cmd_raft_status,
    [KV_ID_RAFT_LEADER] = cmd_raft_leader,
    [KV_ID_RAFT_RING] = cmd_raft_ring,
    [KV_ID_RAFT_LOCATE] = cmd_raft_locate,
    [KV_ID_RAFT_TRANSFER] = cmd_raft_transfer,
    [KV_ID_RAFT_FORGET] = cmd_raft_forget,
    [KV_ID_RAFT_NODES] = cmd_raft_nodes,
    [KV_ID_RAFT_NODE] = cmd_raft_node,
    [KV_ID_RAFT_REBALANCE] = cmd_raft_rebalance,
    [KV_ID_MULTI] = cmd_transaction,
    [KV_ID_EXEC] = cmd_transaction,
    [KV_ID_DISCARD] = cmd_transaction,
    [KV_ID_WATCH] = cmd_transaction,
    [KV_ID_UNWATCH] = cmd_transaction,
};

/* Run x's command if its arguments suit it (count, keys): a refused one
 * is refused whatever they are. */
static void run_checked(struct call *x)
{
    char err[KV_COMMAND_ERR_SIZE];
    if (!(x->cmd->flags & KV_CMD_REFUSED) &&
        !kv_command_check_args(x->cmd, x->argc, x->argv[0], err)) {
        reply_error(&x->c->out, "ERR", err);
        return;
    }
    handlers[kv_command_id(x->cmd)](x);
}

/* SESSION client-id seq command [args...]: a key-value command in the
 * session the client names (kvctl's, which retries on other nodes). */
static void cmd_session(struct call *x)
{
    uint64_t client, seq;
    if (!parse_u64(x->argv[1], &client) || !parse_u64(x->argv[2], &seq) || client == 0 ||
        seq == 0) {
        reply_usage(x);
        return;
    }
    struct call inner = {
        .c = x->c,
        .cmd = kv_command_lookup(x->argv[3], x->argvlen[3]),
        .argc = x->argc - 3,
        .argv = x->argv + 3,
        .argvlen = x->argvlen + 3,
        .client = client,
        .seq = seq,
    };
    if (!inner.cmd || !(inner.cmd->flags & (KV_CMD_READ | KV_CMD_WRITE))) {
        char err[KV_COMMAND_ERR_SIZE];
        kv_command_unknown_error(inner.argv[0], err);
        reply_error(&x->c->out, "ERR", err);
        return;
    }
    run_checked(&inner);
}

/* A command from the client: known, allowed to this connection (the
 * table's flags say what it needs, auth.h what the connection has), then
 * its arguments checked and its handler run. Before authenticating, only
 * what needs nothing is known: anything else is NOAUTH. */
static void run_one(struct conn *c, struct cmd *k)
{
    struct call x = {
        .c = c,
        .cmd = kv_command_lookup(k->argv[0], k->argvlen[0]),
        .argc = k->argc,
        .argv = k->argv,
        .argvlen = k->argvlen,
    };
    enum kv_access need = kv_command_access(x.cmd ? x.cmd->flags : 0);
    if (c->access < need && c->access == KV_ACCESS_NONE) {
        reply_error(&c->out, "NOAUTH", "Authentication required.");
        return;
    }
    if (c->access < need) {
        char err[KV_COMMAND_ERR_SIZE];
        snprintf(err, sizeof(err), "%s is a control command: AUTH admin <token> first",
                 x.cmd->name);
        reply_error(&c->out, "NOPERM", err);
        return;
    }
    if (!x.cmd) {
        char err[KV_COMMAND_ERR_SIZE];
        kv_command_unknown_error(k->argv[0], err);
        reply_error(&c->out, "ERR", err);
        return;
    }
    run_checked(&x);
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

/* A command over --max-request-bytes: said, counted; the caller closes. */
static void too_large(struct conn *c, size_t limit)
{
    char why[120];
    snprintf(why, sizeof(why), "command too large (over %zu bytes, --max-request-bytes)", limit);
    reply_error(&c->out, "ERR", why);
    if (c->base.door->limits)
        c->base.door->limits->too_large++;
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
    size_t total = 0, limit = tcp_request_limit(c->base.door->limits);
    for (size_t i = 0; ok && i < r->elements; i++)
        total += r->element[i]->len;
    if (ok && total > limit) {
        too_large(c, limit);
        ok = false;
    }
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

/* Whether the reader holds no part of a command. Asked for one more reply
 * after the last, hiredis' reader begins the next (ridx 0, its type still
 * unknown, -1) and stops for want of bytes: it holds nothing then either.
 * (Taken for a part, every connection waiting for an answer looked like a
 * slow sender to the partial-request clock, and an inline command after a
 * RESP one was fed to the RESP reader: a protocol error.) */
static bool reader_idle(const redisReader *r)
{
    return r->pos >= r->len && (r->ridx == -1 || (r->ridx == 0 && r->rstack[0].type < 0));
}

/* Feed bytes; false if the connection must close. */
static bool parse_bytes(struct conn *c, char *data, size_t len, char **spill);

static bool parse(struct conn *c, char *data, size_t len)
{
    char *spill = NULL;
    bool ok = parse_bytes(c, data, len, &spill);
    free(spill);
    return ok;
}

/* *spill: bytes taken back from the RESP reader (an inline command behind
 * a RESP one), which data may point into. */
static bool parse_bytes(struct conn *c, char *data, size_t len, char **spill)
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
            /* An inline command next: taken back, for the inline path
             * above (the RESP reader would call it a protocol error). */
            redisReader *r = c->reader;
            if (r->pos < r->len && r->buf[r->pos] != '*') {
                size_t rest = r->len - r->pos;
                char *back = malloc(rest);
                if (!back) {
                    reply_error(&c->out, "ERR", "out of memory");
                    return false;
                }
                memcpy(back, r->buf + r->pos, rest);
                r->pos = r->len;
                free(*spill);
                *spill = data = back;
                len = rest;
                break;
            }
        }
        size_t limit = tcp_request_limit(c->base.door->limits);
        if (c->reader->len - c->reader->pos > limit) {
            too_large(c, limit);
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
    if (n < 0 || c->draining) {
        free(b->base);
        if (n < 0)
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
    if (kv_session_init(c->rs->kv, &c->session)) {
        tcp_conn_close(base);
        return;
    }
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
    for (size_t i = 0; i < KV_ID_COUNT; i++)
        if (!handlers[i])
            return UV_ENOSYS; /* a command in the table (commands.c) without its handler */
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
