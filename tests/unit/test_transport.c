/* TCP between nodes: raft/io/transport.c, on loopback, in one process
 * with one libuv loop. Every wait is on a condition with a timeout. */
#include "harness.h"
#include "transport.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct inbox {
    int received;
    struct raft_message last;
    uint64_t group;
    int log_lines;
    char log[256];
};

static void on_recv(void *data, uint64_t group, const struct raft_message *m)
{
    struct inbox *in = data;
    in->received++;
    in->last = *m;
    in->group = group;
}

static void on_log(void *data, const char *line)
{
    struct inbox *in = data;
    in->log_lines++;
    snprintf(in->log, sizeof(in->log), "%s", line);
}

static uv_loop_t loop;

/* Run the loop until *flag reaches want or timeout_ms pass. */
static bool run_until(const int *flag, int want, unsigned timeout_ms)
{
    uint64_t deadline = uv_now(&loop) + timeout_ms;
    while (*flag < want && uv_now(&loop) < deadline) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
        uv_update_time(&loop);
    }
    return *flag >= want;
}

static uint8_t secret[TRANSPORT_KEY_BYTES]; /* the next start()'s key */
static uint32_t handshake_timeout_ms = 3000;

static uint64_t placement; /* the next start()'s transport_config.placement */

static struct transport *start_on(uv_loop_t *l, uint64_t cluster, uint64_t node, uint16_t port,
                                  struct inbox *in);

static struct transport *start(uint64_t cluster, uint64_t node, uint16_t port, struct inbox *in)
{
    return start_on(&loop, cluster, node, port, in);
}

static struct transport *start_on(uv_loop_t *l, uint64_t cluster, uint64_t node, uint16_t port,
                                  struct inbox *in)
{
    struct transport_config cfg;
    transport_config_default(&cfg);
    cfg.placement = placement;
    memcpy(cfg.secret, secret, sizeof(secret));
    cfg.handshake_timeout_ms = handshake_timeout_ms;
    cfg.cluster_id = cluster;
    cfg.node_id = node;
    cfg.port = port;
    cfg.max_frame = 64 * 1024;
    cfg.backoff_min_ms = 10;
    cfg.backoff_max_ms = 100;
    struct transport *t;
    CHECK_EQ(transport_init(&t, l, &cfg, on_recv, on_log, in), 0);
    return t;
}

static void stop(struct transport *t)
{
    transport_close(t);
    for (int i = 0; i < 100; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static struct raft_message vote(raft_id from, raft_id to, raft_term term)
{
    struct raft_message m = {.type = RAFT_MSG_REQUEST_VOTE, .from = from, .to = to, .term = term};
    m.request_vote.last_log_index = 42;
    return m;
}

static void test_messages_both_ways(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in1 = {0}, in2 = {0};
    struct transport *t1 = start(7, 1, 0, &in1), *t2 = start(7, 2, 0, &in2);
    CHECK_EQ(transport_add_peer(t1, 2, "127.0.0.1", transport_port(t2)), 0);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    struct raft_message m = vote(1, 2, 5);
    CHECK_EQ(transport_send(t1, 3, &m), 0);
    CHECK(run_until(&in2.received, 1, 3000));
    CHECK_EQ(in2.last.type, RAFT_MSG_REQUEST_VOTE);
    CHECK_EQ(in2.last.term, 5);
    CHECK_EQ(in2.last.request_vote.last_log_index, 42);
    CHECK_EQ(in2.group, 3);
    struct raft_message back = vote(2, 1, 6);
    for (int i = 0; i < 100; i++)
        CHECK_EQ(transport_send(t2, 1, &back), 0);
    CHECK(run_until(&in1.received, 100, 3000));
    CHECK_EQ(transport_send(
                 t1, 1, &(struct raft_message){.type = RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 9}),
             UV_EINVAL);
    stop(t1);
    stop(t2);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* Frames a loop turn queues for a peer after its first leave at the turn's
 * end, not at the loop's next event. The sender has a loop of its own here,
 * as a node does: the turn that queues them must not block in its poll
 * (there is nothing else to wake it for 750 ms, the handshake sweep). */
static struct transport *burst_from;
static uint64_t burst_ns;
static void send_burst(uv_timer_t *timer)
{
    (void)timer;
    for (raft_term term = 10; term < 13; term++) {
        struct raft_message m = vote(1, 2, term);
        CHECK_EQ(transport_send(burst_from, 1, &m), 0);
    }
    burst_ns = uv_hrtime();
}

static void test_frames_of_one_turn_leave_at_its_end(void)
{
    uv_loop_t sender;
    CHECK_EQ(uv_loop_init(&loop), 0);
    CHECK_EQ(uv_loop_init(&sender), 0);
    struct inbox in1 = {0}, in2 = {0};
    struct transport *t1 = start_on(&sender, 7, 1, 0, &in1), *t2 = start(7, 2, 0, &in2);
    CHECK_EQ(transport_add_peer(t1, 2, "127.0.0.1", transport_port(t2)), 0);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    struct raft_message m = vote(1, 2, 5);
    CHECK_EQ(transport_send(t1, 1, &m), 0);
    for (int i = 0; i < 3000 && in2.received < 1; i++) { /* connected and proved */
        uv_run(&sender, UV_RUN_NOWAIT);
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    CHECK_EQ(in2.received, 1);
    burst_from = t1;
    uv_timer_t burst;
    uv_timer_init(&sender, &burst);
    uv_timer_start(&burst, send_burst, 1, 0);
    /* From the burst to the frames' leaving, the sender's loop alone. */
    struct transport_stats st;
    uint64_t deadline = uv_hrtime() + 2000 * 1000000ull;
    do {
        uv_run(&sender, UV_RUN_ONCE);
        transport_get_stats(t1, &st);
    } while (st.frames_sent < 4 && uv_hrtime() < deadline);
    uint64_t turn_ms = (uv_hrtime() - burst_ns) / 1000000;
    CHECK_EQ(st.frames_sent, 4);
    for (int i = 0; i < 3000 && in2.received < 4; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    CHECK_EQ(in2.received, 4);
    CHECK_EQ(in2.last.term, 12);
    CHECK(turn_ms < 100);
    uv_close((uv_handle_t *)&burst, NULL);
    transport_close(t1);
    for (int i = 0; i < 100; i++)
        uv_run(&sender, UV_RUN_NOWAIT);
    stop(t2);
    CHECK_EQ(uv_loop_close(&sender), 0);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* A turn that queues more frames than one write carries (256: many groups'
 * heartbeats in one tick, a backlog) sends them all, not a write's worth
 * per later event. */
static struct transport *many_from;
static void send_many(uv_timer_t *timer)
{
    (void)timer;
    for (raft_term term = 100; term < 1600; term++) {
        struct raft_message m = vote(1, 2, term);
        CHECK_EQ(transport_send(many_from, 1, &m), 0);
    }
}

static void test_a_turn_of_many_frames_sends_them_all(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in1 = {0}, in2 = {0};
    struct transport *t1 = start(7, 1, 0, &in1), *t2 = start(7, 2, 0, &in2);
    CHECK_EQ(transport_add_peer(t1, 2, "127.0.0.1", transport_port(t2)), 0);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    struct raft_message m = vote(1, 2, 5);
    CHECK_EQ(transport_send(t1, 1, &m), 0);
    CHECK(run_until(&in2.received, 1, 3000));
    many_from = t1;
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    uv_timer_start(&timer, send_many, 1, 0);
    CHECK(run_until(&in2.received, 1501, 3000));
    CHECK_EQ(in2.last.term, 1599);
    uv_close((uv_handle_t *)&timer, NULL);
    stop(t1);
    stop(t2);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* Big messages queued before the connection is up (a leader with entries
 * for a follower that restarts) all arrive: they leave only after the
 * handshake, never in the same read as the Proof, which the other side
 * still reads under the handshake's small frame limit. */
static void test_big_frames_queued_before_the_handshake(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in1 = {0}, in2 = {0};
    struct transport *t1 = start(7, 1, 0, &in1), *t2 = start(7, 2, 0, &in2);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    CHECK_EQ(transport_add_peer(t1, 2, "127.0.0.1", transport_port(t2)), 0);
    static char data[8192];
    struct raft_entry e = {.term = 1, .index = 1, .data = data, .len = sizeof(data)};
    struct raft_message ae = {.type = RAFT_MSG_APPEND_ENTRIES, .from = 1, .to = 2, .term = 1};
    ae.append_entries.entries = &e;
    ae.append_entries.n_entries = 1;
    for (int i = 0; i < 5; i++)
        CHECK_EQ(transport_send(t1, 1, &ae), 0); /* before the loop ran: queued */
    CHECK(run_until(&in2.received, 5, 3000));
    struct transport_stats st;
    transport_get_stats(t2, &st);
    CHECK_EQ(st.oversized_frames, 0);
    stop(t1);
    stop(t2);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* A node of another cluster is refused with a log line saying so. */
static void test_foreign_cluster_refused(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in2 = {0}, in9 = {0};
    struct transport *t2 = start(7, 2, 0, &in2), *t9 = start(8, 1, 0, &in9);
    CHECK_EQ(transport_add_peer(t9, 2, "127.0.0.1", transport_port(t2)), 0);
    struct raft_message m = vote(1, 2, 5);
    CHECK_EQ(transport_send(t9, 1, &m), 0);
    CHECK(run_until(&in2.log_lines, 1, 3000));
    CHECK(strstr(in2.log, "refusing node 1") && strstr(in2.log, "cluster"));
    struct transport_stats st;
    transport_get_stats(t2, &st);
    CHECK_EQ(st.refused_hellos, 1);
    CHECK_EQ(in2.received, 0);
    stop(t2);
    stop(t9);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* Raw clients: an oversized frame and random bytes close their connection;
 * the node keeps serving others. */
struct raw {
    uv_tcp_t tcp;
    uv_connect_t req;
    uv_write_t wreq;
    uint8_t bytes[256];
    size_t len;
    int done;
};

static void raw_written(uv_write_t *req, int status)
{
    (void)status;
    ((struct raw *)req->data)->done = 1;
}

static void raw_connected(uv_connect_t *req, int status)
{
    struct raw *r = req->data;
    if (status < 0) {
        r->done = 1;
        return;
    }
    uv_buf_t buf = uv_buf_init((char *)r->bytes, (unsigned)r->len);
    r->wreq.data = r;
    uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &buf, 1, raw_written);
}

static void raw_send(struct raw *r, uint16_t port)
{
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_init(&loop, &r->tcp);
    r->req.data = r;
    CHECK_EQ(uv_tcp_connect(&r->req, &r->tcp, (const struct sockaddr *)&addr, raw_connected), 0);
    CHECK(run_until(&r->done, 1, 3000));
}

static void test_bad_bytes_close_only_that_connection(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in1 = {0}, in2 = {0};
    struct transport *t1 = start(7, 1, 0, &in1), *t2 = start(7, 2, 0, &in2);
    struct raw big = {.bytes = {0x7f, 0xff, 0xff, 0xff, 1, 2, 3}, .len = 7};
    raw_send(&big, transport_port(t2));
    struct transport_stats st;
    for (int i = 0; i < 200; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        transport_get_stats(t2, &st);
        if (st.oversized_frames)
            break;
        uv_sleep(1);
    }
    CHECK_EQ(st.oversized_frames, 1);
    uint64_t s = harness_seed(99);
    struct raw junk = {.len = 200};
    for (size_t i = 0; i < junk.len; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        junk.bytes[i] = (uint8_t)(s >> 56);
    }
    junk.bytes[0] = junk.bytes[1] = 0; /* a small frame of garbage */
    raw_send(&junk, transport_port(t2));
    for (int i = 0; i < 100; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    /* Still serving. */
    CHECK_EQ(transport_add_peer(t1, 2, "127.0.0.1", transport_port(t2)), 0);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    struct raft_message m = vote(1, 2, 5);
    CHECK_EQ(transport_send(t1, 1, &m), 0);
    CHECK(run_until(&in2.received, 1, 3000));
    uv_close((uv_handle_t *)&big.tcp, NULL);
    uv_close((uv_handle_t *)&junk.tcp, NULL);
    stop(t1);
    stop(t2);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* A peer that goes away and comes back on the same port is reconnected
 * on our own timers, and queued messages flow again. */
static void test_reconnects_after_restart(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in1 = {0}, in2 = {0};
    struct transport *t1 = start(7, 1, 0, &in1), *t2 = start(7, 2, 0, &in2);
    uint16_t port = transport_port(t2);
    CHECK_EQ(transport_add_peer(t1, 2, "127.0.0.1", port), 0);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    struct raft_message m = vote(1, 2, 5);
    CHECK_EQ(transport_send(t1, 1, &m), 0);
    CHECK(run_until(&in2.received, 1, 3000));
    stop(t2);
    for (int i = 0; i < 50; i++) { /* let t1 notice */
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    struct inbox again = {0};
    t2 = start(7, 2, port, &again);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    m.term = 6;
    int sent = 0;
    for (int i = 0; i < 300 && again.received == 0; i++) {
        if (i % 20 == 0 && transport_send(t1, 1, &m) == 0)
            sent++;
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(2);
    }
    CHECK(again.received >= 1);
    CHECK_EQ(again.last.term, 6);
    struct transport_stats st;
    transport_get_stats(t1, &st);
    CHECK(st.reconnects >= 1);
    (void)sent;
    stop(t1);
    stop(t2);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* Only members take part: a node that is not among our peers is refused
 * at its Hello, though it knows the cluster id. */
static void test_non_member_refused(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in1 = {0}, in2 = {0}, in9 = {0};
    struct transport *t1 = start(7, 1, 0, &in1), *t2 = start(7, 2, 0, &in2);
    struct transport *t9 = start(7, 9, 0, &in9);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    CHECK_EQ(transport_add_peer(t9, 2, "127.0.0.1", transport_port(t2)), 0);
    struct raft_message m = vote(9, 2, 50);
    CHECK_EQ(transport_send(t9, 1, &m), 0);
    struct transport_stats st = {0};
    for (int i = 0; i < 2000 && !st.refused_members; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
        transport_get_stats(t2, &st);
    }
    CHECK(st.refused_members >= 1);
    CHECK(strstr(in2.log, "refusing node 9 from 127.0.0.1:") && strstr(in2.log, "not a member"));
    run_until(&in2.received, 1, 200);
    CHECK_EQ(in2.received, 0);
    CHECK(!transport_peer_connected(t9, 2));
    stop(t1);
    stop(t2);
    stop(t9);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* The cluster secret: a member with another secret is refused both ways
 * (neither accepts the other's MAC); with the same secret they talk. */
/* Two nodes that place keys by different maps (kvd started with other
 * --shards) would give one Raft group different voters: refused at Hello,
 * saying why. */
static void test_other_placement_refused(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in1 = {0}, in2 = {0};
    placement = 0x1111;
    struct transport *t1 = start(7, 1, 0, &in1);
    placement = 0x2222;
    struct transport *t2 = start(7, 2, 0, &in2);
    placement = 0;
    CHECK_EQ(transport_add_peer(t1, 2, "127.0.0.1", transport_port(t2)), 0);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    struct raft_message m = vote(1, 2, 50);
    CHECK_EQ(transport_send(t1, 2, &m), 0);
    struct transport_stats st = {0};
    for (int i = 0; i < 2000 && !st.refused_hellos; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
        transport_get_stats(t2, &st);
    }
    CHECK(st.refused_hellos >= 1);
    CHECK(strstr(in2.log, "refusing node 1 from 127.0.0.1:") &&
          strstr(in2.log, "another map (fingerprint 0000000000001111, ours 0000000000002222)"));
    run_until(&in2.received, 1, 200);
    CHECK_EQ(in2.received, 0);
    stop(t1);
    stop(t2);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

static void test_wrong_secret_refused(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in1 = {0}, in2 = {0};
    memset(secret, 0xaa, sizeof(secret));
    struct transport *t1 = start(7, 1, 0, &in1);
    memset(secret, 0xbb, sizeof(secret));
    struct transport *t2 = start(7, 2, 0, &in2);
    memset(secret, 0, sizeof(secret));
    CHECK_EQ(transport_add_peer(t1, 2, "127.0.0.1", transport_port(t2)), 0);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    struct raft_message m = vote(1, 2, 5), back = vote(2, 1, 5);
    transport_send(t1, 1, &m);
    transport_send(t2, 1, &back);
    struct transport_stats s1 = {0}, s2 = {0};
    for (int i = 0; i < 2000 && (!s1.refused_auth || !s2.refused_auth); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
        transport_get_stats(t1, &s1);
        transport_get_stats(t2, &s2);
    }
    CHECK(s1.refused_auth >= 1 && s2.refused_auth >= 1);
    CHECK(strstr(in1.log, "cluster secret") || strstr(in2.log, "cluster secret"));
    CHECK_EQ(in1.received + in2.received, 0);
    stop(t1);
    stop(t2);

    memset(secret, 0xcc, sizeof(secret));
    struct inbox a = {0}, b = {0};
    t1 = start(7, 1, 0, &a);
    t2 = start(7, 2, 0, &b);
    memset(secret, 0, sizeof(secret));
    CHECK_EQ(transport_add_peer(t1, 2, "127.0.0.1", transport_port(t2)), 0);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    CHECK_EQ(transport_send(t1, 1, &m), 0);
    CHECK(run_until(&b.received, 1, 3000));
    stop(t1);
    stop(t2);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* A connection that never finishes the handshake is closed after the
 * timeout; one that sends a big frame before it is refused at once. */
static void test_handshake_deadline_and_size(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    handshake_timeout_ms = 200;
    struct inbox in2 = {0};
    struct transport *t2 = start(7, 2, 0, &in2);
    handshake_timeout_ms = 3000;
    struct raw silent = {.bytes = {0, 0}, .len = 2}; /* half a length prefix */
    raw_send(&silent, transport_port(t2));
    struct raw big = {.bytes = {0, 0, 0x10, 0}, .len = 4}; /* 4 KiB before any Hello */
    raw_send(&big, transport_port(t2));
    struct transport_stats st = {0};
    for (int i = 0; i < 3000 && (!st.handshake_timeouts || !st.oversized_frames); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
        transport_get_stats(t2, &st);
    }
    CHECK_EQ(st.oversized_frames, 1);
    CHECK_EQ(st.handshake_timeouts, 1);
    uv_close((uv_handle_t *)&silent.tcp, NULL);
    uv_close((uv_handle_t *)&big.tcp, NULL);
    stop(t2);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* A flood of connections that never say Hello: beyond a handful per peer
 * they are closed at once, not after the handshake timeout. */
static void test_unproved_connections_capped(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in2 = {0};
    struct transport *t2 = start(7, 2, 0, &in2); /* no peers: a cap of 8 */
    static struct raw silent[20];
    for (int i = 0; i < 20; i++) {
        silent[i] = (struct raw){.bytes = {0}, .len = 1};
        raw_send(&silent[i], transport_port(t2));
    }
    struct transport_stats st = {0};
    for (int i = 0; i < 500 && st.handshake_timeouts < 12; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
        transport_get_stats(t2, &st);
    }
    CHECK(st.handshake_timeouts >= 12); /* well before the 3 s timeout */
    CHECK(strstr(in2.log, "others are in the handshake"));
    for (int i = 0; i < 20; i++)
        uv_close((uv_handle_t *)&silent[i].tcp, NULL);
    stop(t2);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* The secret comes from a file only its owner can read. */
static void test_secret_file(void)
{
    char path[] = "/tmp/raftkv-test-secret-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "short\n", 6) == 6);
    uint8_t k1[TRANSPORT_KEY_BYTES], k2[TRANSPORT_KEY_BYTES];
    char err[300];
    CHECK_EQ(transport_secret_from_file(path, k1, err, sizeof(err)), -1);
    CHECK(strstr(err, "shorter than 16"));
    CHECK(ftruncate(fd, 0) == 0 && lseek(fd, 0, SEEK_SET) == 0);
    CHECK(write(fd, "0123456789abcdefXYZ\n", 20) == 20);
    CHECK_EQ(transport_secret_from_file(path, k1, err, sizeof(err)), 0);
    CHECK(ftruncate(fd, 19) == 0); /* without the newline: the same key */
    CHECK_EQ(transport_secret_from_file(path, k2, err, sizeof(err)), 0);
    CHECK(memcmp(k1, k2, sizeof(k1)) == 0);
    CHECK(chmod(path, 0644) == 0);
    CHECK_EQ(transport_secret_from_file(path, k2, err, sizeof(err)), -1);
    CHECK(strstr(err, "can be read by others"));
    close(fd);
    unlink(path);
    CHECK_EQ(transport_secret_from_file(path, k2, err, sizeof(err)), -1);
}

/* Application-level faults: loss in one direction only, by message type,
 * duplication, delay; and healing. */
static void test_fault_filter(void)
{
    CHECK_EQ(uv_loop_init(&loop), 0);
    struct inbox in1 = {0}, in2 = {0};
    struct transport *t1 = start(7, 1, 0, &in1), *t2 = start(7, 2, 0, &in2);
    CHECK_EQ(transport_add_peer(t1, 2, "127.0.0.1", transport_port(t2)), 0);
    CHECK_EQ(transport_add_peer(t2, 1, "127.0.0.1", transport_port(t1)), 0);
    struct raft_message m = vote(1, 2, 5), back = vote(2, 1, 5);
    /* Everything 1 -> 2 is lost; 2 -> 1 still flows. */
    struct transport_fault cut = {.peer = 2, .directions = TRANSPORT_OUT, .drop_pct = 100};
    CHECK_EQ(transport_set_faults(t1, &cut, 1), 0);
    for (int i = 0; i < 5; i++)
        transport_send(t1, 1, &m);
    CHECK_EQ(transport_send(t2, 1, &back), 0);
    CHECK(run_until(&in1.received, 1, 3000));
    run_until(&in2.received, 1, 100);
    CHECK_EQ(in2.received, 0);
    /* Only AppendEntries dropped, on the receiving side: votes pass. */
    struct transport_fault ae = {
        .directions = TRANSPORT_IN, .message_type = RAFT_MSG_APPEND_ENTRIES, .drop_pct = 100};
    CHECK_EQ(transport_set_faults(t1, NULL, 0), 0);
    CHECK_EQ(transport_set_faults(t2, &ae, 1), 0);
    struct raft_message append = {.type = RAFT_MSG_APPEND_ENTRIES, .from = 1, .to = 2, .term = 5};
    transport_send(t1, 1, &append);
    transport_send(t1, 1, &m);
    CHECK(run_until(&in2.received, 1, 3000));
    CHECK_EQ(in2.last.type, RAFT_MSG_REQUEST_VOTE);
    run_until(&in2.received, 2, 100);
    CHECK_EQ(in2.received, 1);
    /* Duplicated every time. */
    struct transport_fault dup = {.directions = TRANSPORT_OUT, .dup_pct = 100};
    CHECK_EQ(transport_set_faults(t2, NULL, 0), 0);
    CHECK_EQ(transport_set_faults(t1, &dup, 1), 0);
    transport_send(t1, 1, &m);
    CHECK(run_until(&in2.received, 3, 3000));
    /* Delayed by 80 ms. */
    struct transport_fault slow = {.directions = TRANSPORT_OUT, .delay_ms = 80};
    CHECK_EQ(transport_set_faults(t1, &slow, 1), 0);
    uint64_t sent_at = uv_now(&loop);
    transport_send(t1, 1, &m);
    CHECK(run_until(&in2.received, 4, 3000));
    CHECK(uv_now(&loop) - sent_at >= 80);
    /* A held-back message at close time is released with the transport. */
    transport_send(t1, 1, &m);
    struct transport_stats st;
    transport_get_stats(t1, &st);
    CHECK(st.fault_dropped >= 5 && st.fault_duplicated >= 1 && st.fault_delayed >= 2);
    stop(t1);
    stop(t2);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_messages_both_ways),
        HARNESS_TEST(test_frames_of_one_turn_leave_at_its_end),
        HARNESS_TEST(test_a_turn_of_many_frames_sends_them_all),
        HARNESS_TEST(test_foreign_cluster_refused),
        HARNESS_TEST(test_bad_bytes_close_only_that_connection),
        HARNESS_TEST(test_reconnects_after_restart),
        HARNESS_TEST(test_fault_filter),
        HARNESS_TEST(test_big_frames_queued_before_the_handshake),
        HARNESS_TEST(test_non_member_refused),
        HARNESS_TEST(test_other_placement_refused),
        HARNESS_TEST(test_wrong_secret_refused),
        HARNESS_TEST(test_handshake_deadline_and_size),
        HARNESS_TEST(test_unproved_connections_capped),
        HARNESS_TEST(test_secret_file),
    };
    return harness_main(argc, argv, "transport", tests, sizeof(tests) / sizeof(tests[0]));
}
