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
