/* snapshot.c — snapshots, log compaction and chunked InstallSnapshot (§7).
 *
 * The log cannot grow forever. Once it holds snapshot_threshold entries (or
 * bytes) beyond the last snapshot, an update asks the host to snapshot its
 * state machine at the applied index. When the host reports it durable
 * (RAFT_SNAPSHOT_TAKEN) the core drops the log up to a trailing tail, which
 * spares a slightly slow follower a whole snapshot.
 *
 * A follower that needs compacted entries gets the snapshot instead
 * (Figure 13), in chunks of snapshot_chunk_bytes, one in flight at a time;
 * the core tracks offsets, the host moves the bytes (it fills a chunk's data
 * when sending, and writes received chunks to a staging area). The follower
 * answers each chunk with the offset it wants next, so a transfer resumes
 * after a lost chunk or a new leader with the same snapshot, and starts over
 * for a different one. After the last chunk the host checks the checksum
 * and installs the snapshot atomically; only then does the follower switch
 * its log and tell the leader (RAFT_SNAPSHOT_INSTALLED). A snapshot no newer
 * than the follower's commit index is refused as stale: it has those
 * entries already.
 *
 *                 needs compacted entries          done
 *   PROBE/REPL  --------------------------> SNAPSHOT ----> PROBE
 */
#include "core.h"

#include <string.h>

int snapshot_set(struct snapshot *snap, const struct raft_snapshot_meta *meta)
{
    if (meta->n_members > snap->members_cap) { /* reused when it fits: no churn */
        struct raft_member *members = raft_calloc(meta->n_members, sizeof(*members));
        if (!members)
            return RAFT_ENOMEM;
        raft_free(snap->members);
        snap->members = members;
        snap->members_cap = meta->n_members;
    }
    if (meta->n_members)
        memcpy(snap->members, meta->members, meta->n_members * sizeof(*snap->members));
    snap->index = meta->index;
    snap->term = meta->term;
    snap->size = meta->size;
    snap->checksum = meta->checksum;
    snap->n_members = meta->n_members;
    return RAFT_OK;
}

void snapshot_free(struct raft *r)
{
    raft_free(r->snap.members);
    r->snap.members = NULL;
}

/* §7: ask for a snapshot once enough has been applied since the last one.
 * Called at the end of every step; cheap unless the entry count is near. */
void snapshot_maybe_ask(struct raft *r)
{
    if (r->snapshot_asked || r->applied_index <= r->snap.index)
        return;
    /* LAB 4 BEGIN: when to snapshot (§7). Once the entries applied since
     * the last snapshot reach r->cfg.snapshot_threshold_entries, or their
     * bytes (r->applied_bytes_since_snapshot) reach
     * r->cfg.snapshot_threshold_bytes (a threshold of 0 is off), ask the
     * host for a snapshot at the applied index: r->out->snapshot_wanted and
     * r->out->snapshot_index, and remember that you asked
     * (r->snapshot_asked) until it is taken. */
    raft_index since = r->applied_index - r->snap.index;
    bool by_entries =
        r->cfg.snapshot_threshold_entries && since >= r->cfg.snapshot_threshold_entries;
    bool by_bytes = r->cfg.snapshot_threshold_bytes &&
                    r->applied_bytes_since_snapshot >= r->cfg.snapshot_threshold_bytes;
    if (!by_entries && !by_bytes)
        return;
    r->snapshot_asked = true;
    r->out->snapshot_wanted = true;
    r->out->snapshot_index = r->applied_index;
    update_trace(r, "§7 log is long: asking the host for a snapshot", 0, r->applied_index,
                 "entries", since);
    /* LAB 4 END */
}

/* Planted bug (raftsim mutants): the log keeps the index of the snapshot's
 * last entry but forgets its term (§7: "last included term"). A server whose
 * log the snapshot emptied then reports last term 0 and finds every
 * candidate's log up-to-date (§5.4.1). Storage keeps the term, so a restart
 * hides the bug again. */
static void snapshot_maybe_drop_term(struct raft *r)
{
    if (r->cfg.unsafe_snapshot_drops_term)
        r->log.offset_term = 0;
}

int snapshot_taken(struct raft *r, raft_index index, uint64_t size, uint64_t checksum)
{
    /* Not while the leader's snapshot is being installed: it replaces the
     * state this one was taken of, and is newer (it is above commitIndex).
     * Accepting this one would have the host record its meta -- and a
     * compaction -- after the install's, so that storage would hold an
     * older snapshot than the log's first index needs (found by the kill -9
     * soak: the node could not start again). */
    if (r->staging.awaiting_install || index <= r->snap.index || index > r->applied_index ||
        index <= r->log.offset) {
        r->snapshot_asked = false;
        return RAFT_EINVAL;
    }
    /* LAB 4 BEGIN: the host's snapshot at `index` is durable
     * (RAFT_SNAPSHOT_TAKEN): record it and compact the log (§7, Figure 12).
     * The snapshot's meta is its last included index and term
     * (log_term_at), size, checksum and the configuration in force at index
     * (membership_config_at); snapshot_set() stores it in r->snap. Clear
     * r->snapshot_asked; r->applied_bytes_since_snapshot counts only what
     * was applied after index. Then drop the log up to index less
     * r->cfg.snapshot_trailing_entries (a tail spares a slow follower the
     * whole snapshot), if that is past r->log.offset: the configuration at
     * the new offset becomes the base (membership_set_base_members; and
     * r->base_conf_index = r->conf_index if that is at or below it),
     * log_compact(), and tell the host (r->compact_index, r->compact_term =
     * r->log.offset_term).
     * STUB: (void)size; (void)checksum; (void)snapshot_maybe_drop_term; return RAFT_OK; */
    struct raft_member members[RAFT_MAX_MEMBERS];
    size_t n;
    int rv = membership_config_at(r, index, members, &n);
    if (rv != RAFT_OK)
        return rv;
    struct raft_snapshot_meta meta = {index, log_term_at(&r->log, index), size, checksum, members,
                                      n};
    if ((rv = snapshot_set(&r->snap, &meta)) != RAFT_OK)
        return rv;
    r->snapshot_asked = false;
    r->applied_bytes_since_snapshot = 0;
    for (raft_index i = index + 1; i <= r->applied_index; i++)
        r->applied_bytes_since_snapshot += log_entry_len(&r->log, i);
    update_trace(r, "§7 snapshot taken", 0, index, NULL, 0);

    /* Keep a trailing tail for followers slightly behind; one further
     * behind gets the snapshot. */
    raft_index keep = r->cfg.snapshot_trailing_entries;
    raft_index to = index > keep ? index - keep : 0;
    if (to <= r->log.offset)
        return RAFT_OK;
    /* The configuration as of the new offset becomes the base to fall back to. */
    if ((rv = membership_config_at(r, to, members, &n)) != RAFT_OK ||
        (rv = membership_set_base_members(r, members, n)) != RAFT_OK)
        return rv;
    if (r->conf_index <= to)
        r->base_conf_index = r->conf_index;
    log_compact(&r->log, to);
    r->compact_index = to;
    r->compact_term = r->log.offset_term;
    snapshot_maybe_drop_term(r);
    update_trace(r, "§7 log compacted up to the trailing tail", 0, to, NULL, 0);
    return RAFT_OK;
    /* LAB 4 END */
}

/* ------------------------------------------------------------------------
 * Leader: sending
 * ------------------------------------------------------------------------ */

static void send_chunk(struct raft *r, struct raft_server *s)
{
    uint64_t left = r->snap.size - s->snapshot_offset;
    size_t len = left < r->cfg.snapshot_chunk_bytes ? (size_t)left : r->cfg.snapshot_chunk_bytes;
    struct raft_message *m = update_message(r, RAFT_MSG_INSTALL_SNAPSHOT, s->id);
    struct raft_install_snapshot *is = &m->install_snapshot;
    is->last_index = r->snap.index;
    is->last_term = r->snap.term;
    is->offset = s->snapshot_offset;
    is->data = NULL; /* the host fills it (raft.h) */
    is->len = len;
    is->done = s->snapshot_offset + len >= r->snap.size;
    is->total_size = r->snap.size;
    is->checksum = r->snap.checksum;
    is->members = r->snap.members;
    is->n_members = r->snap.n_members;
    s->snapshot_chunk_sent = true;
}

/* Called for a follower whose nextIndex is compacted away, or that is in
 * PROGRESS_SNAPSHOT. Returns false: never more than one chunk in flight. */
bool snapshot_send(struct raft *r, struct raft_server *s, bool heartbeat)
{
    if (s->state != PROGRESS_SNAPSHOT || s->snapshot_index != r->snap.index ||
        s->snapshot_term != r->snap.term) {
        if (s->state != PROGRESS_SNAPSHOT)
            update_trace(r, "§7 follower needs compacted entries: sending the snapshot", s->id,
                         r->snap.index, NULL, 0);
        s->state = PROGRESS_SNAPSHOT;
        s->next_index = r->snap.index + 1; /* where it will continue */
        if (s->match_index >= s->next_index)
            s->match_index = s->next_index - 1;
        s->snapshot_index = r->snap.index;
        s->snapshot_term = r->snap.term;
        s->snapshot_offset = 0;
        s->snapshot_chunk_sent = false;
        s->inflight_count = 0;
    }
    /* A heartbeat resends the chunk in flight: it may have been lost. */
    if (s->snapshot_chunk_sent && !heartbeat)
        return false;
    send_chunk(r, s);
    return false;
}

void snapshot_receive_result(struct raft *r, const struct raft_message *m)
{
    const struct raft_install_snapshot_result *res = &m->install_snapshot_result;
    struct raft_server *s = server_find(r, m->from);
    if (r->role != RAFT_LEADER || !s || s == r->self)
        return;
    s->recent_active = true;
    if (res->done) {
        /* Installed (or not needed): the follower holds everything up to the
         * snapshot's index, which is committed, so it matches ours. */
        raft_index match = res->last_index <= log_last_index(&r->log) ? res->last_index : 0;
        if (match > s->match_index)
            s->match_index = match;
        if (s->next_index <= s->match_index)
            s->next_index = s->match_index + 1;
        progress_acked(r, s, s->match_index); /* or the window stays full forever */
        if (s->state == PROGRESS_SNAPSHOT) {
            update_trace(r, "§7 snapshot installed on follower: replicating from it", s->id,
                         res->last_index, NULL, 0);
            progress_become_probe(s, s->match_index + 1);
        }
        commit_maybe_advance(r);
        replication_send_append(r, s, false);
        return;
    }
    if (s->state != PROGRESS_SNAPSHOT || res->last_index != s->snapshot_index ||
        res->last_term != s->snapshot_term)
        return; /* about another snapshot, or stale */
    uint64_t next;
    if (res->rejected) {
        update_trace(r, "§7 follower rejected the snapshot: starting over", s->id, res->last_index,
                     NULL, 0);
        next = 0;
    } else if (res->next_offset > r->snap.size ||
               (s->snapshot_chunk_sent && res->next_offset == s->snapshot_offset)) {
        /* Nonsense, or an answer to an older (duplicate) chunk while the
         * next one is in flight: acting on it would multiply messages. A
         * lost chunk is resent by the heartbeat. */
        return;
    } else {
        next = res->next_offset; /* the chunk in flight arrived, or resume at a gap */
    }
    s->snapshot_offset = next;
    s->snapshot_chunk_sent = false;
    if (next < r->snap.size)
        send_chunk(r, s);
}

/* ------------------------------------------------------------------------
 * Follower: receiving
 * ------------------------------------------------------------------------ */

static struct raft_message *reply(struct raft *r, raft_id to, raft_index index, raft_term term)
{
    struct raft_message *res = update_message(r, RAFT_MSG_INSTALL_SNAPSHOT_RESULT, to);
    res->after_persist = true; /* host contract 1: chunks are written first */
    res->install_snapshot_result.last_index = index;
    res->install_snapshot_result.last_term = term;
    return res;
}

/* Start staging a new snapshot, keeping a copy of its configuration. */
static int staging_start(struct raft *r, const struct raft_install_snapshot *is, raft_id leader)
{
    struct raft_member *members = NULL;
    if (is->n_members) {
        members = raft_calloc(is->n_members, sizeof(*members));
        if (!members)
            return RAFT_ENOMEM;
        memcpy(members, is->members, is->n_members * sizeof(*members));
    }
    raft_free(r->staging.members);
    r->staging = (struct staging){.index = is->last_index,
                                  .term = is->last_term,
                                  .total_size = is->total_size,
                                  .checksum = is->checksum,
                                  .members = members,
                                  .n_members = is->n_members,
                                  .leader = leader};
    return RAFT_OK;
}

void snapshot_reject_stale(struct raft *r, const struct raft_message *m)
{
    /* Figure 13, InstallSnapshot receiver 1: reply immediately if term <
     * currentTerm. The reply carries our term, and the stale leader steps
     * down on it (Figure 2, all servers); the chunk itself is dropped. */
    const struct raft_install_snapshot *is = &m->install_snapshot;
    update_trace(r, "§7 InstallSnapshot from a stale term rejected", m->from, is->last_index,
                 "term", m->term);
    struct raft_message *res = reply(r, m->from, is->last_index, is->last_term);
    res->after_persist = false; /* nothing of it was written */
    res->install_snapshot_result.rejected = true;
}

void snapshot_receive(struct raft *r, const struct raft_message *m)
{
    const struct raft_install_snapshot *is = &m->install_snapshot;
    if (r->role == RAFT_LEADER)
        return;
    if (r->role != RAFT_FOLLOWER || r->leader_id != m->from)
        election_become_follower(r, r->current_term, m->from);
    r->leader_contact_ms = r->now_ms;
    election_reset_timer(r);

    /* LAB 4 BEGIN: the InstallSnapshot receiver, a chunk at a time
     * (Figure 13, receiver rules 2 to 5; §7). A snapshot that ends at or
     * below our commitIndex is stale: answer done (we hold those entries).
     * While the host installs another one (r->staging.awaiting_install),
     * answer next_offset 0. A snapshot other than the one staged (index or
     * term differ) starts staging afresh (staging_start). A chunk that fits
     * (it starts at r->staging.next_offset, total sizes agree, it ends
     * within the snapshot, and `done` marks exactly the last one) is handed
     * to the host to write (r->chunk_out = *is; r->chunk = &r->chunk_out)
     * and next_offset moves past it; anything else (a duplicate, a gap) is
     * answered with the offset we want next. After the last chunk, set
     * r->staging.awaiting_install and answer nothing: the host checks and
     * installs it, then reports RAFT_SNAPSHOT_INSTALLED
     * (snapshot_installed()). Answers: reply(r, m->from, is->last_index,
     * is->last_term) and set its install_snapshot_result fields.
     * STUB: (void)is; (void)staging_start; */
    if (is->last_index <= r->commit_index) {
        /* §7: we hold every entry it covers already. */
        update_trace(r, "§7 snapshot refused as stale: its entries are committed here", m->from,
                     is->last_index, NULL, 0);
        reply(r, m->from, is->last_index, is->last_term)->install_snapshot_result.done = true;
        return;
    }
    if (r->staging.awaiting_install &&
        (r->staging.index != is->last_index || r->staging.term != is->last_term)) {
        /* The host is installing another snapshot: this one waits. */
        reply(r, m->from, is->last_index, is->last_term)->install_snapshot_result.next_offset = 0;
        return;
    }
    if (r->staging.index != is->last_index || r->staging.term != is->last_term) {
        if (staging_start(r, is, m->from) != RAFT_OK) {
            r->oom = 1;
            return;
        }
        update_trace(r, "§7 receiving a snapshot", m->from, is->last_index, "bytes",
                     is->total_size);
    }
    struct staging *st = &r->staging;
    st->leader = m->from;
    bool fits = is->offset == st->next_offset && is->total_size == st->total_size &&
                is->offset + is->len <= st->total_size &&
                is->done == (is->offset + is->len == st->total_size);
    if (st->awaiting_install || !fits) {
        /* A duplicate, a gap after a lost chunk, or a message that does not
         * add up: say where to resume. */
        reply(r, m->from, is->last_index, is->last_term)->install_snapshot_result.next_offset =
            st->next_offset;
        return;
    }
    r->chunk_out = *is;
    r->chunk = &r->chunk_out;
    st->next_offset += is->len;
    if (is->done) {
        st->awaiting_install = true; /* the answer waits for RAFT_SNAPSHOT_INSTALLED */
        return;
    }
    reply(r, m->from, is->last_index, is->last_term)->install_snapshot_result.next_offset =
        st->next_offset;
    /* LAB 4 END */
}

int snapshot_installed(struct raft *r, raft_index index, raft_term term, bool ok)
{
    struct staging *st = &r->staging;
    if (!st->awaiting_install || st->index != index || st->term != term)
        return RAFT_EINVAL;
    raft_id leader = st->leader;
    if (ok && index <= r->commit_index) {
        /* Nothing may move commit while installing (replication.c), so this
         * means a broken host or core: refuse loudly rather than rewind. */
        r->fatal = "6: State Machine Safety: a snapshot older than commitIndex was installed";
        return RAFT_ECORRUPT;
    }
    if (!ok) {
        update_trace(r, "§7 snapshot failed its checksum: asking for it again", leader, index, NULL,
                     0);
        raft_free(st->members);
        *st = (struct staging){0};
        reply(r, leader, index, term)->install_snapshot_result.rejected = true;
        return RAFT_OK;
    }
    struct raft_snapshot_meta meta = {index,        term,        st->total_size,
                                      st->checksum, st->members, st->n_members};
    int rv = snapshot_set(&r->snap, &meta);
    if (rv == RAFT_OK)
        rv = membership_set_base_members(r, st->members, st->n_members);
    raft_free(st->members);
    *st = (struct staging){0};
    if (rv != RAFT_OK)
        return rv;
    /* LAB 4 BEGIN: switch to the installed snapshot (Figure 13, receiver
     * rules 6 to 8). If our log holds the snapshot's last entry with its
     * term, keep what follows it (log_compact); otherwise discard the whole
     * log (log_reset; the host must drop its log too: r->truncate_from =
     * index + 1, r->persist_from = 0). Tell the host what was dropped
     * (r->compact_index, r->compact_term). The state machine is the
     * snapshot now: persisted, commit and applied indices move up to index
     * (r->apply_from = index; r->applied_bytes_since_snapshot = 0), and
     * the configuration is recomputed (membership_recompute). Then answer
     * the leader: done, next_offset = the snapshot's size.
     * STUB: (void)leader; return rv; */
    /* Figure 13, receiver 6 and 7: keep the entries after the snapshot if
     * the log agrees with it there; otherwise discard the whole log. */
    if (index <= log_last_index(&r->log) && log_term_at(&r->log, index) == term) {
        log_compact(&r->log, index);
    } else {
        log_reset(&r->log, index, term);
        r->truncate_from = index + 1;
        r->persist_from = 0;
    }
    r->compact_index = index;
    r->compact_term = term;
    snapshot_maybe_drop_term(r);
    if (r->persisted_index < index)
        r->persisted_index = index;
    if (r->persisted_index > log_last_index(&r->log))
        r->persisted_index = log_last_index(&r->log);
    if (r->commit_index < index)
        r->commit_index = index;
    r->applied_index = index; /* the state machine is the snapshot now */
    r->applied_bytes_since_snapshot = 0;
    r->apply_from = index;
    /* The configuration: the newest entry left in the log, or the snapshot's. */
    if ((rv = membership_recompute(r, index)) != RAFT_OK)
        return rv;
    update_trace(r, "§7 snapshot installed: log continues after it", leader, index, NULL, 0);
    struct raft_message *res = reply(r, leader, index, term);
    res->install_snapshot_result.done = true;
    res->install_snapshot_result.next_offset = meta.size;
    return rv;
    /* LAB 4 END */
}
