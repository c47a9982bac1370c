/* transport.c — TCP between nodes on libuv; see transport.h. */
#define _GNU_SOURCE /* TCP_USER_TIMEOUT */
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* An encoded frame waiting in a peer's queue. */
struct frame_buf {
    struct frame_buf *next;
    size_t len;
    uint8_t *data;
};

struct peer {
    struct transport *t;
    uint64_t id;
    struct sockaddr_in addr;
    uv_tcp_t *tcp; /* NULL while disconnected */
    uv_connect_t connect_req;
    uv_timer_t timer; /* connect timeout, then reconnect backoff */
    bool connected;
    uint32_t backoff_ms;
    struct frame_buf *head, *tail;
    size_t queued_bytes;
    uv_write_t write_req;
    struct frame_buf *in_flight; /* the frames of the write in progress, linked */
    bool flush_due;              /* written to this loop turn: what follows waits for on_turn_end */
    /* The handshake: our nonce, and the peer's Challenge read here. */
    bool authed;
    bool proved; /* our Proof is sent: the peer's Welcome comes next */
    uint8_t nonce[CODEC_NONCE_BYTES], their_nonce[CODEC_NONCE_BYTES];
    struct frame_reader reader;
};

/* An inbound connection goes through the handshake before anything else. */
enum conn_state { WAIT_HELLO, WAIT_PROOF, AUTHED };

struct conn {
    struct transport *t;
    uv_tcp_t tcp;
    struct frame_reader reader;
    enum conn_state state;
    uint64_t node;
    uint64_t incarnation; /* its Hello's */
    uint8_t their_nonce[CODEC_NONCE_BYTES], our_nonce[CODEC_NONCE_BYTES];
    uint64_t accepted_ms;
    char addr[64]; /* the peer's address, for refusals */
    struct conn *prev, *next;
};

/* Kinds of refusal, each logged at most once per REFUSAL_LOG_MS. */
enum refusal {
    REFUSE_HELLO,
    REFUSE_MEMBER,
    REFUSE_AUTH,
    REFUSE_TIMEOUT,
    REFUSE_PROTOCOL,
    REFUSE_INCARNATION,
    REFUSALS
};
enum {
    REFUSAL_LOG_MS = 10000,
    HANDSHAKE_MAX_FRAME = 1024, /* a handshake frame is under 100 bytes */
};

struct transport {
    uv_loop_t *loop;
    struct transport_config cfg;
    char host[64];
    uv_tcp_t listener;
    struct peer **peers; /* each allocated apart: handles point at them */
    size_t n_peers;
    struct conn *conns;
    transport_recv_cb on_recv;
    transport_log_cb on_log;
    transport_forward_cb on_forward;
    void *forward_data;
    transport_peer_check_cb on_peer_check;
    void *peer_check_data;
    void *data;
    struct transport_stats stats;
    uint64_t prng;
    int open_handles; /* freed when the last one closes after transport_close */
    bool closing;
    struct transport_fault faults[TRANSPORT_MAX_FAULTS];
    size_t n_faults;
    struct delayed *delayed; /* messages held back by delay faults */
    uv_timer_t sweep;        /* closes inbound connections stuck in the handshake */
    /* The end of a loop turn, where frames queued after a peer's first
     * write of the turn leave together (`nudge`, active meanwhile, keeps
     * the loop's poll from blocking before it). */
    uv_check_t turn_end;
    uv_idle_t nudge;
    uint64_t refused_at[REFUSALS], refusals_quiet[REFUSALS];
};

/* A message held back by a delay fault. */
struct delayed {
    uv_timer_t timer;
    struct transport *t;
    uint64_t group;
    raft_id to;
    uint8_t *frame;
    size_t len;
    struct delayed *prev, *next;
};

static uint64_t next_random(struct transport *t)
{
    return raft_splitmix64(&t->prng);
}

static const struct transport_fault *match_fault(const struct transport *t, raft_id peer,
                                                 unsigned direction, int type)
{
    for (size_t i = 0; i < t->n_faults; i++) {
        const struct transport_fault *f = &t->faults[i];
        if ((f->peer == 0 || f->peer == peer) && (f->directions & direction) &&
            (f->message_type == 0 || f->message_type == type))
            return f;
    }
    return NULL;
}

int transport_set_faults(struct transport *t, const struct transport_fault *rules, size_t n)
{
    if (n > TRANSPORT_MAX_FAULTS)
        return UV_EINVAL;
    if (n)
        memcpy(t->faults, rules, n * sizeof(*rules));
    t->n_faults = n;
    return 0;
}

static void tlog(struct transport *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tlog(struct transport *t, const char *fmt, ...)
{
    if (!t->on_log)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    t->on_log(t->data, line);
}

static void refuse(struct transport *t, enum refusal why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A refusal for the log: the first of its kind in an interval is written,
 * with how many were not; a peer retrying every few milliseconds (or an
 * attacker) does not fill the log. */
static void refuse(struct transport *t, enum refusal why, const char *fmt, ...)
{
    uint64_t now = uv_now(t->loop);
    if (t->refused_at[why] && now - t->refused_at[why] < REFUSAL_LOG_MS) {
        t->refusals_quiet[why]++;
        return;
    }
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (t->refusals_quiet[why])
        tlog(t, "%s (and %llu more like it in the last %d s)", line,
             (unsigned long long)t->refusals_quiet[why], REFUSAL_LOG_MS / 1000);
    else
        tlog(t, "%s", line);
    t->refused_at[why] = now;
    t->refusals_quiet[why] = 0;
}

void transport_config_default(struct transport_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "127.0.0.1";
    cfg->max_frame = CODEC_DEFAULT_MAX_FRAME;
    cfg->connect_timeout_ms = 1000;
    cfg->backoff_min_ms = 50;
    cfg->backoff_max_ms = 2000;
    cfg->max_queue_bytes = (size_t)64 << 20;
    cfg->user_timeout_ms = 1500;
    cfg->handshake_timeout_ms = 3000;
}

int transport_secret_from_file(const char *path, uint8_t key[TRANSPORT_KEY_BYTES], char *err,
                               size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cluster secret %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "cluster secret %s can be read by others (mode %03o): chmod 600 it, and choose "
                 "a new secret if others could read it",
                 path, (unsigned)(st.st_mode & 0777));
        close(fd);
        return -1;
    }
    uint8_t buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    size_t meaningful = 0;
    for (ssize_t i = 0; i < n; i++)
        meaningful += buf[i] != ' ' && buf[i] != '\n' && buf[i] != '\r' && buf[i] != '\t';
    if (n < 0 || meaningful < 16) {
        snprintf(err, errlen,
                 "cluster secret %s: %s (make one with: head -c 32 /dev/urandom | base64 > %s)",
                 path, n < 0 ? strerror(errno) : "shorter than 16 characters", path);
        sodium_memzero(buf, sizeof(buf));
        return -1;
    }
    /* Trailing whitespace (an editor's newline) does not change the key. */
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    crypto_generichash(key, TRANSPORT_KEY_BYTES, buf, (size_t)n, NULL, 0);
    sodium_memzero(buf, sizeof(buf));
    return 0;
}

/* The MAC of one side of the handshake. The label differs by side, so a
 * MAC cannot be reflected back; both nonces are fresh for this connection,
 * so none can be replayed on another. */
static void handshake_mac(const struct transport *t, char side, uint64_t connector,
                          uint64_t acceptor, const uint8_t *connector_nonce,
                          const uint8_t *acceptor_nonce, uint8_t mac[CODEC_MAC_BYTES])
{
    uint8_t msg[1 + 3 * 8 + 2 * CODEC_NONCE_BYTES];
    const uint64_t ids[3] = {t->cfg.cluster_id, connector, acceptor};
    msg[0] = (uint8_t)side;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 8; i++)
            msg[1 + 8 * k + i] = (uint8_t)(ids[k] >> (8 * i));
    memcpy(msg + 25, connector_nonce, CODEC_NONCE_BYTES);
    memcpy(msg + 25 + CODEC_NONCE_BYTES, acceptor_nonce, CODEC_NONCE_BYTES);
    crypto_auth_hmacsha256(mac, msg, sizeof(msg), t->cfg.secret);
}

static bool handshake_mac_ok(const struct transport *t, char side, uint64_t connector,
                             uint64_t acceptor, const uint8_t *connector_nonce,
                             const uint8_t *acceptor_nonce, const uint8_t *mac)
{
    uint8_t want[CODEC_MAC_BYTES];
    handshake_mac(t, side, connector, acceptor, connector_nonce, acceptor_nonce, want);
    return sodium_memcmp(want, mac, CODEC_MAC_BYTES) == 0; /* constant time */
}

/* A handshake frame, written on its own (the peer's queue waits for the
 * handshake to finish). A failure shows up on the read side. */
struct raw_write {
    uv_write_t req;
    uint8_t *data;
};

static void on_raw_write(uv_write_t *req, int status)
{
    (void)status;
    struct raw_write *w = req->data;
    free(w->data);
    free(w);
}

static void send_handshake(struct transport *t, uv_tcp_t *tcp, uint64_t to,
                           const struct codec_handshake *h)
{
    struct raw_write *w = malloc(sizeof(*w));
    size_t len;
    if (!w || uv_is_closing((uv_handle_t *)tcp) ||
        codec_encode_handshake(t->cfg.cluster_id, t->cfg.node_id, to, h, &w->data, &len) !=
            CODEC_OK) {
        free(w);
        return;
    }
    w->req.data = w;
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)tcp, &buf, 1, on_raw_write) < 0) {
        free(w->data);
        free(w);
    }
}

static void transport_free(struct transport *t)
{
    for (size_t i = 0; i < t->n_peers; i++)
        free(t->peers[i]);
    free(t->peers);
    free(t);
}

static void handle_closed(struct transport *t)
{
    if (--t->open_handles == 0 && t->closing)
        transport_free(t);
}

static void on_handle_close(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void on_peer_tcp_close(uv_handle_t *h)
{
    struct peer *p = h->data;
    free(h);
    handle_closed(p->t);
}

static void tune_socket(struct transport *t, uv_tcp_t *tcp)
{
    uv_tcp_nodelay(tcp, 1);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)tcp, &fd) == 0) {
        unsigned timeout = t->cfg.user_timeout_ms;
        /* A stalled peer fails the send within this time, not 15 minutes
         * (docs/cluster-scripts.md, netns mode). */
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof(timeout));
    }
}

/* ------------------------------------------------------------------------
 * Outbound: one connection per peer
 * ------------------------------------------------------------------------ */

static void peer_connect(struct peer *p);
static void peer_flush(struct peer *p);

static void frame_free(struct frame_buf *f)
{
    if (f) {
        free(f->data);
        free(f);
    }
}

static void peer_disconnect(struct peer *p)
{
    if (p->tcp) {
        if (!uv_is_closing((uv_handle_t *)p->tcp))
            uv_close((uv_handle_t *)p->tcp, on_peer_tcp_close);
        p->tcp = NULL;
    }
    p->connected = false;
    p->authed = p->proved = false;
    p->flush_due = false;
    frame_reader_free(&p->reader);
}

static void on_reconnect_timer(uv_timer_t *timer)
{
    peer_connect(timer->data);
}

/* Lost or failed: try again after a backoff that doubles up to a cap,
 * with jitter so that peers do not reconnect in lockstep. */
static void peer_fail(struct peer *p, const char *why)
{
    struct transport *t = p->t;
    /* A connection that never finished its handshake was not up: its
     * failure is a refusal, logged (once per interval) where it happened. */
    if (p->authed)
        tlog(t, "connection to node %llu lost: %s", (unsigned long long)p->id, why);
    peer_disconnect(p);
    if (t->closing)
        return;
    uint32_t delay = p->backoff_ms + (uint32_t)(next_random(t) % (p->backoff_ms / 2 + 1));
    p->backoff_ms =
        p->backoff_ms * 2 > t->cfg.backoff_max_ms ? t->cfg.backoff_max_ms : p->backoff_ms * 2;
    uv_timer_start(&p->timer, on_reconnect_timer, delay, 0);
    t->stats.reconnects++;
}

static void peer_handshake_frame(struct peer *p, const uint8_t *body, size_t len);

/* On our own connection to a peer, only its Challenge comes back; after
 * the handshake, nothing (reading notices EOF). */
static void on_outbound_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct peer *p = s->data;
    if (p->tcp != (uv_tcp_t *)s) {
        free(buf->base);
        return;
    }
    if (n < 0) {
        free(buf->base);
        peer_fail(p, uv_strerror((int)n));
        return;
    }
    if (n == 0) {
        free(buf->base);
        return;
    }
    if (p->authed) {
        free(buf->base);
        peer_fail(p, "it sent data on our connection after the handshake");
        return;
    }
    int rc = frame_reader_feed(&p->reader, buf->base, (size_t)n);
    free(buf->base);
    const uint8_t *body;
    size_t len;
    if (rc != CODEC_OK) {
        peer_fail(p, "its handshake frame is too long");
        return;
    }
    while (p->tcp && !p->authed && frame_reader_next(&p->reader, &body, &len))
        peer_handshake_frame(p, body, len);
}

static void alloc_buf(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(size);
    buf->len = buf->base ? size : 0;
}

/* Free the frames of the finished write; how many there were. */
static uint64_t release_in_flight(struct peer *p)
{
    uint64_t n = 0;
    while (p->in_flight) {
        struct frame_buf *f = p->in_flight;
        p->in_flight = f->next;
        p->queued_bytes -= f->len;
        frame_free(f);
        n++;
    }
    return n;
}

static void on_write(uv_write_t *req, int status)
{
    struct peer *p = req->data;
    uint64_t n = release_in_flight(p);
    if (status < 0) {
        if (status != UV_ECANCELED)
            peer_fail(p, uv_strerror(status));
        return;
    }
    p->t->stats.frames_sent += n;
    peer_flush(p);
}

enum { WRITE_MAX_FRAMES = 256, WRITE_MAX_BYTES = 4 << 20 };

static void on_turn_end(uv_check_t *h);

static void on_nudge(uv_idle_t *h)
{
    (void)h; /* its being active is the point: the loop's next poll does not block */
}

static void due_at_turn_end(struct peer *p)
{
    struct transport *t = p->t;
    p->flush_due = true;
    if (!uv_is_active((uv_handle_t *)&t->turn_end)) {
        uv_check_start(&t->turn_end, on_turn_end);
        uv_idle_start(&t->nudge, on_nudge);
    }
}

/* Everything queued (up to a bound) in one write: one system call for the
 * frames a loop turn produced, not one per frame. Straight to the socket
 * when nothing is in flight (uv_try_write): a uv_write that completes at
 * once costs the same write and then an epoll_ctl to re-arm the socket
 * (libuv 1.44), per frame sent. Frames queued later in the same turn wait
 * for its end (due_at_turn_end) and leave together. */
static void peer_flush(struct peer *p)
{
    /* A batch the socket took whole: the next at once, while it takes them
     * (a backlog after a reconnect, many groups' heartbeats in one tick). */
    while (p->authed && p->tcp && !p->in_flight && p->head) {
        uv_buf_t bufs[WRITE_MAX_FRAMES];
        unsigned n = 0;
        size_t bytes = 0;
        struct frame_buf *last = NULL;
        for (struct frame_buf *f = p->head;
             f && n < WRITE_MAX_FRAMES && (n == 0 || bytes + f->len <= WRITE_MAX_BYTES);
             f = f->next) {
            bufs[n++] = uv_buf_init((char *)f->data, (unsigned)f->len);
            bytes += f->len;
            last = f;
        }
        p->in_flight = p->head;
        p->head = last->next;
        last->next = NULL;
        if (!p->head)
            p->tail = NULL;
        int sent = uv_try_write((uv_stream_t *)p->tcp, bufs, n);
        if (sent >= 0 && (size_t)sent == bytes) {
            p->t->stats.frames_sent += release_in_flight(p);
            due_at_turn_end(p);
            continue;
        }
        if (sent < 0 && sent != UV_EAGAIN) {
            release_in_flight(p);
            peer_fail(p, uv_strerror(sent));
            return;
        }
        /* The rest through libuv, which waits for the socket to drain;
         * on_write goes on with what is queued behind it. */
        unsigned first = 0;
        size_t skip = sent > 0 ? (size_t)sent : 0;
        while (skip >= bufs[first].len) {
            skip -= bufs[first].len;
            first++;
        }
        bufs[first].base += skip;
        bufs[first].len -= skip;
        p->write_req.data = p;
        int rc = uv_write(&p->write_req, (uv_stream_t *)p->tcp, bufs + first, n - first, on_write);
        if (rc < 0) {
            release_in_flight(p);
            peer_fail(p, uv_strerror(rc));
        }
        return;
    }
}

static void on_turn_end(uv_check_t *h)
{
    struct transport *t = h->data;
    for (size_t i = 0; i < t->n_peers; i++) {
        struct peer *p = t->peers[i];
        if (!p->flush_due)
            continue;
        p->flush_due = false;
        peer_flush(p);
        p->flush_due = false; /* this was the turn's end: the next frame leaves at once */
    }
    uv_check_stop(&t->turn_end);
    uv_idle_stop(&t->nudge);
}

static void on_connect_timeout(uv_timer_t *timer);

static void on_connect(uv_connect_t *req, int status)
{
    struct peer *p = req->data;
    struct transport *t = p->t;
    /* Cancelled: the handle was closed (connect timeout, shutdown), and
     * whoever closed it has scheduled what comes next -- the reconnect
     * timer must not be stopped here, or the peer is never tried again
     * (found by a partition in network namespaces, where SYNs go
     * unanswered and connects time out). */
    if (status == UV_ECANCELED)
        return;
    uv_timer_stop(&p->timer);
    if (status < 0) {
        peer_fail(p, uv_strerror(status));
        return;
    }
    p->connected = true;
    tune_socket(t, p->tcp);
    frame_reader_init(&p->reader, HANDSHAKE_MAX_FRAME);
    uv_read_start((uv_stream_t *)p->tcp, alloc_buf, on_outbound_read);
    struct codec_handshake hello = {.kind = CODEC_HELLO,
                                    .node = t->cfg.node_id,
                                    .version = CODEC_WIRE_VERSION,
                                    .placement = t->cfg.placement,
                                    .incarnation = t->cfg.incarnation};
    randombytes_buf(p->nonce, sizeof(p->nonce));
    memcpy(hello.nonce, p->nonce, sizeof(hello.nonce));
    send_handshake(t, p->tcp, p->id, &hello);
    /* The peer's Challenge must come within the connect timeout too. */
    uv_timer_start(&p->timer, on_connect_timeout, t->cfg.connect_timeout_ms, 0);
}

static void on_connect_timeout(uv_timer_t *timer)
{
    struct peer *p = timer->data;
    peer_fail(p, p->connected ? "no answer to our Hello (is it a node of this cluster, with "
                                "this node in its list?)"
                              : "connect timed out");
}

/* The peer's Challenge: it proves the peer holds the cluster secret; our
 * Proof answers it. Then its Welcome says it took our Proof, and the
 * queued messages may leave: sent any sooner, they could arrive in the
 * same read as the Proof, where the peer still applies the handshake's
 * small frame limit. */
static void peer_handshake_frame(struct peer *p, const uint8_t *body, size_t len)
{
    struct transport *t = p->t;
    struct codec_decoded d;
    if (codec_decode(body, len, &d) != CODEC_OK) {
        peer_fail(p, "its answer to our Hello is not a Challenge");
        return;
    }
    const char *why = NULL;
    if (p->proved) {
        if (!d.is_handshake || d.hs.kind != CODEC_PROOF ||
            !handshake_mac_ok(t, 'W', t->cfg.node_id, p->id, p->nonce, p->their_nonce, d.hs.mac))
            why = "its answer to our Proof is not its Welcome";
    } else if (!d.is_handshake || d.hs.kind != CODEC_CHALLENGE) {
        why = "its answer to our Hello is not a Challenge";
    } else if (d.cluster_id != t->cfg.cluster_id || d.hs.node != p->id) {
        why = "another cluster or node answers at its address";
    } else if (!handshake_mac_ok(t, 'A', t->cfg.node_id, p->id, p->nonce, d.hs.nonce, d.hs.mac)) {
        why = "it does not hold our cluster secret (--cluster-secret differs)";
    }
    if (why) {
        t->stats.refused_auth++;
        refuse(t, REFUSE_AUTH, "refusing node %llu: %s", (unsigned long long)p->id, why);
        codec_decoded_free(&d);
        peer_fail(p, why);
        return;
    }
    if (!p->proved) {
        struct codec_handshake proof = {.kind = CODEC_PROOF};
        memcpy(p->their_nonce, d.hs.nonce, sizeof(p->their_nonce));
        handshake_mac(t, 'C', t->cfg.node_id, p->id, p->nonce, p->their_nonce, proof.mac);
        codec_decoded_free(&d);
        send_handshake(t, p->tcp, p->id, &proof);
        p->proved = true;
        return;
    }
    codec_decoded_free(&d);
    uv_timer_stop(&p->timer);
    p->authed = true;
    p->backoff_ms = t->cfg.backoff_min_ms;
    t->stats.connects++;
    peer_flush(p);
}

static void peer_connect(struct peer *p)
{
    struct transport *t = p->t;
    if (t->closing || p->tcp)
        return;
    p->tcp = malloc(sizeof(*p->tcp));
    if (!p->tcp)
        return;
    uv_tcp_init(t->loop, p->tcp);
    p->tcp->data = p;
    t->open_handles++;
    /* Bind outgoing sockets to our own address, so that partition rules
     * matching on addresses see them (docs/cluster-scripts.md, netns mode). */
    struct sockaddr_in self;
    uv_ip4_addr(t->host, 0, &self);
    uv_tcp_bind(p->tcp, (const struct sockaddr *)&self, 0);
    p->connect_req.data = p;
    int rc = uv_tcp_connect(&p->connect_req, p->tcp, (const struct sockaddr *)&p->addr, on_connect);
    if (rc < 0) {
        peer_fail(p, uv_strerror(rc));
        return;
    }
    uv_timer_start(&p->timer, on_connect_timeout, t->cfg.connect_timeout_ms, 0);
}

int transport_add_peer(struct transport *t, uint64_t id, const char *host, uint16_t port)
{
    struct peer **peers = realloc(t->peers, (t->n_peers + 1) * sizeof(*peers));
    if (!peers)
        return UV_ENOMEM;
    t->peers = peers;
    struct peer *p = calloc(1, sizeof(*p));
    if (!p)
        return UV_ENOMEM;
    p->t = t;
    p->id = id;
    p->backoff_ms = t->cfg.backoff_min_ms;
    int rc = uv_ip4_addr(host, port, &p->addr);
    if (rc < 0) {
        free(p);
        return rc;
    }
    t->peers[t->n_peers++] = p;
    uv_timer_init(t->loop, &p->timer);
    p->timer.data = p;
    t->open_handles++;
    peer_connect(p);
    return 0;
}

static struct peer *find_peer(struct transport *t, raft_id id)
{
    for (size_t i = 0; i < t->n_peers; i++)
        if (t->peers[i]->id == id)
            return t->peers[i];
    return NULL;
}

bool transport_has_peer(const struct transport *t, uint64_t id)
{
    return find_peer((struct transport *)t, id) != NULL;
}

/* Queue an encoded frame (taking it) for a peer. */
static int queue_frame(struct transport *t, struct peer *p, uint8_t *frame, size_t len)
{
    if (p->queued_bytes + len > t->cfg.max_queue_bytes) {
        free(frame);
        t->stats.dropped_full_queue++;
        return UV_ENOBUFS;
    }
    struct frame_buf *f = malloc(sizeof(*f));
    if (!f) {
        free(frame);
        return UV_ENOMEM;
    }
    *f = (struct frame_buf){NULL, len, frame};
    if (p->tail)
        p->tail->next = f;
    else
        p->head = f;
    p->tail = f;
    p->queued_bytes += len;
    if (!p->flush_due)
        peer_flush(p);
    return 0;
}

static void on_delayed_close(uv_handle_t *h)
{
    struct delayed *d = h->data;
    struct transport *t = d->t;
    if (d->prev)
        d->prev->next = d->next;
    else
        t->delayed = d->next;
    if (d->next)
        d->next->prev = d->prev;
    free(d->frame);
    free(d);
    handle_closed(t);
}

static void on_delayed(uv_timer_t *timer)
{
    struct delayed *d = timer->data;
    struct peer *p = find_peer(d->t, d->to);
    if (p && !d->t->closing) {
        queue_frame(d->t, p, d->frame, d->len);
        d->frame = NULL;
    }
    uv_close((uv_handle_t *)&d->timer, on_delayed_close);
}

/* Queue an encoded frame (taking it) for peer p, through the fault filter:
 * dropped, duplicated or delayed as the first matching rule says. */
static int send_frame(struct transport *t, struct peer *p, uint64_t group, int type, uint8_t *frame,
                      size_t len)
{
    const struct transport_fault *f = match_fault(t, p->id, TRANSPORT_OUT, type);
    if (f && f->drop_pct && next_random(t) % 100 < f->drop_pct) {
        t->stats.fault_dropped++;
        free(frame);
        return 0;
    }
    unsigned copies = 1;
    if (f && f->dup_pct && next_random(t) % 100 < f->dup_pct) {
        t->stats.fault_duplicated++;
        copies = 2;
    }
    for (unsigned c = 0; c < copies; c++) {
        uint8_t *copy = frame;
        if (c + 1 < copies) {
            if (!(copy = malloc(len)))
                break;
            memcpy(copy, frame, len);
        }
        if (f && f->delay_ms) {
            struct delayed *d = calloc(1, sizeof(*d));
            if (!d) {
                free(copy);
                return UV_ENOMEM;
            }
            *d = (struct delayed){
                .t = t, .group = group, .to = p->id, .frame = copy, .len = len, .next = t->delayed};
            if (t->delayed)
                t->delayed->prev = d;
            t->delayed = d;
            uv_timer_init(t->loop, &d->timer);
            d->timer.data = d;
            t->open_handles++;
            uv_timer_start(&d->timer, on_delayed, f->delay_ms, 0);
            t->stats.fault_delayed++;
            continue;
        }
        int rc = queue_frame(t, p, copy, len);
        if (rc)
            return rc;
    }
    return 0;
}

int transport_send(struct transport *t, uint64_t group, const struct raft_message *m)
{
    struct peer *p = find_peer(t, m->to);
    if (!p)
        return UV_EINVAL;
    uint8_t *frame;
    size_t len;
    if (codec_encode(m, t->cfg.cluster_id, group, &frame, &len) != CODEC_OK)
        return UV_EINVAL;
    return send_frame(t, p, group, (int)m->type, frame, len);
}

int transport_forward(struct transport *t, uint64_t to, uint64_t group, const void *body,
                      size_t len)
{
    struct peer *p = find_peer(t, to);
    if (!p)
        return UV_EINVAL;
    uint8_t *frame;
    size_t flen;
    if (codec_encode_forward(t->cfg.cluster_id, group, t->cfg.node_id, to, body, len, &frame,
                             &flen) != CODEC_OK)
        return UV_ENOMEM;
    return send_frame(t, p, group, TRANSPORT_FORWARD, frame, flen);
}

bool transport_peer_connected(const struct transport *t, uint64_t id)
{
    for (size_t i = 0; i < t->n_peers; i++)
        if (t->peers[i]->id == id)
            return t->peers[i]->authed;
    return false;
}

void transport_on_forward(struct transport *t, transport_forward_cb cb, void *data)
{
    t->on_forward = cb;
    t->forward_data = data;
}

void transport_on_peer_check(struct transport *t, transport_peer_check_cb cb, void *data)
{
    t->on_peer_check = cb;
    t->peer_check_data = data;
}

/* ------------------------------------------------------------------------
 * Inbound
 * ------------------------------------------------------------------------ */

static void on_conn_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct transport *t = c->t;
    frame_reader_free(&c->reader);
    free(c);
    handle_closed(t);
}

static void conn_close(struct conn *c)
{
    struct transport *t = c->t;
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        t->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void peer_address(uv_tcp_t *tcp, char *out, size_t len)
{
    struct sockaddr_storage ss;
    int n = sizeof(ss);
    snprintf(out, len, "?");
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &n) == 0 && ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        char ip[INET_ADDRSTRLEN];
        uv_ip4_name(in, ip, sizeof(ip));
        snprintf(out, len, "%s:%u", ip, ntohs(in->sin_port));
    }
}

/* The handshake, on the accepting side. False: close the connection. */
static bool conn_handshake(struct conn *c, const struct codec_decoded *d)
{
    struct transport *t = c->t;
    const struct codec_handshake *h = &d->hs;
    if (c->state == WAIT_HELLO) {
        if (!d->is_handshake || h->kind != CODEC_HELLO) {
            t->stats.malformed_frames++;
            refuse(t, REFUSE_PROTOCOL,
                   "refusing a connection from %s: it did not start with a Hello", c->addr);
            return false;
        }
        if (d->cluster_id != t->cfg.cluster_id || h->version != CODEC_WIRE_VERSION) {
            t->stats.refused_hellos++;
            refuse(t, REFUSE_HELLO,
                   "refusing node %llu from %s: it belongs to cluster %016llx (wire version %u), "
                   "we are cluster %016llx (version %d)",
                   (unsigned long long)h->node, c->addr, (unsigned long long)d->cluster_id,
                   h->version, (unsigned long long)t->cfg.cluster_id, CODEC_WIRE_VERSION);
            return false;
        }
        if (h->node == t->cfg.node_id || !find_peer(t, h->node) ||
            (d->msg.to && d->msg.to != t->cfg.node_id)) {
            t->stats.refused_members++;
            refuse(t, REFUSE_MEMBER,
                   "refusing node %llu from %s: not a member of this cluster (or not for us)",
                   (unsigned long long)h->node, c->addr);
            return false;
        }
        if (h->placement && t->cfg.placement && h->placement != t->cfg.placement) {
            t->stats.refused_hellos++;
            refuse(t, REFUSE_HELLO,
                   "refusing node %llu from %s: it places keys by another map (fingerprint "
                   "%016llx, ours %016llx): every node must be started with the same members, "
                   "--shards, --replicas and --vnodes",
                   (unsigned long long)h->node, c->addr, (unsigned long long)h->placement,
                   (unsigned long long)t->cfg.placement);
            return false;
        }
        c->node = h->node;
        c->incarnation = h->incarnation;
        memcpy(c->their_nonce, h->nonce, sizeof(c->their_nonce));
        randombytes_buf(c->our_nonce, sizeof(c->our_nonce));
        struct codec_handshake ch = {.kind = CODEC_CHALLENGE, .node = t->cfg.node_id};
        memcpy(ch.nonce, c->our_nonce, sizeof(ch.nonce));
        handshake_mac(t, 'A', c->node, t->cfg.node_id, c->their_nonce, c->our_nonce, ch.mac);
        send_handshake(t, &c->tcp, c->node, &ch);
        c->state = WAIT_PROOF;
        return true;
    }
    if (!d->is_handshake || h->kind != CODEC_PROOF ||
        !handshake_mac_ok(t, 'C', c->node, t->cfg.node_id, c->their_nonce, c->our_nonce, h->mac)) {
        t->stats.refused_auth++;
        refuse(t, REFUSE_AUTH,
               "refusing node %llu from %s: it does not hold our cluster secret "
               "(--cluster-secret differs)",
               (unsigned long long)c->node, c->addr);
        return false;
    }
    /* Only a peer that proved itself may have its incarnation recorded
     * (the host does so on first sight): one that did not could otherwise
     * poison the record and lock the real node out. */
    char why[400];
    if (t->on_peer_check &&
        !t->on_peer_check(t->peer_check_data, c->node, c->incarnation, why, sizeof(why))) {
        t->stats.refused_incarnation++;
        refuse(t, REFUSE_INCARNATION, "refusing node %llu from %s: %s", (unsigned long long)c->node,
               c->addr, why);
        return false;
    }
    c->state = AUTHED;
    c->reader.max_frame = t->cfg.max_frame;
    /* The peer is back (it just proved itself): if our own connection to it
     * waits out a reconnect backoff, try now -- a restarted node hears its
     * leader at once, not after up to backoff_max_ms. */
    struct peer *p = find_peer(t, c->node);
    if (p && !p->tcp && !t->closing) {
        uv_timer_stop(&p->timer);
        p->backoff_ms = t->cfg.backoff_min_ms;
        peer_connect(p);
    }
    struct codec_handshake welcome = {.kind = CODEC_PROOF};
    handshake_mac(t, 'W', c->node, t->cfg.node_id, c->their_nonce, c->our_nonce, welcome.mac);
    send_handshake(t, &c->tcp, c->node, &welcome);
    return true;
}

/* One frame from an inbound connection. False: close the connection. */
static bool handle_frame(struct conn *c, const uint8_t *body, size_t len)
{
    struct transport *t = c->t;
    struct codec_decoded d;
    if (codec_decode(body, len, &d) != CODEC_OK) {
        t->stats.malformed_frames++;
        refuse(t, REFUSE_PROTOCOL,
               "refusing a connection from %s: a frame that is not a Raft message", c->addr);
        return false;
    }
    bool keep = true;
    if (c->state != AUTHED) {
        keep = conn_handshake(c, &d);
    } else if (d.is_handshake || d.cluster_id != t->cfg.cluster_id || d.msg.to != t->cfg.node_id ||
               d.msg.from != c->node) {
        t->stats.malformed_frames++;
        refuse(t, REFUSE_PROTOCOL, "refusing node %llu from %s: a message not for us",
               (unsigned long long)c->node, c->addr);
        keep = false;
    } else if (d.is_forward) {
        const struct transport_fault *f = match_fault(t, c->node, TRANSPORT_IN, TRANSPORT_FORWARD);
        if (f && f->drop_pct && next_random(t) % 100 < f->drop_pct)
            t->stats.fault_dropped++;
        else if (t->on_forward)
            t->on_forward(t->forward_data, c->node, d.group, d.forward_body, d.forward_len);
    } else {
        const struct transport_fault *f = match_fault(t, c->node, TRANSPORT_IN, (int)d.msg.type);
        if (f && f->drop_pct && next_random(t) % 100 < f->drop_pct) {
            t->stats.fault_dropped++;
        } else {
            t->stats.frames_received++;
            t->on_recv(t->data, d.group, &d.msg);
            if (f && f->dup_pct && next_random(t) % 100 < f->dup_pct) {
                t->stats.fault_duplicated++;
                t->on_recv(t->data, d.group, &d.msg);
            }
        }
    }
    codec_decoded_free(&d);
    return keep;
}

static void on_inbound_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    struct transport *t = c->t;
    if (n < 0) {
        free(buf->base);
        if (c->state == WAIT_PROOF) {
            /* It had our Challenge and left: most often it did not accept
             * our MAC (or it gave up waiting, or restarted). */
            t->stats.refused_auth++;
            refuse(t, REFUSE_AUTH,
                   "refusing node %llu from %s: it left during the handshake (most often it "
                   "does not hold our cluster secret: --cluster-secret differs)",
                   (unsigned long long)c->node, c->addr);
        }
        conn_close(c);
        return;
    }
    int rc = frame_reader_feed(&c->reader, buf->base, (size_t)n);
    free(buf->base);
    if (rc == CODEC_ETOOBIG) {
        t->stats.oversized_frames++;
        refuse(t, REFUSE_PROTOCOL, "refusing %s from %s: a frame over the %zu-byte maximum%s",
               c->state == AUTHED ? "a node" : "a connection", c->addr, c->reader.max_frame,
               c->state == AUTHED ? "" : " before the handshake");
        conn_close(c);
        return;
    }
    const uint8_t *body;
    size_t len;
    while (rc == CODEC_OK && frame_reader_next(&c->reader, &body, &len))
        if (!handle_frame(c, body, len)) {
            conn_close(c);
            return;
        }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct transport *t = server->data;
    if (status < 0)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->t = t;
    uv_tcp_init(t->loop, &c->tcp);
    c->tcp.data = c;
    t->open_handles++;
    frame_reader_init(&c->reader, HANDSHAKE_MAX_FRAME);
    c->accepted_ms = uv_now(t->loop);
    c->next = t->conns;
    if (t->conns)
        t->conns->prev = c;
    t->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    tune_socket(t, &c->tcp);
    peer_address(&c->tcp, c->addr, sizeof(c->addr));
    /* Connections that have not proved anything are few (a peer has one at
     * a time, two across a reconnect): beyond a handful per peer, close at
     * once, so that a flood of them cannot take the descriptors peers and
     * clients need (each may otherwise stay for the handshake timeout). */
    size_t unproved = 0;
    for (struct conn *o = t->conns; o; o = o->next)
        unproved += o->state != AUTHED;
    if (unproved > 8 + 4 * t->n_peers) {
        t->stats.handshake_timeouts++;
        refuse(t, REFUSE_TIMEOUT, "refusing a connection from %s: %zu others are in the handshake",
               c->addr, unproved - 1);
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, alloc_buf, on_inbound_read);
}

/* Inbound connections that have not finished the handshake in time are
 * closed: a connection that says nothing holds no resources for long. */
static void on_sweep(uv_timer_t *timer)
{
    struct transport *t = timer->data;
    uint64_t now = uv_now(t->loop);
    for (struct conn *c = t->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != AUTHED && now - c->accepted_ms >= t->cfg.handshake_timeout_ms) {
            t->stats.handshake_timeouts++;
            refuse(t, REFUSE_TIMEOUT, "refusing a connection from %s: no handshake within %u ms",
                   c->addr, t->cfg.handshake_timeout_ms);
            conn_close(c);
        }
    }
    /* Refusals kept quiet in an interval that is over: say how many, even
     * when no other one comes to carry the count. */
    for (int k = 0; k < REFUSALS; k++)
        if (t->refusals_quiet[k] && now - t->refused_at[k] >= REFUSAL_LOG_MS) {
            tlog(t, "... and %llu more refusals like the last one in %d s",
                 (unsigned long long)t->refusals_quiet[k], REFUSAL_LOG_MS / 1000);
            t->refusals_quiet[k] = 0;
            t->refused_at[k] = 0;
        }
}

/* ------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------ */

int transport_init(struct transport **out, uv_loop_t *loop, const struct transport_config *cfg,
                   transport_recv_cb on_recv, transport_log_cb on_log, void *data)
{
    struct transport *t = calloc(1, sizeof(*t));
    if (!t)
        return UV_ENOMEM;
    t->loop = loop;
    t->cfg = *cfg;
    snprintf(t->host, sizeof(t->host), "%s", cfg->host ? cfg->host : "127.0.0.1");
    t->on_recv = on_recv;
    t->on_log = on_log;
    t->data = data;
    t->prng = cfg->node_id * 0x9e3779b97f4a7c15ULL + cfg->cluster_id;
    struct sockaddr_in addr;
    int rc = uv_ip4_addr(t->host, cfg->port, &addr);
    if (rc == 0) {
        uv_tcp_init(loop, &t->listener);
        t->listener.data = t;
        t->open_handles++;
        rc = uv_tcp_bind(&t->listener, (const struct sockaddr *)&addr, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&t->listener, 128, on_connection);
    }
    if (rc == 0 && sodium_init() < 0)
        rc = UV_EIO; /* no source of randomness for the handshake's nonces */
    if (rc == 0) {
        uv_check_init(loop, &t->turn_end);
        t->turn_end.data = t;
        uv_idle_init(loop, &t->nudge);
        t->nudge.data = t;
        t->open_handles += 2;
        uv_timer_init(loop, &t->sweep);
        t->sweep.data = t;
        t->open_handles++;
        uint32_t every = cfg->handshake_timeout_ms / 4 ? cfg->handshake_timeout_ms / 4 : 1;
        uv_timer_start(&t->sweep, on_sweep, every, every);
    }
    if (rc < 0) {
        transport_close(t);
        return rc;
    }
    *out = t;
    return 0;
}

uint16_t transport_port(const struct transport *t)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&t->listener, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void transport_close(struct transport *t)
{
    t->closing = true;
    for (size_t i = 0; i < t->n_peers; i++) {
        struct peer *p = t->peers[i];
        uv_timer_stop(&p->timer);
        peer_disconnect(p);
        while (p->head) {
            struct frame_buf *f = p->head;
            p->head = f->next;
            frame_free(f);
        }
        p->tail = NULL;
        p->timer.data = t;
        uv_close((uv_handle_t *)&p->timer, on_handle_close);
    }
    while (t->conns)
        conn_close(t->conns);
    if (t->sweep.loop && !uv_is_closing((uv_handle_t *)&t->sweep))
        uv_close((uv_handle_t *)&t->sweep, on_handle_close);
    if (t->turn_end.loop && !uv_is_closing((uv_handle_t *)&t->turn_end)) {
        uv_close((uv_handle_t *)&t->turn_end, on_handle_close);
        uv_close((uv_handle_t *)&t->nudge, on_handle_close);
    }
    for (struct delayed *d = t->delayed; d; d = d->next)
        if (!uv_is_closing((uv_handle_t *)&d->timer))
            uv_close((uv_handle_t *)&d->timer, on_delayed_close);
    if (t->listener.loop && !uv_is_closing((uv_handle_t *)&t->listener)) {
        t->listener.data = t;
        uv_close((uv_handle_t *)&t->listener, on_handle_close);
    }
    if (t->open_handles == 0)
        transport_free(t);
}

void transport_get_stats(const struct transport *t, struct transport_stats *st)
{
    *st = t->stats;
}
