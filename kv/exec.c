/* exec.c — commands executed here as the leader: proposed (writes, under their sessions)
 * or served once the read index is applied (reads). See server_internal.h. */
#include "server_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iolog.h"
#include "storage.h"

/* ------------------------------------------------------------------------
 * Leader: executing commands
 * ------------------------------------------------------------------------ */

size_t exec_bucket(uint64_t client, uint64_t seq)
{
    return (size_t)((client * 0x9e3779b97f4a7c15ULL) ^ seq) % EXEC_BUCKETS;
}

static void exec_unlink(struct exec *x, struct exec **list)
{
    struct shard *sh = x->sh;
    if (x->prev)
        x->prev->next = x->next;
    else
        *list = x->next;
    if (x->next)
        x->next->prev = x->prev;
    if (list == &sh->writes) {
        struct exec **p = &sh->by_session[exec_bucket(x->client_id, x->seq)];
        while (*p && *p != x)
            p = &(*p)->chain;
        if (*p)
            *p = x->chain;
    }
}

static void exec_link(struct exec *x, struct exec **list)
{
    struct shard *sh = x->sh;
    x->prev = NULL;
    x->next = *list;
    if (*list)
        (*list)->prev = x;
    *list = x;
    if (list == &sh->writes) {
        size_t b = exec_bucket(x->client_id, x->seq);
        x->chain = sh->by_session[b];
        sh->by_session[b] = x;
    }
}

Kvpb__ReplyCode reply_code_of(int rv)
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

const char *reply_message_of(struct kv_server *s, int rv)
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
void exec_answer(struct kv_server *s, struct exec *x, struct exec **list, Kvpb__ReplyCode code,
                 const char *message, const struct kv_result *result)
{
    exec_unlink(x, list);
    struct shard *sh = x->sh;
    raft_id origin = x->origin;
    uint64_t req_id = x->req_id;
    char buf[512];
    struct tj j;
    if (x->client_id && trace_begin(s, &j, buf, sizeof(buf), "answer", sh->group)) {
        trace_req(&j, x->client_id, x->seq);
        tj_str(&j, "status",
               code == KVPB__REPLY_CODE__REPLY_OK ? "ok"
               : message                          ? message
                                                  : "error");
        trace_end(s, &j, sh->group);
    }
    exec_free(x);
    reply_to(s, sh, origin, req_id, code, message, result);
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
static int propose_stamped(struct kv_server *s, struct shard *sh, const uint8_t *data, size_t len)
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
    int rv = raft_node_propose(s->node, sh->group, buf, n);
    if (buf != stack)
        free(buf);
    return rv;
}

void exec_start(struct kv_server *s, struct shard *sh, raft_id origin, uint64_t req_id,
                const uint8_t *data, size_t len)
{
    Kvpb__Command *cmd = kvpb__command__unpack(NULL, len, data);
    struct exec *x = calloc(1, sizeof(*x));
    if (!cmd || !x) {
        if (cmd)
            kvpb__command__free_unpacked(cmd, NULL);
        free(x);
        reply_to(s, sh, origin, req_id,
                 cmd ? KVPB__REPLY_CODE__REPLY_UNAVAILABLE : KVPB__REPLY_CODE__REPLY_BAD_REQUEST,
                 cmd ? "out of memory" : "command does not decode", NULL);
        return;
    }
    if (sh->corrupt) {
        /* Its answers would come from a copy that differs from the
         * majority's: nothing runs here; it hands leadership over
         * (relay.c), and the coordinator retries with the next leader. */
        kvpb__command__free_unpacked(cmd, NULL);
        free(x);
        char why[240];
        reply_to(s, sh, origin, req_id, KVPB__REPLY_CODE__REPLY_UNAVAILABLE,
                 corrupt_refusal(s, sh, why, sizeof(why)), NULL);
        return;
    }
    x->sh = sh;
    x->origin = origin;
    x->req_id = req_id;
    x->start_ms = now_ms(s);
    int rv;
    if (kv_op_is_read(cmd->op)) {
        /* Linked before the call: read_done may come before it returns. */
        x->cmd = cmd;
        x->read_id = ++s->next_read_id;
        exec_link(x, &sh->reads);
        rv = raft_node_read(s->node, sh->group, x->read_id);
        if (rv == RAFT_OK)
            return;
        exec_unlink(x, &sh->reads);
    } else {
        x->client_id = cmd->client_id;
        x->seq = cmd->seq;
        kvpb__command__free_unpacked(cmd, NULL);
        exec_link(x, &sh->writes);
        rv = propose_stamped(s, sh, data, len);
        char buf[512];
        struct tj j;
        if (trace_begin(s, &j, buf, sizeof(buf), "propose", sh->group)) {
            trace_req(&j, x->client_id, x->seq);
            tj_u64(&j, "term", raft_current_term(core(s, sh)));
            tj_str(&j, "status", rv == RAFT_OK ? "ok" : raft_strerror(rv));
            trace_end(s, &j, sh->group);
        }
        if (rv == RAFT_OK)
            return;
        exec_unlink(x, &sh->writes);
    }
    exec_free(x);
    reply_to(s, sh, origin, req_id, reply_code_of(rv), reply_message_of(s, rv), NULL);
}

void serve_local(struct kv_server *s, struct shard *sh, raft_id origin, uint64_t req_id,
                 const Kvpb__Command *cmd)
{
    struct kv_result r;
    char why[240];
    if (sh->corrupt) {
        reply_to(s, sh, origin, req_id, KVPB__REPLY_CODE__REPLY_UNAVAILABLE,
                 corrupt_refusal(s, sh, why, sizeof(why)), NULL);
        return;
    }
    int rc = kv_sm_read(sh->sm, cmd, &r);
    if (rc != KV_OK) {
        reply_to(s, sh, origin, req_id, KVPB__REPLY_CODE__REPLY_UNAVAILABLE, read_failed(s, rc),
                 NULL);
        return;
    }
    reply_to(s, sh, origin, req_id, KVPB__REPLY_CODE__REPLY_OK, NULL, &r);
    kv_result_free(&r);
}

/* Reads whose index the state machine has reached. */
void serve_reads(struct kv_server *s, struct shard *sh)
{
    raft_index applied = kv_sm_applied(sh->sm);
    struct exec *x = sh->reads, *next;
    for (; x; x = next) {
        next = x->next;
        if (!x->read_ready || x->read_index > applied)
            continue;
        struct kv_result r;
        char why[240];
        if (sh->corrupt) {
            exec_answer(s, x, &sh->reads, KVPB__REPLY_CODE__REPLY_UNAVAILABLE,
                        corrupt_refusal(s, sh, why, sizeof(why)), NULL);
            next = sh->reads;
            continue;
        }
        int rc = kv_sm_read(sh->sm, x->cmd, &r);
        if (rc == KV_OK) {
            exec_answer(s, x, &sh->reads, KVPB__REPLY_CODE__REPLY_OK, NULL, &r);
            kv_result_free(&r);
        } else {
            exec_answer(s, x, &sh->reads, KVPB__REPLY_CODE__REPLY_UNAVAILABLE, read_failed(s, rc),
                        NULL);
        }
        next = sh->reads; /* replies may run callbacks that changed the list */
    }
    /* A read waiting for entries already applied in a commit that lingers
     * for more writes (node.c): do not let it wait. */
    for (x = sh->reads; x; x = x->next)
        if (x->read_ready) {
            raft_node_flush(s->node);
            break;
        }
}

void fail_writes(struct kv_server *s, struct shard *sh, Kvpb__ReplyCode code, const char *message)
{
    while (sh->writes)
        exec_answer(s, sh->writes, &sh->writes, code, message, NULL);
}

/* Leadership of the shard lost (or the node failed): every command
 * executing here for it is answered "not leader"; coordinators retry
 * elsewhere with the same session, so a write that commits after all is
 * not applied twice. */
void fail_execs(struct kv_server *s, struct shard *sh, Kvpb__ReplyCode code, const char *message)
{
    while (sh->reads)
        exec_answer(s, sh->reads, &sh->reads, code, message, NULL);
    fail_writes(s, sh, code, message);
}

void fail_all_execs(struct kv_server *s, Kvpb__ReplyCode code, const char *message)
{
    for (uint32_t i = 0; i < s->n_shards; i++)
        if (s->shards[i].hosted)
            fail_execs(s, &s->shards[i], code, message);
}
