/* server.c — kvd's node, state machine and command path; see server.h. */
#include "server.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iolog.h"
#include "storage.h"

enum {
    GROUP = 1,     /* one group for now; every structure is per group */
    SWEEP_MS = 10, /* how often deadlines and retries are looked at */
    NO_LEADER_RETRY_MS = 50,
    BUSY_RETRY_MS = 20,
    EXEC_BUCKETS = 4096, /* writes at the leader, by session */
};

/* Request latency buckets, in seconds (Prometheus histogram). */
enum { LAT_BUCKETS = 14 };
static const double LAT_BOUNDS[LAT_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                               0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   5.0};

struct histogram {
    uint64_t buckets[LAT_BUCKETS + 1];
    uint64_t count;
    double sum;
};

/* A command a client gave this node, until it is answered. */
struct request {
    struct request *prev, *next;
    uint64_t id;
    uint8_t *data; /* the packed Command */
    size_t len;
    bool is_read;
    uint64_t start_ms, deadline_ms;
    uint64_t next_try_ms; /* when to try (again) */
    uint64_t start_ns;
    raft_id leader_hint;
    bool local_exec; /* being executed here, as the leader */
    raft_id sent_to; /* the node the last try went to: only its answer counts */
    bool renew;      /* KV_SUBMIT_RENEW */
    uint64_t renewed_client_id;
    char last_error[160];
    kv_done_cb cb;
    void *ctx;
};

/* A command being executed here as the leader, for a coordinator (this
 * node or another). */
struct exec {
    struct exec *prev, *next; /* in the reads or writes list */
    struct exec *chain;       /* writes: hash bucket chain */
    raft_id origin;           /* the coordinator */
    uint64_t req_id;          /* its request id */
    uint64_t client_id, seq;  /* writes */
    uint64_t read_id;         /* reads */
    Kvpb__Command *cmd;       /* reads: served once applied >= read_index */
    raft_index read_index;
    bool read_ready;
    uint64_t start_ms;
};

struct kv_server {
    uv_loop_t *loop;
    struct kv_server_config cfg;
    struct raft_node *node;
    struct kv_sm *sm;
    uv_timer_t sweep;
    bool stopping;
    int closing;
    /* Snapshots: files in <data>/snap, the current one named by its index. */
    char snap_dir[PATH_MAX - 128];
    raft_index snap_index;
    bool snap_busy;
    int read_fd;
    raft_index read_fd_index;
    int staging_fd;
    uint64_t snapshots_taken, snapshots_installed;
    uint64_t prng;
    uint64_t next_request_id, next_read_id;
    struct request *requests;
    struct exec *reads, *writes;
    struct exec *by_session[EXEC_BUCKETS];
    /* Metrics. */
    struct histogram lat_write, lat_read;
    uint64_t ops_ok, ops_timeout, ops_unavailable, ops_bad, forwarded, retried;
    bool damaged_logged; /* a damaged value was reported once */
    uint64_t sessions_renewed;
    uint64_t became_candidate, became_leader;
    struct transport_fault faults[TRANSPORT_MAX_FAULTS];
    size_t n_faults;
};

static uint64_t now_ms(struct kv_server *s)
{
    return uv_now(s->loop);
}

static uint64_t next_random(struct kv_server *s)
{
    /* xorshift64*: session ids only need to differ */
    s->prng ^= s->prng >> 12;
    s->prng ^= s->prng << 25;
    s->prng ^= s->prng >> 27;
    return s->prng * 2685821657736338717ULL;
}

static struct raft *core(struct kv_server *s)
{
    return raft_node_raft(s->node, GROUP);
}

static bool is_read_op(Kvpb__Op op)
{
    return op == KVPB__OP__OP_GET || op == KVPB__OP__OP_EXISTS || op == KVPB__OP__OP_MGET;
}

/* ------------------------------------------------------------------------
 * Results on the wire
 * ------------------------------------------------------------------------ */

/* r as a Result; vals and present need room for r->n_values. */
static void result_to_pb(const struct kv_result *r, Kvpb__Result *pb, ProtobufCBinaryData *vals,
                         protobuf_c_boolean *present)
{
    for (size_t i = 0; i < r->n_values; i++) {
        vals[i] = (ProtobufCBinaryData){r->values[i].len, r->values[i].data};
        present[i] = r->values[i].present;
    }
    pb->status = r->status;
    pb->integer = r->integer;
    pb->applied_index = r->index;
    pb->n_values = pb->n_present = r->n_values;
    pb->values = vals;
    pb->present = present;
}

/* A Result received from the leader, as a kv_result pointing into it. */
static void result_from_pb(const Kvpb__Result *pb, struct kv_result *r, struct kv_value *vals,
                           size_t max)
{
    memset(r, 0, sizeof(*r));
    r->status = pb->status;
    r->integer = pb->integer;
    r->index = pb->applied_index;
    r->n_values = pb->n_values < max ? pb->n_values : max;
    r->values = vals;
    for (size_t i = 0; i < r->n_values; i++)
        vals[i] = (struct kv_value){i < pb->n_present && pb->present[i], pb->values[i].data,
                                    pb->values[i].len};
}

/* ------------------------------------------------------------------------
 * Coordinator: requests from this node's clients
 * ------------------------------------------------------------------------ */

static void observe(struct histogram *h, double seconds)
{
    size_t k = 0;
    while (k < LAT_BUCKETS && seconds > LAT_BOUNDS[k])
        k++;
    h->buckets[k]++;
    h->count++;
    h->sum += seconds;
}

static void request_unlink(struct kv_server *s, struct request *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        s->requests = q->next;
    if (q->next)
        q->next->prev = q->prev;
}

static void finish(struct kv_server *s, struct request *q, enum kv_code code, const char *message,
                   const struct kv_result *result)
{
    request_unlink(s, q);
    double seconds = (double)(uv_hrtime() - q->start_ns) / 1e9;
    switch (code) {
    case KV_DONE:
        s->ops_ok++;
        observe(q->is_read ? &s->lat_read : &s->lat_write, seconds);
        break;
    case KV_TIMEOUT:
        s->ops_timeout++;
        break;
    case KV_UNAVAILABLE:
        s->ops_unavailable++;
        break;
    case KV_BAD:
        s->ops_bad++;
        break;
    }
    struct kv_reply reply = {code, message, result, q->renewed_client_id};
    q->cb(q->ctx, &reply);
    free(q->data);
    free(q);
}

static struct request *find_request(struct kv_server *s, uint64_t id)
{
    for (struct request *q = s->requests; q; q = q->next)
        if (q->id == id)
            return q;
    return NULL;
}

static void exec_start(struct kv_server *s, raft_id origin, uint64_t req_id, const uint8_t *data,
                       size_t len);
static void fail_execs(struct kv_server *s, Kvpb__ReplyCode code, const char *message);
static void send_relay(struct kv_server *s, raft_id to, const Kvpb__Relay *relay);
static void attempt(struct kv_server *s, struct request *q);

/* The connection's session expired (thesis §6.3; the state machine
 * applied nothing): the command becomes seq 1 of a new session, under the
 * same deadline. */
static bool renew_session(struct kv_server *s, struct request *q)
{
    Kvpb__Command *cmd = kvpb__command__unpack(NULL, q->len, q->data);
    if (!cmd)
        return false;
    cmd->client_id = kv_server_new_client(s);
    cmd->seq = 1;
    uint8_t *data;
    size_t len;
    bool ok = kv_command_encode(cmd, &data, &len) == KV_OK;
    if (ok) {
        free(q->data);
        q->data = data;
        q->len = len;
        q->renewed_client_id = cmd->client_id;
        s->sessions_renewed++;
    }
    kvpb__command__free_unpacked(cmd, NULL);
    return ok;
}

/* The leader's answer (from another node or from this one). */
static void on_answer(struct kv_server *s, struct request *q, Kvpb__ReplyCode code, raft_id leader,
                      const char *message, const struct kv_result *result)
{
    uint64_t now = now_ms(s);
    q->local_exec = false;
    switch (code) {
    case KVPB__REPLY_CODE__REPLY_OK:
        if (result && result->status == KVPB__STATUS__STATUS_SESSION_EXPIRED && q->renew &&
            !q->renewed_client_id && renew_session(s, q)) {
            attempt(s, q);
            return;
        }
        finish(s, q, KV_DONE, NULL, result);
        return;
    case KVPB__REPLY_CODE__REPLY_BAD_REQUEST:
        finish(s, q, KV_BAD, message && *message ? message : "bad request", NULL);
        return;
    case KVPB__REPLY_CODE__REPLY_NOT_LEADER:
        q->leader_hint = leader != s->cfg.id ? leader : 0;
        q->next_try_ms = now + (leader ? 0 : NO_LEADER_RETRY_MS);
        snprintf(q->last_error, sizeof(q->last_error), "no leader could commit it");
        break;
    case KVPB__REPLY_CODE__REPLY_BUSY:
        q->next_try_ms = now + BUSY_RETRY_MS;
        snprintf(q->last_error, sizeof(q->last_error), "the leader is busy (flow control)");
        break;
    default:
        q->next_try_ms = now + NO_LEADER_RETRY_MS * 2;
        snprintf(q->last_error, sizeof(q->last_error), "leader unavailable: %s",
                 message ? message : "");
        break;
    }
    s->retried++;
    if (q->next_try_ms <= now)
        attempt(s, q);
}

/* Why a read of the state machine failed, for the client (and, when this
 * node's copy is damaged, once for the log). */
static const char *read_failed(struct kv_server *s, int rc)
{
    if (rc != KV_EDAMAGED)
        return "reading the state machine failed";
    if (!s->damaged_logged) {
        s->damaged_logged = true;
        iolog("kvd %" PRIu64 ": a stored value fails its checksum (its bytes changed on disk): "
              "this node answers no read of it; replace the node (docs/kvd.md)\n",
              s->cfg.id);
    }
    return "this node's copy of a value is damaged (it fails its checksum): ask another node";
}

static void serve_local_read(struct kv_server *s, struct request *q)
{
    Kvpb__Command *cmd = kvpb__command__unpack(NULL, q->len, q->data);
    struct kv_result r;
    int rc = cmd ? kv_sm_read(s->sm, cmd, &r) : KV_EIO;
    if (rc != KV_OK) {
        if (cmd)
            kvpb__command__free_unpacked(cmd, NULL);
        finish(s, q, KV_UNAVAILABLE, read_failed(s, rc), NULL);
        return;
    }
    kvpb__command__free_unpacked(cmd, NULL);
    finish(s, q, KV_DONE, NULL, &r);
    kv_result_free(&r);
}

/* Send q where it can be executed: here if we lead, to the leader if one
 * is known; otherwise wait a little for an election. */
static void attempt(struct kv_server *s, struct request *q)
{
    uint64_t now = now_ms(s);
    const char *why = raft_node_error(s->node);
    if (why || s->stopping) {
        finish(s, q, KV_UNAVAILABLE, why ? why : "the node is shutting down", NULL);
        return;
    }
    if (now >= q->deadline_ms) {
        char msg[256];
        raft_id leader = raft_leader(core(s));
        if (leader)
            snprintf(msg, sizeof(msg),
                     "no quorum: not done within %u ms (leader %" PRIu64 "; last: %s)",
                     s->cfg.request_timeout_ms, leader,
                     q->last_error[0] ? q->last_error : "no answer from the leader");
        else
            snprintf(msg, sizeof(msg), "no quorum: no leader elected within %u ms",
                     s->cfg.request_timeout_ms);
        finish(s, q, KV_TIMEOUT, msg, NULL);
        return;
    }
    if (q->is_read && s->cfg.read_mode == KV_READ_LOCAL) {
        serve_local_read(s, q);
        return;
    }
    raft_id leader = raft_leader(core(s));
    if (!leader || leader == s->cfg.id)
        leader = leader ? leader : q->leader_hint;
    q->leader_hint = 0;
    if (leader == s->cfg.id && raft_role_of(core(s)) == RAFT_LEADER) {
        q->local_exec = true;
        q->next_try_ms = q->deadline_ms;
        exec_start(s, s->cfg.id, q->id, q->data, q->len);
        return;
    }
    if (!leader || leader == s->cfg.id) {
        q->next_try_ms = now + NO_LEADER_RETRY_MS;
        return;
    }
    Kvpb__Command *cmd = kvpb__command__unpack(NULL, q->len, q->data);
    if (!cmd) {
        finish(s, q, KV_BAD, "command does not decode", NULL);
        return;
    }
    Kvpb__Request req = KVPB__REQUEST__INIT;
    req.id = q->id;
    req.command = cmd;
    Kvpb__Relay relay = KVPB__RELAY__INIT;
    relay.request = &req;
    send_relay(s, leader, &relay);
    q->sent_to = leader;
    s->forwarded++;
    kvpb__command__free_unpacked(cmd, NULL);
    /* No answer within an election timeout: the leader may be gone; ask again. */
    q->next_try_ms = now + s->cfg.raft.election_timeout_ms;
}

void kv_server_submit(struct kv_server *s, const Kvpb__Command *cmd, int flags, kv_done_cb cb,
                      void *ctx)
{
    struct request *q = calloc(1, sizeof(*q));
    uint8_t *data = NULL;
    size_t len = 0;
    if (!q || kv_command_encode(cmd, &data, &len) != KV_OK) {
        free(q);
        struct kv_reply reply = {KV_UNAVAILABLE, "out of memory", NULL, 0};
        cb(ctx, &reply);
        return;
    }
    q->id = ++s->next_request_id;
    q->data = data;
    q->len = len;
    q->is_read = is_read_op(cmd->op);
    q->renew = flags & KV_SUBMIT_RENEW;
    q->start_ms = now_ms(s);
    q->start_ns = uv_hrtime();
    q->deadline_ms = q->start_ms + s->cfg.request_timeout_ms;
    q->cb = cb;
    q->ctx = ctx;
    q->next = s->requests;
    if (s->requests)
        s->requests->prev = q;
    s->requests = q;
    attempt(s, q);
}

/* Retries and deadlines. */
static void on_sweep(uv_timer_t *t)
{
    struct kv_server *s = t->data;
    uint64_t now = now_ms(s);
    const char *why = raft_node_error(s->node);
    if (why && (s->reads || s->writes))
        fail_execs(s, KVPB__REPLY_CODE__REPLY_UNAVAILABLE, why); /* the node stopped */
    struct request *q = s->requests, *next;
    for (; q; q = next) {
        next = q->next;
        if (q->local_exec && q->deadline_ms > now)
            continue; /* the exec answers, or leadership loss fails it */
        if (q->next_try_ms <= now || q->deadline_ms <= now) {
            if (q->next_try_ms && q->next_try_ms != q->deadline_ms)
                s->retried++;
            attempt(s, q);
        }
    }
}

/* ------------------------------------------------------------------------
 * Leader: executing commands
 * ------------------------------------------------------------------------ */

static size_t bucket_of(uint64_t client, uint64_t seq)
{
    return (size_t)((client * 0x9e3779b97f4a7c15ULL) ^ seq) % EXEC_BUCKETS;
}

static void exec_unlink(struct kv_server *s, struct exec *x, struct exec **list)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        *list = x->next;
    if (x->next)
        x->next->prev = x->prev;
    if (list == &s->writes) {
        struct exec **p = &s->by_session[bucket_of(x->client_id, x->seq)];
        while (*p && *p != x)
            p = &(*p)->chain;
        if (*p)
            *p = x->chain;
    }
}

static void exec_link(struct kv_server *s, struct exec *x, struct exec **list)
{
    x->prev = NULL;
    x->next = *list;
    if (*list)
        (*list)->prev = x;
    *list = x;
    if (list == &s->writes) {
        size_t b = bucket_of(x->client_id, x->seq);
        x->chain = s->by_session[b];
        s->by_session[b] = x;
    }
}

/* Send a Relay (a forwarded request or its answer) to node `to`. */
static void send_relay(struct kv_server *s, raft_id to, const Kvpb__Relay *relay)
{
    size_t len = kvpb__relay__get_packed_size(relay);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return; /* as if lost: the coordinator retries */
    kvpb__relay__pack(relay, buf);
    transport_forward(raft_node_transport(s->node), to, GROUP, buf, len);
    free(buf);
}

/* Answer the coordinator of x (local or remote). */
static void reply_to(struct kv_server *s, raft_id origin, uint64_t req_id, Kvpb__ReplyCode code,
                     const char *message, const struct kv_result *result)
{
    raft_id leader = raft_leader(core(s));
    if (origin == s->cfg.id) {
        struct request *q = find_request(s, req_id);
        if (q)
            on_answer(s, q, code, leader, message, result);
        return;
    }
    Kvpb__Reply reply = KVPB__REPLY__INIT;
    reply.id = req_id;
    reply.code = code;
    reply.leader = leader;
    reply.message = (char *)(message ? message : "");
    Kvpb__Result pb = KVPB__RESULT__INIT;
    size_t nv = result ? result->n_values : 0;
    ProtobufCBinaryData *vals = malloc((nv ? nv : 1) * sizeof(*vals));
    protobuf_c_boolean *present = malloc((nv ? nv : 1) * sizeof(*present));
    if (!vals || !present)
        goto out;
    if (result) {
        result_to_pb(result, &pb, vals, present);
        reply.result = &pb;
    }
    Kvpb__Relay relay = KVPB__RELAY__INIT;
    relay.reply = &reply;
    /* An answer over the frame limit would never arrive (the peer refuses
     * the frame, and the coordinator would retry until its deadline): say
     * so at once instead. Only reads answer with that much. */
    size_t size = kvpb__relay__get_packed_size(&relay);
    char why[200];
    if (size > CODEC_DEFAULT_MAX_FRAME - 4096) {
        snprintf(why, sizeof(why),
                 "the answer (%zu bytes) is over the %d MiB one node can forward to another: "
                 "send the command to the leader (RAFT.LEADER), or ask for fewer keys",
                 size, CODEC_DEFAULT_MAX_FRAME >> 20);
        reply.code = KVPB__REPLY_CODE__REPLY_BAD_REQUEST;
        reply.message = why;
        reply.result = NULL;
    }
    send_relay(s, origin, &relay);
out:
    free(vals);
    free(present);
}

static Kvpb__ReplyCode code_of(int rv)
{
    switch (rv) {
    case RAFT_ENOTLEADER:
        return KVPB__REPLY_CODE__REPLY_NOT_LEADER;
    case RAFT_EBUSY:
        return KVPB__REPLY_CODE__REPLY_BUSY;
    case RAFT_ETOOBIG:
    case RAFT_EINVAL:
        return KVPB__REPLY_CODE__REPLY_BAD_REQUEST;
    default:
        return KVPB__REPLY_CODE__REPLY_UNAVAILABLE;
    }
}

static const char *message_of(struct kv_server *s, int rv)
{
    const char *why = raft_node_error(s->node);
    return why ? why : raft_strerror(rv);
}

static void exec_free(struct exec *x)
{
    if (x->cmd)
        kvpb__command__free_unpacked(x->cmd, NULL);
    free(x);
}

/* Take x off its list, free it and answer its coordinator (freed first:
 * the answer may run callbacks that change the lists). */
static void exec_answer(struct kv_server *s, struct exec *x, struct exec **list,
                        Kvpb__ReplyCode code, const char *message, const struct kv_result *result)
{
    exec_unlink(s, x, list);
    raft_id origin = x->origin;
    uint64_t req_id = x->req_id;
    exec_free(x);
    reply_to(s, origin, req_id, code, message, result);
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    for (; v >= 0x80; v >>= 7)
        p[n++] = (uint8_t)(v | 0x80);
    p[n++] = (uint8_t)v;
    return n;
}

/* Propose a command stamped with this leader's wall clock and session TTL
 * (kv.proto fields 9 and 10), which the state machine expires sessions by
 * (thesis §6.3). Appended to the encoding as it is: a protobuf parser
 * keeps the last value of a field, so no decode and re-encode. */
static int propose_stamped(struct kv_server *s, const uint8_t *data, size_t len)
{
    uv_timeval64_t tv;
    uint64_t wall =
        uv_gettimeofday(&tv) == 0 ? (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000 : 0;
    uint8_t stack[1024], *buf = len + 24 <= sizeof(stack) ? stack : malloc(len + 24);
    if (!buf)
        return RAFT_ENOMEM;
    memcpy(buf, data, len);
    size_t n = len;
    buf[n++] = 9 << 3; /* time_ms, varint */
    n += put_varint(buf + n, wall);
    buf[n++] = 10 << 3; /* session_ttl_ms, varint */
    n += put_varint(buf + n, s->cfg.session_ttl_ms);
    int rv = raft_node_propose(s->node, GROUP, buf, n);
    if (buf != stack)
        free(buf);
    return rv;
}

static void exec_start(struct kv_server *s, raft_id origin, uint64_t req_id, const uint8_t *data,
                       size_t len)
{
    Kvpb__Command *cmd = kvpb__command__unpack(NULL, len, data);
    struct exec *x = calloc(1, sizeof(*x));
    if (!cmd || !x) {
        if (cmd)
            kvpb__command__free_unpacked(cmd, NULL);
        free(x);
        reply_to(s, origin, req_id,
                 cmd ? KVPB__REPLY_CODE__REPLY_UNAVAILABLE : KVPB__REPLY_CODE__REPLY_BAD_REQUEST,
                 cmd ? "out of memory" : "command does not decode", NULL);
        return;
    }
    x->origin = origin;
    x->req_id = req_id;
    x->start_ms = now_ms(s);
    int rv;
    if (is_read_op(cmd->op)) {
        /* Linked before the call: read_done may come before it returns. */
        x->cmd = cmd;
        x->read_id = ++s->next_read_id;
        exec_link(s, x, &s->reads);
        rv = raft_node_read(s->node, GROUP, x->read_id);
        if (rv == RAFT_OK)
            return;
        exec_unlink(s, x, &s->reads);
    } else {
        x->client_id = cmd->client_id;
        x->seq = cmd->seq;
        kvpb__command__free_unpacked(cmd, NULL);
        exec_link(s, x, &s->writes);
        rv = propose_stamped(s, data, len);
        if (rv == RAFT_OK)
            return;
        exec_unlink(s, x, &s->writes);
    }
    exec_free(x);
    reply_to(s, origin, req_id, code_of(rv), message_of(s, rv), NULL);
}

/* Reads whose index the state machine has reached. */
static void serve_reads(struct kv_server *s)
{
    raft_index applied = kv_sm_applied(s->sm);
    struct exec *x = s->reads, *next;
    for (; x; x = next) {
        next = x->next;
        if (!x->read_ready || x->read_index > applied)
            continue;
        struct kv_result r;
        int rc = kv_sm_read(s->sm, x->cmd, &r);
        if (rc == KV_OK) {
            exec_answer(s, x, &s->reads, KVPB__REPLY_CODE__REPLY_OK, NULL, &r);
            kv_result_free(&r);
        } else {
            exec_answer(s, x, &s->reads, KVPB__REPLY_CODE__REPLY_UNAVAILABLE, read_failed(s, rc),
                        NULL);
        }
        next = s->reads; /* replies may run callbacks that changed the list */
    }
    /* A read waiting for entries already applied in a commit that lingers
     * for more writes (node.c): do not let it wait. */
    for (x = s->reads; x; x = x->next)
        if (x->read_ready) {
            raft_node_flush(s->node);
            break;
        }
}

static void fail_writes(struct kv_server *s, Kvpb__ReplyCode code, const char *message)
{
    while (s->writes)
        exec_answer(s, s->writes, &s->writes, code, message, NULL);
}

/* Leadership lost (or the node failed): every command executing here is
 * answered "not leader"; coordinators retry elsewhere with the same
 * session, so a write that commits after all is not applied twice. */
static void fail_execs(struct kv_server *s, Kvpb__ReplyCode code, const char *message)
{
    while (s->reads)
        exec_answer(s, s->reads, &s->reads, code, message, NULL);
    fail_writes(s, code, message);
}

/* ------------------------------------------------------------------------
 * Node callbacks
 * ------------------------------------------------------------------------ */

static int cb_open_group(void *data, uint64_t group, void *env, raft_index *applied, char *err,
                         size_t errlen)
{
    struct kv_server *s = data;
    int rc = kv_sm_open(env, group, &s->sm, err, errlen);
    if (rc)
        return rc;
    *applied = kv_sm_applied(s->sm);
    return 0;
}

/* On the storage thread, in the group commit transaction. */
static int cb_apply(void *data, uint64_t group, void *txn, const struct raft_entry *e, size_t n,
                    void **result, char *err, size_t errlen)
{
    struct kv_server *s = data;
    (void)group;
    struct kv_result *results = calloc(n, sizeof(*results));
    if (!results) {
        snprintf(err, errlen, "out of memory applying");
        return STORAGE_ENOMEM;
    }
    int rc = kv_sm_stage(s->sm, txn, e, n, results, err, errlen);
    if (rc) {
        free(results);
        return rc == KV_EFULL ? STORAGE_EFULL : STORAGE_EIO;
    }
    *result = results;
    return STORAGE_OK;
}

/* Answer the writes executed here, as soon as their results exist. */
static void cb_results(void *data, uint64_t group, const struct raft_entry *e, size_t n,
                       void *result)
{
    struct kv_server *s = data;
    (void)group;
    (void)e;
    const struct kv_result *results = result;
    for (size_t i = 0; i < n; i++) {
        const struct kv_result *r = &results[i];
        if (!r->client_id)
            continue;
        struct exec **p = &s->by_session[bucket_of(r->client_id, r->seq)];
        while (*p) {
            struct exec *x = *p;
            if (x->client_id != r->client_id || x->seq != r->seq) {
                p = &x->chain;
                continue;
            }
            exec_answer(s, x, &s->writes, KVPB__REPLY_CODE__REPLY_OK, NULL, r);
            p = &s->by_session[bucket_of(r->client_id, r->seq)];
        }
    }
}

static void cb_applied(void *data, uint64_t group, const struct raft_entry *e, size_t n,
                       void *result, bool committed)
{
    struct kv_server *s = data;
    (void)group;
    (void)e;
    kv_sm_staged_done(s->sm, committed);
    struct kv_result *results = result;
    for (size_t i = 0; results && i < n; i++)
        kv_result_free(&results[i]);
    free(results);
    if (!committed)
        fail_execs(s, KVPB__REPLY_CODE__REPLY_UNAVAILABLE, raft_node_error(s->node));
    serve_reads(s);
}

static void cb_proposals_dropped(void *data, uint64_t group, int rv)
{
    struct kv_server *s = data;
    (void)group;
    /* Which writes were in that batch is not known here: fail them all;
     * coordinators retry, and a write that did go in is answered from the
     * session table rather than applied twice. */
    fail_writes(s, code_of(rv), message_of(s, rv));
}

static void cb_read_done(void *data, uint64_t group, const struct raft_read *rd)
{
    struct kv_server *s = data;
    (void)group;
    for (struct exec *x = s->reads; x; x = x->next) {
        if (x->read_id != rd->id)
            continue;
        if (rd->status != RAFT_OK) {
            exec_answer(s, x, &s->reads, code_of(rd->status), raft_strerror(rd->status), NULL);
            return;
        }
        x->read_index = rd->index;
        x->read_ready = true;
        serve_reads(s);
        return;
    }
}

static void cb_role_changed(void *data, uint64_t group, enum raft_role role, raft_id leader)
{
    struct kv_server *s = data;
    (void)group;
    iolog("kvd %" PRIu64 ": %s in term %" PRIu64 " (leader %" PRIu64 ")\n", s->cfg.id,
          raft_role_name(role), raft_current_term(core(s)), leader);
    if (role == RAFT_CANDIDATE)
        s->became_candidate++;
    if (role == RAFT_LEADER)
        s->became_leader++;
    else
        fail_execs(s, KVPB__REPLY_CODE__REPLY_NOT_LEADER, "leadership changed");
}

static void on_relay(void *data, uint64_t from, uint64_t group, const uint8_t *body, size_t len)
{
    struct kv_server *s = data;
    if (group != GROUP || s->stopping)
        return;
    Kvpb__Relay *relay = kvpb__relay__unpack(NULL, len, body);
    if (!relay)
        return;
    if (relay->request && relay->request->command) {
        Kvpb__Command *cmd = relay->request->command;
        size_t clen = kvpb__command__get_packed_size(cmd);
        uint8_t *buf = malloc(clen ? clen : 1);
        if (buf) {
            kvpb__command__pack(cmd, buf);
            if (raft_role_of(core(s)) != RAFT_LEADER)
                reply_to(s, from, relay->request->id, KVPB__REPLY_CODE__REPLY_NOT_LEADER,
                         "not the leader", NULL);
            else
                exec_start(s, from, relay->request->id, buf, clen);
            free(buf);
        }
    } else if (relay->reply) {
        struct request *q = find_request(s, relay->reply->id);
        /* Only the node the request went to answers it (the transport has
         * authenticated `from`): an answer from any other node, or to a
         * try that was superseded, is dropped. */
        if (q && !q->local_exec && q->sent_to == from) {
            struct kv_result r;
            struct kv_value vals[64];
            if (relay->reply->result)
                result_from_pb(relay->reply->result, &r, vals, 64);
            on_answer(s, q, relay->reply->code, relay->reply->leader, relay->reply->message,
                      relay->reply->result ? &r : NULL);
        }
    }
    kvpb__relay__free_unpacked(relay, NULL);
}

/* ------------------------------------------------------------------------
 * Start, status, stop
 * ------------------------------------------------------------------------ */

static void cb_stopped(void *data);
static void release(struct kv_server *s);

/* ------------------------------------------------------------------------
 * Snapshots (§7): files <data>/snap/g<group>-<index>.snap, written from an
 * LMDB read transaction on a worker thread (writers go on meanwhile), read
 * in chunks by the leader, staged and installed by followers.
 * ------------------------------------------------------------------------ */

static void snap_file(struct kv_server *s, char *buf, size_t len, raft_index index)
{
    snprintf(buf, len, "%s/g%d-%020" PRIu64 ".snap", s->snap_dir, GROUP, index);
}

static void snap_named(struct kv_server *s, char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "%s/g%d-%s", s->snap_dir, GROUP, what);
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Delete every snapshot file but the current one (and what is staging). */
static void snap_cleanup(struct kv_server *s, bool all_temporary)
{
    DIR *d = opendir(s->snap_dir);
    if (!d)
        return;
    char keep[PATH_MAX], path[PATH_MAX + 256];
    snap_file(s, keep, sizeof(keep), s->snap_index);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", s->snap_dir, e->d_name);
        bool temporary = strstr(e->d_name, "-tmp") || strstr(e->d_name, "-staging");
        if (strcmp(path, keep) && (!temporary || all_temporary))
            unlink(path);
    }
    closedir(d);
}

struct snap_job {
    uv_work_t req;
    struct kv_server *s;
    char tmp[PATH_MAX];
    raft_index index;
    uint64_t size, checksum;
    int rc;
    char err[256];
};

static void snap_work(uv_work_t *req)
{
    struct snap_job *j = req->data;
    j->rc = kv_sm_snapshot_write(j->s->sm, j->tmp, &j->index, &j->size, &j->checksum, j->err,
                                 sizeof(j->err));
}

static void snap_done(uv_work_t *req, int status)
{
    struct snap_job *j = req->data;
    struct kv_server *s = j->s;
    s->snap_busy = false;
    if (status || j->rc || s->stopping) {
        if (j->rc)
            iolog("kvd %" PRIu64 ": %s\n", s->cfg.id, j->err);
        unlink(j->tmp);
        free(j);
        if (s->stopping)
            release(s);
        return;
    }
    char path[PATH_MAX];
    snap_file(s, path, sizeof(path), j->index);
    if (j->index == s->snap_index || rename(j->tmp, path)) {
        unlink(j->tmp); /* nothing new since the last one */
        free(j);
        return;
    }
    sync_dir(s->snap_dir);
    int rv = raft_node_snapshot_taken(s->node, GROUP, j->index, j->size, j->checksum);
    if (rv == RAFT_OK) {
        s->snap_index = j->index;
        s->snapshots_taken++;
        snap_cleanup(s, false);
        iolog("kvd %" PRIu64 ": snapshot at index %" PRIu64 " (%" PRIu64 " bytes)\n", s->cfg.id,
              j->index, j->size);
    } else {
        unlink(path);
    }
    free(j);
}

static void cb_snapshot_wanted(void *data, uint64_t group, raft_index index)
{
    struct kv_server *s = data;
    (void)group;
    (void)index; /* taken at what the state machine has committed by then */
    if (s->snap_busy || s->stopping)
        return;
    struct snap_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->s = s;
    snap_named(s, j->tmp, sizeof(j->tmp), "tmp.snap");
    j->req.data = j;
    if (uv_queue_work(s->loop, &j->req, snap_work, snap_done)) {
        free(j);
        return;
    }
    s->snap_busy = true;
}

static int cb_snapshot_read(void *data, uint64_t group, raft_index index, uint64_t offset,
                            void *buf, size_t len)
{
    struct kv_server *s = data;
    (void)group;
    if (s->read_fd < 0 || s->read_fd_index != index) {
        if (s->read_fd >= 0)
            close(s->read_fd);
        char path[PATH_MAX];
        snap_file(s, path, sizeof(path), index);
        s->read_fd = open(path, O_RDONLY | O_CLOEXEC);
        s->read_fd_index = index;
        if (s->read_fd < 0) {
            iolog("kvd %" PRIu64 ": cannot read snapshot %s: %s\n", s->cfg.id, path,
                  strerror(errno));
            return -1;
        }
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(s->read_fd, (char *)buf + done, len - done, (off_t)(offset + done));
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

static int cb_snapshot_chunk(void *data, uint64_t group, const struct raft_install_snapshot *is)
{
    struct kv_server *s = data;
    (void)group;
    char path[PATH_MAX];
    snap_named(s, path, sizeof(path), "staging.snap");
    if (is->offset == 0 || s->staging_fd < 0) {
        if (s->staging_fd >= 0)
            close(s->staging_fd);
        s->staging_fd =
            open(path, O_WRONLY | O_CREAT | (is->offset == 0 ? O_TRUNC : 0) | O_CLOEXEC, 0644);
    }
    bool ok = s->staging_fd >= 0;
    size_t done = 0;
    while (ok && done < is->len) {
        ssize_t n = pwrite(s->staging_fd, (const char *)is->data + done, is->len - done,
                           (off_t)(is->offset + done));
        ok = n > 0;
        done += ok ? (size_t)n : 0;
    }
    if (!is->done)
        return ok ? 0 : -1;
    ok = ok && fsync(s->staging_fd) == 0;
    close(s->staging_fd);
    s->staging_fd = -1;
    raft_index at = 0;
    if (!ok || kv_snapshot_file_check(path, is->total_size, is->checksum, &at) != KV_OK ||
        at != is->last_index) {
        iolog("kvd %" PRIu64 ": received snapshot at %" PRIu64 " fails its check\n", s->cfg.id,
              is->last_index);
        return -1;
    }
    return 1;
}

static int cb_snapshot_install(void *data, uint64_t group, void *txn, raft_index index, char *err,
                               size_t errlen)
{
    struct kv_server *s = data;
    (void)group;
    char path[PATH_MAX];
    snap_named(s, path, sizeof(path), "staging.snap");
    int rc = kv_sm_install_stage(s->sm, txn, path, index, err, errlen);
    return rc == KV_OK ? STORAGE_OK : rc == KV_EFULL ? STORAGE_EFULL : STORAGE_EIO;
}

static void cb_snapshot_installed(void *data, uint64_t group, raft_index index, bool committed)
{
    struct kv_server *s = data;
    (void)group;
    kv_sm_staged_done(s->sm, committed);
    if (!committed)
        return;
    char from[PATH_MAX], to[PATH_MAX];
    snap_named(s, from, sizeof(from), "staging.snap");
    snap_file(s, to, sizeof(to), index);
    if (rename(from, to) == 0) {
        sync_dir(s->snap_dir);
        s->snap_index = index;
        snap_cleanup(s, false);
    }
    s->snapshots_installed++;
    iolog("kvd %" PRIu64 ": installed the leader's snapshot at index %" PRIu64 "\n", s->cfg.id,
          index);
    serve_reads(s);
}

int kv_server_start(struct kv_server **out, uv_loop_t *loop, const struct kv_server_config *cfg,
                    char *err, size_t errlen)
{
    struct kv_server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->loop = loop;
    s->cfg = *cfg;
    if (!s->cfg.request_timeout_ms)
        s->cfg.request_timeout_ms = 5000;
    s->prng = (uv_hrtime() ^ (cfg->id * 0x9e3779b97f4a7c15ULL)) | 1;
    s->read_fd = s->staging_fd = -1;
    snprintf(s->snap_dir, sizeof(s->snap_dir), "%s/snap", cfg->data_dir);
    struct raft_node_peer peers[KV_MAX_PEERS];
    const struct kv_peer *self = NULL;
    for (size_t i = 0; i < cfg->n_peers; i++) {
        peers[i] =
            (struct raft_node_peer){cfg->peers[i].id, cfg->peers[i].host, cfg->peers[i].raft_port};
        if (cfg->peers[i].id == cfg->id)
            self = &cfg->peers[i];
    }
    if (!self) {
        snprintf(err, errlen, "node %" PRIu64 " is not in the cluster's member list", cfg->id);
        free(s);
        return -1;
    }
    static const uint64_t groups[] = {GROUP};
    struct raft_node_config nc = {.cluster_id = cfg->cluster_id,
                                  .id = cfg->id,
                                  .data_dir = cfg->data_dir,
                                  .map_size_bytes = cfg->map_size_bytes,
                                  .host = self->host,
                                  .port = self->raft_port,
                                  .peers = peers,
                                  .n_peers = cfg->n_peers,
                                  .groups = groups,
                                  .n_groups = 1,
                                  .raft = cfg->raft,
                                  .tick_ms = cfg->tick_ms ? cfg->tick_ms : 10,
                                  .trace = cfg->trace,
                                  .apply_linger_us = cfg->apply_linger_us,
                                  .cluster_secret = cfg->cluster_secret};
    nc.raft.lease_reads = cfg->read_mode == KV_READ_LEASE;
    static const struct raft_node_callbacks callbacks = {.open_group = cb_open_group,
                                                         .apply = cb_apply,
                                                         .results = cb_results,
                                                         .applied = cb_applied,
                                                         .read_done = cb_read_done,
                                                         .role_changed = cb_role_changed,
                                                         .proposals_dropped = cb_proposals_dropped,
                                                         .snapshot_wanted = cb_snapshot_wanted,
                                                         .snapshot_read = cb_snapshot_read,
                                                         .snapshot_chunk = cb_snapshot_chunk,
                                                         .snapshot_install = cb_snapshot_install,
                                                         .snapshot_installed =
                                                             cb_snapshot_installed,
                                                         .stopped = cb_stopped};
    int rc = raft_node_start(&s->node, loop, &nc, &callbacks, s, err, errlen);
    if (rc) {
        if (s->sm)
            kv_sm_close(s->sm);
        free(s);
        return rc;
    }
    transport_on_forward(raft_node_transport(s->node), on_relay, s);
    /* The snapshot the core starts from must be on disk to be sent. */
    mkdir(s->snap_dir, 0755);
    struct raft_snapshot_meta meta;
    if (raft_snapshot(core(s), &meta)) {
        s->snap_index = meta.index;
        char path[PATH_MAX];
        snap_file(s, path, sizeof(path), meta.index);
        if (kv_snapshot_file_check(path, meta.size, meta.checksum, NULL) != KV_OK)
            fprintf(stderr,
                    "kvd %" PRIu64 ": warning: snapshot file %s is missing or damaged; followers "
                    "that need it wait for the next snapshot\n",
                    cfg->id, path);
    }
    snap_cleanup(s, true);
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    *out = s;
    return 0;
}

uint64_t kv_server_new_client(struct kv_server *s)
{
    uint64_t id;
    do
        id = next_random(s);
    while (id == 0);
    return id;
}

const struct kv_server_config *kv_server_config(struct kv_server *s)
{
    return &s->cfg;
}

static const struct kv_peer *peer_of(struct kv_server *s, raft_id id)
{
    for (size_t i = 0; i < s->cfg.n_peers; i++)
        if (s->cfg.peers[i].id == id)
            return &s->cfg.peers[i];
    return NULL;
}

const struct kv_peer *kv_server_leader(struct kv_server *s)
{
    return peer_of(s, raft_leader(core(s)));
}

const struct kv_peer *kv_server_self(struct kv_server *s)
{
    return peer_of(s, s->cfg.id);
}

struct tcp_limits *kv_server_limits(const struct kv_server *s)
{
    return s->cfg.limits;
}

const struct kv_auth *kv_server_auth(const struct kv_server *s)
{
    static const struct kv_auth open = {0};
    return s->cfg.auth ? s->cfg.auth : &open;
}

int kv_server_transfer(struct kv_server *s, raft_id to)
{
    return raft_node_transfer(s->node, GROUP, to);
}

int kv_server_set_faults(struct kv_server *s, const struct transport_fault *rules, size_t n)
{
    int rc = transport_set_faults(raft_node_transport(s->node), rules, n);
    if (rc == 0) {
        if (n)
            memcpy(s->faults, rules, n * sizeof(*rules));
        s->n_faults = n;
        iolog("kvd %" PRIu64 ": fault filter: %zu rule%s\n", s->cfg.id, n, n == 1 ? "" : "s");
    }
    return rc;
}

const struct transport_fault *kv_server_faults(struct kv_server *s, size_t *n)
{
    *n = s->n_faults;
    return s->faults;
}

static const char *read_mode_name(enum kv_read_mode m)
{
    return m == KV_READ_LEASE ? "lease" : m == KV_READ_LOCAL ? "unsafe_local" : "linearizable";
}

/* A node stopped by a storage error still has a core that may believe it
 * leads (nothing tells the core); it serves nothing, and status must not
 * send anyone to it. */
static bool node_failed(const struct kv_server *s)
{
    return raft_node_error(s->node) != NULL;
}

static const char *role_name(struct kv_server *s)
{
    return node_failed(s) ? "failed" : raft_role_name(raft_role_of(core(s)));
}

static bool leads(struct kv_server *s)
{
    return !node_failed(s) && raft_role_of(core(s)) == RAFT_LEADER;
}

json_t *kv_server_status(struct kv_server *s)
{
    struct raft *r = core(s);
    struct raft_node_stats st;
    raft_node_stats(s->node, &st);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)s->cfg.id));
    char cid[20];
    snprintf(cid, sizeof(cid), "%016" PRIx64, s->cfg.cluster_id);
    json_object_set_new(o, "cluster_id", json_string(cid));
    json_object_set_new(o, "role", json_string(role_name(s)));
    json_object_set_new(o, "term", json_integer((json_int_t)raft_current_term(r)));
    json_object_set_new(o, "leader", json_integer((json_int_t)raft_leader(r)));
    json_object_set_new(o, "commit", json_integer((json_int_t)raft_commit_index(r)));
    json_object_set_new(o, "applied", json_integer((json_int_t)kv_sm_applied(s->sm)));
    json_object_set_new(o, "last_index", json_integer((json_int_t)raft_last_index(r)));
    json_object_set_new(o, "read_mode", json_string(read_mode_name(s->cfg.read_mode)));
    json_object_set_new(o, "fsyncs", json_integer((json_int_t)st.commits));
    json_object_set_new(o, "snapshot_index", json_integer((json_int_t)s->snap_index));
    uint64_t hash, keys;
    if (kv_sm_hash(s->sm, &hash, &keys) == KV_OK) {
        char hex[20];
        snprintf(hex, sizeof(hex), "%016" PRIx64, hash);
        json_object_set_new(o, "content_hash", json_string(hex));
        json_object_set_new(o, "keys", json_integer((json_int_t)keys));
    }
    uint64_t sessions, expired, clock;
    if (kv_sm_sessions(s->sm, &sessions, &expired, &clock) == KV_OK) {
        json_object_set_new(o, "sessions", json_integer((json_int_t)sessions));
        json_object_set_new(o, "log_clock_ms", json_integer((json_int_t)clock));
    }
    const char *why = raft_node_error(s->node);
    json_object_set_new(o, "error", why ? json_string(why) : json_null());
    json_t *peers = json_array();
    bool leader = leads(s);
    for (size_t i = 0; i < s->cfg.n_peers; i++) {
        const struct kv_peer *p = &s->cfg.peers[i];
        json_t *po = json_object();
        json_object_set_new(po, "id", json_integer((json_int_t)p->id));
        char addr[96];
        snprintf(addr, sizeof(addr), "%s:%u", p->client_host, p->resp_port);
        json_object_set_new(po, "resp", json_string(addr));
        snprintf(addr, sizeof(addr), "%s:%u", p->client_host, p->http_port);
        json_object_set_new(po, "http", json_string(addr));
        snprintf(addr, sizeof(addr), "%s:%u", p->host, p->raft_port);
        json_object_set_new(po, "raft", json_string(addr));
        if (p->id != s->cfg.id) {
            /* Reachable: our connection is up and no fault rule drops all
             * we send it (the scripts' partitions in loopback mode). */
            bool up = transport_peer_connected(raft_node_transport(s->node), p->id);
            for (size_t k = 0; up && k < s->n_faults; k++) {
                const struct transport_fault *f = &s->faults[k];
                if ((f->peer == 0 || f->peer == p->id) && (f->directions & TRANSPORT_OUT) &&
                    f->message_type == 0 && f->drop_pct == 100)
                    up = false;
            }
            json_object_set_new(po, "reachable", json_boolean(up));
        }
        struct raft_peer_status ps;
        if (leader && p->id != s->cfg.id && raft_peer_status(r, p->id, &ps)) {
            json_object_set_new(po, "match_index", json_integer((json_int_t)ps.match_index));
            json_object_set_new(po, "next_index", json_integer((json_int_t)ps.next_index));
            json_object_set_new(po, "replicating", json_boolean(ps.is_replicating));
        } else if (leader && p->id == s->cfg.id) {
            json_object_set_new(po, "match_index", json_integer((json_int_t)raft_last_index(r)));
        }
        json_array_append_new(peers, po);
    }
    json_object_set_new(o, "peers", peers);
    return o;
}

static void emit_histogram(void (*emit)(void *, const char *), void *arg, const char *name,
                           const char *labels, const struct histogram *h)
{
    char line[256];
    uint64_t cum = 0;
    for (size_t k = 0; k <= LAT_BUCKETS; k++) {
        cum += h->buckets[k];
        char le[32];
        if (k < LAT_BUCKETS)
            snprintf(le, sizeof(le), "%g", LAT_BOUNDS[k]);
        else
            snprintf(le, sizeof(le), "+Inf");
        snprintf(line, sizeof(line), "%s_bucket{%s,le=\"%s\"} %" PRIu64 "\n", name, labels, le,
                 cum);
        emit(arg, line);
    }
    snprintf(line, sizeof(line), "%s_sum{%s} %.6f\n%s_count{%s} %" PRIu64 "\n", name, labels,
             h->sum, name, labels, h->count);
    emit(arg, line);
}

void kv_server_metrics(struct kv_server *s, void (*emit)(void *arg, const char *text), void *arg)
{
    struct raft *r = core(s);
    struct raft_node_stats st;
    raft_node_stats(s->node, &st);
    struct transport_stats ts;
    transport_get_stats(raft_node_transport(s->node), &ts);
    char buf[4096];
    snprintf(
        buf, sizeof(buf),
        "# HELP raftkv_term Current Raft term.\n# TYPE raftkv_term gauge\n"
        "raftkv_term{group=\"%d\"} %" PRIu64 "\n"
        "# HELP raftkv_is_leader 1 if this node leads the group.\n"
        "# TYPE raftkv_is_leader gauge\nraftkv_is_leader{group=\"%d\"} %d\n"
        "# HELP raftkv_failed 1 if the node stopped taking work (a storage error: see "
        "/v1/status, error) until it is restarted.\n"
        "# TYPE raftkv_failed gauge\nraftkv_failed %d\n"
        "# HELP raftkv_elections_total Elections this node started (as candidate).\n"
        "# TYPE raftkv_elections_total counter\nraftkv_elections_total{group=\"%d\"} %" PRIu64 "\n"
        "# HELP raftkv_leaderships_total Times this node became leader.\n"
        "# TYPE raftkv_leaderships_total counter\nraftkv_leaderships_total{group=\"%d\"} "
        "%" PRIu64 "\n"
        "# HELP raftkv_commit_index Highest log index known committed.\n"
        "# TYPE raftkv_commit_index gauge\nraftkv_commit_index{group=\"%d\"} %" PRIu64 "\n"
        "# HELP raftkv_applied_index Highest log index applied to the state machine.\n"
        "# TYPE raftkv_applied_index gauge\nraftkv_applied_index{group=\"%d\"} %" PRIu64 "\n"
        "# HELP raftkv_last_index Last index in the log.\n"
        "# TYPE raftkv_last_index gauge\nraftkv_last_index{group=\"%d\"} %" PRIu64 "\n"
        "# HELP raftkv_fsyncs_total Storage commits (one fsync each, all groups).\n"
        "# TYPE raftkv_fsyncs_total counter\nraftkv_fsyncs_total %" PRIu64 "\n"
        "# HELP raftkv_entries_persisted_total Log entries written by those commits.\n"
        "# TYPE raftkv_entries_persisted_total counter\nraftkv_entries_persisted_total "
        "%" PRIu64 "\n"
        "# HELP raftkv_entries_per_fsync Average log entries per storage commit.\n"
        "# TYPE raftkv_entries_per_fsync gauge\nraftkv_entries_per_fsync %.3f\n"
        "# HELP raftkv_entries_applied_total Entries applied to the state machine.\n"
        "# TYPE raftkv_entries_applied_total counter\nraftkv_entries_applied_total %" PRIu64 "\n"
        "# HELP raftkv_apply_commits_total Commits that only applied entries: alone (a sync of "
        "their own) or joined by the next writes while they lingered (--apply-linger).\n"
        "# TYPE raftkv_apply_commits_total counter\n"
        "raftkv_apply_commits_total{how=\"alone\"} %" PRIu64 "\n"
        "raftkv_apply_commits_total{how=\"joined\"} %" PRIu64 "\n",
        GROUP, raft_current_term(r), GROUP, leads(s), node_failed(s), GROUP, s->became_candidate,
        GROUP, s->became_leader, GROUP, raft_commit_index(r), GROUP, kv_sm_applied(s->sm), GROUP,
        raft_last_index(r), st.commits, st.entries,
        st.commits ? (double)st.entries / (double)st.commits : 0.0, st.applied, st.apply_only,
        st.joined);
    emit(arg, buf);
    snprintf(buf, sizeof(buf),
             "# HELP raftkv_requests_total Client commands by outcome.\n"
             "# TYPE raftkv_requests_total counter\n"
             "raftkv_requests_total{outcome=\"ok\"} %" PRIu64 "\n"
             "raftkv_requests_total{outcome=\"timeout\"} %" PRIu64 "\n"
             "raftkv_requests_total{outcome=\"unavailable\"} %" PRIu64 "\n"
             "raftkv_requests_total{outcome=\"bad\"} %" PRIu64 "\n"
             "# HELP raftkv_forwarded_total Commands sent to the leader by this node.\n"
             "# TYPE raftkv_forwarded_total counter\nraftkv_forwarded_total %" PRIu64 "\n"
             "# HELP raftkv_retries_total Commands tried again (leader change, lost answer).\n"
             "# TYPE raftkv_retries_total counter\nraftkv_retries_total %" PRIu64 "\n"
             "# HELP raftkv_transport_frames_total Raft transport frames.\n"
             "# TYPE raftkv_transport_frames_total counter\n"
             "raftkv_transport_frames_total{direction=\"out\"} %" PRIu64 "\n"
             "raftkv_transport_frames_total{direction=\"in\"} %" PRIu64 "\n"
             "# HELP raftkv_transport_refused_total Connections refused (foreign cluster or "
             "version, not a member, wrong cluster secret, no handshake in time, oversized or "
             "malformed frames).\n# TYPE raftkv_transport_refused_total counter\n"
             "raftkv_transport_refused_total{why=\"hello\"} %" PRIu64 "\n"
             "raftkv_transport_refused_total{why=\"member\"} %" PRIu64 "\n"
             "raftkv_transport_refused_total{why=\"auth\"} %" PRIu64 "\n"
             "raftkv_transport_refused_total{why=\"handshake_timeout\"} %" PRIu64 "\n"
             "raftkv_transport_refused_total{why=\"oversized\"} %" PRIu64 "\n"
             "raftkv_transport_refused_total{why=\"malformed\"} %" PRIu64 "\n"
             "# HELP raftkv_fault_injected_total Messages the fault filter acted on.\n"
             "# TYPE raftkv_fault_injected_total counter\n"
             "raftkv_fault_injected_total{action=\"drop\"} %" PRIu64 "\n"
             "raftkv_fault_injected_total{action=\"duplicate\"} %" PRIu64 "\n"
             "raftkv_fault_injected_total{action=\"delay\"} %" PRIu64 "\n",
             s->ops_ok, s->ops_timeout, s->ops_unavailable, s->ops_bad, s->forwarded, s->retried,
             ts.frames_sent, ts.frames_received, ts.refused_hellos, ts.refused_members,
             ts.refused_auth, ts.handshake_timeouts, ts.oversized_frames, ts.malformed_frames,
             ts.fault_dropped, ts.fault_duplicated, ts.fault_delayed);
    emit(arg, buf);
    const struct tcp_limits *lim = s->cfg.limits;
    if (lim) {
        snprintf(buf, sizeof(buf),
                 "# HELP raftkv_clients Client connections open (RESP and HTTP).\n"
                 "# TYPE raftkv_clients gauge\nraftkv_clients %u\n"
                 "# HELP raftkv_clients_max The --max-clients limit.\n"
                 "# TYPE raftkv_clients_max gauge\nraftkv_clients_max %u\n"
                 "# HELP raftkv_clients_closed_total Client connections refused or closed by a "
                 "limit: max_clients, timeout (a partial request held too long), output (replies "
                 "not read).\n# TYPE raftkv_clients_closed_total counter\n"
                 "raftkv_clients_closed_total{why=\"max_clients\"} %" PRIu64 "\n"
                 "raftkv_clients_closed_total{why=\"timeout\"} %" PRIu64 "\n"
                 "raftkv_clients_closed_total{why=\"output\"} %" PRIu64 "\n",
                 lim->clients, lim->max_clients, lim->refused, lim->timed_out, lim->output_closed);
        emit(arg, buf);
    }
    snprintf(buf, sizeof(buf),
             "# HELP raftkv_snapshot_index Index of the current snapshot.\n"
             "# TYPE raftkv_snapshot_index gauge\nraftkv_snapshot_index{group=\"%d\"} %" PRIu64 "\n"
             "# HELP raftkv_snapshots_total Snapshots taken here or installed from the leader.\n"
             "# TYPE raftkv_snapshots_total counter\n"
             "raftkv_snapshots_total{how=\"taken\"} %" PRIu64 "\n"
             "raftkv_snapshots_total{how=\"installed\"} %" PRIu64 "\n",
             GROUP, s->snap_index, s->snapshots_taken, s->snapshots_installed);
    emit(arg, buf);
    uint64_t sessions, expired, clock;
    if (kv_sm_sessions(s->sm, &sessions, &expired, &clock) == KV_OK) {
        snprintf(
            buf, sizeof(buf),
            "# HELP raftkv_sessions Client sessions in the state machine (thesis 6.3).\n"
            "# TYPE raftkv_sessions gauge\nraftkv_sessions{group=\"%d\"} %" PRIu64 "\n"
            "# HELP raftkv_sessions_expired_total Sessions this node's state machine expired.\n"
            "# TYPE raftkv_sessions_expired_total counter\n"
            "raftkv_sessions_expired_total{group=\"%d\"} %" PRIu64 "\n"
            "# HELP raftkv_sessions_renewed_total Commands of a connection whose session had "
            "expired, run again as seq 1 of a new one.\n"
            "# TYPE raftkv_sessions_renewed_total counter\n"
            "raftkv_sessions_renewed_total %" PRIu64 "\n",
            GROUP, sessions, GROUP, expired, s->sessions_renewed);
        emit(arg, buf);
    }
    emit(arg, "# HELP raftkv_request_seconds Client command latency at this node.\n"
              "# TYPE raftkv_request_seconds histogram\n");
    emit_histogram(emit, arg, "raftkv_request_seconds", "kind=\"write\"", &s->lat_write);
    emit_histogram(emit, arg, "raftkv_request_seconds", "kind=\"read\"", &s->lat_read);
    emit(arg, "# HELP raftkv_fsync_seconds Duration of storage commits.\n"
              "# TYPE raftkv_fsync_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t k = 0; k <= RAFT_NODE_COMMIT_BUCKETS; k++) {
        cum += st.commit_buckets[k];
        if (k < RAFT_NODE_COMMIT_BUCKETS)
            snprintf(buf, sizeof(buf), "raftkv_fsync_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                     RAFT_NODE_COMMIT_BOUNDS[k], cum);
        else
            snprintf(buf, sizeof(buf),
                     "raftkv_fsync_seconds_bucket{le=\"+Inf\"} %" PRIu64
                     "\nraftkv_fsync_seconds_sum %.6f\nraftkv_fsync_seconds_count %" PRIu64 "\n",
                     cum, st.commit_seconds, st.commits);
        emit(arg, buf);
    }
    if (leads(s)) {
        emit(arg, "# HELP raftkv_peer_lag_entries How far each follower's log is behind the "
                  "leader's.\n# TYPE raftkv_peer_lag_entries gauge\n");
        for (size_t i = 0; i < s->cfg.n_peers; i++) {
            struct raft_peer_status ps;
            raft_id id = s->cfg.peers[i].id;
            if (id == s->cfg.id || !raft_peer_status(r, id, &ps))
                continue;
            raft_index last = raft_last_index(r);
            snprintf(buf, sizeof(buf),
                     "raftkv_peer_lag_entries{peer=\"%" PRIu64 "\"} %" PRIu64 "\n", id,
                     last > ps.match_index ? last - ps.match_index : 0);
            emit(arg, buf);
        }
    }
}

/* The sweep timer and the node both closed: free the rest. */
static void release(struct kv_server *s)
{
    if (--s->closing > 0)
        return;
    if (s->sm)
        kv_sm_close(s->sm);
    if (s->read_fd >= 0)
        close(s->read_fd);
    if (s->staging_fd >= 0)
        close(s->staging_fd);
    free(s);
}

static void on_sweep_close(uv_handle_t *h)
{
    release(h->data);
}

static void cb_stopped(void *data)
{
    release(data);
}

void kv_server_stop(struct kv_server *s)
{
    s->stopping = true;
    while (s->requests)
        finish(s, s->requests, KV_UNAVAILABLE, "the node is shutting down", NULL);
    fail_execs(s, KVPB__REPLY_CODE__REPLY_UNAVAILABLE, "the node is shutting down");
    s->closing = 2 + s->snap_busy; /* the timer, the node, a snapshot being written */
    uv_timer_stop(&s->sweep);
    uv_close((uv_handle_t *)&s->sweep, on_sweep_close);
    raft_node_stop(s->node);
}
