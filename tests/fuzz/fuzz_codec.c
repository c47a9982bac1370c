/* fuzz_codec.c — libFuzzer target for the wire decoder (raft/io/codec.c):
 * any bytes fed to the frame reader and the Envelope decoder must be
 * refused or decoded, never crash, leak or read out of bounds. Run with
 * `make fuzz` (time-bounded); `make test` runs a short deterministic pass. */
#include <stdint.h>
#include <stdlib.h>

#include "codec.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_decoded(const struct codec_decoded *d)
{
    const struct raft_message *m = &d->msg;
    if (d->is_forward) {
        fuzz_assert(d->forward_len == 0 || d->forward_body != NULL);
        return;
    }
    if (d->is_handshake) {
        fuzz_assert(d->hs.kind >= CODEC_HELLO && d->hs.kind <= CODEC_PROOF);
        return;
    }
    fuzz_assert(m->type >= RAFT_MSG_REQUEST_VOTE && m->type <= RAFT_MSG_INSTALL_SNAPSHOT_RESULT);
    if (m->type == RAFT_MSG_APPEND_ENTRIES)
        for (size_t i = 0; i < m->append_entries.n_entries; i++)
            fuzz_assert(m->append_entries.entries[i].index ==
                        m->append_entries.prev_log_index + 1 + i);
    if (m->type == RAFT_MSG_INSTALL_SNAPSHOT)
        fuzz_assert(m->install_snapshot.n_members <= 64 &&
                    (m->install_snapshot.len == 0 || m->install_snapshot.data != NULL));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* As a frame body. */
    struct codec_decoded d;
    if (codec_decode(data, size, &d) == CODEC_OK) {
        check_decoded(&d);
        codec_decoded_free(&d);
    }
    /* As a stream, in two pieces, through the frame reader. */
    struct frame_reader r;
    frame_reader_init(&r, 4096);
    size_t half = size / 2;
    int rc = frame_reader_feed(&r, data, half);
    const uint8_t *body;
    size_t len;
    while (rc == CODEC_OK && frame_reader_next(&r, &body, &len)) {
        fuzz_assert(len <= r.max_frame);
        if (codec_decode(body, len, &d) == CODEC_OK) {
            check_decoded(&d);
            codec_decoded_free(&d);
        }
    }
    if (rc == CODEC_OK)
        rc = frame_reader_feed(&r, data + half, size - half);
    while (rc == CODEC_OK && frame_reader_next(&r, &body, &len)) {
        fuzz_assert(len <= r.max_frame);
        if (codec_decode(body, len, &d) == CODEC_OK) {
            check_decoded(&d);
            codec_decoded_free(&d);
        }
    }
    frame_reader_free(&r);
    return 0;
}
