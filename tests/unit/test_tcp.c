/* The front doors' connections: kv/tcp.c. A connection that holds part of a
 * request longer than the partial timeout is closed; one that holds none, or
 * whose clock has only just started, is not. */
#include "harness.h"
#include "tcp.h"

#include <stdlib.h>
#include <string.h>

/* The clock is the loop's time with its low bit set (0 means stopped), so a
 * clock started in an even millisecond reads a millisecond ahead of the
 * loop. Unsigned, now - since underflowed there: a sweep in that same
 * millisecond closed every connection whose clock had just started. */
static void test_a_clock_started_this_millisecond_has_not_run_out(void)
{
    CHECK(!tcp_held_longer(100, 101, 1000)); /* started "at 101" while the loop says 100 */
    CHECK(!tcp_held_longer(101, 101, 1000));
    CHECK(!tcp_held_longer(1100, 101, 1000));
    CHECK(tcp_held_longer(1101, 101, 1000));
    CHECK(tcp_held_longer(5000, 101, 1000));
    CHECK(!tcp_held_longer(5000, 0, 1000)); /* not running */
    CHECK(!tcp_held_longer(5000, 101, 0));  /* no limit */
}

/* A door whose connections hold part of a request until a newline arrives. */
struct line_conn {
    struct tcp_conn base;
    char last;
};

struct client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    const char *send;
    uint64_t closed_at; /* loop time the server closed it; 0: still open */
    bool gone;
};

static uv_loop_t loop;
static uint64_t started;

static void line_alloc(uv_handle_t *h, size_t size, uv_buf_t *b)
{
    (void)h;
    b->base = malloc(size);
    b->len = b->base ? size : 0;
}

static void line_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct line_conn *c = s->data;
    if (n > 0) {
        c->last = b->base[n - 1];
        tcp_conn_partial(&c->base, c->last != '\n');
    } else if (n < 0) {
        tcp_conn_close(&c->base);
    }
    free(b->base);
}

static void line_accepted(struct tcp_conn *base)
{
    uv_read_start((uv_stream_t *)&base->tcp, line_alloc, line_read);
}

static void door_stopped(struct tcp_door *d)
{
    (void)d;
}

static void client_alloc(uv_handle_t *h, size_t size, uv_buf_t *b)
{
    line_alloc(h, size, b);
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct client *cl = s->data;
    free(b->base);
    if (n < 0 && !cl->closed_at) {
        cl->closed_at = uv_now(&loop) - started + 1;
        uv_read_stop(s);
    }
}

static void client_connected(uv_connect_t *req, int status)
{
    struct client *cl = req->data;
    CHECK_EQ(status, 0);
    uv_buf_t b = uv_buf_init((char *)cl->send, (unsigned)strlen(cl->send));
    CHECK_EQ(uv_write(&cl->write, (uv_stream_t *)&cl->tcp, &b, 1, NULL), 0);
    uv_read_start((uv_stream_t *)&cl->tcp, client_alloc, client_read);
}

static void client_gone(uv_handle_t *h)
{
    ((struct client *)h->data)->gone = true;
}

static void on_deadline(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void test_a_partial_request_is_closed_after_the_timeout_and_a_whole_one_is_not(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct tcp_limits limits = {.partial_timeout_ms = 200};
    struct tcp_door door = {.conn_size = sizeof(struct line_conn),
                            .accepted = line_accepted,
                            .stopped = door_stopped,
                            .limits = &limits};
    CHECK_EQ(tcp_door_start(&door, &loop, "127.0.0.1", 0), 0);
    struct sockaddr_storage sa;
    int len = sizeof(sa);
    CHECK_EQ(uv_tcp_getsockname(&door.listener, (struct sockaddr *)&sa, &len), 0);

    struct client clients[2] = {{.send = "half a requ"}, {.send = "a whole line\n"}};
    for (int i = 0; i < 2; i++) {
        uv_tcp_init(&loop, &clients[i].tcp);
        clients[i].tcp.data = clients[i].connect.data = &clients[i];
        CHECK_EQ(uv_tcp_connect(&clients[i].connect, &clients[i].tcp, (struct sockaddr *)&sa,
                                client_connected),
                 0);
    }
    uv_timer_t deadline;
    uv_timer_init(&loop, &deadline);
    uv_timer_start(&deadline, on_deadline, 1000, 0);
    started = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);

    CHECK(clients[0].closed_at >= 150 && clients[0].closed_at <= 800);
    CHECK_EQ(clients[1].closed_at, 0);
    CHECK_EQ(limits.timed_out, 1);

    for (int i = 0; i < 2; i++)
        uv_close((uv_handle_t *)&clients[i].tcp, client_gone);
    uv_close((uv_handle_t *)&deadline, NULL);
    tcp_door_stop(&door);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(clients[0].gone && clients[1].gone);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_a_clock_started_this_millisecond_has_not_run_out),
        HARNESS_TEST(test_a_partial_request_is_closed_after_the_timeout_and_a_whole_one_is_not),
    };
    return harness_main(argc, argv, "tcp", tests, sizeof(tests) / sizeof(tests[0]));
}
