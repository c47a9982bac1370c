/* raft.h — a pure Raft consensus core.
 *
 * The core is a state machine with no I/O, no clock and no threads. The host
 * (kvd's runtime, the simulator, a test) feeds it events with raft_step() and
 * gets back a struct raft_update saying what to persist, what to send, what
 * to apply and which reads are now safe. Everything the core decides comes
 * with a trace record naming the rule of the paper that caused it.
 *
 * References: "§5.3" is the extended Raft paper (Ongaro and Ousterhout,
 * 2014); "thesis §9.6" is Ongaro's dissertation "Consensus: Bridging Theory
 * and Practice" (2014).
 *
 * THE HOST CONTRACT (cited by number in the code and the tests)
 *
 *  1. Persist the hard state (term, vote) and the entries of an update
 *     durably, in the order the updates were returned, and only then send
 *     the messages marked `after_persist` (votes, append responses). Other
 *     messages (the leader's AppendEntries) go out at once: the leader writes
 *     its log in parallel with replication (thesis §10.2.1) and counts itself
 *     toward a commit only after the host reports RAFT_PERSISTED. Report it
 *     after every write that carried entries (the last one's index and term)
 *     or hard state (its current_term): a follower answers heartbeats at once
 *     only in a term the host reported durable.
 *  2. Apply the entries in `update.apply` in index order, exactly once, and
 *     record the applied index in the same storage transaction as the state
 *     change. Serve the reads in `update.reads` after applying that update's
 *     entries.
 *  3. Time is the number the host passes in every event (`now_ms`,
 *     monotonic); randomness comes from a PRNG seeded in the config. The same
 *     seed and the same events give the same behaviour, bit for bit.
 *  4. The core never blocks and never allocates without bound: inflight
 *     AppendEntries per follower, bytes per message, pending reads and
 *     uncommitted proposal bytes are all bounded, and a proposal beyond a
 *     bound is refused with RAFT_EBUSY.
 *
 * OWNERSHIP
 *
 *  Everything an update points to (entries, their data, messages, reads,
 *  trace records) belongs to the core and stays valid until the next call
 *  to raft_step() or raft_close() on the same instance. A host that persists
 *  on another thread copies what it needs first. Everything an event points
 *  to belongs to the caller and is copied by the core before raft_step()
 *  returns.
 */
#ifndef RAFT_H
#define RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t raft_id;    /* a server's id; 0 means "none" */
typedef uint64_t raft_term;  /* Raft §5.1: terms act as a logical clock */
typedef uint64_t raft_index; /* position in the log; the first entry is 1 */

/* Error codes. Every function returns 0 (RAFT_OK) or one of these. */
enum {
    RAFT_OK = 0,
    RAFT_ENOTLEADER = 1,  /* proposal or read on a non-leader; see update.leader_id */
    RAFT_EBUSY = 2,       /* a bound is reached (uncommitted bytes, pending reads); retry later */
    RAFT_EINVAL = 3,      /* bad argument or configuration */
    RAFT_ENOMEM = 4,      /* allocation failed; the instance is unchanged */
    RAFT_ETOOBIG = 5,     /* an entry is larger than config.max_entry_bytes */
    RAFT_ECORRUPT = 6,    /* persisted state handed to raft_init() is inconsistent */
    RAFT_EUNSAFE = 7,     /* an unsafe teaching knob was set without config.allow_unsafe */
    RAFT_ETRANSFER = 8,   /* a leadership transfer is in progress; retry at the new leader */
    RAFT_ECONFCHANGE = 9, /* a configuration change is pending, or this leader has not yet
                           * committed an entry of its term; retry shortly */
    RAFT_ECATCHUP = 10,   /* the learner has not caught up yet; retry shortly */
};

/* A short, static, human-readable message for an error code. */
/* splitmix64 (Steele, Lea and Flood): the next number of a sequence kept in
 * *state. The core's timeouts use it; so do the runtime and kvd, for
 * anything that needs numbers that differ, not secrets. */
uint64_t raft_splitmix64(uint64_t *state);

const char *raft_strerror(int err);

/* Raft §5.1: every server is in one of these roles. PRE_CANDIDATE is the
 * pre-vote phase of thesis §9.6, in which a server asks whether it could win
 * before it disturbs anyone by raising its term. */
enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRE_CANDIDATE = 1,
    RAFT_CANDIDATE = 2,
    RAFT_LEADER = 3,
};

const char *raft_role_name(enum raft_role role);

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0, /* a command for the state machine */
    RAFT_ENTRY_NOOP = 1,   /* appended by each new leader (Raft §8, thesis §6.4) */
    RAFT_ENTRY_CONF = 2,   /* a configuration change (thesis §4.1) */
};

/* One log entry. In an update, `data` points into the core's log storage. */
struct raft_entry {
    raft_term term;
    raft_index index;
    enum raft_entry_type type;
    const void *data;
    size_t len; /* bytes at data */
};

/* ------------------------------------------------------------------------
 * Messages (Figure 2). The host encodes them (proto/raft.proto) and hands
 * received ones back with RAFT_RECEIVE.
 * ------------------------------------------------------------------------ */

enum raft_message_type {
    RAFT_MSG_REQUEST_VOTE = 1,
    RAFT_MSG_REQUEST_VOTE_RESULT = 2,
    RAFT_MSG_APPEND_ENTRIES = 3,
    RAFT_MSG_APPEND_ENTRIES_RESULT = 4,
    RAFT_MSG_TIMEOUT_NOW = 5, /* thesis §3.10: start an election now (no body) */
    RAFT_MSG_INSTALL_SNAPSHOT = 6,
    RAFT_MSG_INSTALL_SNAPSHOT_RESULT = 7,
};

const char *raft_message_type_name(enum raft_message_type type);

struct raft_request_vote {
    raft_index last_log_index;
    raft_term last_log_term;
    bool pre_vote;            /* thesis §9.6: a question that changes nothing */
    bool leadership_transfer; /* thesis §3.10: ignore the leader lease */
};

struct raft_request_vote_result {
    bool vote_granted;
    bool pre_vote;
};

struct raft_append_entries {
    raft_index prev_log_index;
    raft_term prev_log_term;
    raft_index leader_commit;
    uint64_t read_seq; /* ReadIndex round this message confirms (thesis §6.4) */
    uint64_t sent_ms;  /* the leader's clock when sent, echoed back (lease reads) */
    const struct raft_entry *entries;
    size_t n_entries;
};

struct raft_append_entries_result {
    bool success;
    raft_index match_index;    /* success: last index known to match the leader */
    raft_index rejected_index; /* failure: the prev_log_index that did not match */
    raft_term conflict_term;   /* failure: our term at rejected_index, 0 if log too short */
    raft_index conflict_index; /* failure: first index of conflict_term, or last + 1 */
    raft_index last_log_index;
    uint64_t read_seq;     /* echoed from the AppendEntries */
    uint64_t echo_sent_ms; /* echoed from the AppendEntries */
};

/* One member of a configuration. */
struct raft_member {
    raft_id id;
    bool is_voter; /* false: a learner */
};

/* Raft §7 (Figure 13), in chunks. A snapshot is named by the last index and
 * term it covers; chunks go at increasing offsets. In a message the core
 * creates, data is NULL: the host reads len bytes at offset of the snapshot
 * named (last_index, last_term) -- its current one -- and sends them. */
struct raft_install_snapshot {
    raft_index last_index;
    raft_term last_term;
    uint64_t offset;
    const void *data;
    size_t len;
    bool done;                         /* the last chunk */
    uint64_t total_size;               /* bytes of the whole snapshot */
    uint64_t checksum;                 /* of the whole snapshot, as the host computes it */
    const struct raft_member *members; /* the configuration at last_index */
    size_t n_members;
};

struct raft_install_snapshot_result {
    raft_index last_index;
    raft_term last_term;
    uint64_t next_offset; /* resume here (a lost chunk, a new leader) */
    bool done;            /* installed, or not needed: the follower has last_index */
    bool rejected;        /* start again from offset 0 (checksum mismatch) */
};

struct raft_message {
    enum raft_message_type type;
    raft_id from;
    raft_id to;
    raft_term term;
    /* The host's number for this message, so that a trace can match its
     * receipt to its send (docs/trace.md, JSON lines). The core sets 0 in
     * what it sends and ignores it in what it receives; hosts that trace
     * number their sends and carry the number on the wire. */
    uint64_t trace_id;
    /* Host contract 1: send only once this update's persist is durable. */
    bool after_persist;
    union {
        struct raft_request_vote request_vote;
        struct raft_request_vote_result request_vote_result;
        struct raft_append_entries append_entries;
        struct raft_append_entries_result append_entries_result;
        struct raft_install_snapshot install_snapshot;
        struct raft_install_snapshot_result install_snapshot_result;
    };
};

/* ------------------------------------------------------------------------
 * Configuration and start-up
 * ------------------------------------------------------------------------ */

struct raft_config {
    raft_id id;    /* this server; must be one of the voters */
    uint64_t seed; /* PRNG seed for election timeouts (host contract 3) */

    /* Raft §5.2: a follower that hears from no leader for a random time in
     * [election_timeout_ms, 2 * election_timeout_ms) starts an election. */
    uint32_t election_timeout_ms;   /* default 1000 */
    uint32_t heartbeat_interval_ms; /* default 100; must be < election_timeout_ms */

    /* Flow control (host contract 4). */
    uint32_t max_append_entries;  /* entries per AppendEntries; default 1024 */
    size_t max_append_bytes;      /* payload bytes per AppendEntries; default 1 MiB */
    uint32_t max_inflight;        /* unacknowledged AppendEntries per follower; default 64 */
    size_t max_uncommitted_bytes; /* proposals refused beyond this; default 64 MiB */
    size_t max_entry_bytes;       /* largest entry accepted; default 8 MiB */
    uint32_t max_pending_reads;   /* ReadIndex requests waiting; default 4096 */

    /* Snapshots and compaction (§7). Once the log holds this many entries
     * (or bytes) beyond the last snapshot, an update asks the host to take
     * one; after RAFT_SNAPSHOT_TAKEN the log keeps only a trailing tail, for
     * followers slightly behind. 0 disables the threshold. */
    uint32_t snapshot_threshold_entries; /* default 8192 */
    size_t snapshot_threshold_bytes;     /* default 64 MiB */
    uint32_t snapshot_trailing_entries;  /* default 1024 */
    size_t snapshot_chunk_bytes;         /* InstallSnapshot chunk size; default 1 MiB */

    /* Lease reads (thesis §6.4.1), opt-in: the leader answers reads from its
     * own state, without a round of messages, while a majority has
     * acknowledged it within the last election timeout, shortened by the
     * clock drift bound. Needs check-quorum (followers then ignore votes
     * while they hear a leader, which is what makes the lease hold). Safe
     * only if no clock runs faster than the bound allows: the simulator's
     * clock skew shows what happens otherwise. Set it on every server: a
     * server with it also refuses votes for an election timeout after it
     * starts, since before a crash it may have extended a leader's lease. */
    bool lease_reads;
    uint32_t clock_drift_bound_pct; /* lease = election timeout * (100 - pct) / 100; default 10 */

    /* Teaching knobs. Each one breaks a guarantee on purpose; raft_init()
     * refuses them with RAFT_EUNSAFE unless allow_unsafe is also set. */
    bool allow_unsafe;
    bool prevote_off;      /* thesis §9.6 pre-vote disabled */
    bool check_quorum_off; /* thesis §6.2 check-quorum disabled */
    /* The Figure 8 bug: commit entries of earlier terms by counting replicas
     * (§5.4.2 forbids it), and skip the new leader's no-op, as first
     * implementations do; see docs/figure8.md. */
    bool unsafe_commit_old_term;
    /* The catalogue of planted bugs (raftsim mutants, docs/simulator.md),
     * each one rule of the paper left out; the simulator must catch every
     * one. Never set by kvd. */
    bool unsafe_vote_any_log;        /* §5.4.1: votes and pre-votes skip the up-to-date check */
    bool unsafe_quorum_minus_one;    /* §5.2: a "majority" one server short */
    bool unsafe_lease_too_long;      /* thesis §6.4.1: a lease twice the election timeout */
    bool unsafe_read_before_round;   /* thesis §6.4: ReadIndex served before its heartbeat round */
    bool unsafe_no_noop;             /* §8: no no-op at term start; reads trust commitIndex */
    bool unsafe_ack_before_persist;  /* Figure 2: acknowledge entries before they are durable */
    bool unsafe_snapshot_drops_term; /* §7: the log forgets the term of the snapshot's last entry */
};

/* Fill a config with the defaults above; the caller then sets id and seed. */
void raft_config_default(struct raft_config *cfg);

/* A snapshot the host holds: what it covers and how to check it. */
struct raft_snapshot_meta {
    raft_index index; /* last index covered */
    raft_term term;   /* its term */
    uint64_t size;
    uint64_t checksum;
    const struct raft_member *members; /* the configuration at index */
    size_t n_members;
};

/* What the host loaded from stable storage (or a bootstrap). The core copies
 * all of it; the caller keeps ownership. */
struct raft_persisted {
    raft_term current_term;
    raft_id voted_for;
    const struct raft_snapshot_meta *snapshot; /* the latest snapshot, or NULL */
    /* The log: entries first_index.., in order. first_index 0 means 1; when
     * the log was compacted, prev_term is the term of entry first_index - 1
     * (what the update's compact_term said). */
    raft_index first_index;
    raft_term prev_term;
    const struct raft_entry *entries;
    size_t n_entries;
    raft_index applied_index; /* host contract 2: what the state machine holds */
    /* The base configuration: the bootstrap one (or, later, the snapshot's).
     * Configuration entries in the log override it: the newest is in force.
     * A server joining an existing cluster starts with none at all (0 voters
     * and learners) and learns it from the leader. */
    const raft_id *voters;
    size_t n_voters;
    const raft_id *learners;
    size_t n_learners;
};

struct raft;

/* Create an instance. On success *out owns an instance to release with
 * raft_close(). Errors: RAFT_EINVAL (bad config, id not among the voters),
 * RAFT_EUNSAFE, RAFT_ECORRUPT (log terms decreasing or above current_term,
 * applied index beyond the log), RAFT_ENOMEM. */
int raft_init(struct raft **out, const struct raft_config *cfg, const struct raft_persisted *st);

/* Release an instance and everything it owns. NULL is allowed. */
void raft_close(struct raft *r);

/* ------------------------------------------------------------------------
 * Events and updates
 * ------------------------------------------------------------------------ */

enum raft_event_type {
    RAFT_TICK = 1,        /* time passed; run timers */
    RAFT_RECEIVE = 2,     /* a message arrived */
    RAFT_PERSISTED = 3,   /* the host's write up to (index, term) is durable */
    RAFT_PROPOSE = 4,     /* leader: append entries (type NORMAL) to the log */
    RAFT_READ = 5,        /* leader: a linearizable read barrier (thesis §6.4) */
    RAFT_TIMEOUT = 6,     /* act as if the election timeout fired now (tests, tools) */
    RAFT_TRANSFER = 7,    /* leader: hand leadership to another voter (thesis §3.10) */
    RAFT_CHANGE_CONF = 8, /* leader: add a learner, promote it, or remove a server (thesis §4) */
    RAFT_SNAPSHOT_TAKEN = 9, /* the host's snapshot at index is durable (after snapshot_wanted) */
    RAFT_SNAPSHOT_INSTALLED = 10, /* the host checked and installed the snapshot it received */
};

/* Single-server membership changes (thesis §4.1). A new server joins as a
 * learner (it replicates but counts in no quorum), is promoted to voter once
 * it has caught up, and any server can be removed, the leader included. */
enum raft_conf_op {
    RAFT_ADD_LEARNER = 1,
    RAFT_PROMOTE = 2,
    RAFT_REMOVE = 3,
};

struct raft_event {
    enum raft_event_type type;
    uint64_t now_ms; /* host contract 3: monotonic milliseconds */
    union {
        const struct raft_message *receive;
        struct {
            raft_index index;
            raft_term term;
            /* Nonzero: the write also made this current term durable (the
             * host reports it after a write that carried hard state, with
             * or without entries). A follower answers a heartbeat at once
             * only in a term that is durable (replication.c). */
            raft_term current_term;
        } persisted;
        struct {
            const struct raft_entry *entries; /* only data and len are read */
            size_t n_entries;
        } propose;
        struct {
            uint64_t id; /* the host's handle, returned in update.reads */
        } read;
        struct {
            raft_id to; /* a voter, or 0 for the most up-to-date one */
        } transfer;
        struct {
            enum raft_conf_op op;
            raft_id id;
        } change_conf;
        struct {
            raft_index index; /* the applied index the snapshot captures */
            uint64_t size;
            uint64_t checksum;
        } snapshot_taken;
        struct {
            raft_index index;
            raft_term term;
            bool ok; /* false: the checksum did not match; start over */
        } snapshot_installed;
    };
};

/* A read that became safe (status RAFT_OK: serve it after applying the
 * update's entries; its index is already applied) or failed (status
 * RAFT_ENOTLEADER: leadership was lost before it was confirmed). */
struct raft_read {
    uint64_t id;
    raft_index index;
    int status;
};

/* One decision, with the rule that caused it. */
struct raft_trace {
    const char *rule; /* static text starting with the citation, e.g.
                       * "§5.4.1 vote denied: candidate log not up-to-date" */
    raft_term term;   /* our term after the decision */
    enum raft_role role;
    raft_id peer;           /* the other server involved, 0 if none */
    raft_index index;       /* the log index involved, 0 if none */
    const char *value_name; /* what value is ("votes", "term"), NULL if none */
    uint64_t value;
    /* Election lines only (docs/trace.md, "Elections"); `vote` says which
     * of the parts below are set, 0 on every other line. What a vote rests
     * on is on the line itself: Raft §5.4.1 compares the candidate's last
     * entry with the voter's, and §5.2 counts grants among the voters of
     * the configuration in force. */
    unsigned vote;              /* RAFT_TRACE_* bits */
    raft_index cand_last_index; /* RAFT_TRACE_CANDIDATE_LOG: the candidate's */
    raft_term cand_last_term;   /*   last entry, as its RequestVote carries it */
    raft_index our_last_index;  /* RAFT_TRACE_OUR_LOG: the voter's last entry */
    raft_term our_last_term;
    const raft_id *voters;  /* RAFT_TRACE_VOTERS: the voters counted, */
    size_t n_voters;        /*   in configuration order, */
    const raft_id *granted; /*   and those of them that granted */
    size_t n_granted;       /*   (valid until the next raft_step) */
};

enum {
    RAFT_TRACE_CANDIDATE_LOG = 1, /* cand_last_index/term */
    RAFT_TRACE_OUR_LOG = 2,       /* our_last_index/term */
    RAFT_TRACE_VOTERS = 4,        /* voters and granted */
};

/* Format a trace record as one line (no newline): "§5.2 ... peer=2 index=7 votes=2",
 * then "cand_last=7/t2 our_last=5/t1" and "granted=1,3 voters=1,2,3" on
 * election lines. Returns what snprintf would. */
int raft_trace_format(const struct raft_trace *t, char *buf, size_t size);

struct raft_update {
    /* To persist (host contract 1). */
    bool hard_state_changed; /* persist current_term and voted_for */
    raft_term current_term;
    raft_id voted_for;
    raft_index truncate_from;         /* nonzero: first delete entries >= this */
    const struct raft_entry *entries; /* then append these (consecutive) */
    size_t n_entries;

    /* To send. */
    const struct raft_message *messages;
    size_t n_messages;

    /* To apply (host contract 2): committed and durable here, in order. */
    raft_index commit_index;
    const struct raft_entry *apply;
    size_t n_apply;

    /* Reads that became safe or failed (see struct raft_read). */
    const struct raft_read *reads;
    size_t n_reads;

    /* Role and leader, always filled; role_changed says they moved. */
    bool role_changed;
    enum raft_role role;
    raft_id leader_id; /* 0 if unknown; the hint after RAFT_ENOTLEADER */

    /* Snapshots (§7). */
    bool snapshot_wanted;      /* take a snapshot of the state machine as of */
    raft_index snapshot_index; /* ...this index (applied once this update is), then report
                                * RAFT_SNAPSHOT_TAKEN */
    raft_index compact_index;  /* nonzero: storage may drop entries <= this; */
    raft_term compact_term;    /* ...the log's prev_term from now on */
    /* A follower received a snapshot chunk: write it at offset into the
     * staging area for (index, term); when done, check the checksum,
     * install the snapshot (state machine and meta, atomically) and report
     * RAFT_SNAPSHOT_INSTALLED. data points into the RECEIVE event's message.
     * NULL if none. */
    const struct raft_install_snapshot *snapshot_chunk;

    /* RAFT_PROPOSE: the indices given to the proposed entries. */
    raft_index proposed_first;
    raft_index proposed_last;

    /* Every decision this step took. */
    const struct raft_trace *trace;
    size_t n_trace;
};

/* Feed one event. Fills *out (which the caller provides; its previous
 * contents are ignored) with what to do. Returns RAFT_OK, or for PROPOSE and
 * READ the reason the request was refused (RAFT_ENOTLEADER, RAFT_EBUSY,
 * RAFT_ETOOBIG); *out is valid in these cases, and a refused request changes
 * nothing. Two errors are fatal, and the host must close the instance (and
 * restart from storage, which Raft tolerates like any crash):
 * RAFT_ENOMEM, when memory ran out in the middle of a step; RAFT_ECORRUPT,
 * when raft_check_invariants() fails, or a peer asked this server to replace
 * a committed entry (etcd panics there too); the trace says which. */
int raft_step(struct raft *r, const struct raft_event *ev, struct raft_update *out);

/* ------------------------------------------------------------------------
 * Memory
 * ------------------------------------------------------------------------ */

/* Where the core gets its memory. Set it before creating any instance and
 * do not change it while one exists; NULL restores malloc/realloc/free. The
 * hooks are called only from raft_init(), raft_step() and raft_close(). */
struct raft_heap {
    void *data; /* passed to every hook */
    void *(*malloc)(void *data, size_t size);
    void *(*realloc)(void *data, void *ptr, size_t size);
    void (*free)(void *data, void *ptr);
};
void raft_heap_set(const struct raft_heap *heap);

/* ------------------------------------------------------------------------
 * Queries (for hosts, the simulator and tests; they do not change state)
 * ------------------------------------------------------------------------ */

raft_id raft_id_of(const struct raft *r);
enum raft_role raft_role_of(const struct raft *r);
raft_term raft_current_term(const struct raft *r);
raft_id raft_voted_for(const struct raft *r);
raft_id raft_leader(const struct raft *r);
raft_index raft_commit_index(const struct raft *r);
raft_index raft_applied_index(const struct raft *r); /* handed out in update.apply */
raft_index raft_last_index(const struct raft *r);
/* Term of the entry at index, or 0 when the index is not in the log. */
raft_term raft_term_at(const struct raft *r, raft_index index);
/* The entry at index into *e (data valid until the next raft_step); false if absent. */
bool raft_entry_at(const struct raft *r, raft_index index, struct raft_entry *e);

/* The latest snapshot's meta (members valid until the next raft_step);
 * false if there is none. */
bool raft_snapshot(const struct raft *r, struct raft_snapshot_meta *out);

/* The election timer (Raft §5.2), on the clock of the events (host contract
 * 3): when it was last reset and when it fires. Both 0 for a leader, which
 * has none, and before the first event. For viewers: a bar that fills. */
struct raft_election_timer {
    uint64_t now_ms; /* the clock of the last event */
    uint64_t started_ms;
    uint64_t deadline_ms;
};
void raft_election_timer(const struct raft *r, struct raft_election_timer *out);

/* Whether a lease read would be served now without a round (thesis §6.4.1). */
bool raft_lease_valid(const struct raft *r);

/* The configuration in force: one entry per member (struct raft_member). */
/* Copy up to max members into out; returns how many there are. */
size_t raft_configuration(const struct raft *r, struct raft_member *out, size_t max);
/* Index of the entry that set the configuration in force (0: the base one). */
raft_index raft_configuration_index(const struct raft *r);

/* Leader only: replication state of a peer. False if not leader or unknown peer. */
struct raft_peer_status {
    raft_id id;
    raft_index match_index;
    raft_index next_index;
    bool is_replicating; /* pipelining (true) or probing (false) */
    uint32_t inflight;
    bool is_voter;
    bool caught_up;        /* a learner that kept up for a whole round (thesis §4.2.1) */
    bool sending_snapshot; /* the entries it needs are compacted: it gets the snapshot (§7) */
};
bool raft_peer_status(const struct raft *r, raft_id id, struct raft_peer_status *st);

/* Check the per-server invariants listed in raft/core/invariants.c. Returns
 * NULL when they hold, or a static description of the first one broken.
 * raft_step() calls it after every step unless NDEBUG is defined. */
const char *raft_check_invariants(const struct raft *r);

#ifdef __cplusplus
}
#endif

#endif /* RAFT_H */
