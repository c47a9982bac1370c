/* tcp.c — see tcp.h. */
#include "tcp.h"

#include <stdlib.h>

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

int tcp_write_buf(uv_stream_t *stream, struct buf *b, void (*done)(uv_stream_t *))
{
    if (b->oom) {
        buf_free(b);
        return UV_ENOMEM;
    }
    if (!b->len)
        return 0;
    struct write_req *w = malloc(sizeof(*w));
    if (!w) {
        buf_free(b);
        return UV_ENOMEM;
    }
    size_t len;
    w->data = buf_take(b, &len);
    w->done = done;
    uv_buf_t ub = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, stream, &ub, 1, on_write);
    if (rc) {
        free(w->data);
        free(w);
    }
    return rc;
}

size_t tcp_write_queue(uv_stream_t *stream)
{
    return uv_stream_get_write_queue_size(stream);
}

/* ------------------------------------------------------------------------
 * Doors and their connections
 * ------------------------------------------------------------------------ */

static void conn_free(struct tcp_conn *c)
{
    if (c->door->release)
        c->door->release(c);
    free(c);
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

static void on_connection(uv_stream_t *server, int status)
{
    struct tcp_door *d = server->data;
    if (status < 0 || d->stopping)
        return;
    struct tcp_conn *c = calloc(1, d->conn_size);
    if (!c)
        return;
    c->door = d;
    uv_tcp_init(d->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    d->accepted(c);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct tcp_door *d = h->data;
    if (d->stopped)
        d->stopped(d);
}

int tcp_door_start(struct tcp_door *d, uv_loop_t *loop, const char *host, uint16_t port)
{
    d->loop = loop;
    int rc = tcp_listen(&d->listener, loop, host, port, on_connection);
    d->listener.data = d;
    if (rc) {
        d->stopping = true;
        uv_close((uv_handle_t *)&d->listener, on_listener_closed);
    }
    return rc;
}

void tcp_door_stop(struct tcp_door *d)
{
    d->stopping = true;
    while (d->conns)
        tcp_conn_close(d->conns);
    uv_close((uv_handle_t *)&d->listener, on_listener_closed);
}
