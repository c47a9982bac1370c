/* kvctl — the command-line client of kvd. `kvctl --help` is its manual.
 *
 * It talks the Redis protocol (hiredis) to any node. A write carries an
 * explicit session {client_id, seq} (SESSION client seq ...), so when a
 * node fails under it kvctl can send the same command to the next node and
 * it is still applied at most once (thesis §6.3). */
#include <ctype.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: kvctl [--node HOST:PORT]... [--json] [--timeout MS] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  put KEY VALUE          set a key\n"
    "  get KEY                print its value (exit 1 if absent)\n"
    "  del KEY...             delete keys, print how many existed\n"
    "  cas KEY EXPECTED NEW   set KEY to NEW only if it holds EXPECTED (exit 1 if not)\n"
    "  incr KEY [BY]          add to an integer, print the result\n"
    "  status                 every node of the cluster: role, term, leader, commit, applied,\n"
    "                         and on the leader how far each follower has replicated; with\n"
    "                         shards, a shard x node table (L/F/C, term, commit)\n"
    "  ring                   the shards: their share of the keys, replicas, leader, term,\n"
    "                         keys and bytes; which node holds and leads how many\n"
    "  locate KEY             the key's hash, shard, replicas and leader\n"
    "  leader [KEY]           the leader's id and Redis address (of KEY's shard)\n"
    "  transfer [ID]          ask the leader to hand leadership to ID (or the most\n"
    "                         up-to-date follower)\n"
    "  node list              the members: id, addresses, replicas each is to hold\n"
    "  node add ID HOST[:RAFT[:RESP[:HTTP]]]  add a member (ports default to 9380+ID,\n"
    "                         6380+ID, 8380+ID); start it with kvd --join. Its shards move to\n"
    "                         it in the background, by Raft membership change\n"
    "  node remove ID         remove a member; its shards move away (stop it once\n"
    "                         'rebalance status' shows every group done)\n"
    "  node replace ID        a member that lost its data: remove it, wait until every\n"
    "                         group is done without it, make every node forget its old\n"
    "                         incarnation; then start it empty with kvd --join\n"
    "  rebalance status       every group: its voters, learners and target replicas, done,\n"
    "                         moving or planned, and snapshot bytes sent to new replicas\n"
    "  rebalance wait [S]     wait (default 120 s) until every group has its target\n"
    "                         replicas; exit 3 if not by then\n"
    "  forget ID [replaced]   every node forgets node ID's data-dir incarnation, so that ID,\n"
    "                         started again with an empty data dir, is taken back. Only once\n"
    "                         the other nodes are a majority and caught up (docs/kvd.md, A\n"
    "                         node that lost its data); needs --admin-token if nodes have one.\n"
    "                         replaced: ID was removed and joins again as a new member (node\n"
    "                         replace); a node whose log still counts ID as a voter refuses\n"
    "\n"
    "Options:\n"
    "  --node HOST:PORT       a node's Redis address; repeat it to give several (tried in\n"
    "                         order). Default: 127.0.0.1:6381 .. 127.0.0.1:6385\n"
    "  --json                 print JSON instead of text\n"
    "  --timeout MS           per attempt (default 6000)\n"
    "  --auth FILE            the password (first line of FILE) of nodes started with\n"
    "                         --requirepass; or set KVCTL_AUTH to it\n"
    "  --admin-token FILE     the admin token (transfer, on nodes with --admin-token)\n"
    "\n"
    "A write that fails on one node (connection lost) is sent to the next with the same\n"
    "session, so it is applied at most once. Exit status: 0 done, 1 not found / CAS\n"
    "mismatch, 2 usage, 3 no node reachable or the cluster refused (no quorum).\n";

enum { MAX_NODES = 16 };

struct opts {
    char hosts[MAX_NODES][64];
    int ports[MAX_NODES];
    int n;
    bool json;
    int timeout_ms;
    char user[8];     /* AUTH's user: "default" (the password) or "admin" */
    char secret[256]; /* empty: no AUTH */
};

/* The first line of a secret file. */
static void read_secret(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f || !fgets(out, (int)len, f)) {
        fprintf(stderr, "kvctl: cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    if (!out[0]) {
        fprintf(stderr, "kvctl: %s is empty\n", path);
        exit(2);
    }
}

_Noreturn static void usage_error(const char *msg)
{
    fprintf(stderr, "kvctl: %s\n(kvctl --help for the manual)\n", msg);
    exit(2);
}

static redisContext *connect_to(const struct opts *o, int i)
{
    struct timeval tv = {o->timeout_ms / 1000, (o->timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(o->hosts[i], o->ports[i], tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (o->secret[0]) {
        redisReply *r = redisCommand(c, "AUTH %s %s", o->user, o->secret);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "kvctl: %s:%d refused the %s: %s\n", o->hosts[i], o->ports[i],
                    strcmp(o->user, "admin") ? "password" : "admin token",
                    r ? r->str : "connection lost");
            exit(3);
        }
        freeReplyObject(r);
    }
    return c;
}

/* Run argv on the first node that answers; NULL if none did. A reply
 * that is an error from a node that is shutting down moves on too. */
static redisReply *run(const struct opts *o, int argc, const char **argv, int *used)
{
    for (int i = 0; i < o->n; i++) {
        redisContext *c = connect_to(o, i);
        if (!c)
            continue;
        redisReply *r = redisCommandArgv(c, argc, argv, NULL);
        redisFree(c);
        if (!r)
            continue; /* lost the connection: the next node, same session */
        if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "UNAVAILABLE", 11) && i + 1 < o->n) {
            freeReplyObject(r);
            continue;
        }
        if (used)
            *used = i;
        return r;
    }
    return NULL;
}

static uint64_t random_id(void)
{
    uint64_t x = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&x, sizeof(x), 1, f) != 1)
            x = 0;
        fclose(f);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    x ^= (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
    return x ? x : 1;
}

static int fail_reply(const struct opts *o, redisReply *r)
{
    if (!r) {
        fprintf(stderr, "kvctl: no node answered (tried %d address%s)\n", o->n,
                o->n == 1 ? "" : "es");
        return 3;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        if (o->json)
            printf("{\"error\":\"%s\"}\n", r->str);
        else
            fprintf(stderr, "kvctl: %s\n", r->str);
        freeReplyObject(r);
        return 3;
    }
    return -1;
}

static void print_string(const struct opts *o, const char *key, const char *s, size_t len)
{
    if (o->json) {
        json_t *v = json_stringn(s, len);
        json_t *obj = json_object();
        json_object_set_new(obj, "key", json_string(key));
        json_object_set_new(obj, "value", v ? v : json_null());
        char *text = json_dumps(obj, JSON_COMPACT);
        printf("%s\n", text ? text : "{}");
        free(text);
        json_decref(obj);
    } else {
        fwrite(s, 1, len, stdout);
        putchar('\n');
    }
}

/* A node's answer to a command that returns JSON (RAFT.STATUS, RAFT.RING,
 * RAFT.LOCATE key), or NULL. */
static json_t *json_of(const struct opts *o, const char *host, int port, int argc,
                       const char **argv)
{
    struct opts one = *o;
    snprintf(one.hosts[0], sizeof(one.hosts[0]), "%s", host);
    one.ports[0] = port;
    one.n = 1;
    one.timeout_ms = o->timeout_ms < 2000 ? o->timeout_ms : 2000;
    redisReply *r = run(&one, argc, argv, NULL);
    json_t *st = NULL;
    if (r && r->type == REDIS_REPLY_STRING) {
        json_error_t e;
        st = json_loadb(r->str, r->len, 0, &e);
    }
    if (r)
        freeReplyObject(r);
    return st;
}

static json_t *status_of(const struct opts *o, const char *host, int port)
{
    const char *argv[] = {"RAFT.STATUS"};
    return json_of(o, host, port, 1, argv);
}

static int split_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= hostlen)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = atoi(colon + 1);
    return *port > 0 && *port < 65536 ? 0 : -1;
}

static json_int_t geti(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* A string member, or "" when absent. */
static const char *str_of(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

/* A sharded cluster: each node's groups, then a shard x node grid of
 * L (leader) / F (follower) / C (candidate) with term and commit index;
 * '-' where the node holds no replica, '?' where it did not answer. */
static void print_shard_grid(json_t *all, json_int_t shards)
{
    size_t i;
    json_t *st;
    printf("%-4s %-16s %-12s %6s %6s\n", "ID", "REDIS", "STATE", "GROUPS", "LEADS");
    json_array_foreach(all, i, st)
    {
        const char *role = str_of(st, "role");
        bool up = strcmp(role, "unreachable") != 0;
        printf("%-4" JSON_INTEGER_FORMAT " %-16s %-12s", geti(st, "id"), str_of(st, "resp"),
               !up                       ? "unreachable"
               : !strcmp(role, "failed") ? "failed"
                                         : "up");
        if (up)
            printf(" %6zu %6" JSON_INTEGER_FORMAT, json_array_size(json_object_get(st, "groups")),
                   geti(st, "leading"));
        if (json_is_string(json_object_get(st, "error")))
            printf("  error: %s", str_of(st, "error"));
        putchar('\n');
    }
    printf("\n%-6s", "SHARD");
    json_array_foreach(all, i, st) printf(" node %-8" JSON_INTEGER_FORMAT, geti(st, "id"));
    putchar('\n');
    for (json_int_t sh = 0; sh < shards; sh++) {
        printf("%-6" JSON_INTEGER_FORMAT, sh);
        json_array_foreach(all, i, st)
        {
            char cell[32] = "?";
            if (strcmp(str_of(st, "role"), "unreachable") != 0) {
                snprintf(cell, sizeof(cell), "-");
                size_t k;
                json_t *g;
                json_array_foreach(json_object_get(st, "groups"), k, g) if (geti(g, "shard") == sh)
                    snprintf(cell, sizeof(cell),
                             "%c t%" JSON_INTEGER_FORMAT " c%" JSON_INTEGER_FORMAT,
                             toupper((unsigned char)str_of(g, "role")[0]), geti(g, "term"),
                             geti(g, "commit"));
            }
            printf(" %-13s", cell);
        }
        putchar('\n');
    }
}

/* RAFT.STATUS of the first node that answers, or NULL (said). */
static json_t *first_status(const struct opts *o)
{
    json_t *first = NULL;
    for (int i = 0; i < o->n && !first; i++)
        first = status_of(o, o->hosts[i], o->ports[i]);
    if (!first)
        fprintf(stderr, "kvctl: no node answered RAFT.STATUS\n");
    return first;
}

static int cmd_status(const struct opts *o)
{
    json_t *first = first_status(o);
    if (!first)
        return 3;
    json_t *peers = json_object_get(first, "peers");
    json_t *all = json_array();
    json_t *leader_st = NULL;
    size_t idx;
    json_t *p;
    json_array_foreach(peers, idx, p)
    {
        char host[64];
        int port;
        json_t *st = NULL;
        if (split_addr(json_string_value(json_object_get(p, "resp")), host, sizeof(host), &port) ==
            0)
            st = status_of(o, host, port);
        if (!st) {
            st = json_object();
            json_object_set_new(st, "id", json_integer(geti(p, "id")));
            json_object_set_new(st, "role", json_string("unreachable"));
        }
        json_object_set(st, "resp", json_object_get(p, "resp"));
        if (!strcmp(json_string_value(json_object_get(st, "role")), "leader"))
            leader_st = st;
        json_array_append_new(all, st);
    }
    if (o->json) {
        char *text = json_dumps(all, JSON_COMPACT);
        printf("%s\n", text ? text : "[]");
        free(text);
    } else if (geti(first, "shards") > 1) {
        print_shard_grid(all, geti(first, "shards"));
    } else {
        printf("%-4s %-16s %-12s %6s %6s %9s %9s %9s %9s\n", "ID", "REDIS", "ROLE", "TERM",
               "LEADER", "COMMIT", "APPLIED", "LAST", "MATCH");
        json_array_foreach(all, idx, p)
        {
            const char *role = json_string_value(json_object_get(p, "role"));
            char match[24] = "-";
            if (leader_st) {
                size_t k;
                json_t *lp;
                json_array_foreach(json_object_get(leader_st, "peers"), k, lp)
                {
                    if (geti(lp, "id") == geti(p, "id") && json_object_get(lp, "match_index"))
                        snprintf(match, sizeof(match), "%" JSON_INTEGER_FORMAT,
                                 geti(lp, "match_index"));
                }
            }
            if (!strcmp(role, "unreachable"))
                printf("%-4" JSON_INTEGER_FORMAT " %-16s %-12s\n", geti(p, "id"),
                       json_string_value(json_object_get(p, "resp")), role);
            else
                printf("%-4" JSON_INTEGER_FORMAT " %-16s %-12s %6" JSON_INTEGER_FORMAT
                       " %6" JSON_INTEGER_FORMAT " %9" JSON_INTEGER_FORMAT " %9" JSON_INTEGER_FORMAT
                       " %9" JSON_INTEGER_FORMAT " %9s%s%s\n",
                       geti(p, "id"), json_string_value(json_object_get(p, "resp")), role,
                       geti(p, "term"), geti(p, "leader"), geti(p, "commit"), geti(p, "applied"),
                       geti(p, "last_index"), match,
                       json_is_string(json_object_get(p, "error")) ? "  error: " : "",
                       json_is_string(json_object_get(p, "error"))
                           ? json_string_value(json_object_get(p, "error"))
                           : "");
        }
    }
    json_decref(all);
    json_decref(first);
    return 0;
}

/* ------------------------------------------------------------------------
 * kvctl ring, kvctl locate: the placement (docs/sharding.md)
 * ------------------------------------------------------------------------ */

static void print_json(json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    printf("%s\n", text ? text : "null");
    free(text);
}

/* Every member's RAFT.RING (an array; JSON null for one that did not
 * answer), from the member list of the first node that answers. */
static json_t *rings_of_all(const struct opts *o, json_t **first_status)
{
    json_t *first = NULL;
    for (int i = 0; i < o->n && !first; i++)
        first = status_of(o, o->hosts[i], o->ports[i]);
    if (!first)
        return NULL;
    json_t *all = json_array();
    size_t idx;
    json_t *p;
    json_array_foreach(json_object_get(first, "peers"), idx, p)
    {
        char host[64];
        int port;
        const char *argv[] = {"RAFT.RING"};
        json_t *ring = NULL;
        if (split_addr(json_string_value(json_object_get(p, "resp")), host, sizeof(host), &port) ==
            0)
            ring = json_of(o, host, port, 1, argv);
        json_array_append_new(all, ring ? ring : json_null());
    }
    *first_status = first;
    return all;
}

/* The row of shard `shard` from the node that knows it best: its leader,
 * else a replica, else anyone. Borrowed from rings. */
static json_t *best_row(json_t *rings, json_int_t shard)
{
    json_t *best = NULL;
    int best_rank = -1;
    size_t i;
    json_t *ring;
    json_array_foreach(rings, i, ring)
    {
        json_t *row = json_array_get(json_object_get(ring, "ring"), (size_t)shard);
        if (!row)
            continue;
        const char *role = json_string_value(json_object_get(row, "role"));
        int rank =
            role && !strcmp(role, "leader") ? 2 : json_is_true(json_object_get(row, "hosted"));
        if (rank > best_rank) {
            best = row;
            best_rank = rank;
        }
    }
    return best;
}

static void ids_text(json_t *arr, char *buf, size_t len)
{
    size_t at = 0, i;
    json_t *v;
    buf[0] = '\0';
    json_array_foreach(arr, i, v)
    {
        int n = snprintf(buf + at, len - at, "%s%" JSON_INTEGER_FORMAT, i ? "," : "",
                         json_integer_value(v));
        if (n < 0 || (size_t)n >= len - at)
            break;
        at += (size_t)n;
    }
}

static int cmd_ring(const struct opts *o)
{
    json_t *first = NULL;
    json_t *rings = rings_of_all(o, &first);
    json_t *map = NULL;
    size_t i;
    json_t *ring;
    json_array_foreach(rings, i, ring) if (!map && json_is_object(ring)) map = ring;
    if (!map) {
        fprintf(stderr, "kvctl: no node answered RAFT.RING\n");
        json_decref(rings);
        json_decref(first);
        return 3;
    }
    json_int_t shards = geti(map, "shards");
    json_t *rows = json_array();
    for (json_int_t s = 0; s < shards; s++) {
        json_t *row = best_row(rings, s);
        json_array_append(rows, row ? row : json_null());
    }
    /* Nodes: replicas held, shards led; and the spread of keys. */
    json_t *nodes = json_object_get(map, "nodes");
    size_t n_nodes = json_array_size(nodes);
    json_int_t keys_total = 0, keys_max = 0;
    double share_max = 0;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        json_int_t k = geti(row, "keys");
        keys_total += k;
        keys_max = k > keys_max ? k : keys_max;
        double sh = json_real_value(json_object_get(row, "share"));
        share_max = sh > share_max ? sh : share_max;
    }
    if (o->json) {
        json_t *out = json_deep_copy(map);
        json_object_del(out, "node");
        json_object_set(out, "ring", rows);
        print_json(out);
        json_decref(out);
    } else {
        printf("%" JSON_INTEGER_FORMAT " shards x %" JSON_INTEGER_FORMAT
               " replicas, %" JSON_INTEGER_FORMAT
               " points per shard and per node, map epoch %" JSON_INTEGER_FORMAT " (%s)\n\n",
               shards, geti(map, "replicas"), geti(map, "vnodes"), geti(map, "epoch"),
               json_string_value(json_object_get(map, "fingerprint")));
        printf("%-5s %-6s %-7s %-14s %-6s %-5s %8s %9s %10s\n", "SHARD", "GROUP", "SHARE",
               "REPLICAS", "LEADER", "TERM", "COMMIT", "KEYS", "BYTES");
        json_array_foreach(rows, i, row)
        {
            char reps[64];
            ids_text(json_object_get(row, "replicas"), reps, sizeof(reps));
            char leader[16] = "-";
            if (geti(row, "leader"))
                snprintf(leader, sizeof(leader), "%" JSON_INTEGER_FORMAT, geti(row, "leader"));
            if (json_is_true(json_object_get(row, "hosted")))
                printf("%-5zu %-6" JSON_INTEGER_FORMAT
                       " %5.1f%%  %-14s %-6s %-5" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT
                       " %9" JSON_INTEGER_FORMAT " %10" JSON_INTEGER_FORMAT "\n",
                       i, geti(row, "group"), 100 * json_real_value(json_object_get(row, "share")),
                       reps, leader, geti(row, "term"), geti(row, "commit"), geti(row, "keys"),
                       geti(row, "bytes"));
            else
                printf("%-5zu %-6" JSON_INTEGER_FORMAT
                       " %5.1f%%  %-14s %-6s (no replica answered)\n",
                       i, geti(row, "group"), 100 * json_real_value(json_object_get(row, "share")),
                       reps, leader);
        }
        printf("\n%-5s %9s %6s\n", "NODE", "REPLICAS", "LEADS");
        json_t *id;
        json_array_foreach(nodes, i, id)
        {
            int held = 0, leads = 0;
            size_t k;
            json_array_foreach(rows, k, row)
            {
                size_t r;
                json_t *rep;
                json_array_foreach(json_object_get(row, "replicas"), r, rep) held +=
                    json_integer_value(rep) == json_integer_value(id);
                leads += geti(row, "leader") == json_integer_value(id) &&
                         !strcmp(str_of(row, "role"), "leader");
            }
            printf("%-5" JSON_INTEGER_FORMAT " %9d %6d\n", json_integer_value(id), held, leads);
        }
        double mean = shards ? (double)keys_total / (double)shards : 0;
        printf("\nbalance: %" JSON_INTEGER_FORMAT " keys, the fullest shard holds %.2fx the mean"
               "; the largest share of the ring is %.2fx a fair one (%zu nodes)\n",
               keys_total, mean > 0 ? (double)keys_max / mean : 0.0, share_max * (double)shards,
               n_nodes);
    }
    json_decref(rows);
    json_decref(rings);
    json_decref(first);
    return 0;
}

/* kvctl forget ID: RAFT.FORGET on every member but ID itself (replaced:
 * RAFT.FORGET ID REPLACED, for kvctl node replace). */
static int cmd_forget(const struct opts *o, const char *id, bool replaced)
{
    json_t *first = first_status(o);
    if (!first)
        return 3;
    int failed = 0, told = 0;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(first, "peers"), i, p)
    {
        char host[64], self[24];
        int port;
        snprintf(self, sizeof(self), "%" JSON_INTEGER_FORMAT, geti(p, "id"));
        if (!strcmp(self, id))
            continue;
        struct opts one = *o;
        if (split_addr(str_of(p, "resp"), host, sizeof(host), &port)) {
            failed++;
            continue;
        }
        snprintf(one.hosts[0], sizeof(one.hosts[0]), "%s", host);
        one.ports[0] = port;
        one.n = 1;
        const char *argv[] = {"RAFT.FORGET", id, "REPLACED"};
        redisReply *r = run(&one, replaced ? 3 : 2, argv, NULL);
        bool ok = r && r->type == REDIS_REPLY_STATUS;
        if (!o->json)
            printf("node %s: %s\n", self, ok ? "forgot it" : r ? r->str : "did not answer");
        failed += !ok;
        told += ok;
        if (r)
            freeReplyObject(r);
    }
    if (o->json)
        printf("{\"told\":%d,\"failed\":%d}\n", told, failed);
    else if (failed)
        fprintf(stderr,
                "kvctl: %d node%s did not forget it: run kvctl forget again once they are "
                "up\n",
                failed, failed == 1 ? "" : "s");
    json_decref(first);
    return failed ? 3 : 0;
}

/* ------------------------------------------------------------------------
 * Members (docs/membership.md)
 * ------------------------------------------------------------------------ */

/* The members table, from the first node that answers. */
static json_t *members_of(const struct opts *o)
{
    json_t *t = NULL;
    const char *argv[] = {"RAFT.NODES"};
    for (int i = 0; i < o->n && !t; i++)
        t = json_of(o, o->hosts[i], o->ports[i], 1, argv);
    if (!t)
        fprintf(stderr, "kvctl: no node answered RAFT.NODES\n");
    return t;
}

static int cmd_node_list(const struct opts *o)
{
    json_t *t = members_of(o);
    if (!t)
        return 3;
    if (o->json) {
        print_json(t);
    } else {
        printf("members (epoch %" JSON_INTEGER_FORMAT "%s): %" JSON_INTEGER_FORMAT
               " shards, %" JSON_INTEGER_FORMAT " replicas each\n",
               geti(t, "epoch"), json_is_true(json_object_get(t, "stored")) ? "" : ", as created",
               geti(t, "shards"), geti(t, "replicas"));
        printf("%4s  %-21s  %-21s  %-21s  %s\n", "id", "raft", "redis", "http", "replicas");
        size_t i;
        json_t *n;
        json_array_foreach(json_object_get(t, "nodes"), i, n)
        {
            char raft[40], resp[40], http[40];
            snprintf(raft, sizeof(raft), "%s:%" JSON_INTEGER_FORMAT, str_of(n, "host"),
                     geti(n, "raft_port"));
            snprintf(resp, sizeof(resp), "%s:%" JSON_INTEGER_FORMAT, str_of(n, "client_host"),
                     geti(n, "resp_port"));
            snprintf(http, sizeof(http), "%s:%" JSON_INTEGER_FORMAT, str_of(n, "client_host"),
                     geti(n, "http_port"));
            printf("%4" JSON_INTEGER_FORMAT "  %-21s  %-21s  %-21s  %" JSON_INTEGER_FORMAT "\n",
                   geti(n, "id"), raft, resp, http, geti(n, "shards"));
        }
    }
    json_decref(t);
    return 0;
}

/* node add ID HOST[:RAFT[:RESP[:HTTP]]] | node remove ID */
static int cmd_node_change(const struct opts *o, bool add, char **args, int nargs)
{
    char *end;
    unsigned long id = strtoul(args[0], &end, 10);
    if (*end || !id || id > 65535 || nargs != (add ? 2 : 1))
        usage_error("usage: kvctl node add ID HOST[:RAFT[:RESP[:HTTP]]] | kvctl node remove ID");
    char host[64] = "", ids[24], ports[3][16];
    long p[3] = {9380 + (long)id, 6380 + (long)id, 8380 + (long)id};
    if (add) {
        char *copy = strdup(args[1]), *save = NULL;
        char *h = strtok_r(copy, ":", &save);
        if (!h || strlen(h) >= sizeof(host))
            usage_error("node add: HOST[:RAFT[:RESP[:HTTP]]]");
        snprintf(host, sizeof(host), "%s", h);
        for (int k = 0; k < 3; k++) {
            char *t = strtok_r(NULL, ":", &save);
            if (!t)
                break;
            p[k] = strtol(t, &end, 10);
            if (*end || p[k] <= 0 || p[k] > 65535)
                usage_error("node add: ports are 1..65535");
        }
        free(copy);
    }
    snprintf(ids, sizeof(ids), "%lu", id);
    for (int k = 0; k < 3; k++)
        snprintf(ports[k], sizeof(ports[k]), "%ld", p[k]);
    const char *a[] = {"RAFT.NODE", add ? "ADD" : "REMOVE", ids, host, ports[0], ports[1],
                       ports[2]};
    redisReply *r = run(o, add ? 7 : 3, a, NULL);
    int rc = fail_reply(o, r);
    if (rc >= 0)
        return rc;
    json_error_t e;
    json_t *t = r->type == REDIS_REPLY_STRING ? json_loadb(r->str, r->len, 0, &e) : NULL;
    if (o->json)
        printf("%.*s\n", (int)r->len, r->str);
    else if (add)
        printf("node %lu added (members epoch %" JSON_INTEGER_FORMAT
               "). Start it with: kvd --id %lu --join <a member's HOST:HTTP> --peers "
               "%lu=%s:%ld:%ld:%ld ... Its shards move to it in the background: kvctl rebalance "
               "status\n",
               id, t ? geti(t, "epoch") : 0, id, id, host, p[0], p[1], p[2]);
    else
        printf("node %lu removed (members epoch %" JSON_INTEGER_FORMAT
               "). Its shards move away in the background; stop it once kvctl rebalance status "
               "shows every group done\n",
               id, t ? geti(t, "epoch") : 0);
    json_decref(t);
    freeReplyObject(r);
    return 0;
}

/* Every member's RAFT.REBALANCE, as one list of groups (each told by its
 * leader), and whether every group has its target replicas. */
static json_t *rebalance_of_all(const struct opts *o, int *silent)
{
    json_t *t = members_of(o);
    if (!t)
        return NULL;
    json_t *groups = json_array();
    *silent = 0;
    size_t i;
    json_t *n;
    /* A node still on an older members table judges its groups by the old
     * placement: until every member has the newest, nothing is done. */
    json_int_t newest = geti(t, "epoch"), lagging = 0;
    json_array_foreach(json_object_get(t, "nodes"), i, n)
    {
        const char *argv[] = {"RAFT.REBALANCE"};
        json_t *rb = json_of(o, str_of(n, "client_host"), (int)geti(n, "resp_port"), 1, argv);
        if (!rb) {
            (*silent)++;
            continue;
        }
        if (geti(rb, "epoch") > newest) {
            lagging += (json_int_t)i; /* the ones asked before had an older table */
            newest = geti(rb, "epoch");
        } else if (geti(rb, "epoch") < newest) {
            lagging++;
        }
        size_t k;
        json_t *g;
        json_array_foreach(json_object_get(rb, "groups"), k, g) json_array_append(groups, g);
        json_decref(rb);
    }
    json_t *out = json_pack("{s:I,s:I,s:I,s:o}", "epoch", newest, "shards", geti(t, "shards"),
                            "lagging", lagging, "groups", groups);
    json_decref(t);
    return out;
}

/* How many of the G + 1 groups are done (each counted once: a group two
 * nodes claim to lead, across a change of leader, by its first report). */
static json_int_t groups_done(json_t *rb, json_int_t *reported)
{
    json_int_t shards = geti(rb, "shards"), done = 0, seen = 0;
    for (json_int_t g = 0; g <= shards; g++) {
        size_t i;
        json_t *row;
        json_array_foreach(json_object_get(rb, "groups"), i, row)
        {
            if (geti(row, "group") != g)
                continue;
            seen++;
            done += !strcmp(str_of(row, "state"), "done");
            break;
        }
    }
    *reported = seen;
    return done;
}

static int cmd_rebalance_status(const struct opts *o)
{
    int silent;
    json_t *rb = rebalance_of_all(o, &silent);
    if (!rb)
        return 3;
    json_int_t reported, done = groups_done(rb, &reported), total = geti(rb, "shards") + 1;
    if (o->json) {
        json_object_set_new(rb, "done", json_integer(done));
        json_object_set_new(rb, "unreported", json_integer(total - reported));
        print_json(rb);
    } else {
        printf("members epoch %" JSON_INTEGER_FORMAT ": %" JSON_INTEGER_FORMAT
               " of %" JSON_INTEGER_FORMAT " groups at their target replicas%s\n",
               geti(rb, "epoch"), done, total,
               reported < total ? " (some groups have no leader that answered)" : "");
        printf("%6s  %-8s  %-7s  %-14s  %-10s  %-14s  %s\n", "shard", "state", "leader", "voters",
               "learners", "target", "snapshot bytes");
        for (json_int_t g = 0; g < total; g++) {
            size_t i;
            json_t *row;
            json_array_foreach(json_object_get(rb, "groups"), i, row)
            {
                if (geti(row, "group") != g)
                    continue;
                char shard[24], v[64], l[64], t[64];
                if (g == 0)
                    snprintf(shard, sizeof(shard), "meta");
                else
                    snprintf(shard, sizeof(shard), "%" JSON_INTEGER_FORMAT, g - 1);
                ids_text(json_object_get(row, "voters"), v, sizeof(v));
                ids_text(json_object_get(row, "learners"), l, sizeof(l));
                ids_text(json_object_get(row, "target"), t, sizeof(t));
                printf("%6s  %-8s  %-7" JSON_INTEGER_FORMAT
                       "  %-14s  %-10s  %-14s  %" JSON_INTEGER_FORMAT "\n",
                       shard, str_of(row, "state"), geti(row, "leader"), v, l[0] ? l : "-", t,
                       geti(row, "snapshot_bytes_sent"));
                break;
            }
        }
        if (silent)
            printf("(%d node%s did not answer)\n", silent, silent == 1 ? "" : "s");
        if (geti(rb, "lagging"))
            printf("(some nodes have not applied the newest members table yet: their moves are "
                   "still to come)\n");
    }
    json_decref(rb);
    return 0;
}

static int cmd_rebalance_wait(const struct opts *o, int seconds)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int silent;
        json_t *rb = rebalance_of_all(o, &silent);
        json_int_t reported = 0, done = rb ? groups_done(rb, &reported) : 0,
                   total = rb ? geti(rb, "shards") + 1 : 1, lagging = rb ? geti(rb, "lagging") : 0;
        json_decref(rb);
        clock_gettime(CLOCK_MONOTONIC, &now);
        double took = (double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
        if (rb && done == total && !lagging) {
            printf(o->json ? "{\"done\":true,\"seconds\":%.1f}\n"
                           : "every group is at its target replicas (waited %.1f s)\n",
                   took);
            return 0;
        }
        if (took >= seconds) {
            if (o->json)
                printf("{\"done\":false,\"groups_done\":%" JSON_INTEGER_FORMAT "}\n", done);
            else
                fprintf(stderr,
                        "kvctl: after %d s, %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT
                        " groups are at their target replicas (kvctl rebalance status)\n",
                        seconds, done, total);
            return 3;
        }
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* node replace ID: the safe way back for a member that lost its data
 * (docs/membership.md): out of the table, out of every group (committed,
 * so a majority of each holds a configuration without it), its old
 * incarnation forgotten; the operator then starts it with --join. */
static int cmd_node_replace(const struct opts *o, char **args, int nargs)
{
    if (nargs != 1)
        usage_error("usage: kvctl node replace ID");
    json_t *t = members_of(o);
    if (!t)
        return 3;
    char *end;
    json_int_t id = strtoll(args[0], &end, 10);
    bool member = false;
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(t, "nodes"), i, n) member = member || geti(n, "id") == id;
    json_decref(t);
    if (*end || id <= 0) {
        usage_error("usage: kvctl node replace ID");
    }
    if (member) {
        int rc = cmd_node_change(o, false, args, 1);
        if (rc)
            return rc;
    }
    int rc = cmd_rebalance_wait(o, 300);
    if (rc)
        return rc;
    /* A node whose log still counts it as a voter (it missed the removal)
     * refuses; it is asked again while the removal reaches it. */
    for (int tries = 0; (rc = cmd_forget(o, args[0], true)) != 0 && tries < 20; tries++) {
        struct timespec ts = {0, 500 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (rc)
        return rc;
    if (!o->json)
        printf("node %s can come back empty now: kvd --id %s --data <an empty dir> --join <a "
               "member's HOST:HTTP> --peers %s=HOST:RAFT:RESP:HTTP ...\n",
               args[0], args[0], args[0]);
    return 0;
}

/* The resp address of node id, from a RAFT.STATUS answer's peers. */
static bool resp_of(json_t *status, json_int_t id, char *host, size_t hostlen, int *port)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(status, "peers"), i,
                       p) if (geti(p, "id") ==
                              id) return split_addr(json_string_value(json_object_get(p, "resp")),
                                                    host, hostlen, port) == 0;
    return false;
}

/* The key's RAFT.LOCATE from the node that knows best: the first that
 * answers, then its shard's replicas until one leads it. NULL if none
 * answered. *status_out: the first node's RAFT.STATUS (the caller frees). */
static json_t *locate(const struct opts *o, const char *key, json_t **status_out)
{
    const char *argv[] = {"RAFT.LOCATE", key};
    json_t *first = NULL, *loc = NULL;
    for (int i = 0; i < o->n && !first; i++)
        if ((first = status_of(o, o->hosts[i], o->ports[i])))
            loc = json_of(o, o->hosts[i], o->ports[i], 2, argv);
    *status_out = first;
    if (!loc)
        return NULL;
    /* A node that is not a replica knows the leader only by hearsay: ask
     * the replicas themselves. */
    size_t i;
    json_t *rep;
    json_array_foreach(json_object_get(loc, "replicas"), i, rep)
    {
        if (!strcmp(str_of(loc, "role"), "leader"))
            break;
        char host[64];
        int port;
        json_t *other = NULL;
        if (resp_of(first, json_integer_value(rep), host, sizeof(host), &port))
            other = json_of(o, host, port, 2, argv);
        if (other && json_is_true(json_object_get(other, "hosted"))) {
            json_decref(loc);
            loc = other;
        } else if (other) {
            json_decref(other);
        }
    }
    return loc;
}

static int cmd_locate(const struct opts *o, const char *key)
{
    json_t *first;
    json_t *loc = locate(o, key, &first);
    if (!loc) {
        fprintf(stderr, "kvctl: no node answered RAFT.LOCATE\n");
        json_decref(first);
        return 3;
    }
    if (o->json) {
        json_object_set_new(loc, "key", json_string(key));
        print_json(loc);
    } else {
        char reps[64];
        ids_text(json_object_get(loc, "replicas"), reps, sizeof(reps));
        printf("key %s: hash %s, shard %" JSON_INTEGER_FORMAT " (Raft group %" JSON_INTEGER_FORMAT
               "), replicas %s, ",
               key, json_string_value(json_object_get(loc, "hash")), geti(loc, "shard"),
               geti(loc, "group"), reps);
        if (geti(loc, "leader"))
            printf("leader %" JSON_INTEGER_FORMAT "%s%s%s\n", geti(loc, "leader"),
                   json_object_get(loc, "leader_resp") ? " (" : "", str_of(loc, "leader_resp"),
                   json_object_get(loc, "leader_resp") ? ")" : "");
        else
            printf("no leader known\n");
    }
    json_decref(loc);
    json_decref(first);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {.timeout_ms = 6000};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            o.json = true;
        } else if (!strcmp(argv[i], "--node") && i + 1 < argc) {
            if (o.n == MAX_NODES)
                usage_error("too many --node");
            char host[64];
            if (split_addr(argv[++i], host, sizeof(host), &o.ports[o.n]))
                usage_error("--node wants HOST:PORT (a node's Redis port, 6380+id by default)");
            snprintf(o.hosts[o.n++], sizeof(o.hosts[0]), "%s", host);
        } else if (!strcmp(argv[i], "--auth") && i + 1 < argc) {
            read_secret(argv[++i], o.secret, sizeof(o.secret));
            snprintf(o.user, sizeof(o.user), "default");
        } else if (!strcmp(argv[i], "--admin-token") && i + 1 < argc) {
            read_secret(argv[++i], o.secret, sizeof(o.secret));
            snprintf(o.user, sizeof(o.user), "admin");
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            o.timeout_ms = atoi(argv[++i]);
            if (o.timeout_ms <= 0)
                usage_error("--timeout wants milliseconds");
        } else {
            usage_error("unknown option (or missing value)");
        }
    }
    const char *env = getenv("KVCTL_AUTH");
    if (!o.secret[0] && env && env[0]) {
        snprintf(o.secret, sizeof(o.secret), "%s", env);
        snprintf(o.user, sizeof(o.user), "default");
    }
    if (o.n == 0)
        for (; o.n < 5; o.n++) {
            snprintf(o.hosts[o.n], sizeof(o.hosts[0]), "127.0.0.1");
            o.ports[o.n] = 6381 + o.n;
        }
    if (i == argc)
        usage_error("no command");
    const char *cmd = argv[i++];
    int nargs = argc - i;
    char **args = argv + i;
    char client[24];
    snprintf(client, sizeof(client), "%" PRIu64, random_id() >> 1);
    redisReply *r = NULL;
    int rc;

    if (!strcmp(cmd, "status")) {
        if (nargs)
            usage_error("status takes no arguments");
        return cmd_status(&o);
    } else if (!strcmp(cmd, "ring")) {
        if (nargs)
            usage_error("ring takes no arguments");
        return cmd_ring(&o);
    } else if (!strcmp(cmd, "forget")) {
        if (nargs < 1 || nargs > 2 || !args[0][0] ||
            strspn(args[0], "0123456789") != strlen(args[0]) ||
            (nargs == 2 && strcmp(args[1], "replaced")))
            usage_error("usage: kvctl forget ID [replaced] (a node id)");
        return cmd_forget(&o, args[0], nargs == 2);
    } else if (!strcmp(cmd, "node") && nargs >= 1) {
        if (!strcmp(args[0], "list") && nargs == 1)
            return cmd_node_list(&o);
        if ((!strcmp(args[0], "add") || !strcmp(args[0], "remove")) && nargs >= 2)
            return cmd_node_change(&o, !strcmp(args[0], "add"), args + 1, nargs - 1);
        if (!strcmp(args[0], "replace"))
            return cmd_node_replace(&o, args + 1, nargs - 1);
        usage_error("usage: kvctl node list | node add ID HOST[:RAFT[:RESP[:HTTP]]] | node "
                    "remove ID");
    } else if (!strcmp(cmd, "rebalance") && nargs >= 1) {
        if (!strcmp(args[0], "status") && nargs == 1)
            return cmd_rebalance_status(&o);
        if (!strcmp(args[0], "wait") && nargs <= 2) {
            int secs = nargs == 2 ? atoi(args[1]) : 120;
            if (secs <= 0)
                usage_error("usage: kvctl rebalance wait [SECONDS]");
            return cmd_rebalance_wait(&o, secs);
        }
        usage_error("usage: kvctl rebalance status | rebalance wait [SECONDS]");
    } else if (!strcmp(cmd, "locate")) {
        if (nargs != 1)
            usage_error("usage: kvctl locate KEY");
        return cmd_locate(&o, args[0]);
    } else if (!strcmp(cmd, "get") && nargs == 1) {
        const char *a[] = {"GET", args[0]};
        r = run(&o, 2, a, NULL);
        if ((rc = fail_reply(&o, r)) >= 0)
            return rc;
        if (r->type == REDIS_REPLY_NIL) {
            if (o.json)
                printf("{\"key\":\"%s\",\"value\":null}\n", args[0]);
            else
                fprintf(stderr, "kvctl: %s: not found\n", args[0]);
            rc = 1;
        } else {
            print_string(&o, args[0], r->str, r->len);
            rc = 0;
        }
    } else if (!strcmp(cmd, "put") && nargs == 2) {
        const char *a[] = {"SESSION", client, "1", "SET", args[0], args[1]};
        r = run(&o, 6, a, NULL);
        if ((rc = fail_reply(&o, r)) >= 0)
            return rc;
        printf(o.json ? "{\"ok\":true}\n" : "OK\n");
        rc = 0;
    } else if (!strcmp(cmd, "del") && nargs >= 1) {
        const char **a = calloc((size_t)nargs + 4, sizeof(*a));
        a[0] = "SESSION";
        a[1] = client;
        a[2] = "1";
        a[3] = "DEL";
        for (int k = 0; k < nargs; k++)
            a[4 + k] = args[k];
        r = run(&o, nargs + 4, a, NULL);
        free(a);
        if ((rc = fail_reply(&o, r)) >= 0)
            return rc;
        printf(o.json ? "{\"deleted\":%lld}\n" : "%lld\n", r->integer);
        rc = 0;
    } else if (!strcmp(cmd, "incr") && (nargs == 1 || nargs == 2)) {
        const char *a[] = {"SESSION", client,
                           "1",       nargs == 2 ? "INCRBY" : "INCR",
                           args[0],   nargs == 2 ? args[1] : NULL};
        r = run(&o, nargs == 2 ? 6 : 5, a, NULL);
        if ((rc = fail_reply(&o, r)) >= 0)
            return rc;
        printf(o.json ? "{\"value\":%lld}\n" : "%lld\n", r->integer);
        rc = 0;
    } else if (!strcmp(cmd, "cas") && nargs == 3) {
        const char *a[] = {"SESSION", client, "1", "CAS", args[0], args[1], args[2]};
        r = run(&o, 7, a, NULL);
        if ((rc = fail_reply(&o, r)) >= 0)
            return rc;
        bool ok = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        printf(o.json ? (ok ? "{\"ok\":true}\n" : "{\"ok\":false}\n")
                      : (ok ? "OK\n" : "mismatch: %s does not hold the expected value\n"),
               args[0]);
        rc = ok ? 0 : 1;
    } else if (!strcmp(cmd, "leader") && nargs == 1) {
        /* The key's shard's leader, asked of its replicas (kvctl locate). */
        json_t *first, *loc = locate(&o, args[0], &first);
        json_int_t id = loc ? geti(loc, "leader") : 0;
        const char *resp = loc ? str_of(loc, "leader_resp") : "";
        if (!loc)
            fprintf(stderr, "kvctl: no node answered RAFT.LOCATE\n");
        else if (!id || !resp[0])
            fprintf(stderr, "kvctl: no leader of the key's shard known right now\n");
        else
            printf(o.json ? "{\"id\":%" JSON_INTEGER_FORMAT ",\"resp\":\"%s\"}\n"
                          : "%" JSON_INTEGER_FORMAT " %s\n",
                   id, resp);
        rc = loc && id && resp[0] ? 0 : 3;
        json_decref(loc);
        json_decref(first);
        return rc;
    } else if (!strcmp(cmd, "leader") && nargs == 0) {
        const char *a[] = {"RAFT.LEADER"};
        r = run(&o, 1, a, NULL);
        if ((rc = fail_reply(&o, r)) >= 0)
            return rc;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            fprintf(stderr, "kvctl: no leader known right now\n");
            rc = 3;
        } else {
            printf(o.json ? "{\"id\":%lld,\"resp\":\"%s\"}\n" : "%lld %s\n", r->element[0]->integer,
                   r->element[1]->str);
            rc = 0;
        }
    } else if (!strcmp(cmd, "transfer") && nargs <= 1) {
        const char *a[] = {"RAFT.LEADER"};
        r = run(&o, 1, a, NULL);
        if ((rc = fail_reply(&o, r)) >= 0)
            return rc;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            fprintf(stderr, "kvctl: no leader known right now\n");
            freeReplyObject(r);
            return 3;
        }
        struct opts lo = o;
        char host[64];
        if (split_addr(r->element[1]->str, host, sizeof(host), &lo.ports[0]))
            return 3;
        snprintf(lo.hosts[0], sizeof(lo.hosts[0]), "%s", host);
        lo.n = 1;
        freeReplyObject(r);
        const char *t[] = {"RAFT.TRANSFER", nargs ? args[0] : NULL};
        r = run(&lo, nargs ? 2 : 1, t, NULL);
        if ((rc = fail_reply(&o, r)) >= 0)
            return rc;
        printf(o.json ? "{\"ok\":true}\n" : "transfer started (kvctl leader shows the outcome)\n");
        rc = 0;
    } else {
        usage_error("unknown command or wrong number of arguments");
    }
    if (r)
        freeReplyObject(r);
    return rc;
}
