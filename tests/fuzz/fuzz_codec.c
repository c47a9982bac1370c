/* fuzz_codec.c — libFuzzer target for the wire decoder (raft/io/codec.c):
 * any bytes fed to the frame reader and the Envelope decoder must be
 * refused or decoded, never crash, leak or read out of bounds. Run with
 * `make fuzz` (time-bounded); `make test` runs a short deterministic pass. */
#include <stdint.h>
#include <stdlib.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* As a frame body. */
    struct codec_decoded d;
    if (codec_decode(data, size, &d) == CODEC_OK)
        codec_decoded_free(&d);
    /* As a stream, in two pieces, through the frame reader. */
    struct frame_reader r;
    frame_reader_init(&r, 4096);
    size_t half = size / 2;
    int rc = frame_reader_feed(&r, data, half);
    const uint8_t *body;
    size_t len;
    while (rc == CODEC_OK && frame_reader_next(&r, &body, &len))
        if (codec_decode(body, len, &d) == CODEC_OK)
            codec_decoded_free(&d);
    if (rc == CODEC_OK)
        rc = frame_reader_feed(&r, data + half, size - half);
    while (rc == CODEC_OK && frame_reader_next(&r, &body, &len))
        if (codec_decode(body, len, &d) == CODEC_OK)
            codec_decoded_free(&d);
    frame_reader_free(&r);
    return 0;
}
