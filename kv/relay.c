/* relay.c — requests and answers between nodes; results to and from protobuf. See
 * server_internal.h. */
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

void send_relay(struct kv_server *s, uint64_t group, raft_id to, const Kvpb__Relay *relay)
{
    size_t len = kvpb__relay__get_packed_size(relay);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return; /* as if lost: the coordinator retries */
    kvpb__relay__pack(relay, buf);
    transport_forward(raft_node_transport(s->node), to, group, buf, len);
    free(buf);
}

/* Answer the coordinator of x (local or remote). */
void reply_to(struct kv_server *s, struct shard *sh, raft_id origin, uint64_t req_id,
              Kvpb__ReplyCode code, const char *message, const struct kv_result *result)
{
    raft_id leader = sh->hosted ? raft_leader(core(s, sh)) : sh->leader_hint;
    if (origin == s->cfg.id) {
        struct request *q = find_request(s, req_id);
        if (q)
            request_answered(s, q, code, leader, message, result);
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
    send_relay(s, sh->group, origin, &relay);
out:
    free(vals);
    free(present);
}

/* A request routed by another map than ours (ring.h): neither side may
 * act on it; the coordinator learns our epoch. */
static void refuse_placement(struct kv_server *s, uint64_t group, raft_id from,
                             const Kvpb__Request *req)
{
    Kvpb__Reply reply = KVPB__REPLY__INIT;
    char why[200];
    snprintf(why, sizeof(why),
             "node %" PRIu64 " places keys by map epoch %" PRIu64 " (fingerprint %016" PRIx64
             "), the request was routed by epoch %" PRIu64 " (%016" PRIx64
             "): the nodes were started with different --shards, --replicas, --vnodes or members",
             s->cfg.id, ring_map(s->ring)->epoch, ring_fingerprint(s->ring), req->epoch,
             req->placement);
    reply.id = req->id;
    reply.code = KVPB__REPLY_CODE__REPLY_WRONG_PLACEMENT;
    reply.epoch = ring_map(s->ring)->epoch;
    reply.message = why;
    Kvpb__Relay relay = KVPB__RELAY__INIT;
    relay.reply = &reply;
    send_relay(s, group, from, &relay);
}

static void on_request(struct kv_server *s, uint64_t group, raft_id from, const Kvpb__Request *req)
{
    if (req->placement != ring_fingerprint(s->ring)) {
        refuse_placement(s, group, from, req);
        return;
    }
    struct shard *sh = shard_of_group(s, group);
    if (!sh) {
        /* Same map, yet not a replica here: the coordinator guessed from a
         * stale hint. Say who leads, if we know. */
        struct shard none = {.group = group};
        if (group >= 1 && group <= s->n_shards)
            none = s->shards[group - 1];
        reply_to(s, &none, from, req->id, KVPB__REPLY_CODE__REPLY_NOT_LEADER,
                 "not a replica of this shard", NULL);
        return;
    }
    if (req->local_read && kv_op_is_read(req->command->op)) {
        serve_local(s, sh, from, req->id, req->command);
        return;
    }
    size_t clen = kvpb__command__get_packed_size(req->command);
    uint8_t *buf = malloc(clen ? clen : 1);
    if (!buf)
        return;
    kvpb__command__pack(req->command, buf);
    if (raft_role_of(core(s, sh)) != RAFT_LEADER)
        reply_to(s, sh, from, req->id, KVPB__REPLY_CODE__REPLY_NOT_LEADER, "not the leader", NULL);
    else
        exec_start(s, sh, from, req->id, buf, clen);
    free(buf);
}

void on_relay(void *data, uint64_t from, uint64_t group, const uint8_t *body, size_t len)
{
    struct kv_server *s = data;
    if (s->stopping)
        return;
    Kvpb__Relay *relay = kvpb__relay__unpack(NULL, len, body);
    if (!relay)
        return;
    if (relay->request && relay->request->command) {
        on_request(s, group, from, relay->request);
    } else if (relay->reply) {
        struct request *q = find_request(s, relay->reply->id);
        /* Only the node the request went to answers it (the transport has
         * authenticated `from`): an answer from any other node, or to a
         * try that was superseded, is dropped. */
        if (q && !q->local_exec && q->sent_to == from && q->sh->group == group) {
            if (relay->reply->code == KVPB__REPLY_CODE__REPLY_WRONG_PLACEMENT) {
                request_finish(s, q, KV_UNAVAILABLE, relay->reply->message, NULL);
            } else {
                struct kv_result r;
                struct kv_value vals[KV_MAX_KEYS];
                if (relay->reply->result)
                    result_from_pb(relay->reply->result, &r, vals, KV_MAX_KEYS);
                request_answered(s, q, relay->reply->code, relay->reply->leader,
                                 relay->reply->message, relay->reply->result ? &r : NULL);
            }
        }
    }
    kvpb__relay__free_unpacked(relay, NULL);
}
