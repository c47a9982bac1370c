/* tcp.h — what the front doors (RESP, HTTP) share on libuv: listening on
 * host:port, and writing a buffer whose memory the write then owns. */
#ifndef KV_TCP_H
#define KV_TCP_H

#include <stdbool.h>
#include <uv.h>

#include "buf.h"

/* Initialize server, bind and listen; on_conn as for uv_listen. Returns 0
 * or a libuv error; either way the caller closes server eventually. */
int tcp_listen(uv_tcp_t *server, uv_loop_t *loop, const char *host, uint16_t port,
               uv_connection_cb on_conn);
/* Bytes queued in writes not yet done. */
size_t tcp_write_queue(uv_stream_t *stream);

/* A front door: a listener and its connections, each freed once its handle is closed
 * and no request of it is with the server. A door's connection struct embeds a
 * struct tcp_conn as its first member. */
struct tcp_door;

/* Limits shared by all the doors of a node (kvd --max-clients, --client-timeout), and
 * what they did. */
struct tcp_limits {
    unsigned max_clients;        /* open connections, all doors together; 0: no limit */
    uint32_t partial_timeout_ms; /* a connection that holds part of a request longer is
                                  * closed (slowloris); 0: never */
    size_t output_limit;         /* a connection whose unsent replies exceed this is
                                  * closed at once; 0: no limit */
    uint32_t output_timeout_ms;  /* ...or whose replies wait unsent, no write completing,
                                  * this long: it does not read; 0: never */
    size_t max_request_bytes;    /* one RESP command or HTTP body; larger is refused and the
                                  * connection closed (--max-request-bytes); 0: 16 MiB */
    unsigned clients;            /* open now */
    uint64_t refused, timed_out, output_closed; /* connections refused or closed */
    uint64_t too_large;                         /* ...for a request over max_request_bytes */
};

/* The largest request the doors take: max_request_bytes, at most the
 * doors' own bound (what one Raft frame can carry, with room to spare). */
enum { TCP_MAX_REQUEST_BYTES = 16 << 20 };
static inline size_t tcp_request_limit(const struct tcp_limits *lim)
{
    return lim && lim->max_request_bytes && lim->max_request_bytes < TCP_MAX_REQUEST_BYTES
               ? lim->max_request_bytes
               : TCP_MAX_REQUEST_BYTES;
}

struct tcp_conn {
    uv_tcp_t tcp; /* tcp.data points to the connection */
    struct tcp_door *door;
    struct tcp_conn *prev, *next;
    bool busy;                 /* a request is with the server: freeing waits for its answer */
    bool counted;              /* in limits->clients */
    uint64_t partial_since_ms; /* when it began to hold part of a request (0: it does not) */
    uint64_t stalled_since_ms; /* when its replies began to wait unsent (0: they do not) */
    bool closing;              /* uv_close called */
    bool closed;               /* its close callback ran */
    /* A write that went out whole at once: its done callback, due later in
     * this loop turn (tcp_conn_write); NULL: none due. */
    void (*written)(uv_stream_t *);
};

struct tcp_door {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct tcp_conn *conns;
    bool stopping;
    size_t conn_size;                     /* of the door's connection struct */
    void (*accepted)(struct tcp_conn *c); /* set it up and start reading */
    void (*release)(struct tcp_conn *c);  /* free what it owns (not c itself) */
    void (*stopped)(struct tcp_door *d);  /* after tcp_door_stop: listener closed */
    struct tcp_limits *limits;            /* NULL: none */
    const char *full_reply;               /* written to a connection refused for max_clients */
    uv_timer_t sweep;                     /* partial-request timeouts */
    /* Connections whose writes went out at once, their done callbacks due
     * (run by `later`, after this turn's I/O; `nudge` keeps the loop from
     * blocking in between when one is queued outside the I/O phase). */
    uv_check_t later;
    uv_idle_t nudge;
    struct tcp_conn **due;
    size_t n_due, cap_due;
    int open_handles;
};

/* Write b's bytes to c (taking them; b is left empty). done(stream) is
 * called when the write finished (NULL: nothing), always from the loop,
 * never from inside this call. Returns 0 or a libuv error. */
int tcp_conn_write(struct tcp_conn *c, struct buf *b, void (*done)(uv_stream_t *));

/* Listen on host:port. On error the door is stopped (stopped() will be called). */
int tcp_door_start(struct tcp_door *d, uv_loop_t *loop, const char *host, uint16_t port);
void tcp_conn_close(struct tcp_conn *c);
/* The door says whether c holds part of a request now (for the partial timeout), and
 * whether its replies wait because it does not read them (for the output timeout). */
void tcp_conn_partial(struct tcp_conn *c, bool partial);
void tcp_conn_stalled(struct tcp_conn *c, bool stalled);
/* Whether a clock started at since (0: not running) has run for limit ms (0: no
 * limit) by now, the loop's time. since may be a millisecond ahead of now: it is the
 * loop's time with its low bit set, so that it is never 0. */
bool tcp_held_longer(uint64_t now, uint64_t since, uint64_t limit);
/* The server answered c's request (busy -> false). True if c was closed meanwhile and is
 * now freed: the caller must not touch it. */
bool tcp_conn_answered(struct tcp_conn *c);
/* Close every connection and the listener. */
void tcp_door_stop(struct tcp_door *d);

#endif /* KV_TCP_H */
