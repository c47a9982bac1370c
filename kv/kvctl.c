/* kvctl — the command-line client of kvd. `kvctl --help` is its manual.
 *
 * It talks the Redis protocol (hiredis) to any node. A write carries an
 * explicit session {client_id, seq} (SESSION client seq ...), so when a
 * node fails under it kvctl can send the same command to the next node and
 * it is still applied at most once (thesis §6.3). */
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
    "                         and on the leader how far each follower has replicated\n"
    "  leader                 the leader's id and Redis address\n"
    "  transfer [ID]          ask the leader to hand leadership to ID (or the most\n"
    "                         up-to-date follower)\n"
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

static void usage_error(const char *msg)
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

static json_t *status_of(const struct opts *o, const char *host, int port)
{
    struct opts one = *o;
    snprintf(one.hosts[0], sizeof(one.hosts[0]), "%s", host);
    one.ports[0] = port;
    one.n = 1;
    one.timeout_ms = o->timeout_ms < 2000 ? o->timeout_ms : 2000;
    const char *argv[] = {"RAFT.STATUS"};
    redisReply *r = run(&one, 1, argv, NULL);
    json_t *st = NULL;
    if (r && r->type == REDIS_REPLY_STRING) {
        json_error_t e;
        st = json_loadb(r->str, r->len, 0, &e);
    }
    if (r)
        freeReplyObject(r);
    return st;
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

static int cmd_status(const struct opts *o)
{
    json_t *first = NULL;
    for (int i = 0; i < o->n && !first; i++)
        first = status_of(o, o->hosts[i], o->ports[i]);
    if (!first) {
        fprintf(stderr, "kvctl: no node answered RAFT.STATUS\n");
        return 3;
    }
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
