/* kvd — a replicated key-value node: Raft on TCP, LMDB storage, a Redis
 * front door and an HTTP/JSON one. `kvd --help` is its manual. */
#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "http.h"
#include "iolog.h"
#include "join.h"
#include "resp.h"
#include "ring.h"
#include "server.h"
#include "transport.h"

static const char usage_text[] =
    "usage: kvd --id N --data DIR (--cluster FILE | --peers LIST | --nodes N) [options]\n"
    "\n"
    "Runs node N of a replicated key-value store. Every node serves the Redis\n"
    "protocol (redis-cli -p 6380+N), HTTP/JSON (curl 127.0.0.1:8380+N/v1/status)\n"
    "and talks Raft to its peers on port 9380+N; any node accepts any command and\n"
    "forwards it to the leader.\n"
    "\n"
    "Membership (every node of a cluster must be given the same list):\n"
    "  --cluster FILE        one line per node: 'node ID HOST [raft=P] [resp=P] [http=P]\n"
    "                        [clients=HOST]' (clients=: where the Redis and HTTP ports\n"
    "                        listen, if not HOST), and optionally 'cluster-id NAME';\n"
    "                        '#' starts a comment\n"
    "  --peers LIST          ID=HOST[:RAFT[:RESP[:HTTP]]],... e.g. 1=127.0.0.1,2=127.0.0.1\n"
    "  --nodes N             shorthand: nodes 1..N on 127.0.0.1 with the default ports\n"
    "  --cluster-id NAME     a name all nodes share (default raftkv); a node of another\n"
    "                        cluster is refused, and so is a data directory made for one\n"
    "\n"
    "Node:\n"
    "  --id N                this node's id (1..65535), one of the members\n"
    "  --data DIR            data directory (created if missing); it records the cluster\n"
    "                        and node id and refuses to start for another\n"
    "  --map-size MB         LMDB map size, the most data the node holds (default 1024);\n"
    "                        when it is full, writes fail with a clear error until the\n"
    "                        node is restarted with a larger one\n"
    "\n"
    "Shards (docs/sharding.md; fixed when the data dir is created, recorded in it):\n"
    "  --shards G            keys are spread over G shards by consistent hashing, each\n"
    "                        its own Raft group (default 1: one group on every node)\n"
    "  --replicas R          nodes per shard (default 3, or every node if fewer; with\n"
    "                        --shards 1, every node)\n"
    "  --vnodes V            points per shard and per node on the hash rings (default 64)\n"
    "  --join HOST:PORT      a new node: ask the member whose HTTP door is HOST:PORT to\n"
    "                        add it (under --admin-token, or --requirepass), then start\n"
    "                        empty with the cluster's members; its shards move to it by\n"
    "                        membership change (docs/membership.md). Its own address:\n"
    "                        --peers ID=HOST:RAFT:RESP:HTTP, or the defaults for --id\n"
    "  --rebalance-concurrency N  shard moves a node runs at once as their leader\n"
    "                        (default 1)\n"
    "\n"
    "Raft:\n"
    "  --election-timeout MS (default 1000) followers wait a random time in [MS, 2*MS)\n"
    "  --heartbeat MS        (default 100)\n"
    "  --read-mode MODE      linearizable (default: ReadIndex, thesis §6.4), lease (the\n"
    "                        leader's lease, §6.4.1: no round trip, trusts clocks), or\n"
    "                        unsafe_local (every node answers from its own state: stale\n"
    "                        reads, for teaching)\n"
    "  --request-timeout MS  a command not done by then fails with NOQUORUM (default 5000)\n"
    "  --apply WHERE         loop (default): committed entries are applied on the event\n"
    "                        loop, one unsynced state machine commit per loop turn (large\n"
    "                        batches and snapshot installs on a pool thread); thread: every\n"
    "                        batch on a pool thread (docs/kvd.md, section 4)\n"
    "  --apply-linger US     with --apply thread: a state machine commit (its clients are\n"
    "                        answered already) waits up to US for the next entries to\n"
    "                        apply, to share its sync (default 1000; 0: commit at once)\n"
    "  --session-ttl S       a client session idle for S seconds of the leader's clock\n"
    "                        expires (default 3600; 0: never; at least twice the request\n"
    "                        timeout). A connection whose session expired gets a new one\n"
    "                        on its next write; SESSION commands get an error instead\n"
    "  --snapshot-entries N  snapshot the state once N entries were applied since the last\n"
    "                        one, then drop the log up to a trailing tail (default 8192;\n"
    "                        0: never); a follower further behind gets the snapshot (§7)\n"
    "  --snapshot-trailing N entries kept behind a snapshot for slow followers (default 1024)\n"
    "  --trace               log every Raft decision with its rule (docs/trace.md)\n"
    "  --trace-file FILE     append every trace record as a JSON line to FILE (docs/trace.md,\n"
    "                        JSON lines): rules, messages, requests, states; FILE is moved\n"
    "                        to FILE.1 when it reaches --trace-file-max-mb (default 64);\n"
    "                        %n in FILE is the node's id (one option for every node)\n"
    "  --trace-file-max-mb N so the two files hold at most 2N MB\n"
    "\n"
    "Security (docs/kvd.md, Security and limits):\n"
    "  --cluster-secret FILE a secret every node of the cluster shares (at least 16\n"
    "                        characters, mode 600): a peer must prove it knows it before\n"
    "                        a node takes any Raft message from it. Make one with\n"
    "                        head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE\n"
    "  --requirepass FILE    clients must AUTH with the password on the file's first line\n"
    "                        (RESP: AUTH password, or HELLO 2 AUTH default password;\n"
    "                        HTTP: Authorization: Bearer password)\n"
    "  --admin-token FILE    control operations (RAFT.TRANSFER, /v1/transfer, the fault\n"
    "                        filter) need this token (AUTH admin token; Bearer token);\n"
    "                        without it the password opens them too\n"
    "  --enable-fault-injection  serve the fault filter (/v1/admin/faults), for the\n"
    "                        cluster scripts; off by default\n"
    "  --max-clients N       open client connections, RESP and HTTP together (default\n"
    "                        10000); one more gets 'max number of clients reached'\n"
    "  --client-timeout S    close a connection that holds part of a request this long\n"
    "                        (default 30; 0: never)\n"
    "  --max-request-bytes N the largest RESP command or HTTP body (default and most:\n"
    "                        16777216); a larger one gets an error (HTTP 413) and the\n"
    "                        connection closes\n"
    "  --client-output-limit MB  close a client whose unsent replies exceed MB (default\n"
    "                        512), or stay above 1 MiB for --client-output-timeout S\n"
    "                        (default 60): it does not read them\n"
    "  --insecure            allow listening beyond 127.0.0.0/8 without a cluster secret\n"
    "                        (peers) or a password (clients): anyone who reaches the\n"
    "                        ports can then join the cluster or use it\n"
    "\n"
    "Teaching knobs that break guarantees (each needs --allow-unsafe):\n"
    "  --no-prevote          disable pre-vote (thesis §9.6)\n"
    "  --no-check-quorum     a leader that lost its majority does not step down (§6.2)\n"
    "  --allow-unsafe\n"
    "\n"
    "SIGTERM or SIGINT stops the node cleanly. Examples:\n"
    "  kvd --id 1 --data run/1 --nodes 3\n"
    "  redis-cli -p 6381 set hello world\n"
    "  curl -s 127.0.0.1:8381/v1/status\n";

static void usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "kvd: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(kvd --help for the manual)\n");
    exit(2);
}

static uint64_t parse_num(const char *s, uint64_t max, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v > max || s[0] == '-')
        usage_error(what, s);
    return v;
}

/* FNV-1a: the cluster id is a name; the wire and the data dir hold its hash. */
static uint64_t cluster_hash(const char *name)
{
    uint64_t h = 14695981039346656037ULL;
    for (const char *p = name; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ULL;
    }
    return h ? h : 1;
}

/* Each client takes a descriptor; so do peers (two each), LMDB, snapshots
 * and the listeners. Raise the soft limit as far as the hard one allows,
 * and lower --max-clients to what fits, saying so (as Redis does), so that
 * a flood of clients can never take the descriptors peers need. */
static void reserve_fds(struct tcp_limits *l, size_t n_peers)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t reserved = 64 + 4 * (rlim_t)n_peers, want = l->max_clients + reserved;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (l->max_clients && rl.rlim_cur < want) {
        unsigned fit = rl.rlim_cur > reserved ? (unsigned)(rl.rlim_cur - reserved) : 1;
        fprintf(stderr,
                "kvd: warning: open files limited to %llu: --max-clients lowered from %u to %u\n",
                (unsigned long long)rl.rlim_cur, l->max_clients, fit);
        l->max_clients = fit;
    }
}

static void add_peer(struct kv_server_config *cfg, uint64_t id, const char *host, long raft,
                     long resp, long http, const char *client_host)
{
    if (cfg->n_peers == KV_MAX_PEERS)
        usage_error("too many nodes (at most %s)", "64");
    if (id == 0 || id > 65535)
        usage_error("node ids are 1..65535, not %s", host);
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (cfg->peers[i].id == id)
            usage_error("node id given twice (host %s)", host);
    struct kv_peer *p = &cfg->peers[cfg->n_peers++];
    p->id = id;
    if (strlen(host) >= sizeof(p->host))
        usage_error("host name too long: %s", host);
    strcpy(p->host, host);
    if (!client_host)
        client_host = host;
    if (strlen(client_host) >= sizeof(p->client_host))
        usage_error("host name too long: %s", client_host);
    strcpy(p->client_host, client_host);
    struct sockaddr_in sa;
    if (uv_ip4_addr(host, 0, &sa) || uv_ip4_addr(client_host, 0, &sa))
        usage_error("not an IPv4 address: %s", uv_ip4_addr(host, 0, &sa) ? host : client_host);
    long ports[3] = {raft >= 0 ? raft : 9380 + (long)id, resp >= 0 ? resp : 6380 + (long)id,
                     http >= 0 ? http : 8380 + (long)id};
    for (int i = 0; i < 3; i++)
        if (ports[i] <= 0 || ports[i] > 65535)
            usage_error("port out of range for host %s", host);
    p->raft_port = (uint16_t)ports[0];
    p->resp_port = (uint16_t)ports[1];
    p->http_port = (uint16_t)ports[2];
}

/* ID=HOST[:RAFT[:RESP[:HTTP]]],... */
static void parse_peers(struct kv_server_config *cfg, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            usage_error("--peers: '%s' is not ID=HOST[:RAFT[:RESP[:HTTP]]]", tok);
        *eq = '\0';
        uint64_t id = parse_num(tok, 65535, "--peers: bad node id '%s'");
        char *save2 = NULL;
        char *host = strtok_r(eq + 1, ":", &save2);
        if (!host)
            usage_error("--peers: no host for node %s", tok);
        long ports[3] = {-1, -1, -1};
        for (int i = 0; i < 3; i++) {
            char *p = strtok_r(NULL, ":", &save2);
            if (!p)
                break;
            ports[i] = (long)parse_num(p, 65535, "--peers: bad port '%s'");
        }
        add_peer(cfg, id, host, ports[0], ports[1], ports[2], NULL);
    }
    free(copy);
}

static void parse_cluster_file(struct kv_server_config *cfg, const char *path, char *name,
                               size_t namelen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "kvd: cannot read cluster file %s: %s\n", path, strerror(errno));
        exit(2);
    }
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *words[8];
        int n = 0;
        for (char *save, *w = strtok_r(line, " \t\r\n", &save); w && n < 8;
             w = strtok_r(NULL, " \t\r\n", &save))
            words[n++] = w;
        if (n == 0)
            continue;
        if (!strcmp(words[0], "cluster-id") && n == 2) {
            snprintf(name, namelen, "%s", words[1]);
            continue;
        }
        if (strcmp(words[0], "node") || n < 3) {
            fprintf(stderr, "kvd: %s:%d: expected 'node ID HOST [raft=P] [resp=P] [http=P]'\n",
                    path, lineno);
            exit(2);
        }
        uint64_t id = parse_num(words[1], 65535, "cluster file: bad node id '%s'");
        long ports[3] = {-1, -1, -1};
        const char *clients = NULL;
        static const char *keys[3] = {"raft=", "resp=", "http="};
        for (int i = 3; i < n; i++) {
            if (!strncmp(words[i], "clients=", 8)) {
                clients = words[i] + 8;
                continue;
            }
            int k = 0;
            while (k < 3 && strncmp(words[i], keys[k], 5))
                k++;
            if (k == 3) {
                fprintf(stderr, "kvd: %s:%d: unknown '%s'\n", path, lineno, words[i]);
                exit(2);
            }
            ports[k] = (long)parse_num(words[i] + 5, 65535, "cluster file: bad port '%s'");
        }
        add_peer(cfg, id, words[2], ports[0], ports[1], ports[2], clients);
    }
    fclose(f);
}

static void join_progress(const char *line)
{
    iolog("kvd: %s\n", line);
}

struct kvd {
    uv_loop_t loop;
    struct kv_server *kv;
    struct resp_server *resp;
    struct http_server *http;
    uv_signal_t sigterm, sigint;
    raft_id id;
};

static void on_signal(uv_signal_t *h, int signum)
{
    struct kvd *d = h->data;
    iolog("kvd %" PRIu64 ": %s, stopping\n", d->id, signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_signal_stop(&d->sigterm);
    uv_signal_stop(&d->sigint);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    resp_stop(d->resp);
    http_stop(d->http);
    kv_server_stop(d->kv);
}

int main(int argc, char **argv)
{
    struct kv_server_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    raft_config_default(&cfg.raft);
    cfg.request_timeout_ms = 5000;
    cfg.session_ttl_ms = 3600 * 1000;
    cfg.apply_linger_us = 1000;
    cfg.tick_ms = 10;
    size_t map_mb = 1024;
    const char *data = NULL, *cluster_file = NULL, *peers = NULL, *join = NULL;
    char cluster_name[128] = "raftkv";
    bool name_given = false;
    uint64_t nodes = 0;
    bool unsafe = false, knobs = false, insecure = false;
    const char *secret_file = NULL, *password_file = NULL, *admin_file = NULL;
    bool fault_injection = false;
    static struct kv_auth auth;
    static struct tcp_limits limits = {.max_clients = 10000,
                                       .partial_timeout_ms = 30000,
                                       .output_limit = (size_t)512 << 20,
                                       .output_timeout_ms = 60000};
    static uint8_t secret[TRANSPORT_KEY_BYTES];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                                               \
    do {                                                                                           \
        if (!v)                                                                                    \
            usage_error("%s needs a value", a);                                                    \
        i++;                                                                                       \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(a, "--id")) {
            NEED_VALUE();
            cfg.id = parse_num(v, 65535, "--id: expected a node id 1..65535, got '%s'");
        } else if (!strcmp(a, "--data")) {
            NEED_VALUE();
            data = v;
        } else if (!strcmp(a, "--cluster")) {
            NEED_VALUE();
            cluster_file = v;
        } else if (!strcmp(a, "--peers")) {
            NEED_VALUE();
            peers = v;
        } else if (!strcmp(a, "--join")) {
            NEED_VALUE();
            join = v;
        } else if (!strcmp(a, "--rebalance-concurrency")) {
            NEED_VALUE();
            cfg.rebalance_concurrency =
                (uint32_t)parse_num(v, 64, "--rebalance-concurrency: expected 1..64, got '%s'");
            if (!cfg.rebalance_concurrency)
                usage_error("--rebalance-concurrency: expected 1..64, got '%s'", v);
        } else if (!strcmp(a, "--nodes")) {
            NEED_VALUE();
            nodes = parse_num(v, KV_MAX_PEERS, "--nodes: expected 1..64, got '%s'");
        } else if (!strcmp(a, "--cluster-id")) {
            NEED_VALUE();
            snprintf(cluster_name, sizeof(cluster_name), "%s", v);
            name_given = true;
        } else if (!strcmp(a, "--shards")) {
            NEED_VALUE();
            cfg.shards =
                (uint32_t)parse_num(v, RING_MAX_SHARDS, "--shards: expected 1..4096, got '%s'");
            if (!cfg.shards)
                usage_error("--shards: expected 1..4096, got '%s'", v);
        } else if (!strcmp(a, "--replicas")) {
            NEED_VALUE();
            cfg.replicas =
                (uint32_t)parse_num(v, RING_MAX_REPLICAS, "--replicas: expected 1..7, got '%s'");
            if (!cfg.replicas)
                usage_error("--replicas: expected 1..7, got '%s'", v);
        } else if (!strcmp(a, "--vnodes")) {
            NEED_VALUE();
            cfg.vnodes =
                (uint32_t)parse_num(v, RING_MAX_VNODES, "--vnodes: expected 1..4096, got '%s'");
            if (!cfg.vnodes)
                usage_error("--vnodes: expected 1..4096, got '%s'", v);
        } else if (!strcmp(a, "--map-size")) {
            NEED_VALUE();
            map_mb = parse_num(v, 1 << 20, "--map-size: expected megabytes, got '%s'");
        } else if (!strcmp(a, "--election-timeout")) {
            NEED_VALUE();
            cfg.raft.election_timeout_ms =
                (uint32_t)parse_num(v, 600000, "--election-timeout: bad milliseconds '%s'");
        } else if (!strcmp(a, "--heartbeat")) {
            NEED_VALUE();
            cfg.raft.heartbeat_interval_ms =
                (uint32_t)parse_num(v, 600000, "--heartbeat: bad milliseconds '%s'");
        } else if (!strcmp(a, "--request-timeout")) {
            NEED_VALUE();
            cfg.request_timeout_ms =
                (uint32_t)parse_num(v, 3600000, "--request-timeout: bad milliseconds '%s'");
        } else if (!strcmp(a, "--apply")) {
            NEED_VALUE();
            if (strcmp(v, "loop") && strcmp(v, "thread")) {
                fprintf(stderr, "kvd: --apply is loop or thread, not '%s'\n", v);
                return 2;
            }
            cfg.apply_thread = !strcmp(v, "thread");
        } else if (!strcmp(a, "--apply-linger")) {
            NEED_VALUE();
            cfg.apply_linger_us =
                (uint32_t)parse_num(v, 100000, "--apply-linger: bad microseconds '%s'");
        } else if (!strcmp(a, "--session-ttl")) {
            NEED_VALUE();
            cfg.session_ttl_ms =
                1000 * parse_num(v, 10 * 365 * 86400, "--session-ttl: bad seconds '%s'");
        } else if (!strcmp(a, "--read-mode")) {
            NEED_VALUE();
            if (!strcmp(v, "linearizable") || !strcmp(v, "readindex"))
                cfg.read_mode = KV_READ_INDEX;
            else if (!strcmp(v, "lease"))
                cfg.read_mode = KV_READ_LEASE;
            else if (!strcmp(v, "unsafe_local"))
                cfg.read_mode = KV_READ_LOCAL;
            else
                usage_error("--read-mode: linearizable, lease or unsafe_local, not '%s'", v);
        } else if (!strcmp(a, "--snapshot-entries")) {
            NEED_VALUE();
            cfg.raft.snapshot_threshold_entries =
                (uint32_t)parse_num(v, 1u << 30, "--snapshot-entries: expected a count, got '%s'");
        } else if (!strcmp(a, "--snapshot-trailing")) {
            NEED_VALUE();
            cfg.raft.snapshot_trailing_entries =
                (uint32_t)parse_num(v, 1u << 30, "--snapshot-trailing: expected a count, got '%s'");
        } else if (!strcmp(a, "--trace")) {
            cfg.trace = true;
        } else if (!strcmp(a, "--trace-file")) {
            NEED_VALUE();
            if (!*v)
                usage_error("--trace-file: expected a file name%s", "");
            cfg.trace_file = v;
        } else if (!strcmp(a, "--trace-file-max-mb")) {
            NEED_VALUE();
            cfg.trace_file_max_bytes =
                (uint64_t)parse_num(v, 1 << 20, "--trace-file-max-mb: expected megabytes, got '%s'")
                << 20;
            if (!cfg.trace_file_max_bytes)
                usage_error("--trace-file-max-mb: at least 1, not '%s'", v);
        } else if (!strcmp(a, "--no-prevote")) {
            cfg.raft.prevote_off = knobs = true;
        } else if (!strcmp(a, "--no-check-quorum")) {
            cfg.raft.check_quorum_off = knobs = true;
        } else if (!strcmp(a, "--allow-unsafe")) {
            unsafe = true;
        } else if (!strcmp(a, "--cluster-secret")) {
            NEED_VALUE();
            secret_file = v;
        } else if (!strcmp(a, "--insecure")) {
            insecure = true;
        } else if (!strcmp(a, "--requirepass")) {
            NEED_VALUE();
            password_file = v;
        } else if (!strcmp(a, "--admin-token")) {
            NEED_VALUE();
            admin_file = v;
        } else if (!strcmp(a, "--enable-fault-injection")) {
            fault_injection = true;
        } else if (!strcmp(a, "--max-clients")) {
            NEED_VALUE();
            limits.max_clients =
                (unsigned)parse_num(v, 1000000, "--max-clients: expected a count, got '%s'");
        } else if (!strcmp(a, "--client-timeout")) {
            NEED_VALUE();
            limits.partial_timeout_ms =
                1000 * (uint32_t)parse_num(v, 86400, "--client-timeout: bad seconds '%s'");
        } else if (!strcmp(a, "--client-output-limit")) {
            NEED_VALUE();
            limits.output_limit =
                (size_t)parse_num(v, 1 << 20, "--client-output-limit: bad megabytes '%s'") << 20;
        } else if (!strcmp(a, "--max-request-bytes")) {
            NEED_VALUE();
            limits.max_request_bytes = (size_t)parse_num(
                v, TCP_MAX_REQUEST_BYTES,
                "--max-request-bytes: expected bytes, at most 16777216, got '%s'");
            if (limits.max_request_bytes < 1024)
                usage_error("--max-request-bytes: at least 1024, not '%s'", v);
        } else if (!strcmp(a, "--client-output-timeout")) {
            NEED_VALUE();
            limits.output_timeout_ms =
                1000 * (uint32_t)parse_num(v, 86400, "--client-output-timeout: bad seconds '%s'");
        } else {
            usage_error("unknown option '%s'", a);
        }
#undef NEED_VALUE
    }
    if (!cfg.id)
        usage_error("%s", "--id is required");
    /* A retry reaches the log within the request timeout of the first try,
     * so a TTL above it can never expire a session between the two (given
     * clocks that agree to well within the difference). */
    if (cfg.session_ttl_ms && cfg.session_ttl_ms < 2ull * cfg.request_timeout_ms) {
        char why[128];
        snprintf(why, sizeof(why), "%llu s is less than twice --request-timeout (%u ms)",
                 (unsigned long long)(cfg.session_ttl_ms / 1000), cfg.request_timeout_ms);
        usage_error("--session-ttl: %s", why);
    }
    if (!data)
        usage_error("%s", "--data is required");
    if (join ? !!cluster_file + !!peers + !!nodes > 1 : !!cluster_file + !!peers + !!nodes != 1)
        usage_error("%s", join ? "give at most one of --cluster, --peers, --nodes with --join"
                               : "give exactly one of --cluster, --peers, --nodes (or --join)");
    char file_name[128] = "";
    if (cluster_file)
        parse_cluster_file(&cfg, cluster_file, file_name, sizeof(file_name));
    if (file_name[0] && !name_given)
        snprintf(cluster_name, sizeof(cluster_name), "%s", file_name);
    if (peers)
        parse_peers(&cfg, peers);
    for (uint64_t i = 1; i <= nodes; i++)
        add_peer(&cfg, i, "127.0.0.1", -1, -1, -1, NULL);
    bool listed = false;
    for (size_t i = 0; i < cfg.n_peers; i++)
        listed = listed || cfg.peers[i].id == cfg.id;
    if (join && !listed)
        add_peer(&cfg, cfg.id, "127.0.0.1", -1, -1, -1, NULL);
    if (cfg.n_peers == 0)
        usage_error("%s", "the cluster has no nodes");
    if (knobs && !unsafe)
        usage_error("%s", "--no-prevote and --no-check-quorum break Raft's guarantees on "
                          "purpose; add --allow-unsafe to run them");
    cfg.raft.allow_unsafe = unsafe;
    if (cfg.read_mode == KV_READ_LOCAL)
        fprintf(stderr, "kvd: warning: --read-mode unsafe_local serves stale reads\n");
    if (knobs)
        fprintf(stderr, "kvd: warning: running with Raft safety features turned off\n");
    if (cfg.raft.heartbeat_interval_ms >= cfg.raft.election_timeout_ms)
        usage_error("%s", "--heartbeat must be shorter than --election-timeout");
    if (secret_file) {
        char why[512];
        if (transport_secret_from_file(secret_file, secret, why, sizeof(why)) != 0)
            usage_error("--cluster-secret: %s", why);
        cfg.cluster_secret = secret;
    } else {
        /* Redis' protected mode, for peers: without a secret, knowing the
         * cluster name and a member's id is enough to join, so such a
         * node listens on loopback only unless told otherwise. */
        for (size_t i = 0; i < cfg.n_peers; i++)
            if (cfg.peers[i].id == cfg.id && strncmp(cfg.peers[i].host, "127.", 4) != 0 &&
                !insecure)
                usage_error("would listen for peers on %s without a cluster secret: give every "
                            "node the same --cluster-secret FILE (or --insecure to accept any "
                            "process that reaches the port)",
                            cfg.peers[i].host);
    }
    char why[512];
    if (kv_auth_load(&auth, password_file, admin_file, why, sizeof(why)) != 0)
        usage_error("%s", why);
    auth.fault_injection = fault_injection;
    cfg.auth = &auth;
    cfg.limits = &limits;
    reserve_fds(&limits, cfg.n_peers);
    /* The same protected mode for clients: a node that serves them beyond
     * loopback asks for a password. */
    for (size_t i = 0; i < cfg.n_peers; i++)
        if (cfg.peers[i].id == cfg.id && strncmp(cfg.peers[i].client_host, "127.", 4) != 0 &&
            !password_file && !insecure)
            usage_error("would serve clients on %s without a password: give --requirepass FILE "
                        "(or --insecure to let anyone who reaches the ports read and write)",
                        cfg.peers[i].client_host);
    cfg.cluster_id = cluster_hash(cluster_name);
    cfg.data_dir = data;
    cfg.map_size_bytes = map_mb << 20;
    if (join) {
        char token[1024];
        size_t len = 0;
        const char *file = admin_file ? admin_file : password_file;
        if (file && kv_secret_read(file, admin_file ? "--admin-token" : "--requirepass", token,
                                   sizeof(token) - 1, &len, why, sizeof(why)))
            usage_error("%s", why);
        token[len] = '\0';
        iolog("kvd %" PRIu64 ": asking %s to add this node to the cluster\n", cfg.id, join);
        int rc = kv_join(&cfg, join, file ? token : NULL, join_progress, why, sizeof(why));
        sodium_memzero(token, sizeof(token));
        if (rc) {
            fprintf(stderr, "kvd %" PRIu64 ": --join: %s\n", cfg.id, why);
            return 1;
        }
        iolog("kvd %" PRIu64 ": joined: %zu members; starting empty, shards move here\n", cfg.id,
              cfg.n_peers);
    }

    /* --trace-file run/%n.jsonl: one option for every node of a cluster. */
    char trace_path[4096];
    if (cfg.trace_file && strstr(cfg.trace_file, "%n")) {
        const char *at = strstr(cfg.trace_file, "%n");
        snprintf(trace_path, sizeof(trace_path), "%.*s%" PRIu64 "%s", (int)(at - cfg.trace_file),
                 cfg.trace_file, cfg.id, at + 2);
        cfg.trace_file = trace_path;
    }

    struct kvd d;
    memset(&d, 0, sizeof(d));
    d.id = cfg.id;
    uv_loop_init(&d.loop);
    char err[512];
    if (kv_server_start(&d.kv, &d.loop, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "kvd %" PRIu64 ": %s\n", cfg.id, err);
        return 1;
    }
    const struct kv_peer *self = kv_server_self(d.kv);
    int rc = resp_start(&d.resp, &d.loop, d.kv, self->client_host, self->resp_port);
    if (rc == 0)
        rc = http_start(&d.http, &d.loop, d.kv, self->client_host, self->http_port);
    if (rc) {
        fprintf(stderr, "kvd %" PRIu64 ": cannot listen on %s (ports %u, %u): %s\n", cfg.id,
                self->client_host, self->resp_port, self->http_port, uv_strerror(rc));
        return 1;
    }
    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    iolog("kvd %" PRIu64 ": cluster '%s' (%zu nodes, %u shard%s), data %s, redis %s:%u, http "
          "%s:%u, raft %s:%u, reads %s\n",
          cfg.id, cluster_name, cfg.n_peers, kv_server_shards(d.kv),
          kv_server_shards(d.kv) == 1 ? "" : "s", data, self->client_host, self->resp_port,
          self->client_host, self->http_port, self->host, self->raft_port,
          cfg.read_mode == KV_READ_INDEX   ? "linearizable"
          : cfg.read_mode == KV_READ_LEASE ? "lease"
                                           : "unsafe_local");
    uv_run(&d.loop, UV_RUN_DEFAULT);
    uv_loop_close(&d.loop);
    iolog("kvd %" PRIu64 ": stopped\n", cfg.id);
    return 0;
}
