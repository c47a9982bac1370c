/* tcp.c — see tcp.h. */
#include "tcp.h"

#include <stdlib.h>
#include <string.h>

int tcp_listen(uv_tcp_t *server, uv_loop_t *loop, const char *host, uint16_t port,
               uv_connection_cb on_conn)
{
    struct sockaddr_in addr;
    uv_tcp_init(loop, server); /* first: the caller closes it whatever happens */
    int rc = uv_ip4_addr(host, port, &addr);
    if (rc)
        return rc;
    if ((rc = uv_tcp_bind(server, (const struct sockaddr *)&addr, 0)) ||
        (rc = uv_listen((uv_stream_t *)server, 128, on_conn)))
        return rc;
    return 0;
}

struct write_req {
    uv_write_t req;
    char *data;
    void (*done)(uv_stream_t *);
};

static void on_write(uv_write_t *req, int status)
{
    (void)status; /* a failed write shows up as a read error, which closes */
    struct write_req *w = (struct write_req *)req;
    if (w->done)
        w->done(req->handle);
    free(w->data);
    free(w);
}

size_t tcp_write_queue(uv_stream_t *stream)
{
    return uv_stream_get_write_queue_size(stream);
}

/* ------------------------------------------------------------------------
 * Doors and their connections
 * ------------------------------------------------------------------------ */

static void door_handle_gone(struct tcp_door *d)
{
    if (--d->open_handles)
        return;
    free(d->due);
    d->due = NULL;
    d->n_due = d->cap_due = 0;
    if (d->stopped)
        d->stopped(d);
}

/* A connection holds its door: the door (freed by stopped()) goes only
 * after its listener, its timer and every connection (libuv runs close
 * callbacks newest first, so the listener's would otherwise come first). */
static void drop_due(struct tcp_conn *c)
{
    struct tcp_door *d = c->door;
    for (size_t i = 0; c->written && i < d->n_due; i++)
        if (d->due[i] == c)
            d->due[i] = NULL; /* run_due may be walking the array */
    c->written = NULL;
}

static void conn_free(struct tcp_conn *c)
{
    struct tcp_door *d = c->door;
    drop_due(c);
    if (c->counted && d->limits)
        d->limits->clients--;
    if (d->release)
        d->release(c);
    free(c);
    door_handle_gone(d);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct tcp_conn *c = h->data;
    c->closed = true;
    if (!c->busy)
        conn_free(c);
}

void tcp_conn_close(struct tcp_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->prev)
        c->prev->next = c->next;
    else if (c->door->conns == c)
        c->door->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

bool tcp_conn_answered(struct tcp_conn *c)
{
    c->busy = false;
    if (!c->closed)
        return false;
    conn_free(c);
    return true;
}

/* The done callbacks of writes that went out at once. They run here, after
 * the turn's I/O and before libuv frees closed handles (a closed
 * connection's callback is skipped), in turn order; a callback that writes
 * again queues itself anew, and runs in this same pass. */
static void run_due(uv_check_t *h)
{
    struct tcp_door *d = h->data;
    for (size_t i = 0; i < d->n_due; i++) {
        struct tcp_conn *c = d->due[i];
        if (!c)
            continue;
        void (*done)(uv_stream_t *) = c->written;
        c->written = NULL;
        if (!c->closing)
            done((uv_stream_t *)&c->tcp);
    }
    d->n_due = 0;
    uv_check_stop(&d->later);
    uv_idle_stop(&d->nudge);
}

static void on_nudge(uv_idle_t *h)
{
    (void)h; /* its being active is the point: the next poll does not block */
}

static int write_later(struct tcp_conn *c, void (*done)(uv_stream_t *))
{
    struct tcp_door *d = c->door;
    if (!done)
        return 0;
    if (!c->written) {
        if (d->n_due == d->cap_due) {
            size_t cap = d->cap_due ? 2 * d->cap_due : 16;
            struct tcp_conn **v = realloc(d->due, cap * sizeof(*v));
            if (!v)
                return UV_ENOMEM;
            d->due = v;
            d->cap_due = cap;
        }
        d->due[d->n_due++] = c;
        uv_check_start(&d->later, run_due);
        uv_idle_start(&d->nudge, on_nudge);
    }
    c->written = done;
    return 0;
}

int tcp_conn_write(struct tcp_conn *c, struct buf *b, void (*done)(uv_stream_t *))
{
    if (b->oom) {
        buf_free(b);
        return UV_ENOMEM;
    }
    if (!b->len)
        return 0;
    uv_stream_t *stream = (uv_stream_t *)&c->tcp;
    /* Straight to the socket when nothing is queued before it (uv_try_write
     * refuses otherwise, so bytes keep their order). A uv_write that
     * completes at once costs the same write, then re-arms the socket's
     * epoll registration -- an epoll_ctl per reply in this libuv (1.44):
     * a third of a GET's system calls on the leader. A small buffer stays
     * with b, for the next reply. */
    uv_buf_t whole = uv_buf_init(b->p, (unsigned)b->len);
    int n = uv_try_write(stream, &whole, 1);
    if (n == (int)b->len) {
        if (b->cap > 64 << 10)
            buf_free(b); /* one large reply: not kept for a small one */
        else
            b->len = 0;
        return write_later(c, done);
    }
    if (n < 0 && n != UV_EAGAIN)
        return n; /* the connection is broken: the caller closes it */
    struct write_req *w = malloc(sizeof(*w));
    if (!w) {
        buf_free(b);
        return UV_ENOMEM;
    }
    size_t len;
    w->data = buf_take(b, &len);
    w->done = done;
    size_t sent = n > 0 ? (size_t)n : 0;
    uv_buf_t ub = uv_buf_init(w->data + sent, (unsigned)(len - sent));
    int rc = uv_write(&w->req, stream, &ub, 1, on_write);
    if (rc) {
        free(w->data);
        free(w);
    }
    return rc;
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

static void since(struct tcp_conn *c, uint64_t *at, bool on)
{
    if (!on)
        *at = 0;
    else if (!*at)
        *at = uv_now(c->door->loop) | 1; /* never 0; may be now + 1 */
}

/* since > now happens: a clock started in an even millisecond and swept in
 * it (the loop's time stands still through a turn). Unsigned, now - since
 * would then be 2^64 - 1 -- every connection whose clock had just started
 * was closed at once, with no reply, in a loaded cluster. */
bool tcp_held_longer(uint64_t now, uint64_t since, uint64_t limit)
{
    return limit && since && now >= since && now - since >= limit;
}

void tcp_conn_partial(struct tcp_conn *c, bool partial)
{
    since(c, &c->partial_since_ms, partial);
}

void tcp_conn_stalled(struct tcp_conn *c, bool stalled)
{
    since(c, &c->stalled_since_ms, stalled);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct tcp_door *d = server->data;
    if (status < 0 || d->stopping)
        return;
    struct tcp_limits *lim = d->limits;
    if (lim && lim->max_clients && lim->clients >= lim->max_clients) {
        /* Refused with a word, as Redis does; the client may try again. */
        uv_tcp_t *t = malloc(sizeof(*t));
        if (!t)
            return;
        uv_tcp_init(d->loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0 && d->full_reply) {
            uv_buf_t b = uv_buf_init((char *)d->full_reply, (unsigned)strlen(d->full_reply));
            uv_try_write((uv_stream_t *)t, &b, 1);
        }
        uv_close((uv_handle_t *)t, free_handle);
        lim->refused++;
        return;
    }
    struct tcp_conn *c = calloc(1, d->conn_size);
    if (!c)
        return;
    c->door = d;
    d->open_handles++;
    uv_tcp_init(d->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (lim) {
        lim->clients++;
        c->counted = true;
    }
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    d->accepted(c);
}

static void on_door_handle_closed(uv_handle_t *h)
{
    door_handle_gone(h->data);
}

/* A connection holding part of a request for longer than the timeout is
 * closed: a client sending a byte a second must not keep a buffer (and a
 * connection slot) forever. So is one whose replies have waited unsent
 * too long: it does not read them. */
static void on_sweep(uv_timer_t *t)
{
    struct tcp_door *d = t->data;
    struct tcp_limits *lim = d->limits;
    uint64_t now = uv_now(d->loop);
    for (struct tcp_conn *c = d->conns, *next; c; c = next) {
        next = c->next;
        if (tcp_held_longer(now, c->partial_since_ms, lim->partial_timeout_ms)) {
            lim->timed_out++;
            tcp_conn_close(c);
        } else if (tcp_held_longer(now, c->stalled_since_ms, lim->output_timeout_ms)) {
            lim->output_closed++;
            tcp_conn_close(c);
        }
    }
}

int tcp_door_start(struct tcp_door *d, uv_loop_t *loop, const char *host, uint16_t port)
{
    d->loop = loop;
    int rc = tcp_listen(&d->listener, loop, host, port, on_connection);
    d->listener.data = d;
    d->open_handles += 4;
    uv_timer_init(loop, &d->sweep);
    d->sweep.data = d;
    uv_check_init(loop, &d->later);
    d->later.data = d;
    uv_idle_init(loop, &d->nudge);
    d->nudge.data = d;
    if (rc) {
        tcp_door_stop(d);
        return rc;
    }
    if (d->limits && (d->limits->partial_timeout_ms || d->limits->output_timeout_ms)) {
        uint64_t shortest = d->limits->partial_timeout_ms;
        if (!shortest || (d->limits->output_timeout_ms && d->limits->output_timeout_ms < shortest))
            shortest = d->limits->output_timeout_ms;
        uint64_t every = shortest / 4 ? shortest / 4 : 1;
        uv_timer_start(&d->sweep, on_sweep, every, every);
    }
    return 0;
}

void tcp_door_stop(struct tcp_door *d)
{
    d->stopping = true;
    while (d->conns)
        tcp_conn_close(d->conns);
    uv_close((uv_handle_t *)&d->listener, on_door_handle_closed);
    uv_close((uv_handle_t *)&d->sweep, on_door_handle_closed);
    uv_close((uv_handle_t *)&d->later, on_door_handle_closed);
    uv_close((uv_handle_t *)&d->nudge, on_door_handle_closed);
}
