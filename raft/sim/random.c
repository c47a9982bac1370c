/* random.c — one random fault schedule, from a seed.
 *
 * A run has two phases. Chaos: clients propose and read while faults come
 * and go (partitions of any shape, one-way cuts, crashes, restarts, pauses,
 * loss, duplication, long and reordering delays; with membership changes,
 * now and then a crash that loses the disk, and the operator replaces the
 * node), and the tuning of the cluster itself is drawn from the seed (batch
 * size, inflight window), so that rare interleavings get their chance.
 * Settle: every fault is healed; within a bound a leader must be elected,
 * a new entry committed and applied everywhere, and a node that lost its
 * disk replaced (liveness). Safety is checked after every event by check.c
 * throughout. The verdict names the seed, so any run replays.
 */
#include "sim_internal.h"

#include <stdlib.h>
#include <string.h>

enum {
    MAX_OUTSTANDING_WRITES = 16,
    /* One crash in this many loses the disk too, in schedules with crashes
     * and membership changes, when the operator can replace the node:
     * about one schedule in eighteen of all faults has a disk loss. */
    DISK_LOSS_ONE_IN = 8,
    CHAOS_DEFAULT_MS = 6000, /* virtual time with faults, by default */
};

enum fault {
    FAULT_PARTITION = 1 << 0,
    FAULT_ONEWAY = 1 << 1,
    FAULT_CRASH = 1 << 2,
    FAULT_PAUSE = 1 << 3,
    FAULT_DROP = 1 << 4,
    FAULT_DUP = 1 << 5,
    FAULT_DELAY = 1 << 6,
    FAULT_REORDER = 1 << 7,
    FAULT_MEMBERSHIP = 1 << 8,
    FAULT_CLOCK = 1 << 9, /* the swarm schedule's clock pushes */
    FAULT_ALL = (1 << 10) - 1,
};

static const struct {
    const char *name;
    unsigned bit;
} fault_names[] = {
    {"partition", FAULT_PARTITION}, {"oneway", FAULT_ONEWAY},   {"crash", FAULT_CRASH},
    {"pause", FAULT_PAUSE},         {"drop", FAULT_DROP},       {"dup", FAULT_DUP},
    {"delay", FAULT_DELAY},         {"reorder", FAULT_REORDER}, {"membership", FAULT_MEMBERSHIP},
    {"clock", FAULT_CLOCK},         {"all", FAULT_ALL},         {"none", 0},
};

/* Parse "partition,crash" into bits; -1 on an unknown name. */
static int parse_faults(const char *list)
{
    int bits = 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        bool known = false;
        for (size_t i = 0; i < sizeof(fault_names) / sizeof(fault_names[0]); i++) {
            if (strlen(fault_names[i].name) == len && strncmp(p, fault_names[i].name, len) == 0) {
                bits |= (int)fault_names[i].bit;
                known = true;
            }
        }
        if (!known)
            return -1;
        p += len;
        if (*p == ',')
            p++;
    }
    return bits;
}

void sim_random_options_default(struct sim_random_options *o, uint64_t seed, unsigned nodes)
{
    memset(o, 0, sizeof(*o));
    o->seed = seed;
    o->nodes = nodes;
    o->chaos_ms = CHAOS_DEFAULT_MS;
    o->settle_ms = 5000;
    o->faults = "all";
}

/* The schedule's own PRNG, apart from the simulator's, so that adding a
 * fault kind does not change the network's coin flips. */
static uint64_t rnd(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t between(uint64_t *state, uint64_t lo, uint64_t hi)
{
    return hi <= lo ? lo : lo + rnd(state) % (hi - lo + 1);
}

static void random_partition(struct sim *s, uint64_t *st)
{
    unsigned n = sim_nodes(s);
    unsigned side[SIM_MAX_NODES];
    char a[64] = "", b[64] = "";
    for (unsigned i = 0; i < n; i++) {
        side[i] = rnd(st) & 1;
        char *dst = side[i] ? b : a;
        snprintf(dst + strlen(dst), 64 - strlen(dst), "%s%u", dst[0] ? "," : "", i + 1);
    }
    sim_heal(s);
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = 0; j < n; j++)
            if (side[i] != side[j])
                sim_block(s, i + 1, j + 1, true);
    sim_say(s, "FAULT partition {%s} {%s}", a, b);
}

static raft_id pick(struct sim *s, uint64_t *st, bool want_up, bool want_paused)
{
    raft_id ids[SIM_MAX_NODES];
    unsigned k = 0;
    for (raft_id id = 1; id <= sim_nodes(s); id++)
        if (sim_is_up(s, id) == want_up && (!want_up || sim_is_paused(s, id) == want_paused))
            ids[k++] = id;
    return k ? ids[rnd(st) % k] : 0;
}

/* Whether the crash of node id about to happen loses its disk too: drawn
 * from a stream of its own (disk_st), so that the other coin flips of a
 * schedule stay what they were; and only when the operator can replace it,
 * as a careful one would check first: no other replacement running, a
 * leader whose latest configuration is committed, every other node up, and
 * in the configuration of every server that counts the node as a voter
 * (committed or not, a removed server's included), three voters at least,
 * so that the others are a majority without it. Otherwise a survivor whose
 * configuration needs the node could never be elected, nor the node ever
 * be removed: the cluster would have lost a majority of that configuration
 * for good. */
static bool crash_loses_disk(struct sim *s, uint64_t *disk_st, int faults, raft_id id)
{
    int both = FAULT_CRASH | FAULT_MEMBERSHIP;
    if ((faults & both) != both || rnd(disk_st) % DISK_LOSS_ONE_IN != 0 || sim_replacing(s))
        return false;
    struct raft *leader = sim_raft(s, sim_leader(s));
    if (!leader || raft_configuration_index(leader) > raft_commit_index(leader))
        return false;
    for (raft_id x = 1; x <= sim_nodes(s); x++) {
        struct raft *r = sim_raft(s, x);
        if (!r)
            return false; /* its configuration is on a disk nobody can read now */
        struct raft_member m[SIM_MAX_NODES + 1];
        size_t n = raft_configuration(r, m, SIM_MAX_NODES + 1);
        unsigned voters = 0;
        bool counts_it = false;
        for (size_t k = 0; k < n && k <= SIM_MAX_NODES; k++) {
            voters += m[k].is_voter;
            counts_it |= m[k].id == id && m[k].is_voter;
        }
        if (counts_it && voters < 3)
            return false;
    }
    return true;
}

static void random_fault(struct sim *s, uint64_t *st, uint64_t *disk_st, int faults)
{
    /* Roughly half of all actions repair something, so the cluster spends
     * time both broken and whole. */
    for (int tries = 0; tries < 16; tries++) {
        switch (rnd(st) % 13) {
        case 0:
        case 1:
            if (!(faults & FAULT_PARTITION))
                continue;
            random_partition(s, st);
            return;
        case 2:
            if (!(faults & (FAULT_PARTITION | FAULT_ONEWAY)))
                continue;
            sim_heal(s);
            sim_say(s, "FAULT heal network");
            return;
        case 3: {
            if (!(faults & FAULT_ONEWAY))
                continue;
            raft_id a = 1 + rnd(st) % sim_nodes(s), b = 1 + rnd(st) % sim_nodes(s);
            if (a == b)
                continue;
            sim_block(s, a, b, true);
            sim_say(s, "FAULT oneway n%llu -> n%llu cut", (unsigned long long)a,
                    (unsigned long long)b);
            return;
        }
        case 4: {
            raft_id id = pick(s, st, true, false);
            if (!(faults & FAULT_CRASH) || !id)
                continue;
            if (!crash_loses_disk(s, disk_st, faults, id)) {
                sim_crash(s, id);
                return;
            }
            sim_lose_disk(s, id);
            if (!s->o.unsafe_trust_wiped)
                sim_replace(s, id);
            return;
        }
        case 5:
        case 6: {
            raft_id id = pick(s, st, false, false);
            if (!(faults & FAULT_CRASH) || !id)
                continue;
            sim_restart(s, id);
            return;
        }
        case 7: {
            raft_id id = pick(s, st, true, false);
            if (!(faults & FAULT_PAUSE) || !id)
                continue;
            sim_pause(s, id);
            return;
        }
        case 8: {
            raft_id id = pick(s, st, true, true);
            if (!(faults & FAULT_PAUSE) || !id)
                continue;
            sim_resume(s, id);
            return;
        }
        case 9: {
            if (!(faults & FAULT_DROP))
                continue;
            unsigned pct = (unsigned)(rnd(st) % 3 == 0 ? 0 : between(st, 1, 40));
            sim_set_drop(s, pct);
            sim_say(s, "FAULT message loss %u%%", pct);
            return;
        }
        case 10: {
            if (!(faults & FAULT_DUP))
                continue;
            unsigned pct = (unsigned)between(st, 0, 30);
            sim_set_dup(s, pct);
            sim_say(s, "FAULT duplication %u%%", pct);
            return;
        }
        case 11: {
            if (!(faults & FAULT_DELAY))
                continue;
            uint32_t lo = (uint32_t)between(st, 0, 10);
            /* Sometimes slower than an election timeout: stale messages. */
            uint32_t hi =
                lo + (uint32_t)(rnd(st) % 4 == 0 ? between(st, 100, 400) : between(st, 0, 40));
            sim_set_delay(s, lo, hi);
            sim_say(s, "FAULT delay %u-%u ms", lo, hi);
            return;
        }
        case 12: {
            if (!(faults & FAULT_REORDER))
                continue;
            bool on = rnd(st) % 2;
            sim_set_reorder(s, on);
            sim_say(s, "FAULT reordering %s", on ? "on" : "off");
            return;
        }
        }
    }
}

/* A random single-server change, as an operator would ask for one:
 * add a server that is not a member as a learner, promote a learner, or
 * remove a member (sometimes the leader itself). */
static void random_membership(struct sim *s, uint64_t *st)
{
    struct raft *leader = sim_raft(s, sim_leader(s));
    if (!leader)
        return;
    struct raft_member m[SIM_MAX_NODES + 1];
    size_t n = raft_configuration(leader, m, SIM_MAX_NODES + 1);
    raft_id outsiders[SIM_MAX_NODES], learners[SIM_MAX_NODES];
    unsigned n_out = 0, n_learners = 0;
    for (raft_id id = 1; id <= sim_nodes(s); id++) {
        size_t k;
        for (k = 0; k < n && m[k].id != id; k++)
            ;
        if (k == n)
            outsiders[n_out++] = id;
        else if (!m[k].is_voter)
            learners[n_learners++] = id;
    }
    unsigned choice = (unsigned)(rnd(st) % 3);
    enum raft_conf_op op;
    raft_id id;
    if (choice == 0 && n_out) {
        op = RAFT_ADD_LEARNER;
        id = outsiders[rnd(st) % n_out];
    } else if (choice == 1 && n_learners) {
        op = RAFT_PROMOTE;
        id = learners[rnd(st) % n_learners];
    } else if (choice == 2 && n > 1) {
        op = RAFT_REMOVE;
        id = m[rnd(st) % n].id;
    } else {
        return;
    }
    static const char *const names[] = {
        [RAFT_ADD_LEARNER] = "add learner", [RAFT_PROMOTE] = "promote", [RAFT_REMOVE] = "remove"};
    int rv = sim_change_conf(s, op, id);
    sim_say(s, "CLIENT %s n%llu: %s", names[op], (unsigned long long)id, raft_strerror(rv));
}

/* Swarm testing (Groce et al., 2012): a schedule that always mixes every
 * fault at one pace hides the bugs that need one kind of trouble in
 * quantity and the others quiet. Each seed of the swarm schedule draws its
 * own subset of the faults asked for, their pace, an election timeout
 * (short ones churn elections; long ones widen every timing window, such as
 * a lease's), how many client operations are reads, and how often the
 * nemesis strikes the leader right after it sent new entries, when only
 * some followers hold them: the moment Figure 8, the commit rule and every
 * stale-leader bug need. */
struct swarm {
    bool on;
    int faults;                             /* the subset drawn */
    uint64_t gap_lo, gap_hi;                /* time between two faults */
    unsigned strike_pct;                    /* faults that strike the leader */
    unsigned read_share;                    /* client operations that are reads, of 64 */
    uint64_t restart_at[SIM_MAX_NODES + 1]; /* a struck node comes back (0: no) */
    uint64_t heal_at, resume_at;
    raft_id paused;
    uint64_t client_hi; /* clients act every 5..client_hi ms */
    raft_id leader;     /* the leader last seen, and its term */
    raft_term leader_term;
    uint64_t strike_at; /* a new leader is struck then (0: no) */
    raft_id strike_target;
    bool strike_propose; /* that strike first gives it entries of its own */
    /* Strike chains: after a strike, each of the next chain_len leaders is
     * struck too, and the node struck before it comes back at that moment.
     * Figure 8 is such a chain: S1 struck after partial replication, S5
     * after appending in a later term, S1 back and elected, struck after
     * it replicated its old entry, S5 back. */
    unsigned chain_len, chain_left;
    raft_id victim;      /* the node the chain struck last, while it is out */
    uint64_t hold_until; /* the next fault not before then */
    /* A lease strike's cut-off leader keeps its own clients, who read there
     * every 1-3 ms until the heal (0: none). */
    raft_id lease_client;
    uint64_t lease_client_next;
    bool lease_fast; /* the network is fast until that heal */
};

static void swarm_draw(struct swarm *w, uint64_t seed, int faults, struct sim_options *so)
{
    uint64_t st = seed ^ 0x5a3a5a3a5a3a5a3aULL;
    memset(w, 0, sizeof(*w));
    w->on = true;
    /* Each kind of fault asked for is in with even odds; at least one. */
    for (int bit = 1; bit <= FAULT_CLOCK; bit <<= 1)
        if ((faults & bit) && rnd(&st) % 2)
            w->faults |= bit;
    if (!w->faults && faults) {
        int bits[16], n = 0;
        for (int bit = 1; bit <= FAULT_CLOCK; bit <<= 1)
            if (faults & bit)
                bits[n++] = bit;
        w->faults = bits[rnd(&st) % (uint64_t)n];
    }
    static const uint64_t gaps[][2] = {{20, 150}, {50, 600}, {200, 1500}};
    unsigned g = (unsigned)(rnd(&st) % 3);
    w->gap_lo = gaps[g][0];
    w->gap_hi = gaps[g][1];
    static const unsigned strikes[] = {0, 20, 50, 80};
    w->strike_pct = strikes[rnd(&st) % 4];
    static const unsigned reads[] = {11, 24, 40};
    w->read_share = reads[rnd(&st) % 3];
    /* Busy clients, or quiet ones: a leader with nothing new to send shows
     * what it does with what it inherited. */
    static const uint64_t clients[] = {40, 40, 150};
    w->client_hi = clients[rnd(&st) % 3];
    /* Election timeouts and heartbeats: the default, short, and long. */
    static const uint32_t timeouts[][2] = {{150, 30}, {150, 30}, {60, 12},
                                           {300, 50}, {600, 80}, {1000, 100}};
    unsigned t = (unsigned)(rnd(&st) % 6);
    so->raft.election_timeout_ms = timeouts[t][0];
    so->raft.heartbeat_interval_ms = timeouts[t][1];
    /* Strike chains (struct swarm) for three seeds in four; a chain starts
     * at a strike, so those seeds strike. */
    static const unsigned chains[] = {0, 4, 8, 16};
    w->chain_len = chains[rnd(&st) % 4];
    if (w->chain_len && !w->strike_pct)
        w->strike_pct = 20;
    /* A fast network (0-2 ms) for a third of the seeds: elections and
     * commits then fit in narrow timing windows (a lease's). Not with
     * reordering: the core's pipelined AppendEntries answer out-of-order
     * rejections with resends that multiply, until the livelock guard stops
     * the run (seed 29356 of schedule 2 with it showed that). */
    if (!(w->faults & FAULT_REORDER) && rnd(&st) % 3 == 0) {
        so->delay_min_ms = 0;
        so->delay_max_ms = 2;
    }
    /* A fast disk (fsync in 0-1 ms) for a third of the seeds, and a fine
     * clock (1 ms ticks, not 5) for another third: an election then takes
     * a few milliseconds, and bugs that live in windows that narrow (a
     * lease that outlives the followers' promise by its drift bound) have
     * a chance to show. */
    unsigned speed = (unsigned)(rnd(&st) % 3);
    if (speed == 1) {
        so->fsync_min_ms = 0;
        so->fsync_max_ms = 1;
    } else if (speed == 2) {
        so->tick_ms = 1;
    }
}

/* The leader cut off alone right after a heartbeat round came back (its
 * lease just renewed, thesis §6.4.1): the others elect a new leader as soon
 * as their promise to the old one ends, while the old one, cut off with its
 * clients, may still believe its lease. Back after one to three election
 * timeouts. */
static void lease_strike(struct sim *s, uint64_t *st, struct swarm *w, raft_id l)
{
    struct sim_node *n = &s->nodes[l - 1];
    uint64_t t = s->o.raft.election_timeout_ms;
    /* First the rest of the network calm, so that the others elect a leader
     * as soon as their promise ends: the race is the two leaders'. And fast
     * (0-2 ms): the others elect and commit within the few milliseconds by
     * which a wrong lease outlives their promise. */
    sim_heal(s);
    sim_set_drop(s, 0);
    sim_set_dup(s, 0);
    sim_set_reorder(s, false);
    sim_set_delay(s, 0, 2);
    w->lease_fast = true;
    /* Then a heartbeat round sent on it and answered by a majority of the
     * voters (the leader counts itself): the lease starts at most a round
     * trip before the cut, as do the others' promises. */
    uint64_t since = sim_node_clock(s, n);
    uint64_t wait_until = sim_now(s) + s->o.raft.heartbeat_interval_ms + 10;
    unsigned fresh = 0;
    while (!s->stop && sim_now(s) < wait_until) {
        sim_run_for(s, 1);
        fresh = 0;
        for (raft_id id = 1; id <= sim_nodes(s); id++)
            fresh += id != l && n->acked_sent_ms[id] >= since;
        if (fresh >= sim_nodes(s) / 2)
            break;
    }
    if (s->stop || sim_leader(s) != l || fresh < sim_nodes(s) / 2) {
        w->lease_fast = false;
        sim_set_delay(s, s->o.delay_min_ms, s->o.delay_max_ms);
        return;
    }
    /* The worst skew the drift bound allows (thesis §6.4.1), as
     * clock_push's: the leader's lease lasts longest, the others' promise
     * ends soonest. */
    for (raft_id id = 1; id <= sim_nodes(s); id++)
        sim_set_clock_rate(s, id, id == l ? 95 : 105);
    for (raft_id id = 1; id <= sim_nodes(s); id++)
        if (id != l) {
            sim_block(s, l, id, true);
            sim_block(s, id, l, true);
        }
    sim_say(s, "FAULT partition the leader n%llu from the others right after its lease renewed",
            (unsigned long long)l);
    w->heal_at = sim_now(s) + between(st, t, 3 * t);
    /* No other fault until then: the story is the two leaders'. */
    w->hold_until = w->heal_at;
    /* The clients cut off with it keep reading there, as real ones would
     * until told it is not the leader: a read served after the others have
     * committed something new is stale, and that is what a lease is for. */
    w->lease_client = l;
    w->lease_client_next = sim_now(s) + between(st, 1, 3);
}

/* The reads of a lease strike's cut-off clients that are due by now. */
static void lease_clients(struct sim *s, uint64_t *st, struct swarm *w)
{
    raft_id l = w->lease_client;
    if (!l || sim_now(s) < w->lease_client_next)
        return;
    /* Until the heal, and while it believes it leads: once it knows it
     * does not, it says so and its clients go elsewhere. */
    if (!w->heal_at || !sim_raft(s, l) || sim_is_paused(s, l) ||
        raft_role_of(sim_raft(s, l)) != RAFT_LEADER) {
        w->lease_client = 0;
        return;
    }
    sim_client_read(s, l);
    w->lease_client_next = sim_now(s) + between(st, 1, 3);
}

/* A clock push: a node's clock runs as slow or as fast as the drift bound
 * allows both ways at once (95% and 105%: one is 10.5% ahead of the other,
 * inside the 10% default bound's 1/0.9), or right again. Lease reads are
 * safe only inside the bound (thesis §6.4.1); a lease without one is
 * caught here. */
static void clock_push(struct sim *s, uint64_t *st)
{
    raft_id l = sim_leader(s);
    if (l && rnd(st) % 2) {
        /* The worst the bound allows for a lease: the leader's clock slow
         * (its lease lasts longer), every other one fast (their promise not
         * to vote ends sooner). 105/95 is 1.105, inside the 1/0.9 that a
         * lease of 90% of the election timeout tolerates. */
        for (raft_id id = 1; id <= sim_nodes(s); id++)
            sim_set_clock_rate(s, id, id == l ? 95 : 105);
        sim_say(s, "FAULT clocks: the leader n%llu's runs at 95%%, the others' at 105%%",
                (unsigned long long)l);
        return;
    }
    raft_id id = 1 + rnd(st) % sim_nodes(s);
    static const unsigned rates[] = {95, 105, 100};
    unsigned pct = rates[rnd(st) % 3];
    sim_set_clock_rate(s, id, pct);
    sim_say(s, "FAULT clock of n%llu runs at %u%%", (unsigned long long)id, pct);
}

/* The nemesis strikes the leader right after partial replication: new
 * entries go out, a few milliseconds pass (some followers have them, some
 * not), and the leader crashes, is cut off (alone or with one follower),
 * or pauses; it comes back a little later. */
static void strike(struct sim *s, uint64_t *st, struct swarm *w, raft_id l)
{
    int kinds = w->faults & (FAULT_CRASH | FAULT_PARTITION | FAULT_PAUSE);
    if (s->stop || !kinds || !sim_is_up(s, l) || sim_is_paused(s, l))
        return;
    static const int all[] = {FAULT_CRASH, FAULT_PARTITION, FAULT_PAUSE};
    int options[3], n = 0;
    for (unsigned i = 0; i < 3; i++)
        if (kinds & all[i])
            options[n++] = all[i];
    int kind = options[rnd(st) % (uint64_t)n];
    /* Back within a fraction of an election timeout (nobody noticed) or
     * after a few (the others elected a leader meanwhile). */
    uint64_t t = s->o.raft.election_timeout_ms;
    uint64_t back = sim_now(s) + (rnd(st) % 2 ? between(st, 10, t) : between(st, t, 3 * t));
    if (w->chain_len) {
        /* A chain: the node struck before this one comes back now, to
         * compete with what the others did meanwhile; this one stays out
         * until the next link (or a few election timeouts, if no leader
         * comes). */
        if (w->chain_left == 0)
            w->chain_left = w->chain_len;
        else
            w->chain_left--;
        raft_id v = w->victim;
        if (v && v != l) {
            if (w->restart_at[v]) {
                w->restart_at[v] = 0;
                sim_restart(s, v);
            } else if (w->paused == v) {
                w->resume_at = 0;
                w->paused = 0;
                sim_resume(s, v);
            }
        }
        w->victim = l;
        back = sim_now(s) + between(st, 3 * t, 5 * t);
    }
    if (kind == FAULT_CRASH) {
        sim_crash(s, l);
        w->restart_at[l] = back;
    } else if (kind == FAULT_PAUSE) {
        if (w->paused)
            return;
        sim_pause(s, l);
        w->paused = l;
        w->resume_at = back;
    } else {
        raft_id buddy = rnd(st) % 3 == 0 ? 1 + rnd(st) % sim_nodes(s) : l;
        sim_heal(s);
        for (raft_id a = 1; a <= sim_nodes(s); a++)
            for (raft_id b = 1; b <= sim_nodes(s); b++)
                if ((a == l || a == buddy) != (b == l || b == buddy))
                    sim_block(s, a, b, true);
        sim_say(s, "FAULT partition {n%llu, n%llu} from the others", (unsigned long long)l,
                (unsigned long long)buddy);
        w->heal_at = back;
    }
}

/* Give leader l 1-3 new entries, let 0-6 ms pass (some followers have
 * them, some not), and strike it. */
static void strike_after_append(struct sim *s, uint64_t *st, struct swarm *w, raft_id l)
{
    sim_client_write(s, l, (unsigned)between(st, 1, 3));
    sim_run_for(s, between(st, 0, 6));
    strike(s, st, w, l);
}

/* Whether every node but l runs: the others can elect a new leader at
 * once, which is what a lease strike is about. */
static bool others_all_up(struct sim *s, raft_id l)
{
    for (raft_id id = 1; id <= sim_nodes(s); id++)
        if (id != l && (!sim_is_up(s, id) || sim_is_paused(s, id)))
            return false;
    return true;
}

static void leader_strike(struct sim *s, uint64_t *st, struct swarm *w)
{
    raft_id l = sim_leader(s);
    if (l && (w->faults & (FAULT_CLOCK | FAULT_PARTITION)) && rnd(st) % 2 && others_all_up(s, l)) {
        lease_strike(s, st, w, l);
        return;
    }
    if (!l || !(w->faults & (FAULT_CRASH | FAULT_PARTITION | FAULT_PAUSE)))
        return;
    sim_say(s, "FAULT strike the leader n%llu after partial replication", (unsigned long long)l);
    strike_after_append(s, st, w, l);
}

/* A leader just elected sends what it inherited at once; striking it a
 * few milliseconds later leaves that on some followers only (Figure 8's
 * (c) and (d) are such strikes). Called between the schedule's steps. */
static void swarm_watch_leader(struct sim *s, uint64_t *st, struct swarm *w)
{
    raft_id l = sim_leader(s);
    raft_term t = l ? raft_current_term(sim_raft(s, l)) : 0;
    if (l && (l != w->leader || t != w->leader_term)) {
        w->leader = l;
        w->leader_term = t;
        /* Within a chain every new leader is struck: half of them right
         * after their election, half after entries of their own term. */
        bool chained = w->chain_left > 0;
        if (!w->strike_at && (chained || rnd(st) % 100 < w->strike_pct)) {
            w->strike_at = sim_now(s) + between(st, 0, 20);
            w->strike_target = l;
            w->strike_propose = chained && rnd(st) % 2;
        }
    }
    if (w->strike_at && sim_now(s) >= w->strike_at) {
        w->strike_at = 0;
        if (sim_leader(s) == w->strike_target) {
            sim_say(s, "FAULT strike the new leader n%llu%s", (unsigned long long)w->strike_target,
                    w->strike_propose ? " after partial replication" : "");
            if (w->strike_propose)
                strike_after_append(s, st, w, w->strike_target);
            else
                strike(s, st, w, w->strike_target);
        }
    }
}

/* The swarm's own agenda: struck nodes come back, cut leaders rejoin. */
static uint64_t swarm_next(const struct swarm *w, uint64_t until)
{
    for (unsigned i = 0; i <= SIM_MAX_NODES; i++)
        if (w->restart_at[i] && w->restart_at[i] < until)
            until = w->restart_at[i];
    if (w->strike_at && w->strike_at < until)
        until = w->strike_at;
    if (w->heal_at && w->heal_at < until)
        until = w->heal_at;
    if (w->resume_at && w->resume_at < until)
        until = w->resume_at;
    return until;
}

static void swarm_agenda(struct sim *s, struct swarm *w)
{
    uint64_t now = sim_now(s);
    for (raft_id id = 1; id <= sim_nodes(s); id++)
        if (w->restart_at[id] && w->restart_at[id] <= now) {
            w->restart_at[id] = 0;
            sim_restart(s, id);
        }
    if (w->heal_at && w->heal_at <= now) {
        w->heal_at = 0;
        sim_heal(s);
        if (w->lease_fast) {
            w->lease_fast = false;
            sim_set_delay(s, s->o.delay_min_ms, s->o.delay_max_ms);
        }
        sim_say(s, "FAULT heal network");
    }
    if (w->resume_at && w->resume_at <= now) {
        w->resume_at = 0;
        sim_resume(s, w->paused);
        w->paused = 0;
    }
}

static void heal_everything(struct sim *s, const struct sim_options *so)
{
    sim_heal(s);
    sim_set_drop(s, 0);
    sim_set_dup(s, 0);
    sim_set_reorder(s, false);
    sim_set_delay(s, so->delay_min_ms, so->delay_max_ms);
    for (raft_id id = 1; id <= sim_nodes(s); id++) {
        if (!sim_is_up(s, id))
            sim_restart(s, id);
        else if (sim_is_paused(s, id))
            sim_resume(s, id);
    }
    sim_say(s, "HEAL all faults; liveness check begins");
}

static bool has_leader(struct sim *s, void *arg)
{
    (void)arg;
    return sim_leader(s) != 0;
}

static bool all_committed(struct sim *s, void *arg)
{
    /* Liveness asks for progress of the voters; a learner far behind is
     * still catching up, which is not a failure of Raft. */
    return sim_all_committed(s, *(raft_index *)arg, true);
}

static bool replaced(struct sim *s, void *arg)
{
    (void)arg;
    return sim_replacing(s) == 0;
}

/* When liveness fails: every node's role, term, commit and last index, and
 * each leader's view of its followers (match, next and progress state), so
 * that the failure explains itself. */
static void describe_nodes(struct sim *s)
{
    for (raft_id id = 1; id <= sim_nodes(s); id++) {
        const struct raft *r = s->nodes[id - 1].r;
        if (!r) {
            sim_say(s, "STATE n%llu down", (unsigned long long)id);
            continue;
        }
        sim_say(s, "STATE n%llu %s term %llu leader n%llu (0: none) commit %llu last %llu",
                (unsigned long long)id, raft_role_name(raft_role_of(r)),
                (unsigned long long)raft_current_term(r), (unsigned long long)raft_leader(r),
                (unsigned long long)raft_commit_index(r), (unsigned long long)raft_last_index(r));
        struct raft_peer_status ps;
        for (raft_id p = 1; p <= sim_nodes(s); p++)
            if (p != id && raft_peer_status(r, p, &ps))
                sim_say(s, "STATE   n%llu's view of n%llu: match %llu next %llu %s%s",
                        (unsigned long long)id, (unsigned long long)p,
                        (unsigned long long)ps.match_index, (unsigned long long)ps.next_index,
                        ps.sending_snapshot ? "sending the snapshot"
                        : ps.is_replicating ? "replicating"
                                            : "probing",
                        ps.is_voter ? "" : " (learner)");
    }
}

/* Liveness: after the heal, a leader and a committed entry on every node. */
static const char *settle(struct sim *s, uint64_t budget_ms)
{
    uint64_t deadline = sim_now(s) + budget_ms;
    while (sim_now(s) < deadline && !s->stop) {
        if (!sim_run_until(s, deadline - sim_now(s), has_leader, NULL))
            return "no leader elected";
        raft_index last = 0;
        if (sim_propose(s, 0, 1, NULL, &last) != RAFT_OK) {
            sim_run_for(s, 10);
            continue;
        }
        uint64_t left = deadline > sim_now(s) ? deadline - sim_now(s) : 0;
        /* The leader may lose its place; then try again with the next. */
        uint64_t wait = left < 1000 ? left : 1000;
        if (!sim_run_until(s, wait, all_committed, &last))
            continue;
        if (!sim_replacing(s))
            return NULL;
        /* A node that lost its disk must be back too: caught up as a
         * learner and promoted (thesis §4.2.1). It fetches the whole log
         * (or the snapshot), a batch per round trip and window, so it gets
         * a budget of its own for that; then commit once more, with it
         * among the voters. */
        const struct sim_options *so = &s->o;
        uint64_t round_trip_ms = 2 * ((uint64_t)so->delay_max_ms + so->fsync_max_ms);
        uint64_t fetch_ms =
            last * round_trip_ms / ((uint64_t)so->raft.max_append_entries * so->raft.max_inflight);
        if (!sim_run_until(s, budget_ms + fetch_ms, replaced, NULL))
            break;
        deadline = sim_now(s) + budget_ms;
    }
    if (s->stop)
        return NULL;
    return sim_replacing(s) ? "the replacement of the node that lost its disk did not finish"
                            : "no entry committed on every node";
}

int sim_random_run(const struct sim_random_options *o, char *verdict, size_t size,
                   struct sim_stats *stats)
{
    int faults = parse_faults(o->faults ? o->faults : "all");
    if (faults < 0) {
        snprintf(verdict, size, "unknown fault in '%s' (use %s)", o->faults,
                 "partition,oneway,crash,pause,drop,dup,delay,reorder,membership, all or none");
        return 2;
    }
    uint64_t st = o->seed ^ 0x5eed5eed5eed5eedULL;
    uint64_t disk_st = o->seed ^ 0xd15c1055d15c1055ULL; /* crash_loses_disk() */
    struct sim_options so;
    sim_options_default(&so, o->nodes, o->seed);
    so.out = o->out;
    so.trace_messages = o->trace_messages;
    so.json = o->json;
    so.raft.unsafe_commit_old_term = o->unsafe_commit_old_term;
    so.raft.prevote_off = o->prevote_off;
    so.raft.check_quorum_off = o->check_quorum_off;
    so.unsafe_trust_wiped = o->unsafe_trust_wiped;
    so.test_history_only = o->history_only;
    so.raft.allow_unsafe =
        o->unsafe_commit_old_term || o->prevote_off || o->check_quorum_off || o->unsafe_trust_wiped;
    /* The cluster's own tuning, drawn from the seed. */
    static const uint32_t batches[] = {1, 2, 3, 8, 64};
    static const uint32_t windows[] = {1, 2, 8, 64};
    so.raft.max_append_entries = batches[rnd(&st) % 5];
    so.raft.max_inflight = windows[rnd(&st) % 4];
    /* Snapshots: how often, how much tail to keep, how big the chunks. */
    static const uint32_t thresholds[] = {0, 8, 24, 64, 200};
    static const uint32_t tails[] = {0, 2, 16};
    static const size_t chunks[] = {16, 64, 4096};
    so.raft.snapshot_threshold_entries = thresholds[rnd(&st) % 5];
    so.raft.snapshot_trailing_entries = tails[rnd(&st) % 3];
    so.raft.snapshot_chunk_bytes = chunks[rnd(&st) % 3];
    /* Half the seeds read with leases (thesis §6.4.1), under clocks that
     * drift by up to 3%, well inside the default 10% bound. */
    so.raft.lease_reads = !o->check_quorum_off && rnd(&st) % 2;
    /* With membership changes, some servers start outside, to join later. */
    if ((faults & FAULT_MEMBERSHIP) && o->nodes > 2)
        so.voters = o->nodes - (unsigned)(rnd(&st) % 3);
    unsigned schedule = o->schedule ? o->schedule : SIM_SCHEDULE_SWARM;
    struct swarm w = {0};
    if (schedule == SIM_SCHEDULE_SWARM)
        swarm_draw(&w, o->seed, faults, &so);
    /* A planted bug changes the core and nothing of the schedule. */
    if (o->bug) {
        o->bug->plant(&so.raft);
        so.raft.allow_unsafe = true;
        if (o->bug->reads != SIM_READS_ANY)
            so.raft.lease_reads = o->bug->reads == SIM_READS_LEASE && !so.raft.check_quorum_off;
    }

    struct sim *s = sim_new(&so);
    if (!s) {
        snprintf(verdict, size, "could not create the simulation");
        return 2;
    }
    /* In the swarm schedule clocks drift at rates up to what the default
     * drift bound allows (thesis §6.4.1: 10%): 95-105%, so that two differ
     * by at most 105/95 = 1.105, inside the 1/0.9 a lease of 90% of the
     * election timeout tolerates; every leader cut off then tests the
     * lease. The first schedule keeps its 97-103%, so its seeds replay. */
    for (raft_id id = 1; id <= o->nodes; id++)
        sim_set_clock_rate(s, id,
                           w.on ? 95 + (unsigned)(rnd(&st) % 11) : 97 + (unsigned)(rnd(&st) % 7));
    if (w.on)
        sim_say(s,
                "SWARM faults=%#x gap=%llu-%llums strike=%u%% chain=%u reads=%u/64 "
                "election=%ums heartbeat=%ums delay=%u-%ums",
                (unsigned)w.faults, (unsigned long long)w.gap_lo, (unsigned long long)w.gap_hi,
                w.strike_pct, w.chain_len, w.read_share, so.raft.election_timeout_ms,
                so.raft.heartbeat_interval_ms, so.delay_min_ms, so.delay_max_ms);
    int active = w.on ? w.faults : faults;
    unsigned read_share = w.on ? w.read_share : 11;
    sim_say(s,
            "RANDOM seed=%llu nodes=%u voters=%u faults=%s batch=%u inflight=%u reads=%s "
            "snapshot=%u/%u/%zu",
            (unsigned long long)o->seed, o->nodes, so.voters, o->faults ? o->faults : "all",
            so.raft.max_append_entries, so.raft.max_inflight,
            so.raft.lease_reads ? "lease" : "readindex", so.raft.snapshot_threshold_entries,
            so.raft.snapshot_trailing_entries, so.raft.snapshot_chunk_bytes);

    uint64_t next_fault = between(&st, 100, 600), next_client = between(&st, 5, 40);
    uint64_t chaos_ms = o->chaos_ms;
    while (sim_now(s) < chaos_ms && !s->stop) {
        uint64_t until = next_fault < next_client ? next_fault : next_client;
        if (w.on)
            until = swarm_next(&w, until);
        /* Look for new leaders every tick when the nemesis strikes them. */
        if (w.on && w.strike_pct && until > sim_now(s) + so.tick_ms)
            until = sim_now(s) + so.tick_ms;
        if (w.on && w.lease_client && until > w.lease_client_next)
            until = w.lease_client_next;
        if (until > chaos_ms)
            until = chaos_ms;
        if (until > sim_now(s))
            sim_run_for(s, until - sim_now(s));
        if (w.on) {
            swarm_agenda(s, &w);
            if (w.strike_pct)
                swarm_watch_leader(s, &st, &w);
            lease_clients(s, &st, &w);
        }
        if (sim_now(s) >= next_client) {
            /* Closed-loop clients: a bounded number of writes outstanding,
             * as real clients waiting for answers would have. */
            struct raft *leader = sim_raft(s, sim_leader(s));
            bool backlog = leader && raft_last_index(leader) - raft_commit_index(leader) >=
                                         MAX_OUTSTANDING_WRITES;
            unsigned op = (unsigned)(rnd(&st) % 64);
            if (op < 4 && (active & FAULT_MEMBERSHIP)) {
                /* The operator replacing a node makes the only changes. */
                if (!sim_replacing(s))
                    random_membership(s, &st);
            } else if (op == 4) {
                raft_id to = 1 + rnd(&st) % sim_nodes(s);
                sim_say(s, "CLIENT transfer leadership to n%llu", (unsigned long long)to);
                sim_transfer(s, to);
            } else if (op < 5 + read_share) {
                /* Clients do not know which leader is current: a read may
                 * reach one that was deposed and does not know it yet. */
                raft_id leaders[SIM_MAX_NODES];
                unsigned n_leaders = 0;
                for (raft_id id = 1; id <= sim_nodes(s); id++)
                    if (sim_raft(s, id) && !sim_is_paused(s, id) &&
                        raft_role_of(sim_raft(s, id)) == RAFT_LEADER)
                        leaders[n_leaders++] = id;
                if (n_leaders)
                    sim_client_read(s, leaders[rnd(&st) % n_leaders]);
            } else if (!backlog)
                sim_client_write(s, 0, (unsigned)between(&st, 1, 3));
            next_client = sim_now(s) + between(&st, 5, w.on ? w.client_hi : 40);
        }
        if (sim_now(s) >= next_fault && w.on) {
            unsigned roll = (unsigned)(rnd(&st) % 100);
            if (roll < w.strike_pct)
                leader_strike(s, &st, &w);
            else if ((active & FAULT_CLOCK) && roll % 5 == 0)
                clock_push(s, &st);
            else if (active & ~FAULT_CLOCK)
                random_fault(s, &st, &disk_st, active & ~FAULT_CLOCK);
            next_fault = sim_now(s) + between(&st, w.gap_lo, w.gap_hi);
            if (next_fault < w.hold_until)
                next_fault = w.hold_until;
        } else if (sim_now(s) >= next_fault) {
            if (faults)
                random_fault(s, &st, &disk_st, faults & ~FAULT_CLOCK);
            next_fault = sim_now(s) + between(&st, 50, 600);
        }
    }

    const char *liveness = NULL;
    if (!s->stop) {
        heal_everything(s, &so);
        /* The bound counts in election timeouts: the default one's 5 s is
         * about 33 of them, and a basic-Raft election may take several (a
         * stale candidate keeps timing out first and losing). */
        uint64_t settle_ms = o->settle_ms * so.raft.election_timeout_ms / 150;
        if (settle_ms < o->settle_ms)
            settle_ms = o->settle_ms;
        liveness = settle(s, settle_ms);
        if (liveness)
            describe_nodes(s);
    }
    /* What the clients saw (thesis §6.3), unless the run already failed. */
    if (!sim_violation(s))
        sim_check_history(s);
    struct sim_stats local;
    sim_get_stats(s, stats ? stats : &local);
    const struct sim_stats *ss = stats ? stats : &local;
    int rv = 0;
    if (o->grid && o->grid_size)
        snprintf(o->grid, o->grid_size, "%s", sim_violation_grid(s));
    if (sim_violation(s)) {
        char names[256] = "";
        for (unsigned i = 0; i < s->n_violated; i++)
            snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "",
                     s->violated[i]);
        snprintf(verdict, size, "seed=%llu nodes=%u FAIL [%s] %s", (unsigned long long)o->seed,
                 o->nodes, names, sim_violation(s));
        rv = 1;
    } else if (s->livelock) {
        snprintf(
            verdict, size,
            "seed=%llu nodes=%u FAIL liveness: livelock (100,000 events within 100 ms, at %llu ms)",
            (unsigned long long)o->seed, o->nodes, (unsigned long long)sim_now(s));
        rv = 1;
    } else if (liveness) {
        snprintf(
            verdict, size, "seed=%llu nodes=%u FAIL liveness: %s within %llu ms of healing",
            (unsigned long long)o->seed, o->nodes, liveness,
            (unsigned long long)(o->settle_ms * so.raft.election_timeout_ms / 150 > o->settle_ms
                                     ? o->settle_ms * so.raft.election_timeout_ms / 150
                                     : o->settle_ms));
        rv = 1;
    } else {
        snprintf(verdict, size,
                 "seed=%llu nodes=%u PASS elections=%llu committed=%llu reads=%llu/%llu "
                 "virtual=%llums",
                 (unsigned long long)o->seed, o->nodes, (unsigned long long)ss->elections,
                 (unsigned long long)ss->committed, (unsigned long long)ss->reads_ok,
                 (unsigned long long)(ss->reads_ok + ss->reads_failed),
                 (unsigned long long)sim_now(s));
    }
    sim_free(s);
    return rv;
}
