/* fixture.h — drive one Raft core by hand in unit tests.
 *
 * A test plays the host and the other servers: it feeds events, then looks
 * at the last update (messages, entries, trace) with the helpers below. */
#ifndef TESTS_FIXTURE_H
#define TESTS_FIXTURE_H

#include <string.h>

#include "harness.h"
#include "raft.h"

struct fx {
    struct raft *r;
    struct raft_update u; /* the last update */
    int rv;               /* what the last raft_step returned */
    uint64_t now;
};

/* Sim-like timing so tests read in milliseconds. */
static inline void fx_config(struct raft_config *cfg, raft_id id)
{
    raft_config_default(cfg);
    cfg->id = id;
    cfg->seed = 7;
    cfg->election_timeout_ms = 100;
    cfg->heartbeat_interval_ms = 20;
}

static inline void fx_start(struct fx *f, const struct raft_config *cfg,
                            const struct raft_persisted *st)
{
    memset(f, 0, sizeof(*f));
    CHECK_EQ(raft_init(&f->r, cfg, st), RAFT_OK);
    f->now = 1000;
}

/* A fresh server `id` of a cluster of voters 1..n. */
static inline void fx_new(struct fx *f, raft_id id, unsigned n)
{
    static raft_id voters[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    struct raft_config cfg;
    fx_config(&cfg, id);
    struct raft_persisted st = {.voters = voters, .n_voters = n};
    fx_start(f, &cfg, &st);
}

static inline int fx_step(struct fx *f, struct raft_event *ev)
{
    ev->now_ms = f->now;
    f->rv = raft_step(f->r, ev, &f->u);
    if (f->rv == RAFT_ECORRUPT)
        harness_fail(__FILE__, __LINE__, "raft_step: invariant %s (event %d)",
                     raft_check_invariants(f->r), (int)ev->type);
    return f->rv;
}

static inline int fx_tick(struct fx *f, uint64_t ms)
{
    f->now += ms;
    struct raft_event ev = {.type = RAFT_TICK};
    return fx_step(f, &ev);
}

static inline int fx_recv(struct fx *f, const struct raft_message *m)
{
    struct raft_event ev = {.type = RAFT_RECEIVE};
    ev.receive = m;
    return fx_step(f, &ev);
}

static inline int fx_persisted(struct fx *f, raft_index index, raft_term term)
{
    struct raft_event ev = {.type = RAFT_PERSISTED};
    ev.persisted.index = index;
    ev.persisted.term = term;
    return fx_step(f, &ev);
}

/* Report the entries of the last update durable. */
static inline int fx_persist_last(struct fx *f)
{
    if (f->u.n_entries == 0)
        return RAFT_OK;
    const struct raft_entry *e = &f->u.entries[f->u.n_entries - 1];
    return fx_persisted(f, e->index, e->term);
}

static inline int fx_propose(struct fx *f, const char *data)
{
    struct raft_entry e = {.data = data, .len = strlen(data)};
    struct raft_event ev = {.type = RAFT_PROPOSE};
    ev.propose.entries = &e;
    ev.propose.n_entries = 1;
    return fx_step(f, &ev);
}

static inline int fx_read(struct fx *f, uint64_t id)
{
    struct raft_event ev = {.type = RAFT_READ};
    ev.read.id = id;
    return fx_step(f, &ev);
}

static inline int fx_campaign(struct fx *f)
{
    struct raft_event ev = {.type = RAFT_TIMEOUT};
    return fx_step(f, &ev);
}

/* The n-th message of `type` to `to` in the last update, or NULL. */
static inline const struct raft_message *fx_msg(const struct fx *f, enum raft_message_type type,
                                                raft_id to)
{
    for (size_t i = 0; i < f->u.n_messages; i++)
        if (f->u.messages[i].type == type && f->u.messages[i].to == to)
            return &f->u.messages[i];
    return NULL;
}

static inline size_t fx_count(const struct fx *f, enum raft_message_type type)
{
    size_t n = 0;
    for (size_t i = 0; i < f->u.n_messages; i++)
        n += f->u.messages[i].type == type;
    return n;
}

static inline bool fx_traced(const struct fx *f, const char *text)
{
    for (size_t i = 0; i < f->u.n_trace; i++)
        if (strstr(f->u.trace[i].rule, text))
            return true;
    return false;
}

/* The first trace record of the last update whose rule contains text. */
static inline const struct raft_trace *fx_trace(const struct fx *f, const char *text)
{
    for (size_t i = 0; i < f->u.n_trace; i++)
        if (strstr(f->u.trace[i].rule, text))
            return &f->u.trace[i];
    return NULL;
}

/* Messages the test builds as if from other servers. */
static inline struct raft_message fx_vote_result(raft_id from, raft_id to, raft_term term,
                                                 bool granted, bool pre_vote)
{
    struct raft_message m = {
        .type = RAFT_MSG_REQUEST_VOTE_RESULT, .from = from, .to = to, .term = term};
    m.request_vote_result.vote_granted = granted;
    m.request_vote_result.pre_vote = pre_vote;
    return m;
}

static inline struct raft_message fx_request_vote(raft_id from, raft_id to, raft_term term,
                                                  raft_index last_index, raft_term last_term,
                                                  bool pre_vote)
{
    struct raft_message m = {.type = RAFT_MSG_REQUEST_VOTE, .from = from, .to = to, .term = term};
    m.request_vote.last_log_index = last_index;
    m.request_vote.last_log_term = last_term;
    m.request_vote.pre_vote = pre_vote;
    return m;
}

static inline struct raft_message fx_append(raft_id from, raft_id to, raft_term term,
                                            raft_index prev, raft_term prev_term,
                                            const struct raft_entry *entries, size_t n,
                                            raft_index commit)
{
    struct raft_message m = {.type = RAFT_MSG_APPEND_ENTRIES, .from = from, .to = to, .term = term};
    m.append_entries.prev_log_index = prev;
    m.append_entries.prev_log_term = prev_term;
    m.append_entries.entries = entries;
    m.append_entries.n_entries = n;
    m.append_entries.leader_commit = commit;
    return m;
}

static inline struct raft_message fx_append_ok(raft_id from, raft_id to, raft_term term,
                                               raft_index match)
{
    struct raft_message m = {
        .type = RAFT_MSG_APPEND_ENTRIES_RESULT, .from = from, .to = to, .term = term};
    m.append_entries_result.success = true;
    m.append_entries_result.match_index = match;
    m.append_entries_result.last_log_index = match;
    return m;
}

/* Server `id` of n, a follower that has just heard leader 1 of term 1. */
static inline void fx_follower_of_1(struct fx *f, raft_id id, unsigned n)
{
    fx_new(f, id, n);
    fx_tick(f, 0);
    struct raft_message hb = fx_append(1, id, 1, 0, 0, NULL, 0, 0);
    fx_recv(f, &hb);
    CHECK_EQ(raft_leader(f->r), 1);
}

/* Make server 1 of n the leader of term 1 (pre-vote and vote from 2..),
 * with its no-op persisted. */
static inline void fx_elect(struct fx *f, unsigned n)
{
    fx_campaign(f);
    CHECK_EQ(raft_role_of(f->r), RAFT_PRE_CANDIDATE);
    for (raft_id p = 2; p <= n / 2 + 1; p++) {
        struct raft_message g = fx_vote_result(p, 1, raft_current_term(f->r) + 1, true, true);
        fx_recv(f, &g);
    }
    CHECK_EQ(raft_role_of(f->r), RAFT_CANDIDATE);
    for (raft_id p = 2; p <= n / 2 + 1; p++) {
        struct raft_message g = fx_vote_result(p, 1, raft_current_term(f->r), true, false);
        fx_recv(f, &g);
    }
    CHECK_EQ(raft_role_of(f->r), RAFT_LEADER);
    fx_persist_last(f);
}

#endif /* TESTS_FIXTURE_H */
