/* client.c — the clients of random schedules, their key-value store, and
 * the check of what they saw.
 *
 * The checker's index-level read check (check.c) says whether a read was
 * served at an index that misses a commit; a client sees values. Here the
 * simulated host runs a small key-value store on every node (SIM_KEYS
 * registers, applied from committed entries, kept in snapshots), and
 * SIM_CLIENTS clients write and read it. Every operation is recorded as a
 * client would see it, invoke and completion in virtual time, and at the
 * end of a run the history is checked for linearizability by the
 * project's checker (tests/lincheck: Wing and Gong's search with Lowe's
 * memo, per key), so a stale read is caught as a client would see it
 * (thesis §6.3: linearizable semantics for clients).
 *
 * The clients follow Jepsen's rules, as tests/lincheck/lincheck.h states
 * them: one operation outstanding per client; an operation whose outcome
 * the client cannot know is "info", and the client goes on under a new
 * process id. Writes carry values no other write uses (the command's own
 * number), so a read names the one write it saw.
 *
 * The clients' choices (keys, kinds) come from a PRNG stream of their own,
 * so that the fault schedule's coin flips stay what they were.
 */
#include "sim_internal.h"

#include "lincheck/lincheck.h"

#include <stdlib.h>
#include <string.h>

enum {
    /* A client gives up on an operation after this many election timeouts
     * with no answer, and never before the minimum (its outcome is then
     * unknown): long enough for a new leader to be elected and commit,
     * short enough that clients stuck on a dead server come back within a
     * run. */
    CLIENT_TIMEOUT_ELECTIONS = 2,
    CLIENT_TIMEOUT_MIN_MS = 1000,
    CAS_ONE_IN = 4,       /* writes that are cas rather than set */
    WINDOW_NARRATED = 12, /* ops of a failing window narrated in the trace */
    SEEN_NARRATED = 3,    /* writes a stale read could have seen, named */
};

/* The checker's budgets. Memory runs out deterministically, unlike time:
 * a run must print the same bytes on every machine, so the time budget is
 * only a guard far beyond what a run's few hundred operations need. */
#define CHECK_BUDGET_SECONDS 30.0
#define CHECK_MAX_CACHE_BYTES ((size_t)64 << 20)

static uint64_t client_rnd(struct sim *s)
{
    uint64_t z = (s->client_prng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void clients_start(struct sim *s)
{
    if (s->clients_on)
        return;
    s->clients_on = true;
    s->client_prng = s->o.seed ^ 0xc11e475c11e475c1ULL;
    for (unsigned c = 0; c < SIM_CLIENTS; c++)
        s->clients[c] = (struct sim_client){.process = c, .op = UINT32_MAX};
}

void client_free(struct sim *s)
{
    free(s->ops);
}

/* History times are virtual milliseconds in nanoseconds, made strictly
 * increasing: two events in the same millisecond keep the order in which
 * they happened, so a read that begins after a write was answered, in the
 * same millisecond, is after it. */
static int64_t stamp(struct sim *s)
{
    int64_t t = (int64_t)s->now_ms * 1000000;
    if (t <= s->history_last_ns)
        t = s->history_last_ns + 1;
    s->history_last_ns = t;
    return t;
}

/* ------------------------------------------------------------------------
 * Completions
 * ------------------------------------------------------------------------ */

static void complete(struct sim *s, uint32_t op, enum sim_op_state state, const char *error)
{
    struct sim_client_op *o = &s->ops[op];
    o->state = state;
    o->error = error;
    o->complete_ns = stamp(s);
    for (unsigned c = 0; c < SIM_CLIENTS; c++) {
        if (s->clients[c].op != op)
            continue;
        s->clients[c].op = UINT32_MAX;
        /* Jepsen's rule: after an unknown outcome the process is gone; a
         * late effect of its request must not be taken for the next one. */
        if (state == SIM_OP_INFO)
            s->clients[c].process += SIM_CLIENTS;
    }
}

/* Operations past their deadline: the client gives up (info). */
static void expire(struct sim *s)
{
    if (!s->clients_on)
        return;
    for (unsigned c = 0; c < SIM_CLIENTS; c++) {
        uint32_t op = s->clients[c].op;
        if (op != UINT32_MAX && s->now_ms >= s->ops[op].deadline_ms)
            complete(s, op, SIM_OP_INFO, "timeout");
    }
}

void client_node_down(struct sim *s, struct sim_node *n)
{
    if (!s->clients_on)
        return;
    for (unsigned c = 0; c < SIM_CLIENTS; c++) {
        uint32_t op = s->clients[c].op;
        if (op != UINT32_MAX && s->ops[op].node == n->id)
            complete(s, op, SIM_OP_INFO, "connection lost");
    }
}

/* A free reader (clients 0 .. SIM_READERS - 1) or writer, or -1. */
static int free_client(struct sim *s, bool reader)
{
    for (unsigned c = reader ? 0 : SIM_READERS; c < (reader ? SIM_READERS : SIM_CLIENTS); c++)
        if (s->clients[c].op == UINT32_MAX)
            return (int)c;
    return -1;
}

static uint32_t new_op(struct sim *s, int client, raft_id node, enum sim_op_kind kind, unsigned key)
{
    if (s->n_ops == s->cap_ops) {
        s->cap_ops = s->cap_ops ? s->cap_ops * 2 : 256;
        s->ops = realloc(s->ops, s->cap_ops * sizeof(*s->ops));
        if (!s->ops) {
            fprintf(stderr, "raftsim: out of memory\n");
            abort();
        }
    }
    uint32_t op = (uint32_t)s->n_ops++;
    uint64_t timeout_ms = (uint64_t)CLIENT_TIMEOUT_ELECTIONS * s->o.raft.election_timeout_ms;
    if (timeout_ms < CLIENT_TIMEOUT_MIN_MS)
        timeout_ms = CLIENT_TIMEOUT_MIN_MS;
    s->ops[op] = (struct sim_client_op){.process = s->clients[client].process,
                                        .node = node,
                                        .kind = kind,
                                        .key = key,
                                        .invoke_ns = stamp(s),
                                        .deadline_ms = s->now_ms + timeout_ms};
    s->clients[client].op = op;
    return op;
}

/* ------------------------------------------------------------------------
 * The store: commands, applying them, snapshots
 * ------------------------------------------------------------------------ */

/* A write's payload: "cmdN set kK" or "cmdN cas kK E" (E the expected
 * value, "-" for absent); it writes the value N. */
bool kv_cmd_parse(const struct raft_entry *e, struct kv_cmd *c)
{
    char buf[64], op[4], expected[24];
    unsigned long long number;
    unsigned key;
    if (e->type != RAFT_ENTRY_NORMAL || e->len < 8 || e->len >= sizeof(buf))
        return false;
    memcpy(buf, e->data, e->len);
    buf[e->len] = '\0';
    int fields = sscanf(buf, "cmd%llu %3s k%u %23s", &number, op, &key, expected);
    if (fields < 3 || key < 1 || key > SIM_KEYS)
        return false;
    c->number = number;
    c->key = key - 1;
    c->expected = 0;
    if (strcmp(op, "set") == 0 && fields == 3) {
        c->kind = SIM_OP_SET;
        return true;
    }
    if (strcmp(op, "cas") != 0 || fields != 4)
        return false;
    c->kind = SIM_OP_CAS;
    c->expected = strcmp(expected, "-") == 0 ? 0 : strtoull(expected, NULL, 10);
    return true;
}

void client_apply(struct sim *s, struct sim_node *n, const struct raft_entry *e)
{
    struct kv_cmd c;
    bool is_kv = kv_cmd_parse(e, &c);
    bool swapped = false;
    if (is_kv) {
        swapped = c.kind == SIM_OP_SET || n->kv[c.key] == c.expected;
        if (swapped)
            n->kv[c.key] = c.number;
    }
    /* The host answers the client whose request got this index here. */
    for (unsigned k = 0; k < SIM_CLIENTS && s->clients_on; k++) {
        uint32_t op = s->clients[k].op;
        if (op == UINT32_MAX)
            continue;
        struct sim_client_op *o = &s->ops[op];
        if (o->kind == SIM_OP_GET || o->node != n->id || o->index != e->index)
            continue;
        if (!is_kv || c.number != o->value) {
            /* Another entry took its index: a new leader overwrote it. */
            complete(s, op, SIM_OP_INFO, "overwritten");
        } else if (swapped) {
            complete(s, op, SIM_OP_OK, NULL);
        } else {
            o->mismatch = true;
            complete(s, op, SIM_OP_FAIL, "mismatch");
        }
    }
}

size_t client_kv_encode(const struct sim_node *n, uint8_t *p, size_t room)
{
    /* (key, value as 8 bytes little-endian) for each key present, then
     * 0xff if there is room: the padding after it is not read. */
    size_t len = 0;
    for (unsigned k = 0; k < SIM_KEYS; k++) {
        if (!n->kv[k] || len + 9 > room)
            continue;
        p[len++] = (uint8_t)k;
        for (int i = 0; i < 8; i++)
            p[len++] = (uint8_t)(n->kv[k] >> (8 * i));
    }
    if (len < room)
        p[len++] = 0xff;
    return len;
}

void client_kv_decode(struct sim_node *n, const uint8_t *p, size_t len)
{
    memset(n->kv, 0, sizeof(n->kv));
    for (size_t at = 0; p && at + 9 <= len && p[at] < SIM_KEYS; at += 9) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v |= (uint64_t)p[at + 1 + i] << (8 * i);
        n->kv[p[at]] = v;
    }
}

/* ------------------------------------------------------------------------
 * Invocations
 * ------------------------------------------------------------------------ */

int sim_client_write(struct sim *s, raft_id at, unsigned n_writes)
{
    clients_start(s);
    expire(s);
    if (at == 0)
        at = sim_leader(s);
    struct sim_node *n = at >= 1 && at <= s->o.nodes ? &s->nodes[at - 1] : NULL;
    enum { MAX_WRITES = 8 };
    char payload[MAX_WRITES][48];
    struct raft_entry entries[MAX_WRITES];
    uint32_t ops[MAX_WRITES];
    unsigned count = 0;
    for (; count < n_writes && count < MAX_WRITES; count++) {
        int c = free_client(s, false);
        if (c < 0)
            break;
        unsigned key = (unsigned)(client_rnd(s) % SIM_KEYS);
        bool cas = client_rnd(s) % CAS_ONE_IN == 0;
        uint32_t op = new_op(s, c, at, cas ? SIM_OP_CAS : SIM_OP_SET, key);
        struct sim_client_op *o = &s->ops[op];
        o->value = ++s->next_payload;
        int len;
        if (cas) {
            /* Expect what the node's store holds: a client that just read
             * it would; the cas then often succeeds. */
            o->expected = n ? n->kv[key] : 0;
            char e[24] = "-";
            if (o->expected)
                snprintf(e, sizeof(e), "%llu", (unsigned long long)o->expected);
            len = snprintf(payload[count], sizeof(payload[0]), "cmd%llu cas k%u %s",
                           (unsigned long long)o->value, key + 1, e);
        } else {
            len = snprintf(payload[count], sizeof(payload[0]), "cmd%llu set k%u",
                           (unsigned long long)o->value, key + 1);
        }
        entries[count] = (struct raft_entry){.data = payload[count], .len = (size_t)len};
        ops[count] = op;
    }
    if (count == 0)
        return RAFT_EBUSY;
    raft_index first = 0;
    int rv = n && n->r && !n->paused ? sim_propose_entries(s, n, entries, count, &first, NULL)
                                     : RAFT_ENOTLEADER;
    for (unsigned i = 0; i < count; i++) {
        if (rv == RAFT_OK)
            s->ops[ops[i]].index = first + i;
        else /* refused at once: certainly not done */
            complete(s, ops[i], SIM_OP_FAIL, raft_strerror(rv));
    }
    return rv;
}

static int read_as(struct sim *s, int c, raft_id at);

int sim_client_read(struct sim *s, raft_id at)
{
    clients_start(s);
    expire(s);
    int c = free_client(s, true);
    if (c < 0)
        return RAFT_EBUSY;
    return read_as(s, c, at);
}

static int read_as(struct sim *s, int c, raft_id at)
{
    /* A client keeps reading where it read last while that server still
     * believes it leads (clients cache the leader): a deposed leader that
     * does not know it yet keeps its readers (thesis §6.4). */
    raft_id last = s->clients[c].server;
    struct raft *r = sim_raft(s, last);
    if (r && !sim_is_paused(s, last) && raft_role_of(r) == RAFT_LEADER)
        at = last;
    if (at == 0)
        at = sim_leader(s);
    s->clients[c].server = at;
    unsigned key = (unsigned)(client_rnd(s) % SIM_KEYS);
    uint32_t op = new_op(s, c, at, SIM_OP_GET, key);
    /* The core may release the read within this call (a lease read). */
    s->ops[op].read_id = s->next_read_id + 1;
    int rv = sim_read(s, at);
    if (rv != RAFT_OK && s->ops[op].state == SIM_OP_PENDING)
        complete(s, op, SIM_OP_FAIL, raft_strerror(rv));
    return rv;
}

void client_read_done(struct sim *s, struct sim_node *n, uint64_t read_id, int status, char *note,
                      size_t note_size)
{
    note[0] = '\0';
    for (unsigned c = 0; c < SIM_CLIENTS && s->clients_on; c++) {
        uint32_t op = s->clients[c].op;
        if (op == UINT32_MAX || s->ops[op].kind != SIM_OP_GET || s->ops[op].read_id != read_id)
            continue;
        struct sim_client_op *o = &s->ops[op];
        if (status != RAFT_OK) {
            complete(s, op, SIM_OP_FAIL, raft_strerror(status));
            return;
        }
        /* What the serving node's store holds as the read is released. */
        o->value = n->kv[o->key];
        snprintf(note, note_size, ": p%lld get k%u -> %llu", (long long)o->process, o->key + 1,
                 (unsigned long long)o->value);
        if (!o->value)
            snprintf(note, note_size, ": p%lld get k%u -> absent", (long long)o->process,
                     o->key + 1);
        complete(s, op, SIM_OP_OK, NULL);
        return;
    }
}

/* ------------------------------------------------------------------------
 * The check
 * ------------------------------------------------------------------------ */

static const char *key_names[SIM_KEYS] = {"k1", "k2", "k3"};

/* Values as the checker takes them: strings, NULL for absent. */
static const char *value_text(char *buf, uint64_t v)
{
    if (!v)
        return NULL;
    snprintf(buf, 24, "%llu", (unsigned long long)v);
    return buf;
}

static void history_build(struct sim *s, struct lc_history *h, struct lc_op *ops,
                          char (*text)[2][24])
{
    memset(h, 0, sizeof(*h));
    h->ops = ops;
    h->n_ops = s->n_ops;
    h->keys = key_names;
    h->n_keys = SIM_KEYS;
    for (size_t i = 0; i < s->n_ops; i++) {
        const struct sim_client_op *o = &s->ops[i];
        struct lc_op *l = &ops[i];
        static const enum lc_kind kinds[] = {LC_GET, LC_SET, LC_CAS};
        static const enum lc_outcome outcomes[] = {LC_INFO, LC_OK, LC_FAIL, LC_INFO};
        *l = (struct lc_op){.process = o->process,
                            .node = (int)o->node,
                            .kind = kinds[o->kind],
                            .outcome = outcomes[o->state],
                            .key = o->key,
                            .error = o->error,
                            .is_checked_fail = o->mismatch,
                            .invoke_ns = o->invoke_ns,
                            .complete_ns = o->complete_ns,
                            .invoke_line = (uint32_t)i + 1};
        if (l->outcome == LC_INFO) {
            l->info_ns = o->state == SIM_OP_INFO ? o->complete_ns : 0;
            l->complete_ns = LC_TIME_INFINITE;
        }
        bool has_value = o->kind != SIM_OP_GET || o->state == SIM_OP_OK;
        l->value = has_value ? value_text(text[i][0], o->value) : NULL;
        l->expected = value_text(text[i][1], o->expected);
        if (i == 0 || o->invoke_ns < h->first_ns)
            h->first_ns = o->invoke_ns;
        int64_t last = o->state == SIM_OP_PENDING ? o->invoke_ns : o->complete_ns;
        if (last > h->last_ns)
            h->last_ns = last;
    }
}

/* An op in a few words: "p5 get k2 at n1 (1203-1210 ms) -> 17". */
static void describe(const struct sim_client_op *o, char *buf, size_t size)
{
    static const char *const kinds[] = {"get", "set", "cas"};
    static const char *const states[] = {"pending", "ok", "fail", "info"};
    char what[64], span[48];
    if (o->kind == SIM_OP_GET && o->state == SIM_OP_OK && o->value)
        snprintf(what, sizeof(what), "-> %llu", (unsigned long long)o->value);
    else if (o->kind == SIM_OP_GET)
        snprintf(what, sizeof(what), "%s", o->state == SIM_OP_OK ? "-> absent" : "");
    else if (o->kind == SIM_OP_SET)
        snprintf(what, sizeof(what), "%llu", (unsigned long long)o->value);
    else if (o->expected)
        snprintf(what, sizeof(what), "%llu -> %llu", (unsigned long long)o->expected,
                 (unsigned long long)o->value);
    else
        snprintf(what, sizeof(what), "absent -> %llu", (unsigned long long)o->value);
    if (o->state == SIM_OP_OK || o->state == SIM_OP_FAIL)
        snprintf(span, sizeof(span), "%lld-%lld ms", (long long)(o->invoke_ns / 1000000),
                 (long long)(o->complete_ns / 1000000));
    else
        snprintf(span, sizeof(span), "%lld ms-?", (long long)(o->invoke_ns / 1000000));
    snprintf(buf, size, "p%lld %s k%u %s at n%llu (%s) %s%s%s", (long long)o->process,
             kinds[o->kind], o->key + 1, what, (unsigned long long)o->node, span, states[o->state],
             o->error ? " " : "", o->error ? o->error : "");
}

/* The failing window in the trace, then the violation in one line: the op
 * that closes the window, and for a read, the writes it could have seen. */
static void report(struct sim *s, const struct lc_history *h, const struct lc_key_result *kr)
{
    size_t from = kr->n_window_ops > WINDOW_NARRATED ? kr->n_window_ops - WINDOW_NARRATED : 0;
    sim_say(s, "HISTORY key %s: %zu ops in the shortest failing window, the last %zu:",
            key_names[kr->key], kr->n_window_ops, kr->n_window_ops - from);
    char line[160];
    for (size_t i = from; i < kr->n_window_ops; i++) {
        describe(&s->ops[kr->window_ops[i]], line, sizeof(line));
        sim_say(s, "HISTORY   %s", line);
    }
    const struct sim_client_op *c = &s->ops[kr->culprit];
    char culprit[160], seen[240] = "";
    describe(c, culprit, sizeof(culprit));
    if (c->kind == SIM_OP_GET && c->state == SIM_OP_OK) {
        uint32_t could[SEEN_NARRATED + 1];
        size_t n = lc_could_have_seen(h, kr->culprit, could, SEEN_NARRATED + 1);
        size_t used = (size_t)snprintf(seen, sizeof(seen), "; it could have seen only: ");
        for (size_t i = 0; i < n && i < SEEN_NARRATED && used < sizeof(seen); i++) {
            char w[160] = "absent";
            if (could[i] != UINT32_MAX)
                describe(&s->ops[could[i]], w, sizeof(w));
            used += (size_t)snprintf(seen + used, sizeof(seen) - used, "%s%s", i ? "; " : "", w);
        }
        if (n > SEEN_NARRATED && used < sizeof(seen))
            snprintf(seen + used, sizeof(seen) - used, "; ...");
    }
    check_violation(s, "Linearizability", "client history not linearizable: %s%s", culprit, seen);
}

bool sim_check_history(struct sim *s)
{
    if (!s->n_ops)
        return true;
    struct lc_op *ops = calloc(s->n_ops, sizeof(*ops));
    char(*text)[2][24] = calloc(s->n_ops, sizeof(*text));
    if (!ops || !text) {
        fprintf(stderr, "raftsim: out of memory\n");
        abort();
    }
    struct lc_history h;
    history_build(s, &h, ops, text);
    struct lc_options opt = {.budget_seconds = CHECK_BUDGET_SECONDS,
                             .max_cache_bytes = CHECK_MAX_CACHE_BYTES,
                             .minimize = true};
    struct lc_result r;
    bool ok = true;
    if (lc_check(&h, &opt, &r) != 0) {
        fprintf(stderr, "raftsim: out of memory\n");
        abort();
    }
    for (size_t k = 0; k < r.n_keys && ok; k++) {
        if (r.keys[k].verdict == LC_VIOLATION) {
            report(s, &h, &r.keys[k]);
            ok = false;
        } else if (r.keys[k].verdict == LC_UNKNOWN) {
            sim_say(s, "HISTORY key %s: the check ran out of its %s", key_names[k],
                    r.keys[k].unknown_reason ? r.keys[k].unknown_reason : "budget");
        }
    }
    lc_result_free(&r);
    free(text);
    free(ops);
    return ok;
}
