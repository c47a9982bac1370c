/* bench.c — how fast is the core itself? `raftsim bench`
 *
 * Three cores exchange messages in memory, with no network, no disk and no
 * simulator bookkeeping: the leader is given batches of proposals, every
 * message is delivered at once in FIFO order, and every write is reported
 * durable at once. What remains is the cost of the Raft rules themselves.
 * The figures: entries committed per CPU-second, and allocations made by the
 * core (through raft_heap_set) per committed entry once warmed up.
 */
#define _POSIX_C_SOURCE 200809L
#include "sim.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BENCH_NODES = 3, BENCH_ARENA = 64 << 20, BENCH_QUEUE = 1 << 16 };

struct bench {
    struct raft *r[BENCH_NODES];
    /* Messages in flight: copied into an arena that is reset whenever the
     * queue drains, so the harness itself allocates nothing per entry. */
    struct raft_message queue[BENCH_QUEUE];
    size_t head, tail;
    uint8_t *arena;
    size_t arena_used;
    uint64_t allocs;
};

static void *count_malloc(void *data, size_t size)
{
    ((struct bench *)data)->allocs++;
    return malloc(size);
}

static void *count_realloc(void *data, void *ptr, size_t size)
{
    ((struct bench *)data)->allocs++;
    return realloc(ptr, size);
}

static void count_free(void *data, void *ptr)
{
    (void)data;
    free(ptr);
}

static void *arena_take(struct bench *b, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (b->arena_used + n > BENCH_ARENA) {
        fprintf(stderr, "raftsim bench: arena exhausted\n");
        exit(1);
    }
    void *p = b->arena + b->arena_used;
    b->arena_used += n;
    return p;
}

static void enqueue(struct bench *b, const struct raft_message *m)
{
    if (b->tail - b->head == BENCH_QUEUE) {
        fprintf(stderr, "raftsim bench: queue full\n");
        exit(1);
    }
    struct raft_message *c = &b->queue[b->tail++ % BENCH_QUEUE];
    *c = *m;
    if (m->type == RAFT_MSG_APPEND_ENTRIES && m->append_entries.n_entries) {
        size_t n = m->append_entries.n_entries;
        struct raft_entry *e = arena_take(b, n * sizeof(*e));
        for (size_t i = 0; i < n; i++) {
            e[i] = m->append_entries.entries[i];
            void *d = arena_take(b, e[i].len);
            memcpy(d, e[i].data, e[i].len);
            e[i].data = d;
        }
        c->append_entries.entries = e;
    }
}

/* Act on an update as an instantly durable host would, snapshots
 * included (an empty state machine snapshots in no time), so that the log
 * is compacted and its memory reused: a steady state. */
static void handle(struct bench *b, unsigned i, struct raft_update *u, uint64_t now)
{
    for (size_t k = 0; k < u->n_messages; k++)
        enqueue(b, &u->messages[k]);
    raft_index snapshot = u->snapshot_wanted ? u->snapshot_index : 0;
    if (u->n_entries) {
        struct raft_event ev = {.type = RAFT_PERSISTED, .now_ms = now};
        ev.persisted.index = u->entries[u->n_entries - 1].index;
        ev.persisted.term = u->entries[u->n_entries - 1].term;
        struct raft_update u2;
        raft_step(b->r[i], &ev, &u2);
        handle(b, i, &u2, now);
    }
    if (snapshot) {
        struct raft_event ev = {.type = RAFT_SNAPSHOT_TAKEN, .now_ms = now};
        ev.snapshot_taken.index = snapshot;
        ev.snapshot_taken.size = 1;
        struct raft_update u3;
        raft_step(b->r[i], &ev, &u3);
        handle(b, i, &u3, now);
    }
}

static void drain(struct bench *b, uint64_t now)
{
    while (b->head != b->tail) {
        struct raft_message *m = &b->queue[b->head++ % BENCH_QUEUE];
        struct raft_event ev = {.type = RAFT_RECEIVE, .now_ms = now};
        ev.receive = m;
        struct raft_update u;
        unsigned i = (unsigned)(m->to - 1);
        raft_step(b->r[i], &ev, &u);
        handle(b, i, &u, now);
    }
    b->head = b->tail = 0;
    b->arena_used = 0;
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int sim_bench(uint64_t entries, unsigned batch, size_t entry_bytes)
{
    struct bench *b = calloc(1, sizeof(*b));
    if (!b || !(b->arena = malloc(BENCH_ARENA)))
        return 1;
    struct raft_heap heap = {b, count_malloc, count_realloc, count_free};
    raft_heap_set(&heap);

    raft_id voters[BENCH_NODES] = {1, 2, 3};
    unsigned threshold = 0;
    for (unsigned i = 0; i < BENCH_NODES; i++) {
        struct raft_config cfg;
        raft_config_default(&cfg);
        cfg.id = i + 1;
        cfg.seed = 42;
        threshold = cfg.snapshot_threshold_entries;
        struct raft_persisted st = {.voters = voters, .n_voters = BENCH_NODES};
        if (raft_init(&b->r[i], &cfg, &st) != RAFT_OK)
            return 1;
    }
    /* Elect node 1. */
    uint64_t now = 1;
    struct raft_update u;
    struct raft_event ev = {.type = RAFT_TIMEOUT, .now_ms = now};
    raft_step(b->r[0], &ev, &u);
    handle(b, 0, &u, now);
    drain(b, now);
    if (raft_role_of(b->r[0]) != RAFT_LEADER) {
        fprintf(stderr, "raftsim bench: no leader\n");
        return 1;
    }

    uint8_t *payload = calloc(1, entry_bytes ? entry_bytes : 1);
    struct raft_entry *props = calloc(batch, sizeof(*props));
    for (unsigned k = 0; k < batch; k++)
        props[k] = (struct raft_entry){.data = payload, .len = entry_bytes};

    uint64_t warmup = entries / 10, done = 0, allocs_at = 0;
    double t0 = 0;
    raft_index base = raft_commit_index(b->r[0]);
    while (done < entries + warmup) {
        if (done >= warmup && t0 == 0) {
            t0 = cpu_seconds();
            allocs_at = b->allocs;
            base = raft_commit_index(b->r[0]);
        }
        struct raft_event pe = {.type = RAFT_PROPOSE, .now_ms = now};
        pe.propose.entries = props;
        pe.propose.n_entries = batch;
        if (raft_step(b->r[0], &pe, &u) != RAFT_OK) {
            fprintf(stderr, "raftsim bench: proposal refused\n");
            return 1;
        }
        handle(b, 0, &u, now);
        drain(b, now);
        done += batch;
    }
    double secs = cpu_seconds() - t0;
    uint64_t committed = raft_commit_index(b->r[0]) - base;
    uint64_t allocs = b->allocs - allocs_at;
    printf("raftsim bench: 3 nodes, no I/O, batches of %u entries of %zu bytes\n", batch,
           entry_bytes);
    printf("  committed entries      %llu\n", (unsigned long long)committed);
    printf("  CPU seconds            %.3f\n", secs);
    printf("  entries per CPU-second %.0f\n", secs > 0 ? (double)committed / secs : 0.0);
    printf("  core allocations       %llu after warm-up (%.6f per entry; snapshots every %u "
           "entries keep the log bounded)\n",
           (unsigned long long)allocs, committed ? (double)allocs / (double)committed : 0.0,
           threshold);
    for (unsigned i = 0; i < BENCH_NODES; i++)
        raft_close(b->r[i]);
    raft_heap_set(NULL);
    free(props);
    free(payload);
    free(b->arena);
    free(b);
    return 0;
}
