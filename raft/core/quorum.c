/* quorum.c — majority arithmetic over the voting servers.
 *
 * Raft's safety rests on any two majorities of the same configuration
 * sharing a server (§5.2, §5.4). Learners (non-voters) never count.
 */
#include "core.h"

#include <stdlib.h>

struct raft_server *server_find(struct raft *r, raft_id id)
{
    for (unsigned i = 0; i < r->n_servers; i++)
        if (r->servers[i].id == id)
            return &r->servers[i];
    return NULL;
}

const struct raft_server *server_find_const(const struct raft *r, raft_id id)
{
    return server_find((struct raft *)r, id);
}

static unsigned n_voters(const struct raft *r)
{
    unsigned n = 0;
    for (unsigned i = 0; i < r->n_servers; i++)
        n += r->servers[i].is_voter;
    return n;
}

unsigned quorum_size(const struct raft *r)
{
    /* Planted bug (raftsim mutants): a "majority" one short. Two such
     * quorums need not share a server, so §5.2's one-leader-per-term and
     * §5.4's overlap arguments both fall. */
    if (r->cfg.unsafe_quorum_minus_one && n_voters(r) > 1)
        return n_voters(r) / 2;
    return n_voters(r) / 2 + 1;
}

/* What a server holds durably, as far as the leader knows. */
static raft_index durable_match(const struct raft *r, const struct raft_server *s)
{
    /* thesis §10.2.1: the leader counts itself only once its own write is done. */
    return s == r->self ? r->persisted_index : s->match_index;
}

raft_index quorum_match_index(const struct raft *r)
{
    /* LAB 3 BEGIN: the index a majority holds (§5.3). Among the voters
     * (s->is_voter), the largest index N such that a majority (quorum_size)
     * hold N or more. What counts is what is durable: a follower's
     * match_index, and for ourselves only r->persisted_index
     * (durable_match(); thesis §10.2.1: the leader writes in parallel and
     * counts itself once its own write is done).
     * STUB: (void)r; (void)durable_match; return 0; */
    /* The quorum-th largest match index is held by a majority. Configurations
     * are small (a handful of voters), so count instead of sorting. */
    unsigned need = quorum_size(r);
    raft_index best = 0;
    for (unsigned i = 0; i < r->n_servers; i++) {
        const struct raft_server *c = &r->servers[i];
        if (!c->is_voter)
            continue;
        raft_index candidate = durable_match(r, c);
        if (candidate <= best)
            continue;
        unsigned holders = 0;
        for (unsigned j = 0; j < r->n_servers; j++) {
            const struct raft_server *s = &r->servers[j];
            holders += s->is_voter && durable_match(r, s) >= candidate;
        }
        if (holders >= need)
            best = candidate;
    }
    return best;
    /* LAB 3 END */
}

/* thesis §6.4.1: the newest time at which a majority (ourselves counted as
 * now) had heard from us: the quorum-th largest acknowledged send time. */
uint64_t quorum_lease_start(const struct raft *r)
{
    /* LAB 5 BEGIN: when the lease started (thesis §6.4.1). Each follower's
     * s->acked_sent_ms is the newest send time of ours it acknowledged;
     * ours is r->now_ms. Among the voters, the largest time T such that a
     * majority (quorum_size) acknowledged T or later; 0 if none.
     * STUB: (void)r; return 0; */
    unsigned need = quorum_size(r);
    uint64_t best = 0;
    for (unsigned i = 0; i < r->n_servers; i++) {
        const struct raft_server *c = &r->servers[i];
        if (!c->is_voter)
            continue;
        uint64_t t = c == r->self ? r->now_ms : c->acked_sent_ms;
        if (t <= best)
            continue;
        unsigned holders = 0;
        for (unsigned j = 0; j < r->n_servers; j++) {
            const struct raft_server *s = &r->servers[j];
            holders += s->is_voter && (s == r->self ? r->now_ms : s->acked_sent_ms) >= t;
        }
        if (holders >= need)
            best = t;
    }
    return best;
    /* LAB 5 END */
}

unsigned quorum_read_acks(const struct raft *r, uint64_t seq)
{
    unsigned n = 0;
    for (unsigned i = 0; i < r->n_servers; i++) {
        const struct raft_server *s = &r->servers[i];
        if (s->is_voter && (s == r->self || s->read_seq_acked >= seq))
            n++;
    }
    return n;
}

unsigned quorum_votes_granted(const struct raft *r)
{
    unsigned n = 0;
    for (unsigned i = 0; i < r->n_servers; i++)
        n += r->servers[i].is_voter && r->servers[i].vote_granted;
    return n;
}

unsigned quorum_votes_denied(const struct raft *r)
{
    unsigned n = 0;
    for (unsigned i = 0; i < r->n_servers; i++) {
        const struct raft_server *s = &r->servers[i];
        n += s->is_voter && s->vote_responded && !s->vote_granted;
    }
    return n;
}
