/* codec.h — Raft messages on the wire: protobuf Envelopes in length-prefixed
 * frames (proto/raft.proto).
 *
 * A frame is a 4-byte big-endian length followed by that many bytes of one
 * packed Envelope {cluster_id, from_node, to_node, group_id, payload}. The
 * reader checks the length against its maximum before it allocates
 * anything, so a hostile or broken peer cannot make a node allocate more
 * than one maximum frame per connection.
 */
#ifndef RAFT_IO_CODEC_H
#define RAFT_IO_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "raft.h"

enum {
    CODEC_OK = 0,
    CODEC_ETOOBIG = 1,    /* a frame longer than the maximum */
    CODEC_EMALFORMED = 2, /* bytes that are not an Envelope, or a message that does not add up */
    CODEC_ENOMEM = 3,
};

enum { CODEC_WIRE_VERSION = 2, CODEC_DEFAULT_MAX_FRAME = 16 << 20 };

/* Encode m (of group `group`, cluster `cluster_id`) as one frame in a
 * malloc'ed buffer the caller frees. InstallSnapshot data must be filled. */
int codec_encode(const struct raft_message *m, uint64_t cluster_id, uint64_t group, uint8_t **frame,
                 size_t *len);

/* The handshake that opens every connection (transport.c): Hello from the
 * node that connects, Challenge from the node that accepts, Proof back,
 * and a Proof (the Welcome) from the node that accepts once it took it. */
enum codec_handshake_kind { CODEC_HELLO = 1, CODEC_CHALLENGE = 2, CODEC_PROOF = 3 };
enum { CODEC_NONCE_BYTES = 16, CODEC_MAC_BYTES = 32 };
struct codec_handshake {
    enum codec_handshake_kind kind;
    uint64_t node;                    /* Hello, Challenge: who speaks */
    uint32_t version;                 /* Hello */
    uint64_t placement;               /* Hello: the host's map fingerprint, 0 if none */
    uint64_t incarnation;             /* Hello: the sender's data dir incarnation, 0 if none */
    uint8_t nonce[CODEC_NONCE_BYTES]; /* Hello, Challenge */
    uint8_t mac[CODEC_MAC_BYTES];     /* Challenge, Proof */
};
int codec_encode_handshake(uint64_t cluster_id, uint64_t from, uint64_t to,
                           const struct codec_handshake *h, uint8_t **frame, size_t *len);

/* Encode a Forward (a client request or answer, opaque here) from node
 * `from` to node `to`. */
int codec_encode_forward(uint64_t cluster_id, uint64_t group, uint64_t from, uint64_t to,
                         const void *body, size_t body_len, uint8_t **frame, size_t *len);

/* A decoded frame. For a Raft message, msg points into this struct and the
 * unpacked Envelope; release with codec_decoded_free(). */
struct codec_decoded {
    uint64_t cluster_id;
    uint64_t group;
    bool is_handshake; /* hs is filled */
    struct codec_handshake hs;
    bool is_forward; /* msg.from and msg.to are set; the body points into envelope */
    const uint8_t *forward_body;
    size_t forward_len;
    struct raft_message msg;
    struct raft_entry *entries;
    struct raft_member *members;
    void *envelope; /* the protobuf-c unpacked Envelope */
};

/* Decode one frame body (without its length prefix). */
int codec_decode(const uint8_t *body, size_t len, struct codec_decoded *out);
void codec_decoded_free(struct codec_decoded *d);

/* Reassembles frames from a byte stream. */
struct frame_reader {
    uint8_t *buf;
    size_t start;    /* first byte not handed out */
    size_t consumed; /* size of the frame handed out last, dropped on the next call */
    size_t len, cap;
    size_t max_frame;
};

void frame_reader_init(struct frame_reader *r, size_t max_frame);
void frame_reader_free(struct frame_reader *r);
/* Append bytes read from the socket. CODEC_ETOOBIG as soon as a length
 * prefix announces a frame over the maximum (nothing is allocated for it);
 * the connection should then be closed. */
int frame_reader_feed(struct frame_reader *r, const void *data, size_t len);
/* The next complete frame body, or false. The pointer is valid until the
 * next call on the reader. */
bool frame_reader_next(struct frame_reader *r, const uint8_t **body, size_t *len);

#endif /* RAFT_IO_CODEC_H */
