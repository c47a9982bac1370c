/* transport.c — TCP between nodes on libuv; see transport.h. */
#define _GNU_SOURCE /* TCP_USER_TIMEOUT */
#include "transport.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

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
};

struct conn {
    struct transport *t;
    uv_tcp_t tcp;
    struct frame_reader reader;
    bool hello_ok;
    uint64_t node;
    struct conn *prev, *next;
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
    void *data;
    struct transport_stats stats;
    uint64_t prng;
    int open_handles; /* freed when the last one closes after transport_close */
    bool closing;
    struct transport_fault faults[TRANSPORT_MAX_FAULTS];
    size_t n_faults;
    struct delayed *delayed; /* messages held back by delay faults */
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
    uint64_t z = (t->prng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
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
         * (notes/network-faults.md). */
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
    if (p->connected)
        tlog(t, "connection to node %llu lost: %s", (unsigned long long)p->id, why);
    peer_disconnect(p);
    if (t->closing)
        return;
    uint64_t z = (t->prng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9ULL;
    uint32_t delay = p->backoff_ms + (uint32_t)(z % (p->backoff_ms / 2 + 1));
    p->backoff_ms =
        p->backoff_ms * 2 > t->cfg.backoff_max_ms ? t->cfg.backoff_max_ms : p->backoff_ms * 2;
    uv_timer_start(&p->timer, on_reconnect_timer, delay, 0);
    t->stats.reconnects++;
}

/* Nothing is expected on an outbound connection; reading notices EOF. */
static void on_outbound_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    free(buf->base);
    struct peer *p = s->data;
    if (n < 0 && p->tcp == (uv_tcp_t *)s)
        peer_fail(p, uv_strerror((int)n));
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

/* Everything queued (up to a bound) in one write: one system call for the
 * frames a loop turn produced, not one per frame. */
static void peer_flush(struct peer *p)
{
    if (!p->connected || p->in_flight || !p->head)
        return;
    uv_buf_t bufs[WRITE_MAX_FRAMES];
    unsigned n = 0;
    size_t bytes = 0;
    struct frame_buf *last = NULL;
    for (struct frame_buf *f = p->head;
         f && n < WRITE_MAX_FRAMES && (n == 0 || bytes + f->len <= WRITE_MAX_BYTES); f = f->next) {
        bufs[n++] = uv_buf_init((char *)f->data, (unsigned)f->len);
        bytes += f->len;
        last = f;
    }
    p->in_flight = p->head;
    p->head = last->next;
    last->next = NULL;
    if (!p->head)
        p->tail = NULL;
    p->write_req.data = p;
    int rc = uv_write(&p->write_req, (uv_stream_t *)p->tcp, bufs, n, on_write);
    if (rc < 0) {
        release_in_flight(p);
        peer_fail(p, uv_strerror(rc));
    }
}

static void queue_front(struct peer *p, uint8_t *data, size_t len)
{
    struct frame_buf *f = malloc(sizeof(*f));
    if (!f) {
        free(data);
        return;
    }
    *f = (struct frame_buf){p->head, len, data};
    p->head = f;
    if (!p->tail)
        p->tail = f;
    p->queued_bytes += len;
}

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
    p->backoff_ms = t->cfg.backoff_min_ms;
    t->stats.connects++;
    tune_socket(t, p->tcp);
    uv_read_start((uv_stream_t *)p->tcp, alloc_buf, on_outbound_read);
    uint8_t *hello;
    size_t len;
    if (codec_encode_hello(t->cfg.cluster_id, t->cfg.node_id, &hello, &len) == CODEC_OK)
        queue_front(p, hello, len);
    peer_flush(p);
}

static void on_connect_timeout(uv_timer_t *timer)
{
    struct peer *p = timer->data;
    peer_fail(p, "connect timed out");
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
     * matching on addresses see them (notes/network-faults.md, gotcha 2). */
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
            return t->peers[i]->connected;
    return false;
}

void transport_on_forward(struct transport *t, transport_forward_cb cb, void *data)
{
    t->on_forward = cb;
    t->forward_data = data;
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

/* One frame from an inbound connection. False: close the connection. */
static bool handle_frame(struct conn *c, const uint8_t *body, size_t len)
{
    struct transport *t = c->t;
    struct codec_decoded d;
    if (codec_decode(body, len, &d) != CODEC_OK) {
        t->stats.malformed_frames++;
        tlog(t, "refusing a connection: a frame that is not a Raft message");
        return false;
    }
    bool keep = true;
    if (!c->hello_ok) {
        if (!d.is_hello) {
            tlog(t, "refusing a connection: it did not start with a Hello");
            keep = false;
        } else if (d.cluster_id != t->cfg.cluster_id || d.hello_version != CODEC_WIRE_VERSION) {
            t->stats.refused_hellos++;
            tlog(t,
                 "refusing node %llu: it belongs to cluster %016llx (wire version %u), we are "
                 "cluster %016llx (version %d)",
                 (unsigned long long)d.hello_node, (unsigned long long)d.cluster_id,
                 d.hello_version, (unsigned long long)t->cfg.cluster_id, CODEC_WIRE_VERSION);
            keep = false;
        } else {
            c->hello_ok = true;
            c->node = d.hello_node;
        }
    } else if (d.is_hello || d.cluster_id != t->cfg.cluster_id || d.msg.to != t->cfg.node_id ||
               d.msg.from != c->node) {
        t->stats.malformed_frames++;
        tlog(t, "refusing node %llu: a message not for us", (unsigned long long)c->node);
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
        conn_close(c);
        return;
    }
    int rc = frame_reader_feed(&c->reader, buf->base, (size_t)n);
    free(buf->base);
    if (rc == CODEC_ETOOBIG) {
        t->stats.oversized_frames++;
        tlog(t, "refusing node %llu: a frame over the %zu-byte maximum",
             (unsigned long long)c->node, t->cfg.max_frame);
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
    frame_reader_init(&c->reader, t->cfg.max_frame);
    c->next = t->conns;
    if (t->conns)
        t->conns->prev = c;
    t->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    tune_socket(t, &c->tcp);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_buf, on_inbound_read);
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
