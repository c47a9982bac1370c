/* readindex.c — linearizable reads without writing the log (thesis §6.4).
 *
 * A read must see every write committed before it started. The leader:
 *  1. makes sure an entry of its own term is committed (its no-op), so its
 *     commitIndex is at least that of any earlier leader;
 *  2. records readIndex = its commitIndex (at least the no-op's index);
 *  3. confirms it is still leader by hearing from a majority in a round of
 *     AppendEntries sent *after* the read arrived (read_seq numbers rounds);
 *  4. serves the read once its applied index reaches readIndex.
 * Up to READ_ROUNDS rounds are in flight: a read that arrives while they
 * are starts the next one if there is room, and otherwise waits and shares
 * the next round with every read that arrives meanwhile, so under load one
 * round of empty AppendEntries confirms a whole batch of reads, and a read
 * rarely waits a whole round before its own starts. Acknowledgements are
 * monotonic (a follower's read_seq_acked only grows), so a round confirms
 * every earlier one too. Reads are served in arrival order.
 */
#include "core.h"

/* thesis §6.4.1: while a majority acknowledged us within the lease, no
 * other leader can have been elected (their voters ignore candidates while
 * they hear from us), so our commitIndex is current. The lease is shorter
 * than the election timeout by the clock drift bound; a transfer ends it at
 * once, since it lets the target win without waiting. */
bool readindex_lease_valid(const struct raft *r)
{
    /* LAB 5 BEGIN: is the leader's lease valid now (thesis §6.4.1)? Only
     * with r->cfg.lease_reads, as a leader not handing leadership over
     * (r->transfer_to), once an entry of its term is committed
     * (r->term_start_index). The lease runs from quorum_lease_start(r) (the
     * newest send time a majority acknowledged) for the election timeout
     * less the clock drift bound (r->cfg.clock_drift_bound_pct percent of
     * it): followers promise not to vote for an election timeout by their
     * own clocks, which may run fast.
     * STUB: (void)r; return false; */
    if (!r->cfg.lease_reads || r->role != RAFT_LEADER || r->transfer_to ||
        (r->commit_index < r->term_start_index && !r->cfg.unsafe_no_noop))
        return false;
    uint64_t lease =
        (uint64_t)r->cfg.election_timeout_ms * (100 - r->cfg.clock_drift_bound_pct) / 100;
    /* Planted bug (raftsim mutants): a lease that outlives the followers'
     * promise not to vote, so a new leader can commit while we still serve. */
    if (r->cfg.unsafe_lease_too_long)
        lease = 2 * (uint64_t)r->cfg.election_timeout_ms;
    uint64_t start = quorum_lease_start(r);
    return start != 0 && r->now_ms < start + lease;
    /* LAB 5 END */
}

int readindex_request(struct raft *r, uint64_t id)
{
    if (r->role != RAFT_LEADER)
        return RAFT_ENOTLEADER;
    if (r->reads_count == r->cfg.max_pending_reads)
        return RAFT_EBUSY; /* host contract 4 */
    /* LAB 5 BEGIN: a read arrives at the leader (thesis §6.4, steps 1 to 3
     * at the top of this file). Queue it (r->reads is a ring of
     * r->cfg.max_pending_reads, from r->reads_head, r->reads_count long)
     * with its id and its read index: our commitIndex, but at least
     * r->term_start_index (the no-op of our term must be committed first,
     * step 1). With a valid lease (readindex_lease_valid) it needs no round
     * (seq 0); otherwise it waits for the next round of heartbeats: seq =
     * r->read_seq + 1, and ask for that round (r->read_round_wanted).
     * STUB: (void)id; return RAFT_ENOTLEADER; */
    struct pending_read *rd =
        &r->reads[(r->reads_head + r->reads_count) % r->cfg.max_pending_reads];
    r->reads_count++;
    rd->id = id;
    rd->index = r->commit_index > r->term_start_index ? r->commit_index : r->term_start_index;
    /* Planted bug (raftsim mutants): without the no-op of step 1, the read
     * index is a commitIndex that may lag an earlier leader's. */
    if (r->cfg.unsafe_no_noop)
        rd->index = r->commit_index;
    /* Planted bug (raftsim mutants): skipping step 3 lets a deposed leader
     * that has not heard of its successor answer from its old state. */
    if (readindex_lease_valid(r) || r->cfg.unsafe_read_before_round) {
        rd->seq = 0; /* confirmed by the lease: no round needed */
        return RAFT_OK;
    }
    rd->seq = r->read_seq + 1;
    r->read_round_wanted = true;
    return RAFT_OK;
    /* LAB 5 END */
}

void readindex_release(struct raft *r)
{
    /* LAB 5 BEGIN: serve the reads that are safe now, in arrival order
     * (thesis §6.4, step 4). A read is confirmed when it needed no round
     * (seq 0) or a majority acknowledged its round or a later one
     * (quorum_read_acks(r, seq) >= quorum_size(r), seq <= r->read_seq);
     * it is served once the state machine has applied its read index
     * (r->applied_index): update_read_done(r, id, index, RAFT_OK), then
     * drop it from the ring. Stop at the first that is not ready.
     * STUB: (void)r; */
    unsigned need = quorum_size(r);
    while (r->reads_count > 0) {
        struct pending_read *rd = &r->reads[r->reads_head];
        bool confirmed =
            rd->seq == 0 || (rd->seq <= r->read_seq && quorum_read_acks(r, rd->seq) >= need);
        if (!confirmed || r->applied_index < rd->index)
            return;
        update_read_done(r, rd->id, rd->index, RAFT_OK);
        r->reads_head = (r->reads_head + 1) % r->cfg.max_pending_reads;
        r->reads_count--;
    }
    /* LAB 5 END */
}

void readindex_fail_all(struct raft *r)
{
    while (r->reads_count > 0) {
        struct pending_read *rd = &r->reads[r->reads_head];
        update_read_done(r, rd->id, rd->index, RAFT_ENOTLEADER);
        r->reads_head = (r->reads_head + 1) % r->cfg.max_pending_reads;
        r->reads_count--;
    }
    r->read_round_wanted = false;
}

enum { READ_ROUNDS = 4 };

/* Whether another round may start: fewer than READ_ROUNDS are unconfirmed. */
static bool round_room(const struct raft *r)
{
    return r->read_seq < READ_ROUNDS ||
           quorum_read_acks(r, r->read_seq - READ_ROUNDS + 1) >= quorum_size(r);
}

void readindex_end_of_step(struct raft *r)
{
    if (r->role != RAFT_LEADER)
        return;
    /* LAB 5 BEGIN: at the end of every step (thesis §6.4, step 3). If a
     * round was asked for and there is room for one (round_room), start it:
     * a new r->read_seq, carried by a heartbeat to every follower
     * (replication_broadcast(r, true)); followers echo it in their answers
     * (replication.c records it in s->read_seq_acked). Then serve what is
     * ready (readindex_release).
     * STUB: (void)round_room; */
    /* A bounded number of rounds in flight: reads that find no room wait
     * for the next round and share it. A round whose messages are lost is
     * confirmed by the heartbeats, which carry the current read_seq. */
    if (r->read_round_wanted && round_room(r)) {
        r->read_round_wanted = false;
        r->read_seq++;
        replication_broadcast(r, true);
    }
    readindex_release(r);
    /* LAB 5 END */
}
