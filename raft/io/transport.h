/* transport.h — Raft messages between nodes over TCP, on a libuv loop.
 *
 * One outbound connection per peer, bound to the node's own address (so
 * that address-based partition rules see it), with TCP_NODELAY and
 * TCP_USER_TIMEOUT; a non-blocking connect with a timeout; reconnection
 * with capped exponential backoff and jitter; a bounded send queue per
 * peer (messages beyond it are dropped, as a lossy network would: Raft
 * retries). Frames longer than the maximum are refused before any
 * allocation for them (codec.h).
 *
 * Every connection opens with a mutual handshake (raft.proto, Hello): the
 * node that connects sends a fresh nonce; the node that accepts refuses a
 * foreign cluster, another wire version or a node that is not one of its
 * peers, and otherwise answers with its own nonce and an HMAC-SHA-256 over
 * both nonces, the cluster id and both node ids, keyed with the cluster
 * secret; the connecting node checks it and answers with its own MAC. Only
 * then does it send Raft messages, and only then does the accepting node
 * read them. A connection that has not finished within the handshake
 * timeout is closed; until it has, frames are limited to a few KiB.
 * Refusals are logged with the peer's address, at most once per interval
 * per kind, and counted.
 */
#ifndef RAFT_IO_TRANSPORT_H
#define RAFT_IO_TRANSPORT_H

#include <stdint.h>
#include <uv.h>

#include "codec.h"

enum { TRANSPORT_KEY_BYTES = 32 };

struct transport_config {
    uint64_t cluster_id;
    uint64_t node_id;
    const char *host;              /* our address (127.0.0.x), for listening and for binding */
    uint16_t port;                 /* 0: any (see transport_port) */
    size_t max_frame;              /* default CODEC_DEFAULT_MAX_FRAME */
    uint32_t connect_timeout_ms;   /* default 1000 */
    uint32_t backoff_min_ms;       /* default 50 */
    uint32_t backoff_max_ms;       /* default 2000 */
    size_t max_queue_bytes;        /* per peer; default 64 MiB */
    uint32_t user_timeout_ms;      /* TCP_USER_TIMEOUT; default 1500 */
    uint32_t handshake_timeout_ms; /* an inbound connection must finish by then; default 3000 */
    /* The key of the handshake's MACs (transport_secret_from_file). All
     * zeros -- no secret -- proves only that a peer knows the cluster id. */
    uint8_t secret[TRANSPORT_KEY_BYTES];
    /* The host's placement fingerprint, sent in Hello: a peer whose own is
     * different (both nonzero) is refused. 0: none. */
    uint64_t placement;
    /* Our data directory's incarnation (storage.h), sent in Hello. */
    uint64_t incarnation;
};

void transport_config_default(struct transport_config *cfg);

/* The handshake key from a secret file: at least 16 bytes besides
 * whitespace, readable by its owner only (like an ssh key). Hashed, so any
 * text will do (`head -c 32 /dev/urandom | base64 > secret`). 0, or -1
 * with err filled. */
int transport_secret_from_file(const char *path, uint8_t key[TRANSPORT_KEY_BYTES], char *err,
                               size_t errlen);

/* A received message (valid during the call only) of group `group`. */
typedef void (*transport_recv_cb)(void *data, uint64_t group, const struct raft_message *m);
/* A line for the node's log: refused peers, reconnections. */
typedef void (*transport_log_cb)(void *data, const char *line);

struct transport;

int transport_init(struct transport **out, uv_loop_t *loop, const struct transport_config *cfg,
                   transport_recv_cb on_recv, transport_log_cb on_log, void *data);
/* The port we listen on (useful with port 0). */
uint16_t transport_port(const struct transport *t);
int transport_add_peer(struct transport *t, uint64_t id, const char *host, uint16_t port);
bool transport_has_peer(const struct transport *t, uint64_t id);
/* Queue m for its destination. Returns 0, or UV_ENOBUFS when the peer's
 * queue is full (the message is dropped), or UV_EINVAL for an unknown peer. */
int transport_send(struct transport *t, uint64_t group, const struct raft_message *m);
/* Client requests and answers between nodes (kvd forwards to the leader):
 * an opaque body, through the same connections, queues and fault filter
 * (as message type TRANSPORT_FORWARD; rules for any type match it too). */
enum { TRANSPORT_FORWARD = 100 };
typedef void (*transport_forward_cb)(void *data, uint64_t from, uint64_t group, const uint8_t *body,
                                     size_t len);
void transport_on_forward(struct transport *t, transport_forward_cb cb, void *data);
int transport_forward(struct transport *t, uint64_t to, uint64_t group, const void *body,
                      size_t len);

/* Once a peer has proven itself on an inbound connection: may we take its
 * messages, given the incarnation its Hello named (0: an older build)?
 * False refuses the connection, logging why (filled in by the callback). */
typedef bool (*transport_peer_check_cb)(void *data, uint64_t peer, uint64_t incarnation, char *why,
                                        size_t len);
void transport_on_peer_check(struct transport *t, transport_peer_check_cb cb, void *data);

/* Whether our connection to peer id is up (the handshake done). */
bool transport_peer_connected(const struct transport *t, uint64_t id);

/* Close every handle; the loop must then run until it has no more. */
void transport_close(struct transport *t);

/* Application-level faults (docs/cluster-scripts.md): what TCP cannot
 * express, such as losing one direction only or one message type only.
 * A rule matches a peer (0: any), a direction and a message type (0: any);
 * the first matching rule decides. Delays apply to outgoing messages. */
enum { TRANSPORT_OUT = 1, TRANSPORT_IN = 2 };
struct transport_fault {
    raft_id peer;
    unsigned directions; /* TRANSPORT_OUT | TRANSPORT_IN */
    int message_type;    /* enum raft_message_type, or 0 */
    unsigned drop_pct;
    unsigned dup_pct;
    uint32_t delay_ms;
};
enum { TRANSPORT_MAX_FAULTS = 32 };
/* Replace the rules (n == 0 heals). UV_EINVAL beyond TRANSPORT_MAX_FAULTS. */
int transport_set_faults(struct transport *t, const struct transport_fault *rules, size_t n);

struct transport_stats {
    uint64_t frames_sent, frames_received, refused_hellos, oversized_frames, malformed_frames;
    uint64_t refused_members, refused_auth, handshake_timeouts;
    uint64_t refused_incarnation; /* peers whose data dir was replaced */
    uint64_t dropped_full_queue, connects, reconnects;
    uint64_t fault_dropped, fault_duplicated, fault_delayed;
};
void transport_get_stats(const struct transport *t, struct transport_stats *st);

#endif /* RAFT_IO_TRANSPORT_H */
