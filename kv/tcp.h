/* tcp.h — what the front doors (RESP, HTTP) share on libuv: listening on
 * host:port, and writing a buffer whose memory the write then owns. */
#ifndef KV_TCP_H
#define KV_TCP_H

#include <uv.h>

#include "buf.h"

/* Initialize server, bind and listen; on_conn as for uv_listen. Returns 0
 * or a libuv error; either way the caller closes server eventually. */
int tcp_listen(uv_tcp_t *server, uv_loop_t *loop, const char *host, uint16_t port,
               uv_connection_cb on_conn);
/* Write b's bytes (taking them; b is left empty). done(stream) is called
 * when the write finished (NULL: nothing). Returns 0 or a libuv error. */
int tcp_write_buf(uv_stream_t *stream, struct buf *b, void (*done)(uv_stream_t *));
/* Bytes queued in writes not yet done. */
size_t tcp_write_queue(uv_stream_t *stream);

#endif /* KV_TCP_H */
