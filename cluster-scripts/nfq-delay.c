/* nfq-delay — hold the packets of one NFQUEUE for a fixed time, then let them go.
 *
 *   nfq-delay QUEUE DELAY_MS
 *
 * The kernels this project runs on have no netem (and no modules), so `cluster delay` in
 * netns mode sends the packets of a link to an NFQUEUE (iptables ... -j NFQUEUE
 * --queue-num Q --queue-bypass) and this program, running in the same network
 * namespace, accepts each one DELAY_MS after it arrived. A fixed delay keeps the order:
 * a FIFO of packet ids and arrival times is all it needs. If the FIFO is full the packet
 * passes at once (delay is lost, not the packet); --queue-bypass lets traffic through if
 * this program dies. SIGTERM or SIGINT stops it. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

enum { FIFO_SIZE = 1 << 16 };

struct held {
    uint32_t id;
    uint64_t due_ms;
};

static struct held fifo[FIFO_SIZE];
static size_t head, count;
static uint64_t delay_ms;
static volatile sig_atomic_t stopping;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *data)
{
    (void)msg;
    (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph)
        return 0;
    uint32_t id = ntohl(ph->packet_id);
    if (count == FIFO_SIZE)
        return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
    fifo[(head + count) % FIFO_SIZE] = (struct held){id, now_ms() + delay_ms};
    count++;
    return 0;
}

/* Let go of every packet whose time has come; the wait until the next one. */
static int release_due(struct nfq_q_handle *qh)
{
    uint64_t now = now_ms();
    while (count && fifo[head].due_ms <= now) {
        nfq_set_verdict(qh, fifo[head].id, NF_ACCEPT, 0, NULL);
        head = (head + 1) % FIFO_SIZE;
        count--;
    }
    return count ? (int)(fifo[head].due_ms - now) : -1;
}

int main(int argc, char **argv)
{
    char *end;
    unsigned long queue = argc == 3 ? strtoul(argv[1], &end, 10) : 0;
    if (argc != 3 || *end || queue > 65535) {
        fprintf(stderr, "usage: nfq-delay QUEUE DELAY_MS\n");
        return 2;
    }
    delay_ms = strtoull(argv[2], &end, 10);
    if (*end || delay_ms > 600000) {
        fprintf(stderr, "nfq-delay: DELAY_MS is 0..600000\n");
        return 2;
    }
    struct nfq_handle *h = nfq_open();
    if (!h) {
        fprintf(stderr, "nfq-delay: nfq_open: %s (root, and a kernel with NFQUEUE?)\n",
                strerror(errno));
        return 1;
    }
    struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)queue, on_packet, NULL);
    if (!qh || nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0) {
        fprintf(stderr, "nfq-delay: queue %lu: %s\n", queue, strerror(errno));
        nfq_close(h);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int fd = nfq_fd(h);
    char buf[65536] __attribute__((aligned));
    while (!stopping) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int wait = release_due(qh);
        int n = poll(&p, 1, wait < 0 ? 1000 : wait);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && (p.revents & POLLIN)) {
            ssize_t len = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (len > 0)
                nfq_handle_packet(h, buf, (int)len);
            else if (len < 0 && errno == ENOBUFS)
                fprintf(stderr, "nfq-delay: the kernel dropped queued packets (ENOBUFS)\n");
        }
    }
    while (count) { /* let everything held go before leaving */
        nfq_set_verdict(qh, fifo[head].id, NF_ACCEPT, 0, NULL);
        head = (head + 1) % FIFO_SIZE;
        count--;
    }
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
