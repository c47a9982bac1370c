/* http.h — the HTTP/JSON front door, on libuv with nodejs' http-parser.
 *
 *   GET    /v1/kv/KEY            200 {"key","value"} | 404
 *   PUT    /v1/kv/KEY            body = the value; 200 {"ok":true,"index":N}
 *   DELETE /v1/kv/KEY            200 {"deleted":0|1}
 *   POST   /v1/cas/KEY           {"expected":"old"|"expect_absent":true,"value":"new"}
 *                                200 {"ok":true} | 409 {"ok":false,"current":...}
 *   GET    /v1/status            id, role, term, leader, commit, applied, peers...
 *   POST   /v1/transfer[?to=N]   leadership transfer (send it to the leader)
 *   GET    /metrics              Prometheus text format (raftkv_*)
 *   GET|PUT|DELETE /v1/admin/faults   the transport's fault filter (docs/kvd.md)
 *
 * Errors are JSON {"error": "..."}: 503 for no quorum or an unavailable
 * node, 400 for a bad request; 413 for a body over 16 MiB, 414 for a URL
 * over 8 KiB, 431 for a header over 8 KiB. A request that says
 * Connection: close, or one that cannot be parsed (these 4xx), is the
 * connection's last: it is answered, nothing after it is parsed, and the
 * connection closes. A connection is one client session; a
 * client that retries on its own sends X-Client-Id and X-Seq headers
 * (thesis §6.3: the retry is answered, not applied again). Values that
 * are not UTF-8 come back as "value_base64", on every node.
 */
#ifndef KV_HTTP_H
#define KV_HTTP_H

#include <uv.h>

#include "server.h"

struct http_server;

int http_start(struct http_server **out, uv_loop_t *loop, struct kv_server *kv, const char *host,
               uint16_t port);
void http_stop(struct http_server *hs);

#endif /* KV_HTTP_H */
