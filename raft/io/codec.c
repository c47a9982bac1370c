/* codec.c — struct raft_message <-> protobuf Envelope, and framing. */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

#include "raft.pb-c.h"

enum { MEMBER_BYTES = 9, MAX_MEMBERS = 64 };

/* ------------------------------------------------------------------------
 * Encoding
 * ------------------------------------------------------------------------ */

static int pack(Raftpb__Envelope *env, uint8_t **frame, size_t *len)
{
    size_t body = raftpb__envelope__get_packed_size(env);
    if (body > UINT32_MAX)
        return CODEC_ETOOBIG;
    uint8_t *buf = malloc(4 + body);
    if (!buf)
        return CODEC_ENOMEM;
    buf[0] = (uint8_t)(body >> 24);
    buf[1] = (uint8_t)(body >> 16);
    buf[2] = (uint8_t)(body >> 8);
    buf[3] = (uint8_t)body;
    raftpb__envelope__pack(env, buf + 4);
    *frame = buf;
    *len = 4 + body;
    return CODEC_OK;
}

int codec_encode_handshake(uint64_t cluster_id, uint64_t from, uint64_t to,
                           const struct codec_handshake *h, uint8_t **frame, size_t *len)
{
    Raftpb__Envelope env = RAFTPB__ENVELOPE__INIT;
    env.cluster_id = cluster_id;
    env.from_node = from;
    env.to_node = to;
    Raftpb__Hello hello = RAFTPB__HELLO__INIT;
    Raftpb__Challenge challenge = RAFTPB__CHALLENGE__INIT;
    Raftpb__Proof proof = RAFTPB__PROOF__INIT;
    ProtobufCBinaryData nonce = {sizeof(h->nonce), (uint8_t *)h->nonce};
    ProtobufCBinaryData mac = {sizeof(h->mac), (uint8_t *)h->mac};
    switch (h->kind) {
    case CODEC_HELLO:
        hello.cluster_id = cluster_id;
        hello.node_id = h->node;
        hello.version = h->version;
        hello.nonce = nonce;
        hello.placement = h->placement;
        hello.incarnation = h->incarnation;
        env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_HELLO;
        env.hello = &hello;
        break;
    case CODEC_CHALLENGE:
        challenge.node_id = h->node;
        challenge.nonce = nonce;
        challenge.mac = mac;
        env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_CHALLENGE;
        env.challenge = &challenge;
        break;
    case CODEC_PROOF:
        proof.mac = mac;
        env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_PROOF;
        env.proof = &proof;
        break;
    default:
        return CODEC_EMALFORMED;
    }
    return pack(&env, frame, len);
}

/* A nonce or MAC of exactly n bytes, copied out. */
static bool fixed_bytes(const ProtobufCBinaryData *b, uint8_t *to, size_t n)
{
    if (b->len != n)
        return false;
    memcpy(to, b->data, n);
    return true;
}

int codec_encode_forward(uint64_t cluster_id, uint64_t group, uint64_t from, uint64_t to,
                         const void *body, size_t body_len, uint8_t **frame, size_t *len)
{
    Raftpb__Forward fw = RAFTPB__FORWARD__INIT;
    fw.body.data = (uint8_t *)body;
    fw.body.len = body_len;
    Raftpb__Envelope env = RAFTPB__ENVELOPE__INIT;
    env.cluster_id = cluster_id;
    env.from_node = from;
    env.to_node = to;
    env.group_id = group;
    env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_FORWARD;
    env.forward = &fw;
    return pack(&env, frame, len);
}

static int encode_append(const struct raft_message *m, Raftpb__Envelope *env,
                         Raftpb__AppendEntries *ae, uint8_t **frame, size_t *len)
{
    const struct raft_append_entries *in = &m->append_entries;
    size_t n = in->n_entries;
    Raftpb__Entry *entries = calloc(n ? n : 1, sizeof(*entries));
    Raftpb__Entry **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    int rv = CODEC_ENOMEM;
    if (entries && ptrs) {
        for (size_t i = 0; i < n; i++) {
            Raftpb__Entry init = RAFTPB__ENTRY__INIT;
            entries[i] = init;
            entries[i].term = in->entries[i].term;
            entries[i].index = in->prev_log_index + 1 + i;
            entries[i].type = (Raftpb__EntryType)in->entries[i].type;
            entries[i].data.data = (uint8_t *)in->entries[i].data;
            entries[i].data.len = in->entries[i].len;
            ptrs[i] = &entries[i];
        }
        ae->term = m->term;
        ae->leader_id = m->from;
        ae->prev_log_index = in->prev_log_index;
        ae->prev_log_term = in->prev_log_term;
        ae->n_entries = n;
        ae->entries = ptrs;
        ae->leader_commit = in->leader_commit;
        ae->read_seq = in->read_seq;
        ae->sent_ms = in->sent_ms;
        env->payload_case = RAFTPB__ENVELOPE__PAYLOAD_APPEND_ENTRIES;
        env->append_entries = ae;
        rv = pack(env, frame, len);
    }
    free(entries);
    free(ptrs);
    return rv;
}

static int encode_snapshot(const struct raft_message *m, Raftpb__Envelope *env,
                           Raftpb__InstallSnapshot *is, uint8_t **frame, size_t *len)
{
    const struct raft_install_snapshot *in = &m->install_snapshot;
    uint8_t conf[MAX_MEMBERS * MEMBER_BYTES];
    if (in->n_members > MAX_MEMBERS)
        return CODEC_EMALFORMED;
    for (size_t i = 0; i < in->n_members; i++) {
        for (int b = 0; b < 8; b++)
            conf[i * MEMBER_BYTES + (size_t)b] = (uint8_t)(in->members[i].id >> (8 * b));
        conf[i * MEMBER_BYTES + 8] = in->members[i].is_voter ? 1 : 0;
    }
    is->term = m->term;
    is->leader_id = m->from;
    is->last_included_index = in->last_index;
    is->last_included_term = in->last_term;
    is->offset = in->offset;
    is->data.data = (uint8_t *)in->data;
    is->data.len = in->len;
    is->done = in->done;
    is->total_size = in->total_size;
    is->checksum = in->checksum;
    is->configuration.data = conf;
    is->configuration.len = in->n_members * MEMBER_BYTES;
    env->payload_case = RAFTPB__ENVELOPE__PAYLOAD_INSTALL_SNAPSHOT;
    env->install_snapshot = is;
    return pack(env, frame, len);
}

int codec_encode(const struct raft_message *m, uint64_t cluster_id, uint64_t group, uint8_t **frame,
                 size_t *len)
{
    Raftpb__Envelope env = RAFTPB__ENVELOPE__INIT;
    env.cluster_id = cluster_id;
    env.from_node = m->from;
    env.to_node = m->to;
    env.group_id = group;
    env.trace_id = m->trace_id;
    Raftpb__RequestVote rv = RAFTPB__REQUEST_VOTE__INIT;
    Raftpb__RequestVoteResult rvr = RAFTPB__REQUEST_VOTE_RESULT__INIT;
    Raftpb__AppendEntries ae = RAFTPB__APPEND_ENTRIES__INIT;
    Raftpb__AppendEntriesResult aer = RAFTPB__APPEND_ENTRIES_RESULT__INIT;
    Raftpb__InstallSnapshot is = RAFTPB__INSTALL_SNAPSHOT__INIT;
    Raftpb__InstallSnapshotResult isr = RAFTPB__INSTALL_SNAPSHOT_RESULT__INIT;
    Raftpb__TimeoutNow tn = RAFTPB__TIMEOUT_NOW__INIT;
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE:
        rv.term = m->term;
        rv.candidate_id = m->from;
        rv.last_log_index = m->request_vote.last_log_index;
        rv.last_log_term = m->request_vote.last_log_term;
        rv.pre_vote = m->request_vote.pre_vote;
        rv.leadership_transfer = m->request_vote.leadership_transfer;
        env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_REQUEST_VOTE;
        env.request_vote = &rv;
        break;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        rvr.term = m->term;
        rvr.vote_granted = m->request_vote_result.vote_granted;
        rvr.pre_vote = m->request_vote_result.pre_vote;
        env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_REQUEST_VOTE_RESULT;
        env.request_vote_result = &rvr;
        break;
    case RAFT_MSG_APPEND_ENTRIES:
        return encode_append(m, &env, &ae, frame, len);
    case RAFT_MSG_APPEND_ENTRIES_RESULT: {
        const struct raft_append_entries_result *r = &m->append_entries_result;
        aer.term = m->term;
        aer.success = r->success;
        aer.match_index = r->match_index;
        aer.rejected_index = r->rejected_index;
        aer.conflict_term = r->conflict_term;
        aer.conflict_index = r->conflict_index;
        aer.last_log_index = r->last_log_index;
        aer.read_seq = r->read_seq;
        aer.echo_sent_ms = r->echo_sent_ms;
        env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_APPEND_ENTRIES_RESULT;
        env.append_entries_result = &aer;
        break;
    }
    case RAFT_MSG_INSTALL_SNAPSHOT:
        return encode_snapshot(m, &env, &is, frame, len);
    case RAFT_MSG_INSTALL_SNAPSHOT_RESULT: {
        const struct raft_install_snapshot_result *r = &m->install_snapshot_result;
        isr.term = m->term;
        isr.last_included_index = r->last_index;
        isr.last_included_term = r->last_term;
        isr.next_offset = r->next_offset;
        isr.done = r->done;
        isr.rejected = r->rejected;
        env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_INSTALL_SNAPSHOT_RESULT;
        env.install_snapshot_result = &isr;
        break;
    }
    case RAFT_MSG_TIMEOUT_NOW:
        tn.term = m->term;
        tn.leader_id = m->from;
        env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_TIMEOUT_NOW;
        env.timeout_now = &tn;
        break;
    default:
        return CODEC_EMALFORMED;
    }
    return pack(&env, frame, len);
}

/* ------------------------------------------------------------------------
 * Decoding
 * ------------------------------------------------------------------------ */

static int decode_append(const Raftpb__AppendEntries *ae, struct codec_decoded *out)
{
    struct raft_message *m = &out->msg;
    m->type = RAFT_MSG_APPEND_ENTRIES;
    m->term = ae->term;
    m->append_entries.prev_log_index = ae->prev_log_index;
    m->append_entries.prev_log_term = ae->prev_log_term;
    m->append_entries.leader_commit = ae->leader_commit;
    m->append_entries.read_seq = ae->read_seq;
    m->append_entries.sent_ms = ae->sent_ms;
    out->entries = calloc(ae->n_entries ? ae->n_entries : 1, sizeof(*out->entries));
    if (!out->entries)
        return CODEC_ENOMEM;
    for (size_t i = 0; i < ae->n_entries; i++) {
        const Raftpb__Entry *e = ae->entries[i];
        /* Entries are consecutive after prev_log_index; say so or be refused. */
        if (e->index != ae->prev_log_index + 1 + i || e->type > RAFTPB__ENTRY_TYPE__ENTRY_CONF)
            return CODEC_EMALFORMED;
        out->entries[i] = (struct raft_entry){.term = e->term,
                                              .index = e->index,
                                              .type = (enum raft_entry_type)e->type,
                                              .data = e->data.data,
                                              .len = e->data.len};
    }
    m->append_entries.entries = out->entries;
    m->append_entries.n_entries = ae->n_entries;
    return CODEC_OK;
}

static int decode_snapshot(const Raftpb__InstallSnapshot *is, struct codec_decoded *out)
{
    struct raft_message *m = &out->msg;
    size_t n = is->configuration.len / MEMBER_BYTES;
    if (is->configuration.len % MEMBER_BYTES || n > MAX_MEMBERS)
        return CODEC_EMALFORMED;
    out->members = calloc(n ? n : 1, sizeof(*out->members));
    if (!out->members)
        return CODEC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = is->configuration.data + i * MEMBER_BYTES;
        uint64_t id = 0;
        for (int b = 0; b < 8; b++)
            id |= (uint64_t)p[b] << (8 * b);
        out->members[i] = (struct raft_member){id, p[8] & 1};
    }
    m->type = RAFT_MSG_INSTALL_SNAPSHOT;
    m->term = is->term;
    m->install_snapshot = (struct raft_install_snapshot){.last_index = is->last_included_index,
                                                         .last_term = is->last_included_term,
                                                         .offset = is->offset,
                                                         .data = is->data.data,
                                                         .len = is->data.len,
                                                         .done = is->done,
                                                         .total_size = is->total_size,
                                                         .checksum = is->checksum,
                                                         .members = out->members,
                                                         .n_members = n};
    return CODEC_OK;
}

static int decode_payload(const Raftpb__Envelope *env, struct codec_decoded *out)
{
    struct raft_message *m = &out->msg;
    switch (env->payload_case) {
    case RAFTPB__ENVELOPE__PAYLOAD_HELLO:
        out->is_handshake = true;
        out->hs.kind = CODEC_HELLO;
        out->hs.node = env->hello->node_id;
        out->hs.version = env->hello->version;
        out->hs.placement = env->hello->placement;
        out->hs.incarnation = env->hello->incarnation;
        out->cluster_id = env->hello->cluster_id;
        /* A version-1 Hello has no nonce: decoded, so that the refusal
         * can name the version. */
        if (env->hello->nonce.len &&
            !fixed_bytes(&env->hello->nonce, out->hs.nonce, CODEC_NONCE_BYTES))
            return CODEC_EMALFORMED;
        return CODEC_OK;
    case RAFTPB__ENVELOPE__PAYLOAD_CHALLENGE:
        out->is_handshake = true;
        out->hs.kind = CODEC_CHALLENGE;
        out->hs.node = env->challenge->node_id;
        if (!fixed_bytes(&env->challenge->nonce, out->hs.nonce, CODEC_NONCE_BYTES) ||
            !fixed_bytes(&env->challenge->mac, out->hs.mac, CODEC_MAC_BYTES))
            return CODEC_EMALFORMED;
        return CODEC_OK;
    case RAFTPB__ENVELOPE__PAYLOAD_PROOF:
        out->is_handshake = true;
        out->hs.kind = CODEC_PROOF;
        if (!fixed_bytes(&env->proof->mac, out->hs.mac, CODEC_MAC_BYTES))
            return CODEC_EMALFORMED;
        return CODEC_OK;
    case RAFTPB__ENVELOPE__PAYLOAD_REQUEST_VOTE:
        m->type = RAFT_MSG_REQUEST_VOTE;
        m->term = env->request_vote->term;
        m->request_vote.last_log_index = env->request_vote->last_log_index;
        m->request_vote.last_log_term = env->request_vote->last_log_term;
        m->request_vote.pre_vote = env->request_vote->pre_vote;
        m->request_vote.leadership_transfer = env->request_vote->leadership_transfer;
        return CODEC_OK;
    case RAFTPB__ENVELOPE__PAYLOAD_REQUEST_VOTE_RESULT:
        m->type = RAFT_MSG_REQUEST_VOTE_RESULT;
        m->term = env->request_vote_result->term;
        m->request_vote_result.vote_granted = env->request_vote_result->vote_granted;
        m->request_vote_result.pre_vote = env->request_vote_result->pre_vote;
        return CODEC_OK;
    case RAFTPB__ENVELOPE__PAYLOAD_APPEND_ENTRIES:
        return decode_append(env->append_entries, out);
    case RAFTPB__ENVELOPE__PAYLOAD_APPEND_ENTRIES_RESULT: {
        const Raftpb__AppendEntriesResult *r = env->append_entries_result;
        m->type = RAFT_MSG_APPEND_ENTRIES_RESULT;
        m->term = r->term;
        m->append_entries_result =
            (struct raft_append_entries_result){.success = r->success,
                                                .match_index = r->match_index,
                                                .rejected_index = r->rejected_index,
                                                .conflict_term = r->conflict_term,
                                                .conflict_index = r->conflict_index,
                                                .last_log_index = r->last_log_index,
                                                .read_seq = r->read_seq,
                                                .echo_sent_ms = r->echo_sent_ms};
        return CODEC_OK;
    }
    case RAFTPB__ENVELOPE__PAYLOAD_INSTALL_SNAPSHOT:
        return decode_snapshot(env->install_snapshot, out);
    case RAFTPB__ENVELOPE__PAYLOAD_INSTALL_SNAPSHOT_RESULT: {
        const Raftpb__InstallSnapshotResult *r = env->install_snapshot_result;
        m->type = RAFT_MSG_INSTALL_SNAPSHOT_RESULT;
        m->term = r->term;
        m->install_snapshot_result =
            (struct raft_install_snapshot_result){.last_index = r->last_included_index,
                                                  .last_term = r->last_included_term,
                                                  .next_offset = r->next_offset,
                                                  .done = r->done,
                                                  .rejected = r->rejected};
        return CODEC_OK;
    }
    case RAFTPB__ENVELOPE__PAYLOAD_FORWARD:
        out->is_forward = true;
        out->forward_body = env->forward->body.data;
        out->forward_len = env->forward->body.len;
        return CODEC_OK;
    case RAFTPB__ENVELOPE__PAYLOAD_TIMEOUT_NOW:
        m->type = RAFT_MSG_TIMEOUT_NOW;
        m->term = env->timeout_now->term;
        return CODEC_OK;
    default:
        return CODEC_EMALFORMED;
    }
}

int codec_decode(const uint8_t *body, size_t len, struct codec_decoded *out)
{
    memset(out, 0, sizeof(*out));
    Raftpb__Envelope *env = raftpb__envelope__unpack(NULL, len, body);
    if (!env)
        return CODEC_EMALFORMED;
    out->envelope = env;
    out->cluster_id = env->cluster_id;
    out->group = env->group_id;
    out->msg.from = env->from_node;
    out->msg.to = env->to_node;
    out->msg.trace_id = env->trace_id;
    int rv = decode_payload(env, out);
    if (rv != CODEC_OK)
        codec_decoded_free(out);
    return rv;
}

void codec_decoded_free(struct codec_decoded *d)
{
    if (d->envelope)
        raftpb__envelope__free_unpacked(d->envelope, NULL);
    free(d->entries);
    free(d->members);
    memset(d, 0, sizeof(*d));
}

/* ------------------------------------------------------------------------
 * Framing
 * ------------------------------------------------------------------------ */

void frame_reader_init(struct frame_reader *r, size_t max_frame)
{
    memset(r, 0, sizeof(*r));
    r->max_frame = max_frame;
}

void frame_reader_free(struct frame_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof(*r));
}

static size_t be32(const uint8_t *p)
{
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | (size_t)p[3];
}

/* Whether every length prefix buffered so far is within the maximum. */
static bool prefixes_ok(const struct frame_reader *r)
{
    size_t at = r->start;
    while (r->len - at >= 4) {
        size_t n = be32(r->buf + at);
        if (n > r->max_frame)
            return false;
        if (r->len - at < 4 + n)
            break;
        at += 4 + n;
    }
    return true;
}

int frame_reader_feed(struct frame_reader *r, const void *data, size_t len)
{
    /* Drop what was handed out, so the buffer holds one partial frame at
     * most, plus this read: bounded by max_frame + one read. */
    r->start += r->consumed;
    r->consumed = 0;
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->len - r->start);
        r->len -= r->start;
        r->start = 0;
    }
    /* A prefix completed by this read is checked before anything grows. */
    if (r->len < 4 && r->len + len >= 4) {
        uint8_t head[4];
        if (r->len)
            memcpy(head, r->buf, r->len);
        memcpy(head + r->len, data, 4 - r->len);
        if (be32(head) > r->max_frame)
            return CODEC_ETOOBIG;
    }
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + len)
            cap *= 2;
        uint8_t *buf = realloc(r->buf, cap);
        if (!buf)
            return CODEC_ENOMEM;
        r->buf = buf;
        r->cap = cap;
    }
    if (len) /* an empty read leaves buf as it is, maybe still NULL */
        memcpy(r->buf + r->len, data, len);
    r->len += len;
    return prefixes_ok(r) ? CODEC_OK : CODEC_ETOOBIG;
}

bool frame_reader_next(struct frame_reader *r, const uint8_t **body, size_t *len)
{
    r->start += r->consumed;
    r->consumed = 0;
    if (r->len - r->start < 4)
        return false;
    size_t n = be32(r->buf + r->start);
    if (n > r->max_frame || r->len - r->start < 4 + n)
        return false;
    *body = r->buf + r->start + 4;
    *len = n;
    r->consumed = 4 + n;
    return true;
}
