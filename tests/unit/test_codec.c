/* Messages on the wire: raft/io/codec.c. Every message type round-trips;
 * an oversized frame is refused before anything is allocated for it; and
 * random bytes are refused, never crash, never read out of bounds (run it
 * under make asan). */
#include "codec.h"
#include "harness.h"

#include <stdlib.h>

static struct codec_decoded round_trip(const struct raft_message *m)
{
    uint8_t *frame;
    size_t len;
    CHECK_EQ(codec_encode(m, 0xc1, 5, &frame, &len), CODEC_OK);
    struct frame_reader r;
    frame_reader_init(&r, CODEC_DEFAULT_MAX_FRAME);
    /* Feed it a byte at a time: frames may arrive in any pieces. */
    for (size_t i = 0; i < len; i++)
        CHECK_EQ(frame_reader_feed(&r, frame + i, 1), CODEC_OK);
    const uint8_t *body;
    size_t body_len;
    CHECK(frame_reader_next(&r, &body, &body_len));
    struct codec_decoded d;
    CHECK_EQ(codec_decode(body, body_len, &d), CODEC_OK);
    CHECK(!frame_reader_next(&r, &body, &body_len));
    CHECK_EQ(d.cluster_id, 0xc1);
    CHECK_EQ(d.group, 5);
    CHECK_EQ(d.msg.type, m->type);
    CHECK_EQ(d.msg.from, m->from);
    CHECK_EQ(d.msg.to, m->to);
    CHECK_EQ(d.msg.term, m->term);
    /* The decoded message must not depend on the frame's memory... except
     * through the unpacked envelope, which d owns. */
    frame_reader_free(&r);
    free(frame);
    return d;
}

static void test_append_entries_round_trip(void)
{
    struct raft_entry es[] = {{.term = 3, .type = RAFT_ENTRY_NOOP},
                              {.term = 3, .data = "set k v", .len = 7},
                              {.term = 4, .type = RAFT_ENTRY_CONF, .data = "\1", .len = 1}};
    struct raft_message m = {.type = RAFT_MSG_APPEND_ENTRIES, .from = 1, .to = 2, .term = 4};
    m.append_entries = (struct raft_append_entries){.prev_log_index = 9,
                                                    .prev_log_term = 3,
                                                    .leader_commit = 8,
                                                    .read_seq = 77,
                                                    .sent_ms = 123456,
                                                    .entries = es,
                                                    .n_entries = 3};
    struct codec_decoded d = round_trip(&m);
    const struct raft_append_entries *ae = &d.msg.append_entries;
    CHECK_EQ(ae->prev_log_index, 9);
    CHECK_EQ(ae->leader_commit, 8);
    CHECK_EQ(ae->read_seq, 77);
    CHECK_EQ(ae->sent_ms, 123456);
    CHECK_EQ(ae->n_entries, 3);
    CHECK_EQ(ae->entries[1].index, 11);
    CHECK(ae->entries[1].len == 7 && memcmp(ae->entries[1].data, "set k v", 7) == 0);
    CHECK_EQ(ae->entries[2].type, RAFT_ENTRY_CONF);
    codec_decoded_free(&d);
}

static void test_every_other_message_round_trips(void)
{
    struct raft_message rv = {.type = RAFT_MSG_REQUEST_VOTE, .from = 3, .to = 1, .term = 9};
    rv.request_vote = (struct raft_request_vote){20, 8, true, true};
    struct codec_decoded d = round_trip(&rv);
    CHECK(d.msg.request_vote.pre_vote && d.msg.request_vote.leadership_transfer);
    CHECK_EQ(d.msg.request_vote.last_log_index, 20);
    codec_decoded_free(&d);

    struct raft_message rvr = {.type = RAFT_MSG_REQUEST_VOTE_RESULT, .from = 1, .to = 3, .term = 9};
    rvr.request_vote_result = (struct raft_request_vote_result){true, false};
    d = round_trip(&rvr);
    CHECK(d.msg.request_vote_result.vote_granted && !d.msg.request_vote_result.pre_vote);
    codec_decoded_free(&d);

    struct raft_message aer = {
        .type = RAFT_MSG_APPEND_ENTRIES_RESULT, .from = 2, .to = 1, .term = 4};
    aer.append_entries_result = (struct raft_append_entries_result){.success = false,
                                                                    .rejected_index = 12,
                                                                    .conflict_term = 3,
                                                                    .conflict_index = 10,
                                                                    .last_log_index = 11,
                                                                    .read_seq = 5,
                                                                    .echo_sent_ms = 999};
    d = round_trip(&aer);
    CHECK_EQ(d.msg.append_entries_result.conflict_index, 10);
    CHECK_EQ(d.msg.append_entries_result.echo_sent_ms, 999);
    codec_decoded_free(&d);

    struct raft_member members[] = {{1, true}, {2, true}, {7, false}};
    struct raft_message is = {.type = RAFT_MSG_INSTALL_SNAPSHOT, .from = 1, .to = 2, .term = 4};
    is.install_snapshot = (struct raft_install_snapshot){.last_index = 100,
                                                         .last_term = 3,
                                                         .offset = 64,
                                                         .data = "chunk",
                                                         .len = 5,
                                                         .done = true,
                                                         .total_size = 69,
                                                         .checksum = 0xfeed,
                                                         .members = members,
                                                         .n_members = 3};
    d = round_trip(&is);
    CHECK_EQ(d.msg.install_snapshot.total_size, 69);
    CHECK(memcmp(d.msg.install_snapshot.data, "chunk", 5) == 0);
    CHECK_EQ(d.msg.install_snapshot.n_members, 3);
    CHECK(!d.msg.install_snapshot.members[2].is_voter && d.msg.install_snapshot.members[2].id == 7);
    codec_decoded_free(&d);

    struct raft_message isr = {
        .type = RAFT_MSG_INSTALL_SNAPSHOT_RESULT, .from = 2, .to = 1, .term = 4};
    isr.install_snapshot_result = (struct raft_install_snapshot_result){100, 3, 69, true, false};
    d = round_trip(&isr);
    CHECK(d.msg.install_snapshot_result.done && d.msg.install_snapshot_result.last_term == 3);
    codec_decoded_free(&d);

    struct raft_message tn = {.type = RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 3, .term = 4};
    d = round_trip(&tn);
    codec_decoded_free(&d);
}

/* The three handshake frames round-trip; a nonce or MAC of the wrong
 * size does not decode. */
static void test_handshake(void)
{
    struct codec_handshake hs[3] = {{.kind = CODEC_HELLO, .node = 3, .version = CODEC_WIRE_VERSION},
                                    {.kind = CODEC_CHALLENGE, .node = 5},
                                    {.kind = CODEC_PROOF}};
    for (int k = 0; k < 3; k++) {
        memset(hs[k].nonce, 0x10 + k, sizeof(hs[k].nonce));
        if (hs[k].kind != CODEC_HELLO)
            memset(hs[k].mac, 0x20 + k, sizeof(hs[k].mac));
        uint8_t *frame;
        size_t len;
        CHECK_EQ(codec_encode_handshake(0xabcdef, 3, 5, &hs[k], &frame, &len), CODEC_OK);
        struct codec_decoded d;
        CHECK_EQ(codec_decode(frame + 4, len - 4, &d), CODEC_OK);
        CHECK(d.is_handshake);
        CHECK_EQ(d.hs.kind, hs[k].kind);
        CHECK_EQ(d.cluster_id, 0xabcdef);
        CHECK_EQ(d.msg.to, 5);
        if (hs[k].kind != CODEC_PROOF) {
            CHECK_EQ(d.hs.node, hs[k].node);
            CHECK(memcmp(d.hs.nonce, hs[k].nonce, sizeof(hs[k].nonce)) == 0);
        }
        if (hs[k].kind == CODEC_HELLO)
            CHECK_EQ(d.hs.version, CODEC_WIRE_VERSION);
        else
            CHECK(memcmp(d.hs.mac, hs[k].mac, sizeof(hs[k].mac)) == 0);
        codec_decoded_free(&d);
        /* One byte short of a MAC (or nonce): malformed. The last field is
         * at the end of the frame: shorten its length and drop a byte. */
        if (hs[k].kind == CODEC_PROOF) {
            CHECK_EQ(frame[len - 33], CODEC_MAC_BYTES);
            frame[len - 33] = CODEC_MAC_BYTES - 1;
            frame[len - 35]--; /* the Proof's own length */
            frame[3]--;        /* the frame's length */
            CHECK_EQ(codec_decode(frame + 4, len - 5, &d), CODEC_EMALFORMED);
        }
        free(frame);
    }
}

/* Several frames in one read, then one split across reads. */
static void test_frames_in_any_pieces(void)
{
    struct raft_message tn = {.type = RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 3, .term = 4};
    uint8_t *a, *b;
    size_t la, lb;
    CHECK_EQ(codec_encode(&tn, 1, 1, &a, &la), CODEC_OK);
    tn.term = 5;
    CHECK_EQ(codec_encode(&tn, 1, 1, &b, &lb), CODEC_OK);
    uint8_t both[256];
    memcpy(both, a, la);
    memcpy(both + la, b, lb);
    struct frame_reader r;
    frame_reader_init(&r, 1024);
    CHECK_EQ(frame_reader_feed(&r, both, la + 3), CODEC_OK);
    const uint8_t *body;
    size_t n;
    CHECK(frame_reader_next(&r, &body, &n) && n == la - 4);
    CHECK(!frame_reader_next(&r, &body, &n));
    CHECK_EQ(frame_reader_feed(&r, both + la + 3, lb - 3), CODEC_OK);
    CHECK(frame_reader_next(&r, &body, &n));
    struct codec_decoded d;
    CHECK_EQ(codec_decode(body, n, &d), CODEC_OK);
    CHECK_EQ(d.msg.term, 5);
    codec_decoded_free(&d);
    frame_reader_free(&r);
    free(a);
    free(b);
}

/* A length prefix above the maximum is refused at once, before the buffer
 * grows for it. */
static void test_oversized_frame_refused(void)
{
    struct frame_reader r;
    frame_reader_init(&r, 1024);
    uint8_t prefix[4] = {0x00, 0x10, 0x00, 0x00}; /* 1 MiB */
    CHECK_EQ(frame_reader_feed(&r, prefix, 2), CODEC_OK);
    CHECK_EQ(frame_reader_feed(&r, prefix + 2, 2), CODEC_ETOOBIG);
    CHECK(r.cap <= 4096);
    frame_reader_free(&r);
    /* And within one read, behind a valid frame. */
    frame_reader_init(&r, 1024);
    uint8_t two[4 + 1 + 4] = {0, 0, 0, 1, 0x08, 0xff, 0xff, 0xff, 0xff};
    CHECK_EQ(frame_reader_feed(&r, two, sizeof(two)), CODEC_ETOOBIG);
    frame_reader_free(&r);
}

/* Random bytes: refused or decoded, never a crash or an out-of-bounds read;
 * and a malformed AppendEntries (entries not consecutive) is refused. */
static void test_random_bytes_refused(void)
{
    uint64_t s = harness_seed(424242);
    unsigned decoded = 0, refused = 0;
    for (int round = 0; round < 20000; round++) {
        uint8_t buf[64];
        size_t len = (size_t)(s % sizeof(buf));
        for (size_t i = 0; i < len; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[i] = (uint8_t)(s >> 56);
        }
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        struct codec_decoded d;
        if (codec_decode(buf, len, &d) == CODEC_OK) {
            decoded++;
            codec_decoded_free(&d);
        } else {
            refused++;
        }
    }
    CHECK(refused > 1000);
    (void)decoded;
    struct raft_entry es[] = {{.term = 1}, {.term = 1}};
    struct raft_message m = {.type = RAFT_MSG_APPEND_ENTRIES, .from = 1, .to = 2, .term = 1};
    m.append_entries.entries = es;
    m.append_entries.n_entries = 2;
    uint8_t *frame;
    size_t len;
    CHECK_EQ(codec_encode(&m, 1, 1, &frame, &len), CODEC_OK);
    /* Find the second entry's index field (value 2) and break it. */
    bool broke = false;
    for (size_t i = 4; i + 1 < len && !broke; i++)
        if (frame[i] == 0x10 && frame[i + 1] == 0x02) { /* field 2, varint 2 */
            frame[i + 1] = 0x05;
            broke = true;
        }
    CHECK(broke);
    struct codec_decoded d;
    CHECK_EQ(codec_decode(frame + 4, len - 4, &d), CODEC_EMALFORMED);
    free(frame);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_append_entries_round_trip),
        HARNESS_TEST(test_every_other_message_round_trips),
        HARNESS_TEST(test_handshake),
        HARNESS_TEST(test_frames_in_any_pieces),
        HARNESS_TEST(test_oversized_frame_refused),
        HARNESS_TEST(test_random_bytes_refused),
    };
    return harness_main(argc, argv, "codec", tests, sizeof(tests) / sizeof(tests[0]));
}
