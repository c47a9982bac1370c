/* core.h — the inside of a Raft instance, shared by the files of raft/core.
 *
 * Each .c file here holds one family of rules and is named after it:
 *   log.c          the in-memory log (a ring of entries over a ring of bytes)
 *   quorum.c       majority arithmetic over the voters
 *   progress.c     the leader's view of each follower (nextIndex, matchIndex, inflight)
 *   election.c     timeouts, pre-vote, RequestVote, role changes (§5.2, thesis §9.6)
 *   replication.c  AppendEntries on both sides (§5.3)
 *   commit.c       advancing commitIndex and handing entries out to apply (§5.4.2)
 *   readindex.c    linearizable reads without writing the log (thesis §6.4)
 *   transfer.c     leadership transfer (thesis §3.10)
 *   membership.c   single-server changes with learners (thesis §4)
 *   snapshot.c     snapshots, compaction and chunked InstallSnapshot (§7)
 *   update.c       building the struct raft_update a step returns
 *   raft.c         init, the event dispatcher ("check the term first"), queries
 *   invariants.c   raft_check_invariants()
 *   strings.c      error, role and trace text
 *   heap.c         the allocator hooks (raft_heap_set)
 * Only the C standard library is used (see `make lint`).
 */
#ifndef RAFT_CORE_H
#define RAFT_CORE_H

#include "../include/raft.h"

/* ------------------------------------------------------------------------
 * log.c
 * ------------------------------------------------------------------------ */

/* One slot of the log ring. The data is `len` bytes at `offset` in the byte
 * ring; it never wraps, so it can be handed out as one pointer. */
struct log_slot {
    raft_term term;
    size_t offset;
    uint32_t len;
    uint8_t type;
};

/* The log holds entries offset+1 .. offset+n. Slots live in a ring of
 * `slots_cap` (a power of two) starting at `head`; their data lives in a ring
 * of `bytes_cap` bytes. Both rings grow by doubling and never shrink, so in a
 * steady state (entries appended and later compacted at the same rate) the
 * log allocates nothing. */
struct raft_log {
    raft_index offset; /* index of the entry before the first held (0: none) */
    raft_term offset_term;
    size_t n;
    struct log_slot *slots;
    size_t slots_cap;
    size_t head;
    uint8_t *bytes;
    size_t bytes_cap;
    size_t bytes_used; /* sum of the entries' lengths */
    /* Lowest index appended or truncated since the invariants last looked
     * (0: none): they check only the changed tail, so a step costs the
     * same with a long log as with a short one. */
    raft_index dirty_from;
};

void log_init(struct raft_log *l);
void log_free(struct raft_log *l);
static inline raft_index log_last_index(const struct raft_log *l)
{
    return l->offset + l->n;
}
raft_term log_term_at(const struct raft_log *l, raft_index index); /* 0 if absent */
raft_term log_last_term(const struct raft_log *l);
/* Append one entry with a copy of its data. RAFT_ENOMEM leaves the log as it was. */
int log_append(struct raft_log *l, raft_term term, uint8_t type, const void *data, size_t len);
/* Delete the entries from index on (index > offset). */
void log_truncate(struct raft_log *l, raft_index index);
/* Delete the entries up to and including index (offset < index <= last). */
void log_compact(struct raft_log *l, raft_index index);
/* Delete every entry; the log continues after (index, term). */
void log_reset(struct raft_log *l, raft_index index, raft_term term);
/* Fill e with the entry at index (which must be held). */
void log_get(const struct raft_log *l, raft_index index, struct raft_entry *e);
size_t log_entry_len(const struct raft_log *l, raft_index index);
/* Largest index <= at most `at` whose term is <= term; offset if none. */
raft_index log_last_index_with_term_le(const struct raft_log *l, raft_index at, raft_term term);
/* First held index whose term is >= term. */
raft_index log_first_index_with_term_ge(const struct raft_log *l, raft_term term);

/* ------------------------------------------------------------------------
 * Servers and progress (progress.c, quorum.c)
 * ------------------------------------------------------------------------ */

enum progress_state {
    PROGRESS_PROBE = 0,     /* one AppendEntries at a time until nextIndex is right */
    PROGRESS_REPLICATE = 1, /* optimistic: send ahead, up to max_inflight messages */
    PROGRESS_SNAPSHOT = 2,  /* the entries it needs are compacted: send the snapshot */
};

/* One server of the configuration, and what we know of it. Our own entry
 * is always present; when the configuration does not include us (a server
 * that was removed, or is still joining) it has is_member false. */
struct raft_server {
    raft_id id;
    bool is_voter;
    bool is_member;

    /* Candidate: Raft §5.2 vote counting (also for pre-vote). */
    bool vote_responded;
    bool vote_granted;

    /* Leader: Figure 2 volatile state on leaders, plus flow control. */
    raft_index next_index;
    raft_index match_index;
    enum progress_state state;
    bool probe_sent;         /* PROBE: an AppendEntries is unanswered; wait */
    raft_index probe_last;   /* PROBE: the last index the probe carries (its answer's match) */
    bool recent_active;      /* heard from it since the last check-quorum (thesis §6.2) */
    uint64_t read_seq_acked; /* highest ReadIndex round it confirmed */
    uint64_t acked_sent_ms;  /* our clock when we sent the newest message it acknowledged */
    uint64_t match_sent_ms;  /* ... the newest message it acknowledged with a success */
    /* Ring of the last index sent in each unacknowledged AppendEntries. */
    raft_index *inflight;
    uint32_t inflight_head;
    uint32_t inflight_count;

    /* Leader, in PROGRESS_SNAPSHOT: the snapshot being sent, one chunk at
     * a time; snapshot_offset is what the follower has acknowledged. */
    raft_index snapshot_index;
    raft_term snapshot_term;
    uint64_t snapshot_offset;
    bool snapshot_chunk_sent;

    /* Leader, for learners: catch-up rounds (thesis §4.2.1). */
    raft_index round_end_index; /* the round ends when matchIndex reaches this */
    uint64_t round_start_ms;
    bool caught_up; /* the last round took less than an election timeout */
};

void progress_reset(struct raft *r, struct raft_server *s);
bool progress_inflight_full(const struct raft *r, const struct raft_server *s);
void progress_sent(struct raft *r, struct raft_server *s, raft_index last_sent);
void progress_acked(const struct raft *r, struct raft_server *s, raft_index index);
void progress_become_probe(struct raft_server *s, raft_index next_index);
void progress_become_replicate(struct raft_server *s);
bool progress_answers_probe(const struct raft_server *s, raft_index match_index);

unsigned quorum_size(const struct raft *r); /* majority of the voters */
/* The largest index that a majority of voters hold: the median of the match
 * indices, with our own durable index for ourselves (thesis §10.2.1). */
raft_index quorum_match_index(const struct raft *r);
/* Number of voters whose read_seq_acked >= seq, counting ourselves. */
unsigned quorum_read_acks(const struct raft *r, uint64_t seq);
uint64_t quorum_lease_start(const struct raft *r);
/* Number of voters that granted their vote, and that refused it. */
unsigned quorum_votes_granted(const struct raft *r);
unsigned quorum_votes_denied(const struct raft *r);

struct raft_server *server_find(struct raft *r, raft_id id);
const struct raft_server *server_find_const(const struct raft *r, raft_id id);

/* ------------------------------------------------------------------------
 * The instance
 * ------------------------------------------------------------------------ */

/* The latest snapshot: taken here or installed from a leader. */
struct snapshot {
    raft_index index; /* 0: none */
    raft_term term;
    uint64_t size;
    uint64_t checksum;
    struct raft_member *members;
    size_t n_members, members_cap;
};

/* A snapshot a follower is receiving (volatile: a crash starts it over). */
struct staging {
    raft_index index; /* 0: none */
    raft_term term;
    uint64_t next_offset;
    uint64_t total_size;
    uint64_t checksum;
    struct raft_member *members; /* its configuration, copied from the first chunk */
    size_t n_members;
    bool awaiting_install; /* every chunk is in: the host checks and installs */
    raft_id leader;
};

/* A read waiting for its leadership confirmation and for apply. */
struct pending_read {
    uint64_t id;
    raft_index index;
    uint64_t seq;
};

/* Where a message's entries come from; resolved to pointers when the step
 * ends (update.c), because appending may move the log's storage. */
struct msg_entries {
    raft_index first;
    size_t n;
};

struct raft {
    struct raft_config cfg;

    /* Figure 2, persistent state on all servers. */
    raft_term current_term;
    raft_id voted_for;
    struct raft_log log;

    /* Figure 2, volatile state on all servers. */
    raft_index commit_index;
    raft_index applied_index;   /* handed out to the host for applying */
    raft_index persisted_index; /* the host reported these durable */
    raft_term durable_term;     /* the newest currentTerm the host reported durable */
    enum raft_role role;
    raft_id leader_id;

    /* Time (host contract 3). */
    uint64_t now_ms;
    uint64_t election_deadline_ms;     /* follower/candidate: start an election then */
    uint64_t election_started_ms;      /* when that timer was last reset (for viewers) */
    uint64_t heartbeat_deadline_ms;    /* leader: next heartbeat round */
    uint64_t check_quorum_deadline_ms; /* leader: next check-quorum (thesis §6.2) */
    uint64_t leader_contact_ms;        /* last time a current leader spoke to us */
    uint64_t boot_lease_until_ms;      /* before this, act as if a leader were alive */
    uint64_t prng;

    /* The configuration in force (the newest in the log), and the base one
     * it falls back to when its entry is truncated away. */
    struct raft_server *servers;
    unsigned n_servers;
    struct raft_server *self;
    raft_index conf_index;
    struct raft_member *base_conf; /* the configuration as of the log's offset */
    size_t n_base_conf, base_conf_cap;

    /* Snapshots (§7). */
    struct snapshot snap;
    raft_index base_conf_index; /* the entry that set base_conf (0: bootstrap) */
    bool snapshot_asked;        /* an update asked for one; waiting for RAFT_SNAPSHOT_TAKEN */
    size_t applied_bytes_since_snapshot;
    struct staging staging;

    /* Leader state. */
    raft_index term_start_index;   /* our no-op entry of this term */
    raft_id transfer_to;           /* thesis §3.10: handing leadership to it; 0: none */
    uint64_t transfer_deadline_ms; /* give up then */
    bool transfer_timeout_now_sent;
    size_t uncommitted_bytes;
    uint64_t read_seq;          /* last ReadIndex round started */
    bool read_round_wanted;     /* a read is waiting for a round not yet started */
    struct pending_read *reads; /* ring of cfg.max_pending_reads */
    uint32_t reads_head;
    uint32_t reads_count;

    /* The update being built by the current step (update.c). */
    struct raft_update *out;
    bool hard_state_dirty;
    raft_index persist_from; /* 0: no entries to persist */
    raft_index truncate_from;
    raft_index apply_from;                     /* applied_index when the step began */
    const struct raft_install_snapshot *chunk; /* for update.snapshot_chunk */
    struct raft_install_snapshot chunk_out;
    raft_index compact_index;
    raft_term compact_term;
    bool role_dirty;
    struct raft_message *msgs;
    struct msg_entries *msg_ents;
    size_t n_msgs, msgs_cap, msg_ents_cap;
    struct raft_read *done_reads;
    size_t n_done_reads, done_reads_cap;
    struct raft_trace *trace;
    size_t n_trace, trace_cap;
    raft_id *trace_ids;   /* the id lists of election lines (voters, then granted) */
    size_t *trace_ids_at; /* per trace record: where its ids start in trace_ids */
    size_t n_trace_ids, trace_ids_cap, trace_ids_at_cap;
    struct raft_entry *ents; /* scratch for update.entries, apply and messages */
    size_t ents_cap;
    int oom;           /* an allocation failed while building the update */
    const char *fatal; /* set once a peer proved the cluster unsafe; see invariants.c */
};

/* update.c */
void update_begin(struct raft *r, struct raft_update *out);
int update_finish(struct raft *r);
struct raft_message *update_message(struct raft *r, enum raft_message_type type, raft_id to);
void update_message_entries(struct raft *r, struct raft_message *m, raft_index first, size_t n);
void update_trace(struct raft *r, const char *rule, raft_id peer, raft_index index,
                  const char *value_name, uint64_t value);
/* Election lines (docs/trace.md): the candidate's and our last entry on a
 * vote request's lines; the voters and who granted on the candidate's. They
 * complete the record update_trace() added last. */
void update_trace_vote_request(struct raft *r, const struct raft_message *m);
void update_trace_tally(struct raft *r);
/* Record `which` shows the term and role as they are now. A line that
 * names a change of role is emitted before the change (so it reads before
 * "became follower"), and stamped with the state after it (docs/trace.md). */
void update_trace_restamp(struct raft *r, size_t which);
void update_read_done(struct raft *r, uint64_t id, raft_index index, int status);
void update_persist_entries_from(struct raft *r, raft_index index);
void update_hard_state(struct raft *r);

/* election.c */
void election_reset_timer(struct raft *r);
void election_tick(struct raft *r);
void election_become_follower(struct raft *r, raft_term term, raft_id leader);
void election_receive_request_vote(struct raft *r, const struct raft_message *m);
/* A vote request from a stale term: denied with our term (Figure 2). */
void election_reject_stale_vote(struct raft *r, const struct raft_message *m);
void election_receive_request_vote_result(struct raft *r, const struct raft_message *m);
void election_start(struct raft *r, bool leadership_transfer);
bool election_in_leader_lease(const struct raft *r);
bool election_may_stand(const struct raft *r);

/* replication.c */
void replication_send_append(struct raft *r, struct raft_server *s, bool heartbeat);
void replication_broadcast(struct raft *r, bool heartbeat);
void replication_tick(struct raft *r);
void replication_receive_append(struct raft *r, const struct raft_message *m);
void replication_receive_append_result(struct raft *r, const struct raft_message *m);
void replication_reject_stale_append(struct raft *r, const struct raft_message *m);
int replication_propose(struct raft *r, const struct raft_event *ev);
int replication_append_noop(struct raft *r);
int replication_append(struct raft *r, enum raft_entry_type type, const void *data, size_t len);

/* commit.c */
void commit_maybe_advance(struct raft *r);
void commit_set(struct raft *r, raft_index index);
void commit_hand_out(struct raft *r);

/* membership.c */
int membership_set_base(struct raft *r, const struct raft_persisted *st);
int membership_apply(struct raft *r, const struct raft_member *members, size_t n, raft_index index);
int membership_apply_entry(struct raft *r, raft_index index);
void membership_after_truncate(struct raft *r);
int membership_change(struct raft *r, enum raft_conf_op op, raft_id id);
enum { RAFT_MAX_MEMBERS = 64 }; /* bound on a configuration, and on its encoding */
int membership_config_at(const struct raft *r, raft_index index,
                         struct raft_member out[RAFT_MAX_MEMBERS], size_t *n);
int membership_set_base_members(struct raft *r, const struct raft_member *m, size_t n);
int membership_recompute(struct raft *r, raft_index base_index);
void membership_leader_start(struct raft *r);
void membership_progress(struct raft *r, struct raft_server *s);
void membership_after_commit(struct raft *r);
void membership_free(struct raft *r);

/* snapshot.c */
int snapshot_set(struct snapshot *snap, const struct raft_snapshot_meta *meta);
void snapshot_free(struct raft *r);
void snapshot_maybe_ask(struct raft *r);
int snapshot_taken(struct raft *r, raft_index index, uint64_t size, uint64_t checksum);
int snapshot_installed(struct raft *r, raft_index index, raft_term term, bool ok);
bool snapshot_send(struct raft *r, struct raft_server *s, bool heartbeat);
void snapshot_receive(struct raft *r, const struct raft_message *m);
/* A chunk from a stale term: answered with our term (Figure 13, receiver 1). */
void snapshot_reject_stale(struct raft *r, const struct raft_message *m);
void snapshot_receive_result(struct raft *r, const struct raft_message *m);

/* transfer.c */
int transfer_start(struct raft *r, raft_id to);
void transfer_progress(struct raft *r, struct raft_server *s);
void transfer_tick(struct raft *r);
void transfer_receive_timeout_now(struct raft *r, const struct raft_message *m);

/* readindex.c */
int readindex_request(struct raft *r, uint64_t id);
void readindex_release(struct raft *r);
void readindex_fail_all(struct raft *r);
void readindex_end_of_step(struct raft *r);
bool readindex_lease_valid(const struct raft *r);

/* heap.c: the only allocation functions the core uses */
void *raft_malloc(size_t size);
void *raft_calloc(size_t n, size_t size);
void *raft_realloc(void *ptr, size_t size);
void raft_free(void *ptr);

/* raft.c */
uint64_t raft_random(struct raft *r);

#endif /* RAFT_CORE_H */
