/* disk_loss.c — a node that loses its disk, the incarnation check that keeps
 * it out, and the operator who replaces it.
 *
 * Raft §5.4 assumes that what a server wrote to stable storage survives: a
 * server that acknowledged an entry or gave a vote and then forgot it can
 * vote, once it restarts empty, for a candidate without that entry. With
 * three servers, an entry held by A and B is lost when B is wiped and B and
 * C elect C. The runtime guards against it the way this file models it, at
 * the host and network layer (the core is not involved):
 *
 *  1. Every data directory has an incarnation, drawn when it is made and
 *     sent in the connection handshake; here every message carries its
 *     sender's (sim_node.data_dir).
 *  2. A node records, on its disk, the incarnation each peer proves in its
 *     handshake (the transport connects to every peer when it starts, so
 *     here at once), and refuses every message of another one: the wiped
 *     node can neither vote nor acknowledge. It still hears the others,
 *     which is harmless: nothing it says counts. Messages it sent before
 *     the loss are still taken while they arrive (they were true when
 *     sent); once the peers forget it, its old connections are gone.
 *  3. The operator replaces it with the single-server changes of thesis
 *     §4.1: remove it (the others are a majority without it); once that is
 *     committed, add it back as a learner, which catches up without
 *     counting in any quorum; promote it once the leader finds it caught
 *     up (thesis §4.2.1). Each peer forgets the old incarnation, and takes
 *     the new one, only when it can no longer count the node as the voter
 *     it was (forget_where_safe).
 *
 * The teaching knob sim_options.unsafe_trust_wiped switches step 2 off.
 */
#include "sim_internal.h"

#include <stdlib.h>
#include <string.h>

enum {
    /* How often the operator looks at the cluster: a script polling the
     * leader's status (virtual ms). */
    REPLACE_POLL_MS = 50,
};

static struct sim_node *node_at(struct sim *s, raft_id id)
{
    return id >= 1 && id <= s->o.nodes ? &s->nodes[id - 1] : NULL;
}

/* ------------------------------------------------------------------------
 * The fault
 * ------------------------------------------------------------------------ */

void sim_lose_disk(struct sim *s, raft_id id)
{
    struct sim_node *n = node_at(s, id);
    if (!n)
        return;
    sim_crash(s, id); /* a no-op when it is down already */
    n->disk_term = 0;
    n->disk_vote = 0;
    /* The checker remembers what the disk held (Commit Quorum); the log
     * moves there, and the disk starts empty. */
    sim_log_reset(&n->lost_disk, 0, 0, 0);
    free(n->lost_disk.e);
    n->lost_disk = n->disk;
    memset(&n->disk, 0, sizeof(n->disk));
    n->lost_snap_index = n->snap.index;
    free(n->snap.data);
    memset(&n->snap, 0, sizeof(n->snap));
    n->staging_len = 0;
    /* The operator makes a new data dir, with an incarnation of its own;
     * its first handshakes record the peers' as they are now. */
    n->data_dir++;
    for (unsigned i = 0; i < s->o.nodes; i++)
        n->peer_data_dir[i] = s->nodes[i].data_dir;
    memset(n->refusal_told, 0, sizeof(n->refusal_told));
    sim_say(s,
            "n%llu DISK LOST: log, term, vote and snapshot gone; its new data dir is "
            "incarnation %llu%s",
            (unsigned long long)id, (unsigned long long)n->data_dir,
            s->o.unsafe_trust_wiped ? " (UNSAFE: its peers will trust it at once)" : "");
}

/* ------------------------------------------------------------------------
 * The incarnation check (the runtime's handshake)
 * ------------------------------------------------------------------------ */

bool disk_loss_accepts(struct sim *s, struct sim_node *to, raft_id from, uint64_t data_dir)
{
    struct sim_node *sender = node_at(s, from);
    if (s->o.unsafe_trust_wiped || !sender)
        return true;
    uint64_t known = to->peer_data_dir[from - 1];
    if (known == data_dir)
        return true;
    if (data_dir != sender->data_dir)
        return false; /* sent before a disk loss its peers have forgotten */
    if (!to->refusal_told[from - 1]) {
        to->refusal_told[from - 1] = true;
        sim_say(s,
                "n%llu refuses n%llu: its data dir was replaced (incarnation %llu; we knew "
                "%llu): a node that lost its data must not vote or count toward a quorum",
                (unsigned long long)to->id, (unsigned long long)from, (unsigned long long)data_dir,
                (unsigned long long)known);
    }
    return false;
}

/* Node x forgets the incarnation it recorded for node id and records the
 * one id's data dir has now, as its next handshake would. */
static void forget_at(struct sim *s, raft_id x, raft_id id)
{
    struct sim_node *n = node_at(s, id), *at = node_at(s, x);
    at->peer_data_dir[id - 1] = n->data_dir;
    at->refusal_told[id - 1] = false;
    s->replace.forgotten |= 1u << (x - 1);
}

/* The operator has node x forget id's old incarnation once x can no longer
 * count it as the voter it was: x has committed id's removal (every
 * configuration it uses from then on is that one or a later one), or id
 * has caught up and been promoted again (what it says of its log is then
 * true of everything its old life acknowledged, since the removal came
 * after all of that). A server that has not, a removed one that never
 * learned it was removed for instance, could otherwise win an election
 * with the empty log's vote. Returns how many forgot now. */
static unsigned forget_where_safe(struct sim *s, bool promoted)
{
    struct sim_replacement *rp = &s->replace;
    unsigned count = 0;
    char who[64] = "";
    for (raft_id x = 1; x <= s->o.nodes; x++) {
        struct raft *r = sim_raft(s, x);
        if (x == rp->id || rp->forgotten & (1u << (x - 1)))
            continue;
        if (!promoted && !(r && raft_commit_index(r) >= rp->removed_at))
            continue;
        forget_at(s, x, rp->id);
        snprintf(who + strlen(who), sizeof(who) - strlen(who), "%sn%llu", count++ ? "," : "",
                 (unsigned long long)x);
    }
    if (count)
        sim_say(s, "OPERATOR %s forget%s n%llu's old incarnation, record %llu", who,
                count == 1 ? "s" : "", (unsigned long long)rp->id,
                (unsigned long long)node_at(s, rp->id)->data_dir);
    return count;
}

/* ------------------------------------------------------------------------
 * The operator's replacement (thesis §4.1, §4.2.1)
 * ------------------------------------------------------------------------ */

bool sim_replace(struct sim *s, raft_id id)
{
    if (!node_at(s, id) || s->replace.id)
        return false;
    s->replace = (struct sim_replacement){.id = id,
                                          .step = SIM_REPLACE_REMOVE,
                                          .next_poll_ms = s->now_ms + REPLACE_POLL_MS,
                                          .forgotten = 1u << (id - 1)};
    sim_say(s,
            "OPERATOR replace n%llu: remove it, add it back as a learner, promote it once "
            "caught up; its peers forget its old incarnation when it is safe",
            (unsigned long long)id);
    return true;
}

raft_id sim_replacing(const struct sim *s)
{
    return s->replace.id;
}

static void ask(struct sim *s, enum raft_conf_op op, raft_id id, raft_id leader)
{
    static const char *const names[] = {
        [RAFT_ADD_LEARNER] = "add learner", [RAFT_PROMOTE] = "promote", [RAFT_REMOVE] = "remove"};
    int rv = sim_change_conf(s, op, id);
    sim_say(s, "OPERATOR %s n%llu at n%llu: %s", names[op], (unsigned long long)id,
            (unsigned long long)leader, raft_strerror(rv));
}

/* One look: what the leader's configuration says decides the next step,
 * and only once its latest change is committed (one change at a time,
 * thesis §4.1), so a new leader or a lost change is picked up again. */
void disk_loss_operator_tick(struct sim *s)
{
    struct sim_replacement *rp = &s->replace;
    if (!rp->id || s->now_ms < rp->next_poll_ms)
        return;
    rp->next_poll_ms = s->now_ms + REPLACE_POLL_MS;
    if (rp->step != SIM_REPLACE_REMOVE)
        forget_where_safe(s, false);
    raft_id leader = sim_leader(s);
    struct raft *l = sim_raft(s, leader);
    if (!l || raft_configuration_index(l) > raft_commit_index(l))
        return;
    struct raft_member m[SIM_MAX_NODES + 1];
    size_t n = raft_configuration(l, m, SIM_MAX_NODES + 1), k;
    if (n > SIM_MAX_NODES + 1)
        n = SIM_MAX_NODES + 1;
    for (k = 0; k < n && m[k].id != rp->id; k++)
        ;
    bool member = k < n, voter = member && m[k].is_voter;
    switch (rp->step) {
    case SIM_REPLACE_REMOVE:
        if (member) {
            ask(s, RAFT_REMOVE, rp->id, leader);
            return;
        }
        /* Its removal is committed: every later leader holds it. */
        rp->removed_at = raft_configuration_index(l);
        rp->step = SIM_REPLACE_ADD;
        forget_where_safe(s, false);
        return;
    case SIM_REPLACE_ADD:
        if (!member) {
            ask(s, RAFT_ADD_LEARNER, rp->id, leader);
            return;
        }
        rp->step = SIM_REPLACE_PROMOTE;
        /* fall through */
    case SIM_REPLACE_PROMOTE: {
        if (voter) {
            forget_where_safe(s, true);
            struct sim_node *b = node_at(s, rp->id);
            sim_log_reset(&b->lost_disk, 0, 0, 0); /* its old life is over everywhere */
            b->lost_snap_index = 0;
            sim_say(s, "OPERATOR replace n%llu: done, a voter again", (unsigned long long)rp->id);
            rp->id = 0;
            return;
        }
        struct raft_peer_status ps;
        if (!member)
            rp->step = SIM_REPLACE_ADD;
        else if (raft_peer_status(l, rp->id, &ps) && ps.caught_up)
            ask(s, RAFT_PROMOTE, rp->id, leader);
        return;
    }
    }
}
