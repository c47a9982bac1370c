/* membership.c — single-server membership changes with learners (thesis §4).
 *
 * Any two majorities of configurations that differ by one server overlap, so
 * changing one server at a time needs no joint consensus (thesis §4.1),
 * provided that:
 *  - a server uses the newest configuration in its log, committed or not;
 *  - a leader starts a change only once the previous one is committed, and
 *    only once it has committed an entry of its own term (the fix published
 *    after the thesis: without it, a change by an old leader and one by a new
 *    leader can both take effect with disjoint majorities);
 *  - truncating a configuration entry falls back to the previous one.
 * New servers join as learners: they replicate but count in no quorum, and
 * are promoted only after catching up (thesis §4.2.1), so that a slow
 * newcomer cannot stall commitment. A leader that removes itself keeps
 * leading until that configuration is committed, without counting itself,
 * then steps down (thesis §4.2.2).
 *
 * Configuration entries hold: version (1 byte, = 1), count (4 bytes LE),
 * then per member its id (8 bytes LE) and flags (1 byte, bit 0 = voter).
 */
#include "core.h"

#include <string.h>

enum {
    CONF_VERSION = 1,
    CONF_MAX_MEMBERS = RAFT_MAX_MEMBERS,
    CONF_MEMBER_BYTES = 9,
    CONF_HEADER_BYTES = 5,
};

static size_t conf_encode(const struct raft_member *m, size_t n, uint8_t *buf)
{
    uint8_t *p = buf;
    *p++ = CONF_VERSION;
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)(n >> (8 * i));
    for (size_t k = 0; k < n; k++) {
        for (int i = 0; i < 8; i++)
            *p++ = (uint8_t)(m[k].id >> (8 * i));
        *p++ = m[k].is_voter ? 1 : 0;
    }
    return (size_t)(p - buf);
}

/* Decode into out (room for CONF_MAX_MEMBERS); false if malformed. */
static bool conf_decode(const void *data, size_t len, struct raft_member *out, size_t *n)
{
    const uint8_t *p = data;
    if (len < CONF_HEADER_BYTES || p[0] != CONF_VERSION)
        return false;
    uint32_t count = 0;
    for (int i = 0; i < 4; i++)
        count |= (uint32_t)p[1 + i] << (8 * i);
    if (count > CONF_MAX_MEMBERS || len != CONF_HEADER_BYTES + (size_t)count * CONF_MEMBER_BYTES)
        return false;
    p += CONF_HEADER_BYTES;
    for (uint32_t k = 0; k < count; k++) {
        uint64_t id = 0;
        for (int i = 0; i < 8; i++)
            id |= (uint64_t)p[i] << (8 * i);
        out[k].id = id;
        out[k].is_voter = p[8] & 1;
        p += CONF_MEMBER_BYTES;
        if (id == 0)
            return false;
    }
    *n = count;
    return true;
}

static size_t current_members(const struct raft *r, struct raft_member *out)
{
    size_t n = 0;
    for (unsigned i = 0; i < r->n_servers; i++) {
        if (!r->servers[i].is_member)
            continue;
        out[n].id = r->servers[i].id;
        out[n].is_voter = r->servers[i].is_voter;
        n++;
    }
    return n;
}

static void start_round(struct raft *r, struct raft_server *s)
{
    s->round_end_index = log_last_index(&r->log);
    s->round_start_ms = r->now_ms;
}

/* Make `members` the configuration in force. Progress of servers that stay
 * is kept; our own entry always exists. */
int membership_apply(struct raft *r, const struct raft_member *members, size_t n, raft_index index)
{
    bool self_member = false;
    for (size_t k = 0; k < n; k++)
        self_member |= members[k].id == r->cfg.id;
    unsigned count = (unsigned)n + (self_member ? 0 : 1);
    struct raft_server *next = raft_calloc(count, sizeof(*next));
    if (!next)
        return RAFT_ENOMEM;
    for (unsigned k = 0; k < count; k++) {
        raft_id id = k < n ? members[k].id : r->cfg.id;
        struct raft_server *old = server_find(r, id);
        struct raft_server *s = &next[k];
        if (old) {
            *s = *old;
            old->inflight = NULL; /* moved */
        } else {
            s->id = id;
            s->inflight = raft_calloc(r->cfg.max_inflight, sizeof(*s->inflight));
            if (!s->inflight)
                goto err_after_next;
            progress_reset(r, s);
            start_round(r, s);
        }
        s->is_member = k < n;
        s->is_voter = k < n && members[k].is_voter;
    }
    for (unsigned i = 0; i < r->n_servers; i++)
        raft_free(r->servers[i].inflight);
    raft_free(r->servers);
    r->servers = next;
    r->n_servers = count;
    r->self = server_find(r, r->cfg.id);
    r->conf_index = index;
    return RAFT_OK;

err_after_next:
    /* Give back the progress we took from the old array. */
    for (unsigned k = 0; k < count; k++) {
        struct raft_server *old = server_find(r, next[k].id);
        if (old && !old->inflight)
            old->inflight = next[k].inflight;
        else
            raft_free(next[k].inflight);
    }
    raft_free(next);
    return RAFT_ENOMEM;
}

int membership_apply_entry(struct raft *r, raft_index index)
{
    struct raft_entry e;
    struct raft_member members[CONF_MAX_MEMBERS];
    size_t n;
    log_get(&r->log, index, &e);
    if (!conf_decode(e.data, e.len, members, &n)) {
        update_trace(r, "thesis §4.1 malformed configuration entry ignored", 0, index, NULL, 0);
        return RAFT_OK;
    }
    return membership_apply(r, members, n, index);
}

int membership_set_base(struct raft *r, const struct raft_persisted *st)
{
    size_t n = st->n_voters + st->n_learners;
    if (n > CONF_MAX_MEMBERS)
        return RAFT_EINVAL;
    r->base_conf = raft_calloc(n ? n : 1, sizeof(*r->base_conf));
    if (!r->base_conf)
        return RAFT_ENOMEM;
    r->base_conf_cap = n ? n : 1;
    for (size_t i = 0; i < st->n_voters; i++)
        r->base_conf[i] = (struct raft_member){st->voters[i], true};
    for (size_t i = 0; i < st->n_learners; i++)
        r->base_conf[st->n_voters + i] = (struct raft_member){st->learners[i], false};
    r->n_base_conf = n;
    return membership_apply(r, r->base_conf, n, 0);
}

void membership_free(struct raft *r)
{
    for (unsigned i = 0; r->servers && i < r->n_servers; i++)
        raft_free(r->servers[i].inflight);
    raft_free(r->servers);
    raft_free(r->base_conf);
}

/* The newest configuration entry in the log at or below `at`, or 0. */
static raft_index last_conf_entry(const struct raft *r, raft_index at)
{
    for (raft_index i = at; i > r->log.offset; i--) {
        struct raft_entry e;
        log_get(&r->log, i, &e);
        if (e.type == RAFT_ENTRY_CONF)
            return i;
    }
    return 0;
}

/* Put in force the newest configuration in the log, or the base one. */
int membership_recompute(struct raft *r, raft_index base_index)
{
    r->base_conf_index = base_index;
    raft_index i = last_conf_entry(r, log_last_index(&r->log));
    if (i)
        return membership_apply_entry(r, i);
    return membership_apply(r, r->base_conf, r->n_base_conf, base_index);
}

/* The entry of the configuration in force was truncated: fall back to the
 * newest configuration entry left, or to the base configuration. */
void membership_after_truncate(struct raft *r)
{
    if (r->conf_index <= log_last_index(&r->log))
        return;
    if (membership_recompute(r, r->base_conf_index) != RAFT_OK)
        r->oom = 1;
    update_trace(r, "thesis §4.1 configuration entry truncated: previous one in force", 0,
                 r->conf_index, NULL, 0);
}

/* The configuration as of `index`, into out. */
int membership_config_at(const struct raft *r, raft_index index,
                         struct raft_member out[RAFT_MAX_MEMBERS], size_t *n)
{
    raft_index i = last_conf_entry(r, index);
    if (i) {
        struct raft_entry e;
        log_get(&r->log, i, &e);
        return conf_decode(e.data, e.len, out, n) ? RAFT_OK : RAFT_ECORRUPT;
    }
    if (r->n_base_conf)
        memcpy(out, r->base_conf, r->n_base_conf * sizeof(*out));
    *n = r->n_base_conf;
    return RAFT_OK;
}

/* Replace the base configuration (at compaction or snapshot install). */
int membership_set_base_members(struct raft *r, const struct raft_member *m, size_t n)
{
    if (n > r->base_conf_cap || !r->base_conf) { /* reused when it fits: no churn */
        struct raft_member *copy = raft_calloc(n ? n : 1, sizeof(*copy));
        if (!copy)
            return RAFT_ENOMEM;
        raft_free(r->base_conf);
        r->base_conf = copy;
        r->base_conf_cap = n ? n : 1;
    }
    if (n)
        memcpy(r->base_conf, m, n * sizeof(*m));
    r->n_base_conf = n;
    return RAFT_OK;
}

static const char *refuse(struct raft *r, enum raft_conf_op op, raft_id id, int *rv)
{
    struct raft_server *s = server_find(r, id);
    bool member = s && s->is_member;
    *rv = RAFT_EINVAL;
    switch (op) {
    case RAFT_ADD_LEARNER:
        if (id == 0 || member)
            return "thesis §4.1 configuration change refused: already a member";
        return NULL;
    case RAFT_PROMOTE:
        if (!member || s->is_voter)
            return "thesis §4.1 configuration change refused: not a learner";
        if (!s->caught_up) {
            *rv = RAFT_ECATCHUP;
            return "thesis §4.2.1 promotion refused: the learner has not caught up yet";
        }
        return NULL;
    case RAFT_REMOVE:
        if (!member)
            return "thesis §4.1 configuration change refused: not a member";
        if (s->is_voter) {
            unsigned voters = 0;
            for (unsigned i = 0; i < r->n_servers; i++)
                voters += r->servers[i].is_voter;
            if (voters == 1)
                return "thesis §4.1 configuration change refused: the last voter";
        }
        return NULL;
    }
    return "thesis §4.1 configuration change refused: unknown operation";
}

int membership_change(struct raft *r, enum raft_conf_op op, raft_id id)
{
    int rv;
    if (r->role != RAFT_LEADER)
        return RAFT_ENOTLEADER;
    if (r->transfer_to)
        return RAFT_ETRANSFER;
    if (r->conf_index > r->commit_index) {
        update_trace(r,
                     "thesis §4.1 configuration change refused: the previous one is not "
                     "committed yet",
                     id, r->conf_index, NULL, 0);
        return RAFT_ECONFCHANGE;
    }
    if (r->commit_index < r->term_start_index) {
        update_trace(r,
                     "thesis §4.1 configuration change refused: no entry of this term "
                     "committed yet",
                     id, r->term_start_index, NULL, 0);
        return RAFT_ECONFCHANGE;
    }
    const char *why = refuse(r, op, id, &rv);
    if (why) {
        update_trace(r, why, id, 0, NULL, 0);
        return rv;
    }
    struct raft_member members[CONF_MAX_MEMBERS + 1];
    size_t n = current_members(r, members), k;
    if (op == RAFT_ADD_LEARNER) {
        if (n == CONF_MAX_MEMBERS)
            return RAFT_EBUSY;
        members[n++] = (struct raft_member){id, false};
    } else {
        for (k = 0; k + 1 < n && members[k].id != id; k++)
            ;
        if (op == RAFT_PROMOTE)
            members[k].is_voter = true;
        else
            members[k] = members[--n];
    }
    uint8_t buf[CONF_HEADER_BYTES + CONF_MAX_MEMBERS * CONF_MEMBER_BYTES];
    size_t len = conf_encode(members, n, buf);
    if ((rv = replication_append(r, RAFT_ENTRY_CONF, buf, len)) != RAFT_OK)
        return rv;
    if ((rv = membership_apply(r, members, n, log_last_index(&r->log))) != RAFT_OK) {
        r->oom = 1;
        return rv;
    }
    static const char *const what[] = {
        [RAFT_ADD_LEARNER] = "thesis §4.1 configuration change: learner added",
        [RAFT_PROMOTE] = "thesis §4.1 configuration change: learner promoted to voter",
        [RAFT_REMOVE] = "thesis §4.1 configuration change: server removed",
    };
    update_trace(r, what[op], id, log_last_index(&r->log), NULL, 0);
    replication_broadcast(r, false);
    commit_maybe_advance(r); /* fewer voters may mean a smaller majority */
    return RAFT_OK;
}

/* thesis §4.2.1: rounds are the leader's. A round a server timed while it
 * followed began long ago, and may end at an index a truncation has since
 * removed from its log (seed 3429: a round ending at 46 in a log that ends
 * at 45, which no learner could ever reach once writes stopped, so it was
 * never promoted). A new leader starts every learner's round afresh. */
void membership_leader_start(struct raft *r)
{
    for (unsigned i = 0; i < r->n_servers; i++) {
        struct raft_server *s = &r->servers[i];
        if (s != r->self && !s->is_voter) {
            s->caught_up = false;
            start_round(r, s);
        }
    }
}

/* thesis §4.2.1: a learner has caught up when it reaches the leader's last
 * index (as of the round's start) within an election timeout. */
void membership_progress(struct raft *r, struct raft_server *s)
{
    if (s->is_voter || s->match_index < s->round_end_index)
        return;
    bool in_time = r->now_ms - s->round_start_ms <= r->cfg.election_timeout_ms;
    if (in_time && !s->caught_up)
        update_trace(r, "thesis §4.2.1 learner caught up: can be promoted", s->id, s->match_index,
                     NULL, 0);
    s->caught_up = in_time;
    start_round(r, s);
}

/* thesis §4.2.2: a leader that is not in the configuration it just
 * committed steps down. */
void membership_after_commit(struct raft *r)
{
    if (r->role == RAFT_LEADER && !r->self->is_voter && r->commit_index >= r->conf_index) {
        size_t why = r->n_trace;
        update_trace(r, "thesis §4.2.2 leader removed from the configuration: stepping down", 0,
                     r->conf_index, NULL, 0);
        election_become_follower(r, r->current_term, 0);
        update_trace_restamp(r, why);
    }
}

size_t raft_configuration(const struct raft *r, struct raft_member *out, size_t max)
{
    struct raft_member all[CONF_MAX_MEMBERS];
    size_t n = current_members(r, all);
    if (n && max)
        memcpy(out, all, (n < max ? n : max) * sizeof(*out));
    return n;
}

raft_index raft_configuration_index(const struct raft *r)
{
    return r->conf_index;
}
