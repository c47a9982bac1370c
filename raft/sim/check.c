/* check.c — the global Raft properties (Raft §5.2-§5.4, Figure 3), checked
 * after every step of every node.
 *
 *  Election Safety      at most one leader per term.
 *  Leader Append-Only   a leader never deletes or overwrites its entries.
 *  Log Matching         two logs with an entry of the same index and term are
 *                       identical up to it (compared by chain hashes).
 *  Leader Completeness  a new leader holds every entry committed before.
 *  State Machine Safety no two servers commit or apply different entries at
 *                       the same index.
 *  Linearizable reads   a ReadIndex read reflects every entry committed
 *                       anywhere before the read was issued (thesis §6.4);
 *                       client.c checks what the clients saw, too.
 * Plus the host contract as the simulator sees it: updates append
 * consecutive entries and hand out entries to apply in order.
 */
#include "sim_internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct check_slot {
    raft_index index; /* 0: empty */
    raft_term term;
    uint64_t chain;
};

void check_free(struct sim *s)
{
    free(s->leader_of_term);
    free(s->committed_chain);
    free(s->committed_term);
    free(s->committed_in);
    free(s->seen);
}

void check_violation(struct sim *s, const char *property, const char *fmt, ...)
{
    char detail[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    if (!s->violation[0]) {
        snprintf(s->violation, sizeof(s->violation), "%s: %s", property, detail);
        sim_format_logs(s, s->violation_grid, sizeof(s->violation_grid));
    }
    if (!sim_violated(s, property) && s->n_violated < 8)
        snprintf(s->violated[s->n_violated++], sizeof(s->violated[0]), "%s", property);
    sim_json_violation(s, property, detail);
    sim_say_text(s, "VIOLATION %s: %s", property, detail);
    /* Keep running after a Leader Completeness violation: what it leads to
     * (two different committed entries) is the lesson. */
    if (strcmp(property, "Leader Completeness") != 0)
        s->stop = true;
}

const char *sim_violation(const struct sim *s)
{
    return s->violation[0] ? s->violation : NULL;
}

bool sim_violated(const struct sim *s, const char *property)
{
    for (unsigned i = 0; i < s->n_violated; i++)
        if (strcmp(s->violated[i], property) == 0)
            return true;
    return false;
}

static void *grow(void *p, size_t *cap, size_t want, size_t size)
{
    if (want <= *cap)
        return p;
    size_t n = *cap ? *cap : 64;
    while (n < want)
        n *= 2;
    p = realloc(p, n * size);
    if (!p) {
        fprintf(stderr, "raftsim: out of memory\n");
        abort();
    }
    memset((char *)p + *cap * size, 0, (n - *cap) * size);
    *cap = n;
    return p;
}

/* ------------------------------------------------------------------------
 * Log Matching: every (index, term) ever seen maps to one chain hash
 * ------------------------------------------------------------------------ */

static size_t slot_hash(raft_index index, raft_term term, size_t cap)
{
    uint64_t h = index * 0x9e3779b97f4a7c15ULL ^ term * 0xc2b2ae3d27d4eb4fULL;
    return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

static void seen_grow(struct sim *s)
{
    size_t old_cap = s->seen_cap;
    struct check_slot *old = s->seen;
    s->seen_cap = old_cap ? old_cap * 2 : 1024;
    s->seen = calloc(s->seen_cap, sizeof(*s->seen));
    if (!s->seen)
        abort();
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].index)
            continue;
        size_t j = slot_hash(old[i].index, old[i].term, s->seen_cap);
        while (s->seen[j].index)
            j = (j + 1) & (s->seen_cap - 1);
        s->seen[j] = old[i];
    }
    free(old);
}

/* Only entries that exist are recorded: durable on some disk (a message
 * carries only entries the sender holds, and the receiver's copy is
 * recorded once it is durable). An entry that lived only in the memory of a
 * server that crashed before writing it, nor its term, never existed: the
 * server may take the same term again after its restart and put another
 * entry at that index (a single-voter cluster elects itself without a
 * message). Entries in memory are compared with what is recorded. */
static void check_log_matching(struct sim *s, struct sim_node *n, raft_index index,
                               const struct sim_entry *e, bool record)
{
    if (s->seen_n * 2 >= s->seen_cap)
        seen_grow(s);
    size_t j = slot_hash(index, e->term, s->seen_cap);
    while (s->seen[j].index) {
        if (s->seen[j].index == index && s->seen[j].term == e->term) {
            if (s->seen[j].chain != e->chain)
                check_violation(s, "Log Matching",
                                "n%llu holds index %llu term %llu with a different history "
                                "from another server's entry of the same index and term",
                                (unsigned long long)n->id, (unsigned long long)index,
                                (unsigned long long)e->term);
            return;
        }
        j = (j + 1) & (s->seen_cap - 1);
    }
    if (!record)
        return;
    s->seen[j] = (struct check_slot){.index = index, .term = e->term, .chain = e->chain};
    s->seen_n++;
}

void check_durable_entry(struct sim *s, struct sim_node *n, raft_index index)
{
    const struct sim_entry *e = sim_log_at(&n->disk, index);
    if (e)
        check_log_matching(s, n, index, e, true);
}

/* ------------------------------------------------------------------------
 * Per-update checks
 * ------------------------------------------------------------------------ */

static void check_election_safety(struct sim *s, struct sim_node *n, const struct raft_update *u)
{
    if (u->role != RAFT_LEADER)
        return;
    raft_term t = u->current_term;
    s->leader_of_term =
        grow(s->leader_of_term, &s->leader_of_term_cap, t + 1, sizeof(*s->leader_of_term));
    if (s->leader_of_term[t] == 0) {
        s->leader_of_term[t] = n->id;
        s->stats.elections++;
    } else if (s->leader_of_term[t] != n->id) {
        check_violation(s, "Election Safety", "n%llu and n%llu both lead term %llu",
                        (unsigned long long)s->leader_of_term[t], (unsigned long long)n->id,
                        (unsigned long long)t);
    }
}

static void mirror_update(struct sim *s, struct sim_node *n, const struct raft_update *u)
{
    bool was_leader = n->role == RAFT_LEADER && n->term == u->current_term;
    if (u->truncate_from) {
        if (was_leader && u->role == RAFT_LEADER)
            check_violation(s, "Leader Append-Only", "leader n%llu deleted entries from %llu",
                            (unsigned long long)n->id, (unsigned long long)u->truncate_from);
        if (u->truncate_from <= n->commit)
            check_violation(s, "State Machine Safety", "n%llu deleted committed entries from %llu",
                            (unsigned long long)n->id, (unsigned long long)u->truncate_from);
        sim_log_truncate(&n->mem, u->truncate_from);
    }
    for (size_t i = 0; i < u->n_entries; i++) {
        const struct raft_entry *e = &u->entries[i];
        if (e->index != sim_log_last(&n->mem) + 1) {
            check_violation(s, "Host contract",
                            "n%llu: update appends index %llu to a log ending at %llu%s",
                            (unsigned long long)n->id, (unsigned long long)e->index,
                            (unsigned long long)sim_log_last(&n->mem),
                            was_leader ? " (a leader overwriting: Leader Append-Only)" : "");
            return;
        }
        sim_log_append(&n->mem, e);
        check_log_matching(s, n, e->index, sim_log_at(&n->mem, e->index), false);
    }
    if (u->compact_index)
        sim_log_compact(&n->mem, u->compact_index);
}

/* Commitment needs a majority of the leader's configuration (§5.3, thesis
 * §4): when a leader commits index c, a majority of the voters of the
 * configuration in force must store that very entry durably. */
static void check_commit_quorum(struct sim *s, struct sim_node *n, raft_index c)
{
    struct raft_member m[SIM_MAX_NODES * 2];
    size_t count = raft_configuration(n->r, m, SIM_MAX_NODES * 2), voters = 0, holders = 0;
    uint64_t chain, theirs;
    if (!sim_log_chain(&n->mem, c, &chain))
        return;
    for (size_t i = 0; i < count; i++) {
        if (!m[i].is_voter)
            continue;
        voters++;
        const struct sim_node *v =
            m[i].id >= 1 && m[i].id <= s->o.nodes ? &s->nodes[m[i].id - 1] : NULL;
        if (!v)
            continue;
        /* Durable: in its log, or covered by its snapshot; or on the disk
         * it lost, while its old incarnation is still taken (disk_loss.c):
         * an acknowledgment sent before the loss was true when sent. */
        if (v->disk.offset > c || v->snap.index >= c || v->lost_snap_index >= c)
            holders++;
        else
            holders += (sim_log_chain(&v->disk, c, &theirs) && theirs == chain) ||
                       (sim_log_chain(&v->lost_disk, c, &theirs) && theirs == chain);
    }
    if (holders < voters / 2 + 1)
        check_violation(s, "Commit Quorum",
                        "n%llu committed index %llu, stored durably by only %zu of its %zu voters",
                        (unsigned long long)n->id, (unsigned long long)c, holders, voters);
}

/* State Machine Safety, at the log level: the committed prefixes agree. */
static void check_commit(struct sim *s, struct sim_node *n, raft_index commit, raft_term term,
                         bool by_leader)
{
    if (commit <= n->commit) {
        n->commit = commit;
        return;
    }
    n->commit = commit;
    if (commit > sim_log_last(&n->mem)) {
        check_violation(s, "Server invariant", "n%llu committed index %llu beyond its log",
                        (unsigned long long)n->id, (unsigned long long)commit);
        return;
    }
    if (by_leader)
        check_commit_quorum(s, n, commit);
    raft_index known = s->committed_n;
    raft_index at = commit < known ? commit : known;
    uint64_t chain;
    if (at > 0 && sim_log_chain(&n->mem, at, &chain) && chain != s->committed_chain[at]) {
        const struct sim_entry *e = sim_log_at(&n->mem, at);
        check_violation(s, "State Machine Safety",
                        "n%llu committed index %llu (term %llu) but index %llu was committed "
                        "before with a different history (term %llu)",
                        (unsigned long long)n->id, (unsigned long long)at,
                        (unsigned long long)(e ? e->term : n->mem.offset_term),
                        (unsigned long long)at, (unsigned long long)s->committed_term[at]);
        return;
    }
    if (commit <= known)
        return;
    s->committed_chain =
        grow(s->committed_chain, &s->committed_cap, commit + 1, sizeof(*s->committed_chain));
    s->committed_term =
        grow(s->committed_term, &s->committed_term_cap, commit + 1, sizeof(*s->committed_term));
    s->committed_in =
        grow(s->committed_in, &s->committed_in_cap, commit + 1, sizeof(*s->committed_in));
    for (raft_index i = known + 1; i <= commit; i++) {
        const struct sim_entry *e = sim_log_at(&n->mem, i);
        bool at_offset = i == n->mem.offset;
        s->committed_chain[i] = e ? e->chain : at_offset ? n->mem.offset_chain : 0;
        s->committed_term[i] = e ? e->term : at_offset ? n->mem.offset_term : 0;
        s->committed_in[i] = term;
    }
    s->committed_n = commit;
}

static void check_leader_completeness(struct sim *s, struct sim_node *n,
                                      const struct raft_update *u)
{
    if (!(u->role == RAFT_LEADER && u->role_changed) || s->committed_n == 0)
        return;
    /* Only what was committed in an earlier term binds this leader: a
     * server can still win a stale term (say, after a pause) that ended
     * long ago, and the later commits are none of its business. */
    raft_index c = s->committed_n;
    while (c > 0 && s->committed_in[c] >= u->current_term)
        c--;
    if (c == 0)
        return;
    uint64_t chain;
    bool known = sim_log_chain(&n->mem, c, &chain);
    if (!known && c < n->mem.offset)
        return; /* inside its snapshot, which holds only committed entries */
    if (!known || chain != s->committed_chain[c])
        check_violation(s, "Leader Completeness",
                        "n%llu became leader of term %llu without entry %llu (term %llu), "
                        "committed in term %llu",
                        (unsigned long long)n->id, (unsigned long long)u->current_term,
                        (unsigned long long)c, (unsigned long long)s->committed_term[c],
                        (unsigned long long)s->committed_in[c]);
}

/* Host contract 2 and State Machine Safety at the apply level. */
static void check_apply(struct sim *s, struct sim_node *n, const struct raft_update *u)
{
    for (size_t i = 0; i < u->n_apply; i++) {
        const struct raft_entry *e = &u->apply[i];
        if (e->index != n->applied + 1) {
            check_violation(s, "Host contract", "n%llu: apply of index %llu after %llu",
                            (unsigned long long)n->id, (unsigned long long)e->index,
                            (unsigned long long)n->applied);
            return;
        }
        n->applied_chain = sim_chain(n->applied_chain, e);
        n->applied = e->index;
        if (e->index > s->committed_n) {
            check_violation(s, "State Machine Safety",
                            "n%llu applied index %llu that no server committed",
                            (unsigned long long)n->id, (unsigned long long)e->index);
            return;
        }
        if (n->applied_chain != s->committed_chain[e->index]) {
            check_violation(s, "State Machine Safety",
                            "n%llu applied index %llu (term %llu), but the committed entry "
                            "there has term %llu",
                            (unsigned long long)n->id, (unsigned long long)e->index,
                            (unsigned long long)e->term,
                            (unsigned long long)s->committed_term[e->index]);
            return;
        }
    }
}

void check_update(struct sim *s, struct sim_node *n, const struct raft_update *u)
{
    check_election_safety(s, n, u);
    mirror_update(s, n, u);
    /* A leader's own decision (not a commit index learned from a newer
     * leader in the step that deposed it) must rest on a majority. */
    bool by_leader = n->r && n->role == RAFT_LEADER && u->role == RAFT_LEADER;
    check_commit(s, n, u->commit_index, u->current_term, by_leader);
    check_leader_completeness(s, n, u);
    check_apply(s, n, u);
    n->term = u->current_term;
    n->role = u->role;
}

void check_read_served(struct sim *s, const struct sim_read *rd, const struct raft_read *r)
{
    struct sim_node *n = &s->nodes[rd->node - 1];
    /* The test knob leaves stale reads to the client history alone. */
    if (r->index < rd->must_see && !s->o.test_history_only)
        check_violation(s, "Linearizability",
                        "read at n%llu served at index %llu, but index %llu was committed "
                        "before the read began (stale read)",
                        (unsigned long long)rd->node, (unsigned long long)r->index,
                        (unsigned long long)rd->must_see);
    else if (n->applied < r->index)
        check_violation(s, "Host contract",
                        "read at n%llu released at index %llu before apply reached it (%llu)",
                        (unsigned long long)rd->node, (unsigned long long)r->index,
                        (unsigned long long)n->applied);
}
