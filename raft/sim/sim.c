/* sim.c — the simulator's world: virtual time, a seeded network, disks that
 * take time to sync, and nodes that crash, restart and pause.
 *
 * Everything happens through one event queue ordered by (time, creation
 * sequence), and all randomness comes from one PRNG seeded by the options,
 * so a run is a pure function of its options and commands.
 */
#include "sim_internal.h"
#include "tracejson.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------ */

enum sim_event_kind {
    SIM_EV_TICK,       /* every node gets RAFT_TICK; reschedules itself */
    SIM_EV_DELIVER,    /* a message reaches its destination */
    SIM_EV_WRITE_DONE, /* a node's write is durable */
    SIM_EV_SNAPSHOT,   /* a node's snapshot is durable */
};

/* A message with its own copy of its entries and their data. */
struct sim_msg {
    struct raft_message m;
    struct raft_entry *entries;
    uint8_t *data;               /* InstallSnapshot: the chunk */
    struct raft_member *members; /* InstallSnapshot: the configuration */
    uint64_t data_dir;           /* the sender's incarnation when it sent it */
    uint64_t id;                 /* JSON: the number of its send */
};

/* A write in flight: what one update asked to persist, and the messages
 * that may go out only once it is durable (host contract 1). */
struct sim_write {
    bool hard_state;
    raft_term term;
    raft_id vote;
    raft_index truncate_from;
    struct raft_entry *entries;
    size_t n_entries;
    struct sim_msg *chunk; /* a snapshot chunk to stage (and maybe install) */
    struct sim_msg **msgs;
    size_t n_msgs;
};

struct sim_event {
    uint64_t at_ms;
    uint64_t seq;
    enum sim_event_kind kind;
    raft_id node;
    uint64_t incarnation;
    struct sim_msg *msg;
    struct sim_write *write;
    struct sim_snapshot *snap; /* SIM_EV_SNAPSHOT */
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "raftsim: out of memory\n");
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fprintf(stderr, "raftsim: out of memory\n");
        abort();
    }
    return p;
}

static uint64_t sim_random(struct sim *s)
{
    uint64_t z = (s->prng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t sim_between(struct sim *s, uint64_t lo, uint64_t hi)
{
    return hi <= lo ? lo : lo + sim_random(s) % (hi - lo + 1);
}

static bool event_before(const struct sim_event *a, const struct sim_event *b)
{
    return a->at_ms != b->at_ms ? a->at_ms < b->at_ms : a->seq < b->seq;
}

static void heap_push(struct sim *s, struct sim_event *ev)
{
    if (s->heap_n == s->heap_cap) {
        s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 256;
        s->heap = xrealloc(s->heap, s->heap_cap * sizeof(*s->heap));
    }
    size_t i = s->heap_n++;
    while (i > 0 && event_before(ev, s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = ev;
}

static struct sim_event *heap_pop(struct sim *s)
{
    struct sim_event *top = s->heap[0], *last = s->heap[--s->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_n)
            break;
        if (c + 1 < s->heap_n && event_before(s->heap[c + 1], s->heap[c]))
            c++;
        if (!event_before(s->heap[c], last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_n > 0)
        s->heap[i] = last;
    return top;
}

static struct sim_event *event_new(struct sim *s, enum sim_event_kind kind, uint64_t at_ms,
                                   raft_id node)
{
    struct sim_event *ev = xmalloc(sizeof(*ev));
    memset(ev, 0, sizeof(*ev));
    ev->kind = kind;
    ev->at_ms = at_ms;
    ev->seq = s->seq++;
    ev->node = node;
    ev->incarnation = s->nodes[node - 1].incarnation;
    return ev;
}

static int node_step(struct sim *s, struct sim_node *n, struct raft_event *ev,
                     raft_index *proposed);
static void take_snapshot(struct sim *s, struct sim_node *n, raft_index index);

/* ------------------------------------------------------------------------
 * Copies of entries and messages (the core's pointers die at its next step)
 * ------------------------------------------------------------------------ */

static struct raft_entry *entries_copy(const struct raft_entry *src, size_t n)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += src[i].len;
    struct raft_entry *dst = xmalloc(n * sizeof(*dst) + bytes);
    uint8_t *data = (uint8_t *)(dst + n);
    for (size_t i = 0; i < n; i++) {
        dst[i] = src[i];
        if (src[i].len)
            memcpy(data, src[i].data, src[i].len);
        dst[i].data = data;
        data += src[i].len;
    }
    return dst;
}

static struct sim_msg *msg_copy(const struct raft_message *m)
{
    struct sim_msg *c = xmalloc(sizeof(*c));
    c->m = *m;
    c->entries = NULL;
    c->data = NULL;
    c->members = NULL;
    c->data_dir = 0;
    c->id = 0;
    if (m->type == RAFT_MSG_INSTALL_SNAPSHOT) {
        const struct raft_install_snapshot *is = &m->install_snapshot;
        c->data = xmalloc(is->len);
        if (is->len && is->data)
            memcpy(c->data, is->data, is->len);
        c->m.install_snapshot.data = c->data;
        c->members = xmalloc(is->n_members * sizeof(*c->members));
        if (is->n_members)
            memcpy(c->members, is->members, is->n_members * sizeof(*c->members));
        c->m.install_snapshot.members = c->members;
    }
    if (m->type == RAFT_MSG_APPEND_ENTRIES && m->append_entries.n_entries) {
        c->entries = entries_copy(m->append_entries.entries, m->append_entries.n_entries);
        c->m.append_entries.entries = c->entries;
    }
    return c;
}

static void msg_free(struct sim_msg *c)
{
    if (c) {
        free(c->entries);
        free(c->data);
        free(c->members);
        free(c);
    }
}

static void write_free(struct sim_write *w)
{
    if (!w)
        return;
    free(w->entries);
    msg_free(w->chunk);
    for (size_t i = 0; i < w->n_msgs; i++)
        msg_free(w->msgs[i]);
    free(w->msgs);
    free(w);
}

static void snap_free(struct sim_snapshot *sn)
{
    if (sn) {
        free(sn->data);
        free(sn);
    }
}

static void event_free(struct sim_event *ev)
{
    msg_free(ev->msg);
    write_free(ev->write);
    snap_free(ev->snap);
    free(ev);
}

/* ------------------------------------------------------------------------
 * Logs kept by the simulator (disk and mirror)
 * ------------------------------------------------------------------------ */

uint64_t sim_chain(uint64_t prev, const struct raft_entry *e)
{
    /* FNV-1a over (term, type, data), seeded with the previous link. */
    uint64_t h = prev ^ 0xcbf29ce484222325ULL;
    uint64_t words[2] = {e->term, (uint64_t)e->type};
    const uint8_t *p = (const uint8_t *)words;
    for (size_t i = 0; i < sizeof(words); i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    p = e->data;
    for (size_t i = 0; i < e->len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

const struct sim_entry *sim_log_at(const struct sim_log *l, raft_index index)
{
    if (index <= l->offset || index > sim_log_last(l))
        return NULL;
    return &l->e[index - l->offset - 1];
}

bool sim_log_chain(const struct sim_log *l, raft_index index, uint64_t *chain)
{
    if (index == l->offset) {
        *chain = l->offset_chain;
        return true;
    }
    const struct sim_entry *e = sim_log_at(l, index);
    if (e)
        *chain = e->chain;
    return e != NULL;
}

void sim_log_truncate(struct sim_log *l, raft_index from)
{
    while (sim_log_last(l) >= from && l->n > 0) {
        free(l->e[l->n - 1].data);
        l->n--;
    }
}

void sim_log_compact(struct sim_log *l, raft_index upto)
{
    size_t k = 0;
    while (k < l->n && l->offset + k + 1 <= upto)
        k++;
    if (k == 0)
        return;
    l->offset_term = l->e[k - 1].term;
    l->offset_chain = l->e[k - 1].chain;
    for (size_t i = 0; i < k; i++)
        free(l->e[i].data);
    memmove(l->e, l->e + k, (l->n - k) * sizeof(*l->e));
    l->n -= k;
    l->offset += k;
}

void sim_log_reset(struct sim_log *l, raft_index index, raft_term term, uint64_t chain)
{
    sim_log_truncate(l, l->offset + 1);
    l->offset = index;
    l->offset_term = term;
    l->offset_chain = chain;
}

int sim_log_append(struct sim_log *l, const struct raft_entry *e)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->e = xrealloc(l->e, l->cap * sizeof(*l->e));
    }
    struct sim_entry *se = &l->e[l->n];
    se->term = e->term;
    se->type = e->type;
    se->len = e->len;
    se->data = xmalloc(e->len);
    if (e->len)
        memcpy(se->data, e->data, e->len);
    se->chain = sim_chain(l->n ? l->e[l->n - 1].chain : l->offset_chain, e);
    l->n++;
    return 0;
}

static void sim_log_free(struct sim_log *l)
{
    sim_log_truncate(l, l->offset + 1);
    free(l->e);
    memset(l, 0, sizeof(*l));
}

static void sim_log_copy(struct sim_log *dst, const struct sim_log *src)
{
    sim_log_reset(dst, src->offset, src->offset_term, src->offset_chain);
    for (size_t i = 0; i < src->n; i++) {
        struct raft_entry e = {.term = src->e[i].term,
                               .index = src->offset + i + 1,
                               .type = src->e[i].type,
                               .data = src->e[i].data,
                               .len = src->e[i].len};
        sim_log_append(dst, &e);
    }
}

/* ------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------ */

static void say_text(struct sim *s, const char *fmt, va_list ap)
{
    fprintf(s->o.out, "%6llums  ", (unsigned long long)s->now_ms);
    vfprintf(s->o.out, fmt, ap);
    fputc('\n', s->o.out);
}

void sim_say_text(struct sim *s, const char *fmt, ...)
{
    if (!s->o.out)
        return;
    va_list ap;
    va_start(ap, fmt);
    say_text(s, fmt, ap);
    va_end(ap);
}

/* JSON records. The writer is tracejson.c, shared with kvd; a record that
 * does not fit its buffer is dropped whole (only a "state" of a very long,
 * very fragmented log could be that big, and its log is cut first). */
enum { JSON_LINE = 8192 };

static void json_net(struct sim *s);

static void json_write(struct sim *s, struct tj *j)
{
    size_t len = tj_end(j);
    if (len)
        fwrite(j->buf, 1, len, s->o.json);
}

/* Start a record; false when JSON is off. A pending "net" record goes
 * first, so that a reader sees cuts before what they cause. */
static bool json_begin(struct sim *s, struct tj *j, char *buf, const char *kind, raft_id node)
{
    if (!s->o.json)
        return false;
    if (s->net_changed)
        json_net(s);
    tj_begin(j, buf, JSON_LINE, s->now_ms, kind, node, 0);
    return true;
}

/* The directed links that are cut, as [from, to] pairs. */
static void json_net(struct sim *s)
{
    s->net_changed = false;
    char buf[JSON_LINE];
    struct tj j;
    if (!json_begin(s, &j, buf, "net", 0))
        return;
    tj_open(&j, "cut", '[');
    for (unsigned a = 1; a <= s->o.nodes; a++)
        for (unsigned b = 1; b <= s->o.nodes; b++)
            if (a != b && s->links[a - 1][b - 1].blocked) {
                tj_open(&j, NULL, '[');
                tj_elem_u64(&j, a);
                tj_elem_u64(&j, b);
                tj_close(&j, ']');
            }
    tj_close(&j, ']');
    json_write(s, &j);
}

void sim_say(struct sim *s, const char *fmt, ...)
{
    va_list ap;
    if (s->o.out) {
        va_start(ap, fmt);
        say_text(s, fmt, ap);
        va_end(ap);
    }
    char buf[JSON_LINE], text[1024];
    struct tj j;
    if (!json_begin(s, &j, buf, "note", 0))
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    tj_str(&j, "text", text);
    json_write(s, &j);
}

void sim_json_violation(struct sim *s, const char *property, const char *detail)
{
    char buf[JSON_LINE];
    struct tj j;
    if (!json_begin(s, &j, buf, "violation", 0))
        return;
    tj_str(&j, "property", property);
    tj_str(&j, "text", detail);
    json_write(s, &j);
}

static void print_trace(struct sim *s, struct sim_node *n, const struct raft_update *u)
{
    char line[512], buf[JSON_LINE]; /* election lines carry id lists */
    for (size_t i = 0; i < u->n_trace; i++) {
        const struct raft_trace *t = &u->trace[i];
        if (s->o.out) {
            raft_trace_format(t, line, sizeof(line));
            sim_say_text(s, "n%llu t%-3llu %-13s %s", (unsigned long long)n->id,
                         (unsigned long long)t->term, raft_role_name(t->role), line);
        }
        struct tj j;
        if (json_begin(s, &j, buf, "rule", n->id)) {
            tj_rule(&j, t);
            json_write(s, &j);
        }
    }
}

/* A message record: "send", "recv" or "drop" (with the reason). */
static void json_message(struct sim *s, const char *kind, raft_id node, uint64_t id,
                         const struct raft_message *m, const char *reason)
{
    char buf[JSON_LINE];
    struct tj j;
    if (!json_begin(s, &j, buf, kind, node))
        return;
    tj_message(&j, id, m);
    if (reason)
        tj_str(&j, "reason", reason);
    json_write(s, &j);
}

/* The simulator's clients name each command by its payload ("cmd12"). */
static size_t request_id(const struct raft_entry *e, const char **req)
{
    const char *p = e->data;
    if (e->type != RAFT_ENTRY_NORMAL || e->len < 4 || memcmp(p, "cmd", 3) != 0)
        return 0;
    size_t n = 3;
    while (n < e->len && p[n] >= '0' && p[n] <= '9')
        n++;
    *req = p;
    return n;
}

static uint64_t log_term_at(const void *log, uint64_t i)
{
    const struct sim_log *l = log;
    return l->e[i - l->offset - 1].term;
}

/* A node's state, whenever it changed: what a viewer draws. The log is
 * given as runs of one term ([first, last, term]); a log of more runs than
 * fit keeps its newest ones ("log_from" says where they start). */
static void json_state(struct sim *s, struct sim_node *n)
{
    if (!s->o.json)
        return;
    const struct sim_log *l = &n->mem;
    raft_index last = sim_log_last(l);
    uint64_t sig = 0x9e3779b97f4a7c15ULL;
    uint64_t chain = 0;
    sim_log_chain(l, last, &chain);
    uint64_t parts[] = {n->r != NULL,
                        n->paused,
                        n->term,
                        n->role,
                        n->r ? raft_voted_for(n->r) : 0,
                        n->r ? raft_leader(n->r) : 0,
                        n->commit,
                        n->applied,
                        last,
                        l->offset,
                        chain};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        sig = (sig ^ parts[i]) * 0x100000001b3ULL;
    if (n->json_said && sig == n->json_sig)
        return;
    n->json_said = true;
    n->json_sig = sig;
    char buf[JSON_LINE];
    struct tj j;
    json_begin(s, &j, buf, "state", n->id);
    tj_bool(&j, "up", n->r != NULL);
    tj_bool(&j, "paused", n->paused);
    tj_u64(&j, "term", n->r ? raft_current_term(n->r) : n->disk_term);
    tj_str(&j, "role", raft_role_name(n->r ? raft_role_of(n->r) : RAFT_FOLLOWER));
    tj_u64(&j, "vote", n->r ? raft_voted_for(n->r) : n->disk_vote);
    tj_u64(&j, "leader", n->r ? raft_leader(n->r) : 0);
    tj_u64(&j, "commit", n->commit);
    tj_u64(&j, "applied", n->applied);
    tj_u64(&j, "last", last);
    tj_u64(&j, "snapshot", l->offset);
    enum { MAX_RUNS = 200 };
    size_t runs = 0;
    raft_index from = last;
    while (from > l->offset && runs < MAX_RUNS) {
        raft_term t = l->e[from - l->offset - 1].term;
        while (from > l->offset && l->e[from - l->offset - 1].term == t)
            from--;
        runs++;
    }
    tj_log_runs(&j, from + 1, last, log_term_at, l);
    json_write(s, &j);
}

/* After a step: commits a leader made, entries applied (a leader's apply
 * is when its host answers the client), and the node's state. */
static void json_after_step(struct sim *s, struct sim_node *n, const struct raft_update *u,
                            raft_index commit_before)
{
    if (!s->o.json)
        return;
    char buf[JSON_LINE];
    struct tj j;
    if (u->role == RAFT_LEADER && u->commit_index > commit_before) {
        json_begin(s, &j, buf, "commit", n->id);
        tj_u64(&j, "term", raft_current_term(n->r));
        tj_u64(&j, "index", u->commit_index);
        tj_u64(&j, "from", commit_before + 1);
        json_write(s, &j);
    }
    for (size_t i = 0; i < u->n_apply; i++) {
        const struct raft_entry *e = &u->apply[i];
        const char *req = NULL;
        size_t req_len = request_id(e, &req);
        json_begin(s, &j, buf, "apply", n->id);
        tj_u64(&j, "index", e->index);
        tj_u64(&j, "term", e->term);
        tj_str(&j, "entry",
               e->type == RAFT_ENTRY_NOOP   ? "noop"
               : e->type == RAFT_ENTRY_CONF ? "conf"
                                            : "normal");
        if (req_len)
            tj_strn(&j, "req", req, req_len);
        json_write(s, &j);
        if (req_len && u->role == RAFT_LEADER) {
            json_begin(s, &j, buf, "answer", n->id);
            tj_strn(&j, "req", req, req_len);
            tj_str(&j, "status", "ok");
            tj_u64(&j, "index", e->index);
            json_write(s, &j);
        }
    }
    json_state(s, n);
}

static void describe_message(char *buf, size_t size, const struct raft_message *m)
{
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE:
        snprintf(buf, size, "%s%s last=%llu/t%llu", m->request_vote.pre_vote ? "Pre" : "",
                 raft_message_type_name(m->type),
                 (unsigned long long)m->request_vote.last_log_index,
                 (unsigned long long)m->request_vote.last_log_term);
        break;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        snprintf(buf, size, "%s%s %s", m->request_vote_result.pre_vote ? "Pre" : "",
                 raft_message_type_name(m->type),
                 m->request_vote_result.vote_granted ? "granted" : "denied");
        break;
    case RAFT_MSG_APPEND_ENTRIES:
        snprintf(buf, size, "AppendEntries prev=%llu/t%llu n=%zu commit=%llu",
                 (unsigned long long)m->append_entries.prev_log_index,
                 (unsigned long long)m->append_entries.prev_log_term, m->append_entries.n_entries,
                 (unsigned long long)m->append_entries.leader_commit);
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        snprintf(buf, size, "TimeoutNow");
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT:
        snprintf(buf, size, "InstallSnapshot %llu/t%llu offset=%llu len=%zu%s",
                 (unsigned long long)m->install_snapshot.last_index,
                 (unsigned long long)m->install_snapshot.last_term,
                 (unsigned long long)m->install_snapshot.offset, m->install_snapshot.len,
                 m->install_snapshot.done ? " done" : "");
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT_RESULT:
        snprintf(buf, size, "InstallSnapshotResult %llu next=%llu%s%s",
                 (unsigned long long)m->install_snapshot_result.last_index,
                 (unsigned long long)m->install_snapshot_result.next_offset,
                 m->install_snapshot_result.done ? " done" : "",
                 m->install_snapshot_result.rejected ? " rejected" : "");
        break;
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        if (m->append_entries_result.success)
            snprintf(buf, size, "AppendEntriesResult ok match=%llu",
                     (unsigned long long)m->append_entries_result.match_index);
        else
            snprintf(buf, size, "AppendEntriesResult reject at=%llu hint=%llu/t%llu",
                     (unsigned long long)m->append_entries_result.rejected_index,
                     (unsigned long long)m->append_entries_result.conflict_index,
                     (unsigned long long)m->append_entries_result.conflict_term);
        break;
    }
}

/* ------------------------------------------------------------------------
 * The network
 * ------------------------------------------------------------------------ */

static struct sim_node *node_of(struct sim *s, raft_id id)
{
    return id >= 1 && id <= s->o.nodes ? &s->nodes[id - 1] : NULL;
}

static void send_message(struct sim *s, const struct raft_message *m)
{
    struct sim_node *to = node_of(s, m->to);
    struct sim_link *link = &s->links[m->from - 1][m->to - 1];
    const char *fate = NULL;
    s->stats.messages_sent++;
    if (m->type == RAFT_MSG_APPEND_ENTRIES)
        for (size_t i = 0; i < m->append_entries.n_entries; i++)
            s->stats.entry_bytes_sent += m->append_entries.entries[i].len;
    struct raft_message filled;
    if (m->type == RAFT_MSG_INSTALL_SNAPSHOT) {
        /* The host fills the chunk from its current snapshot (raft.h). */
        const struct sim_snapshot *sn = &s->nodes[m->from - 1].snap;
        const struct raft_install_snapshot *is = &m->install_snapshot;
        if (sn->index != is->last_index || sn->term != is->last_term ||
            is->offset + is->len > sn->size) {
            s->stats.messages_dropped++;
            return; /* not the snapshot we hold any more */
        }
        filled = *m;
        filled.install_snapshot.data = sn->data + is->offset;
        m = &filled;
    }
    const char *reason = NULL;
    if (!to)
        fate = "dropped (no such node)", reason = "no such node";
    else if (link->blocked)
        fate = "dropped (link cut)", reason = "link cut";
    else if (s->drop_pct && sim_random(s) % 100 < s->drop_pct)
        fate = "dropped (loss)", reason = "loss";
    uint64_t id = ++s->next_msg_id;
    json_message(s, "send", m->from, id, m, NULL);
    if (reason)
        json_message(s, "drop", m->from, id, m, reason);
    if (s->o.trace_messages && s->o.out) {
        char d[160];
        describe_message(d, sizeof(d), m);
        sim_say(s, "n%llu -> n%llu t%llu %s%s%s", (unsigned long long)m->from,
                (unsigned long long)m->to, (unsigned long long)m->term, d, fate ? " " : "",
                fate ? fate : "");
    }
    if (fate) {
        s->stats.messages_dropped++;
        return;
    }
    unsigned copies = 1 + (s->dup_pct && sim_random(s) % 100 < s->dup_pct);
    for (unsigned i = 0; i < copies; i++) {
        uint64_t at = s->now_ms + sim_between(s, link->delay_min_ms, link->delay_max_ms);
        if (!s->reorder && at < link->last_arrival_ms)
            at = link->last_arrival_ms; /* in order, like one TCP connection */
        link->last_arrival_ms = at;
        struct sim_event *ev = event_new(s, SIM_EV_DELIVER, at, m->to);
        ev->msg = msg_copy(m);
        ev->msg->data_dir = s->nodes[m->from - 1].data_dir;
        ev->msg->id = id;
        heap_push(s, ev);
    }
}

/* ------------------------------------------------------------------------
 * Nodes: stepping the core and acting on its update as a host would
 * ------------------------------------------------------------------------ */

static struct sim_read *find_read(struct sim *s, uint64_t id)
{
    for (size_t i = 0; i < s->n_reads; i++)
        if (s->reads[i].id == id)
            return &s->reads[i];
    return NULL;
}

static void handle_reads(struct sim *s, const struct raft_update *u)
{
    for (size_t i = 0; i < u->n_reads; i++) {
        const struct raft_read *rr = &u->reads[i];
        struct sim_read *rd = find_read(s, rr->id);
        if (!rd)
            continue;
        char note[96];
        client_read_done(s, &s->nodes[rd->node - 1], rd->id, rr->status, note, sizeof(note));
        if (rr->status == RAFT_OK) {
            s->stats.reads_ok++;
            sim_say(s, "n%llu read %llu served at index %llu%s", (unsigned long long)rd->node,
                    (unsigned long long)rd->id, (unsigned long long)rr->index, note);
            check_read_served(s, rd, rr);
        } else {
            s->stats.reads_failed++;
            sim_say(s, "n%llu read %llu failed: %s%s", (unsigned long long)rd->node,
                    (unsigned long long)rd->id, raft_strerror(rr->status), note);
        }
        *rd = s->reads[--s->n_reads];
    }
}

/* Host contract 1: persist, in order, then send what waited for it. */
static void schedule_write(struct sim *s, struct sim_node *n, const struct raft_update *u)
{
    size_t n_after = 0;
    for (size_t i = 0; i < u->n_messages; i++)
        n_after += u->messages[i].after_persist;
    bool persist = u->hard_state_changed || u->n_entries || u->truncate_from || u->snapshot_chunk;
    if (!persist && n_after == 0)
        return;
    if (!persist && n->writes_pending == 0) { /* nothing to wait for */
        for (size_t i = 0; i < u->n_messages; i++)
            if (u->messages[i].after_persist)
                send_message(s, &u->messages[i]);
        return;
    }
    struct sim_write *w = xmalloc(sizeof(*w));
    memset(w, 0, sizeof(*w));
    w->hard_state = u->hard_state_changed;
    w->term = u->current_term;
    w->vote = u->voted_for;
    w->truncate_from = u->truncate_from;
    if (u->n_entries) {
        w->entries = entries_copy(u->entries, u->n_entries);
        w->n_entries = u->n_entries;
    }
    if (u->snapshot_chunk) {
        struct raft_message cm = {.type = RAFT_MSG_INSTALL_SNAPSHOT};
        cm.install_snapshot = *u->snapshot_chunk;
        w->chunk = msg_copy(&cm);
    }
    if (n_after) {
        w->msgs = xmalloc(n_after * sizeof(*w->msgs));
        for (size_t i = 0; i < u->n_messages; i++)
            if (u->messages[i].after_persist)
                w->msgs[w->n_msgs++] = msg_copy(&u->messages[i]);
    }
    uint64_t done = s->now_ms + sim_between(s, s->o.fsync_min_ms, s->o.fsync_max_ms);
    if (done < n->write_done_ms)
        done = n->write_done_ms; /* a disk completes writes in order */
    n->write_done_ms = done;
    n->writes_pending++;
    struct sim_event *ev = event_new(s, SIM_EV_WRITE_DONE, done, n->id);
    ev->write = w;
    heap_push(s, ev);
}

/* The node's own clock: it runs at clock_pct percent of virtual time since
 * its anchor (clock skew, for lease reads), and never goes backwards. */
uint64_t sim_node_clock(const struct sim *s, const struct sim_node *n)
{
    return n->clock_anchor_local + (s->now_ms - n->clock_anchor_virtual) * n->clock_pct / 100;
}

void sim_set_clock_rate(struct sim *s, raft_id id, unsigned pct)
{
    struct sim_node *n = node_of(s, id);
    if (!n || pct == 0)
        return;
    n->clock_anchor_local = sim_node_clock(s, n);
    n->clock_anchor_virtual = s->now_ms;
    n->clock_pct = pct;
}

/* Step the core and act on its update. `proposed`, when not NULL, receives
 * the indices a RAFT_PROPOSE was given. */
static int node_step(struct sim *s, struct sim_node *n, struct raft_event *ev, raft_index *proposed)
{
    struct raft_update u;
    ev->now_ms = sim_node_clock(s, n);
    s->stats.events++;
    raft_index commit_before = raft_commit_index(n->r);
    int rv = raft_step(n->r, ev, &u);
    if (rv == RAFT_ENOMEM) {
        fprintf(stderr, "raftsim: out of memory in raft_step\n");
        abort();
    }
    print_trace(s, n, &u);
    if (rv == RAFT_ECORRUPT) {
        const char *why = raft_check_invariants(n->r);
        bool sms = why && strstr(why, "State Machine Safety");
        check_violation(s, sms ? "State Machine Safety" : "Server invariant", "n%llu: invariant %s",
                        (unsigned long long)n->id, why ? why : "?");
    }
    check_update(s, n, &u);
    /* Host contract 2: apply in order (what the checker accepted), then
     * answer the clients (reads below see the entries applied). */
    for (size_t i = 0; i < u.n_apply && u.apply[i].index <= n->applied; i++)
        client_apply(s, n, &u.apply[i]);
    json_after_step(s, n, &u, commit_before);
    for (size_t i = 0; i < u.n_messages; i++)
        if (!u.messages[i].after_persist)
            send_message(s, &u.messages[i]);
    schedule_write(s, n, &u);
    handle_reads(s, &u);
    if (proposed) {
        proposed[0] = u.proposed_first;
        proposed[1] = u.proposed_last;
    }
    /* Storage may drop what the snapshot covers (all of it durable). */
    if (u.compact_index && sim_log_at(&n->disk, u.compact_index))
        sim_log_compact(&n->disk, u.compact_index);
    if (u.snapshot_wanted)
        take_snapshot(s, n, u.snapshot_index);
    return rv;
}

static uint64_t fnv(const uint8_t *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Keep a node's log (disk or mirror) consistent with a snapshot it now
 * holds: drop what the snapshot covers, or everything if it disagrees. */
static void log_after_snapshot(struct sim_log *l, raft_index index, raft_term term, uint64_t chain)
{
    const struct sim_entry *e = sim_log_at(l, index);
    if (e && e->term == term)
        sim_log_compact(l, index);
    else if (l->offset != index)
        sim_log_reset(l, index, term, chain);
}

/* A follower's host writes a chunk to its staging area; after the last
 * one it checks the checksum and installs the snapshot atomically (the
 * state machine, its snapshot on disk, and its log), then tells the core. */
static void stage_chunk(struct sim *s, struct sim_node *n, const struct raft_install_snapshot *is)
{
    if (is->offset == 0)
        n->staging_len = 0;
    if (is->offset != n->staging_len) {
        check_violation(s, "Host contract", "n%llu: snapshot chunk at %llu, staging holds %zu",
                        (unsigned long long)n->id, (unsigned long long)is->offset, n->staging_len);
        return;
    }
    if (n->staging_len + is->len > n->staging_cap) {
        n->staging_cap = (n->staging_len + is->len) * 2;
        n->staging = xrealloc(n->staging, n->staging_cap);
    }
    if (is->len)
        memcpy(n->staging + n->staging_len, is->data, is->len);
    n->staging_len += is->len;
    if (!is->done)
        return;
    struct raft_event ev = {.type = RAFT_SNAPSHOT_INSTALLED};
    ev.snapshot_installed.index = is->last_index;
    ev.snapshot_installed.term = is->last_term;
    ev.snapshot_installed.ok = n->staging_len == is->total_size && n->staging_len >= 16 &&
                               fnv(n->staging, n->staging_len) == is->checksum;
    if (ev.snapshot_installed.ok) {
        raft_index index = get_u64(n->staging);
        uint64_t chain = get_u64(n->staging + 8);
        if (index != is->last_index || index > s->committed_n || chain != s->committed_chain[index])
            check_violation(s, "State Machine Safety",
                            "n%llu received a snapshot at %llu that is not the committed state",
                            (unsigned long long)n->id, (unsigned long long)is->last_index);
        struct sim_snapshot *sn = &n->snap;
        free(sn->data);
        sn->index = index;
        sn->term = is->last_term;
        sn->checksum = is->checksum;
        sn->size = n->staging_len;
        sn->data = xmalloc(sn->size);
        memcpy(sn->data, n->staging, sn->size);
        sn->n_members = is->n_members < SIM_MAX_NODES ? is->n_members : SIM_MAX_NODES;
        if (sn->n_members)
            memcpy(sn->members, is->members, sn->n_members * sizeof(*sn->members));
        n->applied = index;
        n->applied_chain = chain;
        client_kv_decode(n, n->staging + 16, n->staging_len - 16);
        log_after_snapshot(&n->disk, index, is->last_term, chain);
        log_after_snapshot(&n->mem, index, is->last_term, chain);
        if (n->commit < index)
            n->commit = index;
        sim_say(s, "n%llu installed a snapshot at index %llu (%zu bytes)",
                (unsigned long long)n->id, (unsigned long long)index, sn->size);
    }
    n->staging_len = 0;
    node_step(s, n, &ev, NULL);
}

/* The core asked for a snapshot of the state machine as of `index`, which
 * is what the node has applied: encode it, and make it durable shortly. */
static void take_snapshot(struct sim *s, struct sim_node *n, raft_index index)
{
    if (n->applied != index) {
        check_violation(s, "Host contract", "n%llu: snapshot asked at %llu, applied is %llu",
                        (unsigned long long)n->id, (unsigned long long)index,
                        (unsigned long long)n->applied);
        return;
    }
    struct sim_snapshot *sn = xmalloc(sizeof(*sn));
    memset(sn, 0, sizeof(*sn));
    sn->index = index;
    const struct sim_entry *e = sim_log_at(&n->mem, index);
    sn->term = e ? e->term : n->mem.offset_term;
    /* The applied index and chain, the key-value store, and padding, so
     * that snapshots travel in several chunks. */
    uint8_t kv[16 + 16 * SIM_KEYS];
    size_t kv_len = client_kv_encode(n, kv, sizeof(kv));
    sn->size = 16 + (size_t)(index * 37 % 300);
    if (sn->size < 16 + kv_len)
        sn->size = 16 + kv_len;
    sn->data = xmalloc(sn->size);
    put_u64(sn->data, index);
    put_u64(sn->data + 8, n->applied_chain);
    for (size_t i = 16; i < sn->size; i++)
        sn->data[i] = (uint8_t)(index + i);
    memcpy(sn->data + 16, kv, kv_len);
    sn->checksum = fnv(sn->data, sn->size);
    struct sim_event *ev =
        event_new(s, SIM_EV_SNAPSHOT,
                  s->now_ms + sim_between(s, s->o.fsync_min_ms, s->o.fsync_max_ms), n->id);
    ev->snap = sn;
    heap_push(s, ev);
}

static void snapshot_done(struct sim *s, struct sim_node *n, struct sim_snapshot *sn)
{
    struct sim_snapshot *disk = &n->snap;
    if (sn->index <= disk->index)
        return;
    free(disk->data);
    *disk = *sn;
    sn->data = NULL; /* moved */
    struct raft_event ev = {.type = RAFT_SNAPSHOT_TAKEN};
    ev.snapshot_taken.index = disk->index;
    ev.snapshot_taken.size = disk->size;
    ev.snapshot_taken.checksum = disk->checksum;
    node_step(s, n, &ev, NULL);
    struct raft_snapshot_meta meta;
    if (n->r && raft_snapshot(n->r, &meta) && meta.index == disk->index) {
        disk->n_members = meta.n_members < SIM_MAX_NODES ? meta.n_members : SIM_MAX_NODES;
        if (disk->n_members)
            memcpy(disk->members, meta.members, disk->n_members * sizeof(*disk->members));
    }
}

static void write_done(struct sim *s, struct sim_node *n, struct sim_write *w)
{
    if (w->hard_state) {
        n->disk_term = w->term;
        n->disk_vote = w->vote;
    }
    if (w->truncate_from)
        sim_log_truncate(&n->disk, w->truncate_from);
    for (size_t i = 0; i < w->n_entries; i++) {
        if (w->entries[i].index <= n->disk.offset)
            continue; /* a snapshot installed meanwhile covers it */
        if (w->entries[i].index != sim_log_last(&n->disk) + 1) {
            check_violation(s, "Host contract", "n%llu: write of index %llu after %llu",
                            (unsigned long long)n->id, (unsigned long long)w->entries[i].index,
                            (unsigned long long)sim_log_last(&n->disk));
            return;
        }
        sim_log_append(&n->disk, &w->entries[i]);
        check_durable_entry(s, n, w->entries[i].index);
    }
    n->writes_pending--;
    if (w->chunk) {
        for (size_t i = 0; i < w->n_msgs; i++) { /* chunk acknowledgements go first */
            send_message(s, &w->msgs[i]->m);
            msg_free(w->msgs[i]);
        }
        w->n_msgs = 0;
        stage_chunk(s, n, &w->chunk->m.install_snapshot);
        return;
    }
    if (w->n_entries || w->hard_state) {
        struct raft_event ev = {.type = RAFT_PERSISTED};
        if (w->n_entries) {
            const struct raft_entry *last = &w->entries[w->n_entries - 1];
            ev.persisted.index = last->index;
            ev.persisted.term = last->term;
        }
        if (w->hard_state)
            ev.persisted.current_term = w->term;
        node_step(s, n, &ev, NULL);
    }
    for (size_t i = 0; i < w->n_msgs; i++)
        send_message(s, &w->msgs[i]->m);
}

static void process_event(struct sim *s, struct sim_event *ev)
{
    struct sim_node *n = node_of(s, ev->node);
    if (!n->r || ev->incarnation != n->incarnation) {
        event_free(ev); /* for a life that ended */
        return;
    }
    if (n->paused) {
        if (n->n_deferred == n->cap_deferred) {
            n->cap_deferred = n->cap_deferred ? n->cap_deferred * 2 : 16;
            n->deferred = xrealloc(n->deferred, n->cap_deferred * sizeof(*n->deferred));
        }
        n->deferred[n->n_deferred++] = ev;
        return;
    }
    if (ev->kind == SIM_EV_DELIVER) {
        struct sim_link *link = &s->links[ev->msg->m.from - 1][ev->msg->m.to - 1];
        if (link->blocked) { /* the link was cut while the message was in flight */
            s->stats.messages_dropped++;
            json_message(s, "drop", ev->msg->m.to, ev->msg->id, &ev->msg->m, "link cut");
        } else if (!disk_loss_accepts(s, n, ev->msg->m.from, ev->msg->data_dir)) {
            s->stats.messages_dropped++; /* its data dir was replaced */
            json_message(s, "drop", ev->msg->m.to, ev->msg->id, &ev->msg->m,
                         "sender's data dir was replaced");
        } else {
            json_message(s, "recv", ev->msg->m.to, ev->msg->id, &ev->msg->m, NULL);
            struct raft_event rev = {.type = RAFT_RECEIVE};
            rev.receive = &ev->msg->m;
            const struct raft_message *m = &ev->msg->m;
            if (m->type == RAFT_MSG_APPEND_ENTRIES_RESULT && m->from <= SIM_MAX_NODES &&
                m->append_entries_result.echo_sent_ms > n->acked_sent_ms[m->from])
                n->acked_sent_ms[m->from] = m->append_entries_result.echo_sent_ms;
            node_step(s, n, &rev, NULL);
        }
    } else if (ev->kind == SIM_EV_WRITE_DONE) {
        write_done(s, n, ev->write);
    } else if (ev->kind == SIM_EV_SNAPSHOT) {
        snapshot_done(s, n, ev->snap);
    }
    event_free(ev);
}

static void tick_all(struct sim *s)
{
    for (unsigned i = 0; i < s->o.nodes; i++) {
        struct sim_node *n = &s->nodes[i];
        if (!n->r || n->paused)
            continue;
        struct raft_event ev = {.type = RAFT_TICK};
        node_step(s, n, &ev, NULL);
    }
}

/* Run one event; false when the queue is empty or past `until`. */
static bool run_one(struct sim *s, uint64_t until)
{
    if (s->heap_n == 0 || s->heap[0]->at_ms > until)
        return false;
    struct sim_event *ev = heap_pop(s);
    s->events_this_ms = ev->at_ms / 100 == s->now_ms / 100 ? s->events_this_ms + 1 : 0;
    s->now_ms = ev->at_ms;
    if (s->events_this_ms > 100000) {
        sim_say(s, "LIVELOCK 100,000 events within 100 ms of virtual time");
        s->livelock = s->stop = true;
    }
    if (ev->kind == SIM_EV_TICK) {
        tick_all(s);
        disk_loss_operator_tick(s);
        ev->at_ms += s->o.tick_ms;
        ev->seq = s->seq++;
        heap_push(s, ev);
        return true;
    }
    process_event(s, ev);
    return true;
}

void sim_run_for(struct sim *s, uint64_t ms)
{
    uint64_t until = s->now_ms + ms;
    while (!s->stop && run_one(s, until))
        ;
    if (!s->stop)
        s->now_ms = until;
}

bool sim_run_until(struct sim *s, uint64_t max_ms, bool (*pred)(struct sim *s, void *arg),
                   void *arg)
{
    uint64_t until = s->now_ms + max_ms;
    if (pred(s, arg))
        return true;
    while (!s->stop && run_one(s, until))
        if (pred(s, arg))
            return true;
    if (!s->stop)
        s->now_ms = until;
    return false;
}

/* ------------------------------------------------------------------------
 * Life and death
 * ------------------------------------------------------------------------ */

static int node_start(struct sim *s, struct sim_node *n)
{
    /* Founders start with the bootstrap configuration; the others join
     * later and start with none (they learn it from the leader), and so
     * does a founder whose disk was lost: its new data dir must not
     * bootstrap a cluster again. */
    raft_id voters[SIM_MAX_NODES];
    unsigned n_voters = n->id <= s->o.voters && n->data_dir == 1 ? s->o.voters : 0;
    for (unsigned i = 0; i < n_voters; i++)
        voters[i] = i + 1;
    struct raft_entry *entries = xmalloc(n->disk.n * sizeof(*entries));
    for (size_t i = 0; i < n->disk.n; i++) {
        entries[i].term = n->disk.e[i].term;
        entries[i].index = n->disk.offset + i + 1;
        entries[i].type = n->disk.e[i].type;
        entries[i].data = n->disk.e[i].data;
        entries[i].len = n->disk.e[i].len;
    }
    /* With a snapshot, the state machine restarts from it. */
    struct raft_snapshot_meta meta = {n->snap.index,    n->snap.term,    n->snap.size,
                                      n->snap.checksum, n->snap.members, n->snap.n_members};
    struct raft_persisted st = {.current_term = n->disk_term,
                                .voted_for = n->disk_vote,
                                .snapshot = n->snap.index ? &meta : NULL,
                                .first_index = n->disk.offset + 1,
                                .prev_term = n->disk.offset_term,
                                .entries = entries,
                                .n_entries = n->disk.n,
                                .applied_index = n->snap.index,
                                .voters = voters,
                                .n_voters = n_voters};
    struct raft_config cfg = s->o.raft;
    cfg.id = n->id;
    cfg.seed = s->o.seed * 1000003 + n->incarnation;
    int rv = raft_init(&n->r, &cfg, &st);
    free(entries);
    if (rv != RAFT_OK)
        return rv;
    sim_log_copy(&n->mem, &n->disk);
    n->term = n->disk_term;
    n->role = RAFT_FOLLOWER;
    n->applied = n->snap.index;
    n->applied_chain = n->snap.index ? get_u64(n->snap.data + 8) : 0;
    client_kv_decode(n, n->snap.index ? n->snap.data + 16 : NULL,
                     n->snap.index ? n->snap.size - 16 : 0);
    n->commit = n->snap.index;
    n->staging_len = 0;
    n->write_done_ms = s->now_ms;
    n->writes_pending = 0;
    n->paused = false;
    return RAFT_OK;
}

static void drop_deferred(struct sim_node *n)
{
    for (size_t i = 0; i < n->n_deferred; i++)
        event_free(n->deferred[i]);
    n->n_deferred = 0;
}

void sim_crash(struct sim *s, raft_id id)
{
    struct sim_node *n = node_of(s, id);
    if (!n || !n->r)
        return;
    raft_close(n->r);
    n->r = NULL;
    n->incarnation++;
    n->paused = false;
    drop_deferred(n);
    client_node_down(s, n);
    sim_say(s, "n%llu CRASH (unsynced writes lost: %u)", (unsigned long long)id, n->writes_pending);
    json_state(s, n);
}

void sim_restart(struct sim *s, raft_id id)
{
    struct sim_node *n = node_of(s, id);
    if (!n || n->r)
        return;
    int rv = node_start(s, n);
    if (rv != RAFT_OK) {
        check_violation(s, "Restart", "n%llu: raft_init failed: %s", (unsigned long long)id,
                        raft_strerror(rv));
        return;
    }
    sim_say(s, "n%llu RESTART term=%llu vote=%llu log=%llu", (unsigned long long)id,
            (unsigned long long)n->disk_term, (unsigned long long)n->disk_vote,
            (unsigned long long)sim_log_last(&n->disk));
    json_state(s, n);
}

void sim_pause(struct sim *s, raft_id id)
{
    struct sim_node *n = node_of(s, id);
    if (!n || !n->r || n->paused)
        return;
    n->paused = true;
    sim_say(s, "n%llu PAUSE", (unsigned long long)id);
    json_state(s, n);
}

void sim_resume(struct sim *s, raft_id id)
{
    struct sim_node *n = node_of(s, id);
    if (!n || !n->r || !n->paused)
        return;
    n->paused = false;
    sim_say(s, "n%llu RESUME (%zu events waiting)", (unsigned long long)id, n->n_deferred);
    json_state(s, n);
    /* Handle what queued up while stopped, in arrival order. */
    struct sim_event **evs = n->deferred;
    size_t count = n->n_deferred;
    n->deferred = NULL;
    n->n_deferred = n->cap_deferred = 0;
    for (size_t i = 0; i < count; i++) {
        if (s->stop || !n->r || evs[i]->incarnation != n->incarnation)
            event_free(evs[i]);
        else
            process_event(s, evs[i]);
    }
    free(evs);
}

/* ------------------------------------------------------------------------
 * Network controls
 * ------------------------------------------------------------------------ */

void sim_block(struct sim *s, raft_id from, raft_id to, bool blocked)
{
    if (node_of(s, from) && node_of(s, to) && s->links[from - 1][to - 1].blocked != blocked) {
        s->links[from - 1][to - 1].blocked = blocked;
        s->net_changed = true;
    }
}

void sim_heal(struct sim *s)
{
    for (unsigned i = 0; i < SIM_MAX_NODES; i++)
        for (unsigned j = 0; j < SIM_MAX_NODES; j++) {
            s->net_changed |= s->links[i][j].blocked;
            s->links[i][j].blocked = false;
        }
}

void sim_set_drop(struct sim *s, unsigned pct)
{
    s->drop_pct = pct > 100 ? 100 : pct;
}

void sim_set_reorder(struct sim *s, bool reorder)
{
    s->reorder = reorder;
}

void sim_set_dup(struct sim *s, unsigned pct)
{
    s->dup_pct = pct > 100 ? 100 : pct;
}

void sim_set_link_delay(struct sim *s, raft_id from, raft_id to, uint32_t min_ms, uint32_t max_ms)
{
    if (node_of(s, from) && node_of(s, to)) {
        s->links[from - 1][to - 1].delay_min_ms = min_ms;
        s->links[from - 1][to - 1].delay_max_ms = max_ms < min_ms ? min_ms : max_ms;
    }
}

void sim_set_delay(struct sim *s, uint32_t min_ms, uint32_t max_ms)
{
    for (unsigned i = 1; i <= s->o.nodes; i++)
        for (unsigned j = 1; j <= s->o.nodes; j++)
            sim_set_link_delay(s, i, j, min_ms, max_ms);
}

/* ------------------------------------------------------------------------
 * Clients
 * ------------------------------------------------------------------------ */

raft_id sim_leader(struct sim *s)
{
    raft_id best = 0;
    raft_term best_term = 0;
    for (unsigned i = 0; i < s->o.nodes; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->r && !n->paused && raft_role_of(n->r) == RAFT_LEADER &&
            raft_current_term(n->r) >= best_term) {
            best = n->id;
            best_term = raft_current_term(n->r);
        }
    }
    return best;
}

/* Whether id is in the configuration of the current leader (or, with no
 * leader, whether it is running at all); voters_only leaves learners out. */
static bool sim_is_member(struct sim *s, raft_id id, bool voters_only)
{
    struct raft *leader = sim_raft(s, sim_leader(s));
    if (!leader)
        return true;
    struct raft_member m[SIM_MAX_NODES + 1];
    size_t n = raft_configuration(leader, m, SIM_MAX_NODES + 1);
    for (size_t i = 0; i < n && i <= SIM_MAX_NODES; i++)
        if (m[i].id == id)
            return m[i].is_voter || !voters_only;
    return false;
}

bool sim_all_committed(struct sim *s, raft_index index, bool voters_only)
{
    for (unsigned i = 0; i < s->o.nodes; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->r && !n->paused && sim_is_member(s, n->id, voters_only) &&
            (raft_commit_index(n->r) < index || n->applied < index))
            return false;
    }
    return true;
}

int sim_change_conf(struct sim *s, enum raft_conf_op op, raft_id id)
{
    struct sim_node *n = node_of(s, sim_leader(s));
    if (!n)
        return RAFT_ENOTLEADER;
    struct raft_event ev = {.type = RAFT_CHANGE_CONF};
    ev.change_conf.op = op;
    ev.change_conf.id = id;
    return node_step(s, n, &ev, NULL);
}

int sim_propose(struct sim *s, raft_id at, unsigned n_entries, raft_index *first, raft_index *last)
{
    return sim_propose_sized(s, at, n_entries, 0, first, last);
}

/* A client's key-value operation, when the entry carries one. */
static void json_kv(struct tj *j, const struct raft_entry *e)
{
    struct kv_cmd c;
    if (!kv_cmd_parse(e, &c))
        return;
    char key[8], value[24];
    snprintf(key, sizeof(key), "k%u", c.key + 1);
    tj_str(j, "op", c.kind == SIM_OP_CAS ? "cas" : "set");
    tj_str(j, "key", key);
    if (c.kind == SIM_OP_CAS && c.expected) {
        snprintf(value, sizeof(value), "%llu", (unsigned long long)c.expected);
        tj_str(j, "expected", value);
    }
    snprintf(value, sizeof(value), "%llu", (unsigned long long)c.number);
    tj_str(j, "value", value);
}

/* A client's request reaching a node: the index it got, or why not. */
static void json_propose(struct sim *s, struct sim_node *n, const struct raft_entry *entries,
                         size_t count, raft_index first, int rv)
{
    char buf[JSON_LINE];
    struct tj j;
    for (size_t i = 0; i < count; i++) {
        const char *req = NULL;
        size_t len = request_id(&entries[i], &req);
        if (!len || !json_begin(s, &j, buf, "propose", n->id))
            return;
        tj_strn(&j, "req", req, len);
        json_kv(&j, &entries[i]);
        tj_u64(&j, "term", raft_current_term(n->r));
        if (rv == RAFT_OK)
            tj_u64(&j, "index", first + i);
        tj_str(&j, "status", rv == RAFT_OK ? "ok" : raft_strerror(rv));
        json_write(s, &j);
        if (rv != RAFT_OK) { /* the client hears the refusal at once */
            json_begin(s, &j, buf, "answer", n->id);
            tj_strn(&j, "req", req, len);
            tj_str(&j, "status", raft_strerror(rv));
            json_write(s, &j);
        }
    }
}

int sim_propose_sized(struct sim *s, raft_id at, unsigned n_entries, size_t size, raft_index *first,
                      raft_index *last)
{
    if (at == 0)
        at = sim_leader(s);
    struct sim_node *n = node_of(s, at);
    if (!n || !n->r || n->paused)
        return RAFT_ENOTLEADER;
    enum { MAX_BATCH = 64, MAX_SIZE = 4096 };
    static char payload[MAX_BATCH][MAX_SIZE];
    struct raft_entry entries[MAX_BATCH];
    if (n_entries > MAX_BATCH)
        n_entries = MAX_BATCH;
    if (size > MAX_SIZE)
        size = MAX_SIZE;
    for (unsigned i = 0; i < n_entries; i++) {
        int len = snprintf(payload[i], MAX_SIZE, "cmd%llu", (unsigned long long)++s->next_payload);
        if ((size_t)len < size)
            memset(payload[i] + len, '.', size - (size_t)len);
        entries[i] =
            (struct raft_entry){.data = payload[i], .len = (size_t)len > size ? (size_t)len : size};
    }
    return sim_propose_entries(s, n, entries, n_entries, first, last);
}

int sim_propose_entries(struct sim *s, struct sim_node *n, const struct raft_entry *entries,
                        unsigned count, raft_index *first, raft_index *last)
{
    struct raft_event ev = {.type = RAFT_PROPOSE};
    ev.propose.entries = entries;
    ev.propose.n_entries = count;
    raft_index proposed[2] = {0, 0};
    int rv = node_step(s, n, &ev, proposed);
    json_propose(s, n, entries, count, proposed[0], rv);
    if (rv == RAFT_OK) {
        s->stats.proposals += count;
        if (first)
            *first = proposed[0];
        if (last)
            *last = proposed[1];
    }
    return rv;
}

int sim_read(struct sim *s, raft_id at)
{
    if (at == 0)
        at = sim_leader(s);
    struct sim_node *n = node_of(s, at);
    if (!n || !n->r || n->paused)
        return RAFT_ENOTLEADER;
    if (s->n_reads == s->cap_reads) {
        s->cap_reads = s->cap_reads ? s->cap_reads * 2 : 16;
        s->reads = xrealloc(s->reads, s->cap_reads * sizeof(*s->reads));
    }
    struct sim_read *rd = &s->reads[s->n_reads++];
    rd->id = ++s->next_read_id;
    rd->node = at;
    rd->must_see = s->committed_n; /* linearizability: everything committed so far */
    struct raft_event ev = {.type = RAFT_READ};
    ev.read.id = rd->id;
    int rv = node_step(s, n, &ev, NULL);
    if (rv != RAFT_OK) {
        struct sim_read *mine = find_read(s, ev.read.id);
        if (mine)
            *mine = s->reads[--s->n_reads];
    }
    return rv;
}

int sim_transfer(struct sim *s, raft_id to)
{
    struct sim_node *n = node_of(s, sim_leader(s));
    if (!n)
        return RAFT_ENOTLEADER;
    struct raft_event ev = {.type = RAFT_TRANSFER};
    ev.transfer.to = to;
    return node_step(s, n, &ev, NULL);
}

int sim_campaign(struct sim *s, raft_id id)
{
    struct sim_node *n = node_of(s, id);
    if (!n || !n->r || n->paused)
        return RAFT_EINVAL;
    struct raft_event ev = {.type = RAFT_TIMEOUT};
    return node_step(s, n, &ev, NULL);
}

/* ------------------------------------------------------------------------
 * Setup and queries
 * ------------------------------------------------------------------------ */

void sim_options_default(struct sim_options *o, unsigned nodes, uint64_t seed)
{
    memset(o, 0, sizeof(*o));
    o->nodes = nodes;
    o->voters = nodes;
    o->seed = seed;
    raft_config_default(&o->raft);
    o->raft.election_timeout_ms = 150;
    o->raft.heartbeat_interval_ms = 30;
    o->tick_ms = 5;
    o->delay_min_ms = 1;
    o->delay_max_ms = 10;
    o->fsync_min_ms = 1;
    o->fsync_max_ms = 3;
}

struct sim *sim_new(const struct sim_options *o)
{
    if (o->nodes < 1 || o->nodes > SIM_MAX_NODES || o->tick_ms == 0 || o->voters < 1 ||
        o->voters > o->nodes) {
        fprintf(stderr, "raftsim: nodes must be 1..%d, voters 1..nodes, tick_ms > 0\n",
                SIM_MAX_NODES);
        return NULL;
    }
    if (o->unsafe_trust_wiped && !o->raft.allow_unsafe) { /* as raft_init() refuses its own */
        fprintf(stderr, "raftsim: unsafe_trust_wiped: %s\n", raft_strerror(RAFT_EUNSAFE));
        return NULL;
    }
    struct sim *s = xmalloc(sizeof(*s));
    memset(s, 0, sizeof(*s));
    s->o = *o;
    s->prng = o->seed;
    for (unsigned i = 0; i < o->nodes; i++) {
        s->nodes[i].id = i + 1;
        s->nodes[i].clock_pct = 100;
        s->nodes[i].data_dir = 1;
        /* Every node connects to every peer when it starts (the runtime's
         * transport does), and records its incarnation in the handshake. */
        for (unsigned j = 0; j < o->nodes; j++)
            s->nodes[i].peer_data_dir[j] = 1;
    }
    sim_set_delay(s, o->delay_min_ms, o->delay_max_ms);
    for (unsigned i = 0; i < o->nodes; i++) {
        int rv = node_start(s, &s->nodes[i]);
        if (rv != RAFT_OK) {
            fprintf(stderr, "raftsim: raft_init: %s\n", raft_strerror(rv));
            sim_free(s);
            return NULL;
        }
    }
    heap_push(s, event_new(s, SIM_EV_TICK, o->tick_ms, 1));
    for (unsigned i = 0; i < o->nodes; i++)
        json_state(s, &s->nodes[i]);
    return s;
}

void sim_free(struct sim *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->heap_n; i++)
        event_free(s->heap[i]);
    free(s->heap);
    for (unsigned i = 0; i < SIM_MAX_NODES; i++) {
        struct sim_node *n = &s->nodes[i];
        raft_close(n->r);
        drop_deferred(n);
        free(n->deferred);
        sim_log_free(&n->disk);
        sim_log_free(&n->lost_disk);
        sim_log_free(&n->mem);
        free(n->snap.data);
        free(n->staging);
    }
    free(s->reads);
    client_free(s);
    check_free(s);
    free(s);
}

uint64_t sim_now(const struct sim *s)
{
    return s->now_ms;
}

unsigned sim_nodes(const struct sim *s)
{
    return s->o.nodes;
}

struct raft *sim_raft(struct sim *s, raft_id id)
{
    struct sim_node *n = node_of(s, id);
    return n ? n->r : NULL;
}

bool sim_is_up(const struct sim *s, raft_id id)
{
    return id >= 1 && id <= s->o.nodes && s->nodes[id - 1].r != NULL;
}

bool sim_is_paused(const struct sim *s, raft_id id)
{
    return sim_is_up(s, id) && s->nodes[id - 1].paused;
}

void sim_get_stats(const struct sim *s, struct sim_stats *st)
{
    *st = s->stats;
    st->committed = s->committed_n;
}

void sim_print_status(struct sim *s)
{
    for (unsigned i = 0; i < s->o.nodes; i++) {
        struct sim_node *n = &s->nodes[i];
        if (!n->r) {
            sim_say(s, "n%u down       disk: term=%llu log=%llu", i + 1,
                    (unsigned long long)n->disk_term, (unsigned long long)sim_log_last(&n->disk));
            continue;
        }
        sim_say(s, "n%u %-13s term=%llu leader=%llu commit=%llu applied=%llu last=%llu%s%s", i + 1,
                raft_role_name(raft_role_of(n->r)), (unsigned long long)raft_current_term(n->r),
                (unsigned long long)raft_leader(n->r), (unsigned long long)raft_commit_index(n->r),
                (unsigned long long)n->applied, (unsigned long long)raft_last_index(n->r),
                n->paused ? " (paused)" : "", raft_lease_valid(n->r) ? " (lease held)" : "");
    }
}

void sim_print_log(struct sim *s, raft_id id)
{
    struct sim_node *n = node_of(s, id);
    if (!n || !s->o.out)
        return;
    /* Runs of one term read better than every entry: "1..2:t1 3..43:t2". */
    char line[512];
    size_t at = 0;
    const struct sim_log *l = n->r ? &n->mem : &n->disk;
    line[0] = '\0';
    if (n->snap.index)
        at += (size_t)snprintf(line, sizeof(line), " [snapshot %llu/t%llu]",
                               (unsigned long long)n->snap.index, (unsigned long long)n->snap.term);
    for (size_t i = 0; i < l->n && at < sizeof(line) - 48;) {
        size_t j = i;
        while (j + 1 < l->n && l->e[j + 1].term == l->e[i].term)
            j++;
        raft_index a = l->offset + i + 1, b = l->offset + j + 1;
        if (j == i)
            at += (size_t)snprintf(line + at, sizeof(line) - at, " %llu:t%llu",
                                   (unsigned long long)a, (unsigned long long)l->e[i].term);
        else
            at += (size_t)snprintf(line + at, sizeof(line) - at, " %llu..%llu:t%llu",
                                   (unsigned long long)a, (unsigned long long)b,
                                   (unsigned long long)l->e[i].term);
        i = j + 1;
    }
    if (at >= sizeof(line) - 48)
        snprintf(line + at, sizeof(line) - at, " ...");
    sim_say(s, "n%llu log:%s", (unsigned long long)id, at ? line : " (empty)");
}

const char *sim_violation_grid(const struct sim *s)
{
    return s->violation_grid;
}

void sim_format_logs(struct sim *s, char *buf, size_t size)
{
    enum { COLUMNS = 24 };
    size_t at = 0;
    buf[0] = '\0';
#define PUT(...)                                                                                   \
    do {                                                                                           \
        if (at < size)                                                                             \
            at += (size_t)snprintf(buf + at, size - at, __VA_ARGS__);                              \
    } while (0)
    raft_index hi = 0;
    for (unsigned i = 0; i < s->o.nodes; i++) {
        const struct sim_node *n = &s->nodes[i];
        raft_index last = sim_log_last(n->r ? &n->mem : &n->disk);
        hi = last > hi ? last : hi;
    }
    raft_index lo = hi > COLUMNS ? hi - COLUMNS + 1 : 1;
    PUT("  index ");
    if (lo > 1)
        PUT("...");
    for (raft_index x = lo; x <= hi; x++)
        PUT("%4llu", (unsigned long long)x);
    PUT("\n");
    for (unsigned i = 0; i < s->o.nodes; i++) {
        struct sim_node *n = &s->nodes[i];
        const struct sim_log *l = n->r ? &n->mem : &n->disk;
        raft_index commit = n->r ? raft_commit_index(n->r) : 0;
        PUT("  n%-4u ", i + 1);
        if (lo > 1)
            PUT("   ");
        for (raft_index x = lo; x <= hi; x++) {
            const struct sim_entry *e = sim_log_at(l, x);
            char cell[24];
            if (e)
                snprintf(cell, sizeof(cell), "%llu", (unsigned long long)e->term);
            else if (x <= l->offset)
                snprintf(cell, sizeof(cell), "s"); /* in the snapshot */
            else
                snprintf(cell, sizeof(cell), ".");
            PUT("%3s%c", cell, x == commit ? 'C' : ' ');
        }
        if (!n->r)
            PUT("  down (its disk)\n");
        else
            PUT("  %s term %llu commit %llu%s\n", raft_role_name(raft_role_of(n->r)),
                (unsigned long long)raft_current_term(n->r), (unsigned long long)commit,
                n->paused ? " paused" : "");
    }
#undef PUT
}
