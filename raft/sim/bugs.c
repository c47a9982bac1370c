/* bugs.c — the catalogue of planted bugs (raftsim mutants).
 *
 * Each entry turns on one of the core's unsafe knobs (raft.h), each the
 * absence of one rule of the paper. The simulator earns its keep by
 * catching every one of them on the default fault mix, quickly: a checker
 * that never fails proves nothing (docs/simulator.md, "Planted bugs").
 */
#include "sim.h"

#include <string.h>

static void commit_old_term(struct raft_config *c)
{
    c->unsafe_commit_old_term = true;
}

static void vote_any_log(struct raft_config *c)
{
    c->unsafe_vote_any_log = true;
}

static void vote_any_log_no_prevote(struct raft_config *c)
{
    c->unsafe_vote_any_log = true;
    c->prevote_off = true;
}

static void quorum_minus_one(struct raft_config *c)
{
    c->unsafe_quorum_minus_one = true;
}

static void lease_too_long(struct raft_config *c)
{
    c->unsafe_lease_too_long = true;
}

static void lease_no_drift_bound(struct raft_config *c)
{
    c->clock_drift_bound_pct = 0;
}

static void read_before_round(struct raft_config *c)
{
    c->unsafe_read_before_round = true;
}

static void no_noop(struct raft_config *c)
{
    c->unsafe_no_noop = true;
}

static void ack_before_persist(struct raft_config *c)
{
    c->unsafe_ack_before_persist = true;
}

static void snapshot_drops_term(struct raft_config *c)
{
    c->unsafe_snapshot_drops_term = true;
}

const struct sim_bug sim_bugs[] = {
    {"commit-old-term", "§5.4.2: commit an older term's entry by counting replicas (Figure 8)",
     commit_old_term, SIM_READS_ANY},
    {"vote-any-log", "§5.4.1: grant votes without the up-to-date check (pre-vote on)", vote_any_log,
     SIM_READS_ANY},
    {"vote-any-log-no-prevote", "§5.4.1: the same, with pre-vote off", vote_any_log_no_prevote,
     SIM_READS_ANY},
    {"quorum-minus-one", "§5.2: count a quorum of a majority minus one", quorum_minus_one,
     SIM_READS_ANY},
    {"lease-too-long", "thesis §6.4.1: a lease of twice the election timeout", lease_too_long,
     SIM_READS_LEASE},
    {"lease-no-drift-bound", "thesis §6.4.1: a lease of a whole election timeout (drift bound 0)",
     lease_no_drift_bound, SIM_READS_LEASE},
    {"read-before-round", "thesis §6.4: serve a ReadIndex read before its heartbeat round",
     read_before_round, SIM_READS_READINDEX},
    {"no-noop", "§8: no no-op at term start; reads served at the leader's commitIndex", no_noop,
     SIM_READS_ANY},
    {"ack-before-persist", "Figure 2: a follower acknowledges entries before they are durable",
     ack_before_persist, SIM_READS_ANY},
    {"snapshot-drops-term", "§7: the log forgets the term of the snapshot's last entry",
     snapshot_drops_term, SIM_READS_ANY},
};

const unsigned sim_n_bugs = sizeof(sim_bugs) / sizeof(sim_bugs[0]);

const struct sim_bug *sim_bug_find(const char *name)
{
    for (unsigned i = 0; i < sim_n_bugs; i++)
        if (strcmp(sim_bugs[i].name, name) == 0)
            return &sim_bugs[i];
    return NULL;
}
