/* join.c — kvd --join: a new node asks a member to add it (docs/membership.md).
 *
 * Before its loop starts, the node sends POST /v1/nodes with its id and
 * addresses to the member's HTTP door -- under the admin token, since a
 * member added is a member trusted with every shard it is given -- and
 * waits: the member changes the members table in group 0 and answers
 * with the table as written. The node then starts with that table, every
 * group it hosts empty: group 0's leader adds it as a learner, then each
 * shard the ring gives it is moved to it (members.c). A member that
 * cannot answer yet (no leader, no quorum: 503) is asked again until the
 * join times out; a refusal (400: the id is taken, the address is used)
 * ends it at once.
 *
 * Blocking, with plain sockets: it runs once, before anything else.
 */
#define _GNU_SOURCE /* strcasestr */
#include "join.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    JOIN_TIMEOUT_MS = 60000, /* the whole join */
    JOIN_RETRY_MS = 500,
    JOIN_ANSWER_BYTES = 1 << 20,
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait for fd to be ready (POLLIN or POLLOUT) until deadline. */
static bool wait_fd(int fd, short events, uint64_t deadline)
{
    uint64_t now = mono_ms();
    if (now >= deadline)
        return false;
    struct pollfd p = {.fd = fd, .events = events};
    return poll(&p, 1, (int)(deadline - now)) == 1;
}

/* One HTTP exchange: the status code, and the body in *body (malloc'd). 0,
 * or -1 with err (the member could not be reached or did not answer). */
static int http_post(const struct sockaddr_in *to, const char *path, const char *token,
                     const char *json, int *status, char **body, uint64_t deadline, char *err,
                     size_t errlen)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    char *req = NULL, *answer = NULL;
    int rc = -1;
    if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) != 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect: %s", strerror(errno));
        goto out;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (!wait_fd(fd, POLLOUT, deadline) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) ||
        soerr) {
        snprintf(err, errlen, "connect: %s", soerr ? strerror(soerr) : "timed out");
        goto out;
    }
    char auth[1200] = "";
    if (token)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", token);
    size_t body_len = strlen(json);
    size_t req_len = strlen(path) + strlen(auth) + body_len + 200;
    if (!(req = malloc(req_len)))
        goto oom;
    int n = snprintf(req, req_len,
                     "POST %s HTTP/1.1\r\nHost: kvd\r\nConnection: close\r\n%sContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     path, auth, body_len, json);
    for (size_t sent = 0; sent < (size_t)n;) {
        if (!wait_fd(fd, POLLOUT, deadline)) {
            snprintf(err, errlen, "sending: timed out");
            goto out;
        }
        ssize_t w = send(fd, req + sent, (size_t)n - sent, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(err, errlen, "sending: %s", strerror(errno));
            goto out;
        }
        sent += w > 0 ? (size_t)w : 0;
    }
    /* Read to the end (Connection: close), or to Content-Length. */
    if (!(answer = malloc(JOIN_ANSWER_BYTES + 1)))
        goto oom;
    size_t got = 0;
    for (;;) {
        char *head_end = NULL;
        if (got) {
            answer[got] = '\0';
            head_end = strstr(answer, "\r\n\r\n");
        }
        if (head_end) {
            const char *cl = strcasestr(answer, "\r\nContent-Length:");
            if (cl && cl < head_end &&
                got >= (size_t)(head_end + 4 - answer) + strtoul(cl + 17, NULL, 10))
                break;
        }
        if (got == JOIN_ANSWER_BYTES || !wait_fd(fd, POLLIN, deadline)) {
            snprintf(err, errlen, "no full answer");
            goto out;
        }
        ssize_t r = recv(fd, answer + got, JOIN_ANSWER_BYTES - got, 0);
        if (r == 0)
            break;
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(err, errlen, "reading: %s", strerror(errno));
            goto out;
        }
        got += r > 0 ? (size_t)r : 0;
    }
    answer[got] = '\0';
    char *head_end = strstr(answer, "\r\n\r\n");
    if (!head_end || sscanf(answer, "HTTP/1.%*d %d", status) != 1) {
        snprintf(err, errlen, "not an HTTP answer");
        goto out;
    }
    if (!(*body = strdup(head_end + 4)))
        goto oom;
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    free(req);
    free(answer);
    close(fd);
    return rc;
}

/* The member's answer, into cfg. */
static int take_table(struct kv_server_config *cfg, const struct kv_peer *self, json_t *o,
                      char *err, size_t errlen)
{
    const char *cluster = NULL;
    json_int_t epoch = 0, shards = 0, replicas = 0, vnodes = 0;
    json_t *nodes = NULL;
    if (json_unpack(o, "{s:s,s:I,s:I,s:I,s:I,s:o}", "cluster_id", &cluster, "epoch", &epoch,
                    "shards", &shards, "replicas", &replicas, "vnodes", &vnodes, "nodes", &nodes) ||
        !json_is_array(nodes)) {
        snprintf(err, errlen, "the member's answer is not a members table");
        return -1;
    }
    char ours[24];
    snprintf(ours, sizeof(ours), "%016" PRIx64, cfg->cluster_id);
    if (strcmp(cluster, ours)) {
        snprintf(err, errlen,
                 "the member belongs to another cluster (id %s, ours %s): give the same "
                 "--cluster-id (or cluster file) as its nodes",
                 cluster, ours);
        return -1;
    }
    const uint32_t have[3] = {cfg->shards, cfg->replicas, cfg->vnodes};
    const json_int_t got[3] = {shards, replicas, vnodes};
    static const char *names[3] = {"--shards", "--replicas", "--vnodes"};
    for (int i = 0; i < 3; i++)
        if (have[i] && (json_int_t)have[i] != got[i]) {
            snprintf(err, errlen, "%s %u, but the cluster has %lld (leave it out with --join)",
                     names[i], have[i], (long long)got[i]);
            return -1;
        }
    size_t n = json_array_size(nodes);
    if (n == 0 || n > KV_MAX_PEERS) {
        snprintf(err, errlen, "the member's table has %zu nodes", n);
        return -1;
    }
    struct kv_peer peers[KV_MAX_PEERS];
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        json_int_t id, ports[3];
        const char *host, *client_host;
        if (json_unpack(json_array_get(nodes, i), "{s:I,s:s,s:s,s:I,s:I,s:I}", "id", &id, "host",
                        &host, "client_host", &client_host, "raft_port", &ports[0], "resp_port",
                        &ports[1], "http_port", &ports[2]) ||
            strlen(host) >= sizeof(peers[i].host) ||
            strlen(client_host) >= sizeof(peers[i].client_host)) {
            snprintf(err, errlen, "the member's table has a node it cannot describe");
            return -1;
        }
        peers[i] = (struct kv_peer){.id = (raft_id)id,
                                    .raft_port = (uint16_t)ports[0],
                                    .resp_port = (uint16_t)ports[1],
                                    .http_port = (uint16_t)ports[2]};
        snprintf(peers[i].host, sizeof(peers[i].host), "%s", host);
        snprintf(peers[i].client_host, sizeof(peers[i].client_host), "%s", client_host);
        found = found || (raft_id)id == self->id;
    }
    if (!found) {
        snprintf(err, errlen, "the member's table does not list this node");
        return -1;
    }
    memcpy(cfg->peers, peers, n * sizeof(peers[0]));
    cfg->n_peers = n;
    cfg->shards = (uint32_t)shards;
    cfg->replicas = (uint32_t)replicas;
    cfg->vnodes = (uint32_t)vnodes;
    cfg->table_epoch = (uint64_t)epoch;
    cfg->join = true;
    return 0;
}

int kv_join(struct kv_server_config *cfg, const char *member, const char *token,
            void (*progress)(const char *line), char *err, size_t errlen)
{
    const struct kv_peer *self = NULL;
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (cfg->peers[i].id == cfg->id)
            self = &cfg->peers[i];
    if (!self) {
        snprintf(err, errlen, "node %" PRIu64 " has no address (give it in --peers)", cfg->id);
        return -1;
    }
    char host[64];
    unsigned port = 0;
    struct sockaddr_in to = {0};
    if (sscanf(member, "%63[^:]:%u", host, &port) != 2 || port == 0 || port > 65535 ||
        inet_pton(AF_INET, host, &to.sin_addr) != 1) {
        snprintf(err, errlen, "--join %s: expected HOST:HTTP-PORT of a member (127.0.0.1:8381)",
                 member);
        return -1;
    }
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)port);
    json_t *req =
        json_pack("{s:I,s:s,s:s,s:i,s:i,s:i}", "id", (json_int_t)self->id, "host", self->host,
                  "client_host", self->client_host, "raft_port", (int)self->raft_port, "resp_port",
                  (int)self->resp_port, "http_port", (int)self->http_port);
    char *json = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!json) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    uint64_t deadline = mono_ms() + JOIN_TIMEOUT_MS;
    char why[512] = "";
    int rc = -1;
    for (int attempt = 1; mono_ms() < deadline; attempt++) {
        int status = 0;
        char *body = NULL;
        if (http_post(&to, "/v1/nodes", token, json, &status, &body, deadline, why, sizeof(why)) ==
            0) {
            json_error_t jerr;
            json_t *o = json_loads(body, 0, &jerr);
            const char *msg = o ? json_string_value(json_object_get(o, "error")) : NULL;
            if (status == 200 && o) {
                rc = take_table(cfg, self, o, err, errlen);
                json_decref(o);
                free(body);
                break;
            }
            snprintf(why, sizeof(why), "HTTP %d: %s", status, msg ? msg : body);
            json_decref(o);
            free(body);
            if (status == 400 || status == 401 || status == 403 || status == 404) {
                snprintf(err, errlen, "%s refused the join: %s", member, why);
                break;
            }
        }
        if (progress && (attempt == 1 || attempt % 10 == 0)) {
            char line[640];
            snprintf(line, sizeof(line), "joining through %s: %s; asking again", member, why);
            progress(line);
        }
        struct timespec ts = {0, JOIN_RETRY_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (rc != 0 && !err[0])
        snprintf(err, errlen, "could not join through %s within %d s: %s", member,
                 JOIN_TIMEOUT_MS / 1000, why);
    free(json);
    return rc;
}
