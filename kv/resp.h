/* resp.h — the Redis-protocol front door: redis-cli and redis-benchmark
 * talk to any kvd node unchanged.
 *
 * Requests are parsed with hiredis' reader (RESP arrays of bulk strings,
 * as every Redis client sends them) or, for a person typing into nc or
 * telnet, as an inline command line. Each connection is one client
 * session {client_id, seq} (thesis §6.3) and runs its commands one at a
 * time, in order, so a pipelined GET sees the SET before it; replies come
 * back in order. Commands: PING ECHO QUIT SELECT CLIENT COMMAND CONFIG INFO
 * (with a "# Raft" section), GET SET (NX) SETNX DEL EXISTS INCR INCRBY DECR
 * DECRBY MGET, CAS key expected new, RAFT.STATUS RAFT.LEADER
 * RAFT.TRANSFER [id], and SESSION client seq <command> for clients that
 * retry themselves (kvctl). See docs/kvd.md.
 */
#ifndef KV_RESP_H
#define KV_RESP_H

#include <uv.h>

#include "server.h"

struct resp_server;

int resp_start(struct resp_server **out, uv_loop_t *loop, struct kv_server *kv, const char *host,
               uint16_t port);
/* Close the listener and every connection. */
void resp_stop(struct resp_server *rs);

#endif /* KV_RESP_H */
