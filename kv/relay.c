/* relay.c — requests and answers between nodes; results to and from protobuf; the
 * corruption check, in which the replicas of a shard compare their content hashes.
 * See server_internal.h. */
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
             "): the nodes were started with different --shards or --vnodes",
             s->cfg.id, ring_map(s->ring)->epoch, ring_keys_fingerprint(s->ring), req->epoch,
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
    if (req->placement != ring_keys_fingerprint(s->ring)) {
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

/* ------------------------------------------------------------------------
 * The corruption check (etcd's periodic corruption check; kvd.md 6a)
 *
 * Every replica's state machine keeps a running hash of its content and
 * the hash at checkpoints (sm.h). Every CHECK_PERIOD_MS the leader of a
 * group sends its checkpoints and its applied index with their hashes to
 * the other replicas; each answers with its own hashes at those of the
 * indexes it knows (a replica behind or far ahead knows none, and skips
 * this round). When every replica answered, or when the next round starts,
 * the leader looks for the newest index at which a majority of the group
 * (itself included) has one hash: a replica with another hash there is the
 * odd one. The leader tells it (HashMismatch); if the odd one is the leader
 * itself, it raises the alarm on itself and hands leadership over. A
 * replica with the alarm serves no reads of the shard, and as leader
 * executes nothing, until it is restarted with good data.
 * ------------------------------------------------------------------------ */

enum {
    /* Each check is a few small messages per group: cheap enough to run
     * every 2 s (etcd's check hashes the whole store, so it runs every
     * few minutes). Divergence is found within a period of both sides
     * passing the same checkpoint. */
    CHECK_PERIOD_MS = 2000,
    HANDOFF_RETRY_MS = 1000,               /* a corrupt leader tries to hand leadership over */
    CHECK_CANDIDATES = KV_CHECKS_KEPT + 1, /* the kept checkpoints and the applied index */
};

/* A round of checks at the leader. */
struct hash_tally {
    uint64_t round;
    struct kv_checkpoint sent[CHECK_CANDIDATES]; /* ours, newest first */
    size_t n_sent;
    struct {
        raft_id from;
        struct kv_checkpoint cps[CHECK_CANDIDATES];
        size_t n;
    } replies[RING_MAX_REPLICAS];
    size_t n_replies;
    bool decided;
};

static char *hex64(uint64_t v, char buf[17])
{
    snprintf(buf, 17, "%016" PRIx64, v);
    return buf;
}

bool shard_peer_odd(const struct shard *sh, raft_id id)
{
    for (size_t i = 0; i < sh->n_odd; i++)
        if (sh->odd[i] == id)
            return true;
    return false;
}

const char *corrupt_refusal(struct kv_server *s, struct shard *sh, char *buf, size_t len)
{
    snprintf(buf, len,
             "node %" PRIu64 "'s copy of shard %u is corrupt (its content hash at index %" PRIu64
             " is not the one expected; /v1/status alarms): it serves no reads of it until its "
             "data is replaced; ask another node",
             s->cfg.id, sh->index, sh->corrupt_index);
    return buf;
}

void raise_corrupt(struct kv_server *s, struct shard *sh, raft_index index, uint64_t hash,
                   uint64_t expected, const char *detail)
{
    if (sh->corrupt)
        return;
    sh->corrupt = true;
    sh->corrupt_index = index;
    sh->corrupt_hash = hash;
    sh->expected_hash = expected;
    snprintf(sh->corrupt_detail, sizeof(sh->corrupt_detail), "%s", detail);
    char h[17], e[17];
    iolog("kvd %" PRIu64 ": CORRUPT: shard %u (group %" PRIu64 "): this node's content hash at "
          "index %" PRIu64 " is %s, expected %s (%s). Its copy of the shard's data differs from "
          "the others' (changed on disk, or by a bug): it serves no reads of this shard from now "
          "on and hands leadership of it over. The alarm clears only by a restart with good "
          "data: replace this node's data (docs/kvd.md, 6a \"Storage integrity\" and \"A node "
          "that will not start\")\n",
          s->cfg.id, sh->index, sh->group, index, hex64(hash, h), hex64(expected, e), detail);
    char why[240];
    fail_execs(s, sh, KVPB__REPLY_CODE__REPLY_UNAVAILABLE,
               corrupt_refusal(s, sh, why, sizeof(why)));
}

static void mark_odd(struct shard *sh, raft_id id)
{
    if (!shard_peer_odd(sh, id) && sh->n_odd < RING_MAX_REPLICAS)
        sh->odd[sh->n_odd++] = id;
}

/* The hash most of the votes have and how many; votes[0] is the leader's. */
static uint64_t majority_of(const uint64_t *votes, size_t n, uint32_t *count)
{
    uint64_t best = votes[0];
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = 0;
        for (size_t j = 0; j < n; j++)
            c += votes[j] == votes[i];
        if (c > *count) {
            *count = c;
            best = votes[i];
        }
    }
    return best;
}

static void tell_odd(struct kv_server *s, struct shard *sh, raft_id to, raft_index index,
                     uint64_t hash, uint64_t majority, uint32_t agreeing, uint32_t replicas)
{
    Kvpb__HashMismatch m = KVPB__HASH_MISMATCH__INIT;
    m.index = index;
    m.hash = hash;
    m.majority_hash = majority;
    m.agreeing = agreeing;
    m.replicas = replicas;
    Kvpb__Relay relay = KVPB__RELAY__INIT;
    relay.hash_mismatch = &m;
    send_relay(s, sh->group, to, &relay);
}

/* Judge the round at the newest index where a majority of the group's
 * replicas agree; nothing if there is none yet. */
static void tally_decide(struct kv_server *s, struct shard *sh)
{
    struct hash_tally *t = sh->tally;
    uint32_t replicas = ring_map(s->ring)->replicas;
    for (size_t j = 0; j < t->n_sent && !t->decided; j++) {
        raft_index index = t->sent[j].index;
        uint64_t votes[RING_MAX_REPLICAS];
        raft_id voter[RING_MAX_REPLICAS];
        size_t n = 0;
        votes[n] = t->sent[j].hash;
        voter[n++] = s->cfg.id;
        for (size_t r = 0; r < t->n_replies; r++)
            for (size_t k = 0; k < t->replies[r].n; k++)
                if (t->replies[r].cps[k].index == index && n < RING_MAX_REPLICAS) {
                    votes[n] = t->replies[r].cps[k].hash;
                    voter[n++] = t->replies[r].from;
                }
        uint32_t agreeing;
        uint64_t majority = majority_of(votes, n, &agreeing);
        if (agreeing * 2 <= replicas)
            continue;
        t->decided = true;
        char detail[120], m[17];
        snprintf(detail, sizeof(detail), "%u of the %u replicas have %s", agreeing, replicas,
                 hex64(majority, m));
        for (size_t v = 1; v < n; v++) {
            if (votes[v] == majority) {
                s->hash_checks_ok++;
                continue;
            }
            s->hash_checks_mismatch++;
            mark_odd(sh, voter[v]);
            char h[17];
            iolog("kvd %" PRIu64 ": shard %u (group %" PRIu64 "): node %" PRIu64
                  "'s content hash at index %" PRIu64 " is %s; %s: its copy is corrupt, and it "
                  "is told so\n",
                  s->cfg.id, sh->index, sh->group, voter[v], index, hex64(votes[v], h), detail);
            tell_odd(s, sh, voter[v], index, votes[v], majority, agreeing, replicas);
        }
        if (votes[0] != majority)
            raise_corrupt(s, sh, index, votes[0], majority, detail);
    }
}

/* The leader's candidates: its applied index, then its checkpoints. */
static size_t own_candidates(struct shard *sh, struct kv_checkpoint *out)
{
    kv_sm_running_hash(sh->sm, &out[0].index, &out[0].hash);
    struct kv_checkpoint kept[KV_CHECKS_KEPT];
    size_t n = 1, k = kv_sm_checkpoints(sh->sm, kept, KV_CHECKS_KEPT);
    for (size_t i = 0; i < k; i++)
        if (kept[i].index != out[0].index)
            out[n++] = kept[i];
    return n;
}

static void start_round(struct kv_server *s, struct shard *sh)
{
    if (!sh->tally && !(sh->tally = calloc(1, sizeof(*sh->tally))))
        return;
    struct hash_tally *t = sh->tally;
    if (t->round && !t->decided)
        tally_decide(s, sh); /* with the replies that came */
    uint64_t round = t->round + 1;
    memset(t, 0, sizeof(*t));
    t->round = round;
    t->n_sent = own_candidates(sh, t->sent);
    Kvpb__Checkpoint cps[CHECK_CANDIDATES], *ptrs[CHECK_CANDIDATES];
    for (size_t i = 0; i < t->n_sent; i++) {
        kvpb__checkpoint__init(&cps[i]);
        cps[i].index = t->sent[i].index;
        cps[i].hash = t->sent[i].hash;
        ptrs[i] = &cps[i];
    }
    Kvpb__HashCheck hc = KVPB__HASH_CHECK__INIT;
    hc.round = round;
    hc.n_checkpoints = t->n_sent;
    hc.checkpoints = ptrs;
    Kvpb__Relay relay = KVPB__RELAY__INIT;
    relay.hash_check = &hc;
    const struct ring_map *m = ring_map(s->ring);
    const uint64_t *reps = ring_replicas(s->ring, sh->index);
    for (uint32_t r = 0; r < m->replicas; r++)
        if (reps[r] != s->cfg.id)
            send_relay(s, sh->group, reps[r], &relay);
}

/* A corrupt leader hands leadership to a replica that is not odd. */
static void hand_off(struct kv_server *s, struct shard *sh, uint64_t now)
{
    if (now < sh->handoff_next_ms)
        return;
    sh->handoff_next_ms = now + HANDOFF_RETRY_MS;
    const struct ring_map *m = ring_map(s->ring);
    const uint64_t *reps = ring_replicas(s->ring, sh->index);
    for (uint32_t r = 0; r < m->replicas; r++) {
        raft_id to = reps[r];
        if (to == s->cfg.id || shard_peer_odd(sh, to) ||
            !transport_peer_connected(raft_node_transport(s->node), to))
            continue;
        if (raft_node_transfer(s->node, sh->group, to) == RAFT_OK) {
            iolog("kvd %" PRIu64 ": shard %u: handing leadership to node %" PRIu64
                  " (this node's copy is corrupt)\n",
                  s->cfg.id, sh->index, to);
            return;
        }
    }
}

void hash_checks(struct kv_server *s)
{
    uint64_t now = now_ms(s);
    uint32_t replicas = ring_map(s->ring)->replicas;
    for (uint32_t i = 0; i < s->n_shards; i++) {
        struct shard *sh = &s->shards[i];
        if (!sh->hosted || raft_role_of(core(s, sh)) != RAFT_LEADER)
            continue;
        if (sh->corrupt) {
            hand_off(s, sh, now);
            continue;
        }
        if (replicas < 2 || now < sh->check_next_ms)
            continue;
        /* Spread over the period: shards do not all send at once. */
        sh->check_next_ms = now + CHECK_PERIOD_MS - (sh->index * 7) % (CHECK_PERIOD_MS / 4);
        start_round(s, sh);
    }
}

/* A replica: the leader's checkpoints; answer with ours at those indexes,
 * and count our own comparison (the newest index both know). */
static void on_hash_check(struct kv_server *s, uint64_t group, raft_id from,
                          const Kvpb__HashCheck *hc)
{
    struct shard *sh = shard_of_group(s, group);
    if (!sh || raft_leader(core(s, sh)) != from)
        return; /* only the leader we know asks */
    Kvpb__Checkpoint cps[CHECK_CANDIDATES], *ptrs[CHECK_CANDIDATES];
    size_t n = 0;
    for (size_t i = 0; i < hc->n_checkpoints && n < CHECK_CANDIDATES; i++) {
        uint64_t hash;
        if (!kv_sm_checkpoint(sh->sm, hc->checkpoints[i]->index, &hash))
            continue;
        if (n == 0 && hash == hc->checkpoints[i]->hash)
            s->hash_checks_ok++;
        else if (n == 0)
            s->hash_checks_mismatch++; /* which copy is wrong: the leader's tally says */
        kvpb__checkpoint__init(&cps[n]);
        cps[n].index = hc->checkpoints[i]->index;
        cps[n].hash = hash;
        ptrs[n] = &cps[n];
        n++;
    }
    if (n == 0)
        return; /* behind (or ahead): next round */
    Kvpb__HashCheckReply reply = KVPB__HASH_CHECK_REPLY__INIT;
    reply.round = hc->round;
    reply.n_checkpoints = n;
    reply.checkpoints = ptrs;
    Kvpb__Relay relay = KVPB__RELAY__INIT;
    relay.hash_check_reply = &reply;
    send_relay(s, group, from, &relay);
}

static bool is_replica(struct kv_server *s, const struct shard *sh, raft_id id)
{
    const uint64_t *reps = ring_replicas(s->ring, sh->index);
    for (uint32_t r = 0; r < ring_map(s->ring)->replicas; r++)
        if (reps[r] == id)
            return true;
    return false;
}

/* The leader: a replica's hashes for the round under way. */
static void on_hash_check_reply(struct kv_server *s, uint64_t group, raft_id from,
                                const Kvpb__HashCheckReply *hr)
{
    struct shard *sh = shard_of_group(s, group);
    if (!sh || !sh->tally || sh->tally->round != hr->round || sh->tally->decided ||
        from == s->cfg.id || !is_replica(s, sh, from) || raft_role_of(core(s, sh)) != RAFT_LEADER)
        return;
    struct hash_tally *t = sh->tally;
    for (size_t r = 0; r < t->n_replies; r++)
        if (t->replies[r].from == from)
            return; /* one answer per replica and round */
    if (t->n_replies == RING_MAX_REPLICAS)
        return;
    struct kv_checkpoint *cps = t->replies[t->n_replies].cps;
    size_t n = 0;
    for (size_t i = 0; i < hr->n_checkpoints && n < CHECK_CANDIDATES; i++)
        cps[n++] = (struct kv_checkpoint){hr->checkpoints[i]->index, hr->checkpoints[i]->hash};
    t->replies[t->n_replies].from = from;
    t->replies[t->n_replies].n = n;
    t->n_replies++;
    if (t->n_replies + 1 >= ring_map(s->ring)->replicas)
        tally_decide(s, sh);
}

/* A replica: the leader found our copy odd. Believed if we still know our
 * hash at that index and it is not the majority's (or no longer know it). */
static void on_hash_mismatch(struct kv_server *s, uint64_t group, raft_id from,
                             const Kvpb__HashMismatch *m)
{
    struct shard *sh = shard_of_group(s, group);
    if (!sh || sh->corrupt || raft_leader(core(s, sh)) != from)
        return;
    uint64_t ours = m->hash;
    if (kv_sm_checkpoint(sh->sm, m->index, &ours) && ours == m->majority_hash)
        return;
    char detail[120], h[17];
    snprintf(detail, sizeof(detail),
             "%u of the %u replicas have %s (the leader, node %" PRIu64 ", compared them)",
             m->agreeing, m->replicas, hex64(m->majority_hash, h), from);
    raise_corrupt(s, sh, m->index, ours, m->majority_hash, detail);
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
    } else if (relay->hash_check) {
        on_hash_check(s, group, from, relay->hash_check);
    } else if (relay->hash_check_reply) {
        on_hash_check_reply(s, group, from, relay->hash_check_reply);
    } else if (relay->hash_mismatch) {
        on_hash_mismatch(s, group, from, relay->hash_mismatch);
    } else if (relay->member_query) {
        on_member_query(s, group, from);
    } else if (relay->member_gone) {
        on_member_gone(s, group, from, relay->member_gone->config_index);
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
