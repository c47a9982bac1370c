/* kvring — placement computed offline: where kv/ring.c puts keys and
 * shards for a given map, how even it is, and what moves when a node joins
 * or leaves. `kvring --help` is its manual.
 *
 * It needs no server: it builds the same ring every kvd node would build
 * from the map (ring.h), so its answers are the cluster's. It is a teaching
 * tool for the two figures consistent hashing is about (Karger et al.
 * 1997): how evenly load spreads, and how little moves on a change. */
#include "ring.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: kvring COMMAND [OPTIONS]\n"
    "\n"
    "Where the sharded placement (kv/ring.h) puts keys and shards, computed offline\n"
    "from a map (no server needed). Keys go to G shards on one consistent-hashing ring,\n"
    "shards to nodes on another; shard s is Raft group s+1 and its replicas are the\n"
    "first R distinct nodes clockwise from its token. The nodes' ids are 1..N.\n"
    "\n"
    "Commands:\n"
    "  balance           keys per shard (min, max, mean, stddev, max/mean) over the keys\n"
    "                    \"key:0\" .. \"key:K-1\"; each shard's expected share of keys (its\n"
    "                    part of the key ring); replicas, preferred-leader shards and\n"
    "                    expected data per node\n"
    "  move              what changes when node N+1 joins and when one node leaves: shards\n"
    "                    whose replica set changes and replica slots moved, next to the\n"
    "                    ideal (the joining node's fair share R*G/(N+1) of the R*G slots;\n"
    "                    the leaving node's R*G/N)\n"
    "  locate KEY        the key's hash, shard, Raft group, token and replicas\n"
    "                    (kvring locate [OPTIONS] -- -KEY for a key that starts with '-')\n"
    "\n"
    "The map (every command):\n"
    "  --nodes N         members, ids 1..N (1..64; default 5)\n"
    "  --shards G        shards (1..4096; default 16)\n"
    "  --replicas R      voters per shard, distinct nodes (1..min(N, 7); default 3)\n"
    "  --vnodes V        points per shard and per node on the rings (1..4096; default 64)\n"
    "\n"
    "balance:\n"
    "  --keys K          how many keys to place (default 1000000)\n"
    "  --brief           the summaries only, without the table of shards\n"
    "move:\n"
    "  --leave ID        the node that leaves (default N); a line also sums up every\n"
    "                    choice of leaving node\n"
    "\n"
    "Example: kvring balance --nodes 5 --shards 16 --replicas 3 --vnodes 64 --keys 1000000\n"
    "\n"
    "Exit status: 0 done, 2 usage or a map that cannot be placed (refused, or too big\n"
    "for memory).\n";

/* What the command line asked for. */
struct opts {
    const char *command;
    const char *key;   /* locate's KEY */
    uint64_t nodes;    /* N */
    uint64_t shards;   /* G */
    uint64_t replicas; /* R */
    uint64_t vnodes;   /* V */
    uint64_t keys;     /* balance: K */
    bool brief;        /* balance: no table of shards */
    uint64_t leave;    /* move: the leaving node, 0 = N */
    bool keys_given;   /* --keys or --brief: options of balance only */
    bool leave_given;  /* --leave: an option of move only */
};

static _Noreturn void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static _Noreturn void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("kvring: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(kvring --help for the manual)\n", stderr);
    exit(2);
}

/* A whole decimal number no larger than max, or a usage error naming the
 * option. */
static uint64_t parse_number(const char *option, const char *text, uint64_t max)
{
    if (!text)
        usage_error("%s wants a number", option);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end || errno || v > max)
        usage_error("%s wants a whole number up to %" PRIu64 ", not \"%s\"", option, max, text);
    return v;
}

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){
        .nodes = 5, .shards = 16, .replicas = 3, .vnodes = RING_DEFAULT_VNODES, .keys = 1000000};
    bool options_done = false; /* after "--", a KEY may start with '-' */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (options_done || a[0] != '-' || !a[1]) {
            if (!o->command)
                o->command = a;
            else if (!strcmp(o->command, "locate") && !o->key)
                o->key = a;
            else
                usage_error("unexpected argument \"%s\"", a);
        } else if (!strcmp(a, "--")) {
            options_done = true;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            exit(0);
        } else if (!strcmp(a, "--nodes")) {
            o->nodes = parse_number(a, next, UINT32_MAX);
            i++;
        } else if (!strcmp(a, "--shards")) {
            o->shards = parse_number(a, next, UINT32_MAX);
            i++;
        } else if (!strcmp(a, "--replicas")) {
            o->replicas = parse_number(a, next, UINT32_MAX);
            i++;
        } else if (!strcmp(a, "--vnodes")) {
            o->vnodes = parse_number(a, next, UINT32_MAX);
            i++;
        } else if (!strcmp(a, "--keys")) {
            o->keys = parse_number(a, next, UINT32_MAX);
            i++;
            o->keys_given = true;
            if (o->keys == 0)
                usage_error("--keys wants at least one key");
        } else if (!strcmp(a, "--brief")) {
            o->brief = o->keys_given = true;
        } else if (!strcmp(a, "--leave")) {
            o->leave = parse_number(a, next, UINT64_MAX);
            i++;
            o->leave_given = true;
        } else {
            usage_error("unknown option %s", a);
        }
    }
    if (!o->command)
        usage_error("no command (balance, move or locate)");
    if (!strcmp(o->command, "help")) {
        fputs(usage_text, stdout);
        exit(0);
    }
    bool is_balance = !strcmp(o->command, "balance"), is_move = !strcmp(o->command, "move");
    bool is_locate = !strcmp(o->command, "locate");
    if (!is_balance && !is_move && !is_locate)
        usage_error("unknown command \"%s\" (balance, move or locate)", o->command);
    if (is_locate && !o->key)
        usage_error("locate wants a KEY");
    if (o->keys_given && !is_balance)
        usage_error("--keys and --brief are options of balance");
    if (o->leave_given && !is_move)
        usage_error("--leave is an option of move");
    if (o->leave_given && (o->leave < 1 || o->leave > o->nodes))
        usage_error("--leave %" PRIu64 " is not a member: the nodes are 1..%" PRIu64, o->leave,
                    o->nodes);
}

/* The map of nodes 1..n, except `without` (0: none). An n beyond the limit
 * is left for ring_build to refuse with its message. */
static struct ring_map map_of(const struct opts *o, uint64_t n, uint64_t without)
{
    struct ring_map m = {.epoch = 0,
                         .shards = (uint32_t)o->shards,
                         .replicas = (uint32_t)o->replicas,
                         .vnodes = (uint32_t)o->vnodes};
    m.n_nodes = (size_t)n;
    size_t k = 0;
    for (uint64_t id = 1; id <= n && k < RING_MAX_NODES; id++)
        if (id != without)
            m.nodes[k++] = id;
    if (without)
        m.n_nodes = k;
    return m;
}

static struct ring *build_or_exit(const struct ring_map *m)
{
    struct ring *r;
    char err[256];
    if (ring_build(m, &r, err, sizeof(err)) != 0) {
        fprintf(stderr, "kvring: %s\n", err);
        exit(2);
    }
    return r;
}

static void print_map(const struct ring *r)
{
    const struct ring_map *m = ring_map(r);
    printf("map: %zu node%s (ids 1..%zu), %" PRIu32 " shards, %" PRIu32 " replicas, %" PRIu32
           " vnodes; fingerprint %016" PRIx64 "\n",
           m->n_nodes, m->n_nodes == 1 ? "" : "s", m->n_nodes, m->shards, m->replicas, m->vnodes,
           ring_fingerprint(r));
}

/* ------------------------------------------------------------------------
 * balance
 */

/* min, max, mean and (population) standard deviation of n values. */
struct stats {
    double min, max, mean, stddev;
};

static struct stats stats_of(const double *v, size_t n)
{
    struct stats s = {v[0], v[0], 0, 0};
    double sum = 0, sum_sq = 0;
    for (size_t i = 0; i < n; i++) {
        s.min = v[i] < s.min ? v[i] : s.min;
        s.max = v[i] > s.max ? v[i] : s.max;
        sum += v[i];
    }
    s.mean = sum / (double)n;
    for (size_t i = 0; i < n; i++)
        sum_sq += (v[i] - s.mean) * (v[i] - s.mean);
    s.stddev = sqrt(sum_sq / (double)n);
    return s;
}

/* Counts (scale 1) print as whole numbers; shares are scaled to percent
 * and print with three significant digits. */
static void print_stats(const char *what, struct stats s, double scale, const char *unit)
{
    const char *fmt = scale == 1 ? "  %-22s min %.0f%s  max %.0f%s  mean %.1f%s  stddev %.1f%s"
                                 : "  %-22s min %.3g%s  max %.3g%s  mean %.3g%s  stddev %.3g%s";
    printf(fmt, what, s.min * scale, unit, s.max * scale, unit, s.mean * scale, unit,
           s.stddev * scale, unit);
    printf(" (%.1f%% of the mean)  max/mean %.3f\n", 100 * s.stddev / s.mean, s.max / s.mean);
}

static int cmd_balance(const struct opts *o)
{
    struct ring_map m = map_of(o, o->nodes, 0);
    struct ring *r = build_or_exit(&m);
    uint32_t G = m.shards, R = m.replicas;
    size_t N = m.n_nodes;
    double *keys = calloc(G, sizeof(*keys)), *share = calloc(G, sizeof(*share));
    double replicas_of[RING_MAX_NODES] = {0}, leaders_of[RING_MAX_NODES] = {0};
    double data_of[RING_MAX_NODES] = {0};
    if (!keys || !share) {
        fprintf(stderr, "kvring: out of memory for %" PRIu32 " shards\n", G);
        free(keys);
        free(share);
        ring_free(r);
        return 2;
    }

    for (uint64_t k = 0; k < o->keys; k++) {
        char key[32];
        int len = snprintf(key, sizeof(key), "key:%" PRIu64, k);
        keys[ring_shard_of(r, key, (size_t)len)]++;
    }
    for (uint32_t s = 0; s < G; s++) {
        share[s] = ring_shard_share(r, s);
        const uint64_t *reps = ring_replicas(r, s);
        leaders_of[reps[0] - 1]++;
        for (uint32_t i = 0; i < R; i++) {
            replicas_of[reps[i] - 1]++;
            data_of[reps[i] - 1] += share[s];
        }
    }

    print_map(r);
    printf("\nkeys per shard (%" PRIu64 " keys \"key:0\"..\"key:%" PRIu64 "):\n", o->keys,
           o->keys - 1);
    print_stats("keys", stats_of(keys, G), 1, "");
    printf("  (expected, from each shard's share of the key ring:)\n");
    print_stats("share", stats_of(share, G), 100, "%");

    if (!o->brief) {
        printf("\n%6s %6s %10s %8s %9s  %s\n", "shard", "group", "keys", "keys%", "share",
               "replicas (first: preferred leader)");
        for (uint32_t s = 0; s < G; s++) {
            printf("%6" PRIu32 " %6" PRIu64 " %10.0f %7.2f%% %8.2f%% ", s, ring_group_of_shard(s),
                   keys[s], 100 * keys[s] / (double)o->keys, 100 * share[s]);
            for (uint32_t i = 0; i < R; i++)
                printf(" %" PRIu64, ring_replicas(r, s)[i]);
            printf("\n");
        }
    }

    printf("\nper node (%" PRIu32 " replica slots = G*R; mean %.2f replicas and %.2f leaders a "
           "node):\n",
           G * R, (double)G * R / (double)N, (double)G / (double)N);
    printf("%6s %9s %8s %9s\n", "node", "replicas", "leaders", "data");
    for (size_t i = 0; i < N; i++)
        printf("%6zu %9.0f %8.0f %8.2f%%\n", i + 1, replicas_of[i], leaders_of[i],
               100 * data_of[i]);
    print_stats("replicas per node", stats_of(replicas_of, N), 1, "");
    print_stats("leaders per node", stats_of(leaders_of, N), 1, "");
    print_stats("data per node", stats_of(data_of, N), 100, "%");
    printf("  (data: the keys a node stores, as a share of all keys; R/N = %.2f%% on average)\n",
           100.0 * R / (double)N);

    free(keys);
    free(share);
    ring_free(r);
    return 0;
}

/* ------------------------------------------------------------------------
 * move
 */

/* What changed from placement a to placement b, counted over all shards. */
struct change {
    unsigned shards;  /* shards whose replica set changed */
    unsigned slots;   /* replica slots moved: replicas in b that were not in a */
    unsigned leaders; /* shards whose preferred leader changed */
    double data;      /* keys copied to new replicas, as a share of all keys */
};

static struct change compare(const struct ring *a, const struct ring *b)
{
    const struct ring_map *m = ring_map(a);
    struct change c = {0};
    for (uint32_t s = 0; s < m->shards; s++) {
        const uint64_t *before = ring_replicas(a, s), *after = ring_replicas(b, s);
        unsigned moved = 0;
        for (uint32_t i = 0; i < m->replicas; i++)
            moved += ring_hosts(a, s, after[i]) ? 0 : 1;
        c.slots += moved;
        c.shards += moved ? 1 : 0;
        c.leaders += before[0] != after[0] ? 1 : 0;
        c.data += moved * ring_shard_share(a, s);
    }
    return c;
}

/* One placement change next to the ideal: the ideal_slots replica slots a
 * joining node should take (R*G/(N+1)) or a leaving node gives up (R*G/N);
 * `formula` names it. Consistent hashing moves one slot per changed shard,
 * so the ideal count of changed shards is the same number. */
static void print_change(struct change c, uint32_t G, uint32_t R, const char *formula,
                         double ideal_slots, double ideal_data)
{
    printf("  shards whose replica set changes %5u of %-5u (%5.1f%%)   ideal %s = %.1f (%.1f%%)\n",
           c.shards, G, 100.0 * c.shards / G, formula, ideal_slots, 100.0 * ideal_slots / G);
    printf("  replica slots moved              %5u of %-5u (%5.1f%%)   ideal %.1f (%.1f%%)\n",
           c.slots, G * R, 100.0 * c.slots / (G * R), ideal_slots, 100.0 * ideal_slots / (G * R));
    printf("  preferred leaders changed        %5u of %-5u (%5.1f%%)\n", c.leaders, G,
           100.0 * c.leaders / G);
    printf("  keys copied to new replicas      %5.1f%% of all keys         ideal %.1f%%\n",
           100 * c.data, 100 * ideal_data);
}

static int cmd_move(const struct opts *o)
{
    struct ring_map m = map_of(o, o->nodes, 0);
    struct ring *now = build_or_exit(&m);
    uint32_t G = m.shards, R = m.replicas;
    uint64_t N = m.n_nodes;

    print_map(now);
    printf("Keys never change shard (G is fixed); only replica sets move, and each replica\n"
           "slot moved is one Raft membership change and one snapshot sent.\n");

    printf("\nnode %" PRIu64 " joins (%" PRIu64 " nodes):\n", N + 1, N + 1);
    if (N >= RING_MAX_NODES) {
        printf("  impossible: a map holds at most %d nodes\n", RING_MAX_NODES);
    } else {
        struct ring_map joined = map_of(o, N + 1, 0);
        struct ring *after = build_or_exit(&joined);
        print_change(compare(now, after), G, R, "R*G/(N+1)", (double)R * G / (double)(N + 1),
                     (double)R / (double)(N + 1));
        ring_free(after);
    }

    uint64_t leaver = o->leave ? o->leave : N;
    printf("\nnode %" PRIu64 " leaves (%" PRIu64 " nodes):\n", leaver, N - 1);
    if (N - 1 < R) {
        printf("  impossible: the %" PRIu64 " remaining node%s cannot hold %" PRIu32
               " distinct replicas\n",
               N - 1, N - 1 == 1 ? "" : "s", R);
        ring_free(now);
        return 0;
    }
    unsigned min = UINT32_MAX, max = 0, sum = 0;
    for (uint64_t id = 1; id <= N; id++) {
        struct ring_map left = map_of(o, N, id);
        struct ring *after = build_or_exit(&left);
        struct change c = compare(now, after);
        if (id == leaver)
            print_change(c, G, R, "R*G/N", (double)R * G / (double)N, (double)R / (double)N);
        min = c.slots < min ? c.slots : min;
        max = c.slots > max ? c.slots : max;
        sum += c.slots;
        ring_free(after);
    }
    printf("  over every choice of leaving node (1..%" PRIu64 "): replica slots moved min %u, "
           "mean %.1f, max %u (ideal R*G/N = %.1f)\n",
           N, min, (double)sum / (double)N, max, (double)R * G / (double)N);
    ring_free(now);
    return 0;
}

/* ------------------------------------------------------------------------
 * locate
 */

static int cmd_locate(const struct opts *o)
{
    struct ring_map m = map_of(o, o->nodes, 0);
    struct ring *r = build_or_exit(&m);
    size_t len = strlen(o->key);
    uint64_t hash = ring_key_hash(o->key, len);
    uint32_t shard = ring_shard_of_hash(r, hash);
    const uint64_t *reps = ring_replicas(r, shard);

    print_map(r);
    printf("key       \"%s\"\n", o->key);
    printf("hash      %016" PRIx64 " (XXH64, seed 0: its place on the key ring)\n", hash);
    printf("shard     %" PRIu32 " (Raft group %" PRIu64 "; %.2f%% of the key ring)\n", shard,
           ring_group_of_shard(shard), 100 * ring_shard_share(r, shard));
    printf("token     %016" PRIx64 " (the shard's place on the node ring)\n",
           ring_shard_token(r, shard));
    printf("replicas ");
    for (uint32_t i = 0; i < m.replicas; i++)
        printf(" %" PRIu64, reps[i]);
    printf("  (preferred leader: node %" PRIu64 ")\n", reps[0]);
    ring_free(r);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(argc, argv, &o);
    if (!strcmp(o.command, "balance"))
        return cmd_balance(&o);
    if (!strcmp(o.command, "move"))
        return cmd_move(&o);
    return cmd_locate(&o);
}
