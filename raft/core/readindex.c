/* readindex.c — linearizable reads without writing the log (thesis §6.4).
 *
 * A read must see every write committed before it started. The leader:
 *  1. makes sure an entry of its own term is committed (its no-op), so its
 *     commitIndex is at least that of any earlier leader;
 *  2. records readIndex = its commitIndex (at least the no-op's index);
 *  3. confirms it is still leader by hearing from a majority in a round of
 *     AppendEntries sent *after* the read arrived (read_seq numbers rounds);
 *  4. serves the read once its applied index reaches readIndex.
 * At most one round is in flight; every read that arrives while it is
 * waits for the next one, so under load one round of empty AppendEntries
 * confirms a whole batch of reads. Reads are served in arrival order.
 */
#include "core.h"

int readindex_request(struct raft *r, uint64_t id)
{
    if (r->role != RAFT_LEADER)
        return RAFT_ENOTLEADER;
    if (r->reads_count == r->cfg.max_pending_reads)
        return RAFT_EBUSY; /* host contract 4 */
    struct pending_read *rd =
        &r->reads[(r->reads_head + r->reads_count) % r->cfg.max_pending_reads];
    r->reads_count++;
    rd->id = id;
    rd->index = r->commit_index > r->term_start_index ? r->commit_index : r->term_start_index;
    rd->seq = r->read_seq + 1;
    r->read_round_wanted = true;
    return RAFT_OK;
}

void readindex_release(struct raft *r)
{
    unsigned need = quorum_size(r);
    while (r->reads_count > 0) {
        struct pending_read *rd = &r->reads[r->reads_head];
        if (rd->seq > r->read_seq || quorum_read_acks(r, rd->seq) < need ||
            r->applied_index < rd->index)
            return;
        update_read_done(r, rd->id, rd->index, RAFT_OK);
        r->reads_head = (r->reads_head + 1) % r->cfg.max_pending_reads;
        r->reads_count--;
    }
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

/* Whether a majority has confirmed the last round started (or none was). */
static bool round_done(const struct raft *r)
{
    return r->read_seq == 0 || quorum_read_acks(r, r->read_seq) >= quorum_size(r);
}

void readindex_end_of_step(struct raft *r)
{
    if (r->role != RAFT_LEADER)
        return;
    /* One round in flight at a time: reads that arrive meanwhile all wait
     * for the next round and share it. A round whose messages are lost is
     * confirmed by the heartbeats, which carry the current read_seq. */
    if (r->read_round_wanted && round_done(r)) {
        r->read_round_wanted = false;
        r->read_seq++;
        replication_broadcast(r, true);
    }
    readindex_release(r);
}
