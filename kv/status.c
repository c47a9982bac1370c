/* status.c — /v1/status, INFO and /metrics. See server_internal.h. */
#include "server_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iolog.h"
#include "storage.h"

const double LAT_BOUNDS[LAT_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                        0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   5.0};

static const char *read_mode_name(enum kv_read_mode m)
{
    return m == KV_READ_LEASE ? "lease" : m == KV_READ_LOCAL ? "unsafe_local" : "linearizable";
}

/* A node stopped by a storage error still has a core that may believe it
 * leads (nothing tells the core); it serves nothing, and status must not
 * send anyone to it. */
bool node_failed(const struct kv_server *s)
{
    return raft_node_error(s->node) != NULL;
}

static bool leads(struct kv_server *s, struct shard *sh)
{
    return !node_failed(s) && raft_role_of(core(s, sh)) == RAFT_LEADER;
}

/* The group whose fields /v1/status shows at its top level: the node's
 * first (its only one with --shards 1). */
static struct shard *first_hosted(struct kv_server *s)
{
    for (uint32_t i = 0; i < s->n_shards; i++)
        if (s->shards[i].hosted)
            return &s->shards[i];
    return NULL;
}

void group_raft_fields(struct kv_server *s, struct shard *sh, json_t *o)
{
    struct raft *r = core(s, sh);
    json_object_set_new(o, "role",
                        json_string(node_failed(s) ? "failed" : raft_role_name(raft_role_of(r))));
    json_object_set_new(o, "term", json_integer((json_int_t)raft_current_term(r)));
    json_object_set_new(o, "leader", json_integer((json_int_t)raft_leader(r)));
    json_object_set_new(o, "commit", json_integer((json_int_t)raft_commit_index(r)));
    json_object_set_new(o, "applied", json_integer((json_int_t)kv_sm_applied(sh->sm)));
    json_object_set_new(o, "last_index", json_integer((json_int_t)raft_last_index(r)));
    json_object_set_new(o, "snapshot_index", json_integer((json_int_t)sh->snap_index));
    /* What the dashboard draws besides: the vote, and the election timer as
     * a bar that fills (none on a leader). */
    json_object_set_new(o, "vote", json_integer((json_int_t)raft_voted_for(r)));
    struct raft_election_timer et;
    raft_election_timer(r, &et);
    if (et.deadline_ms) {
        json_object_set_new(o, "election_elapsed_ms",
                            json_integer((json_int_t)(uv_now(s->loop) - et.started_ms)));
        json_object_set_new(o, "election_timeout_ms",
                            json_integer((json_int_t)(et.deadline_ms - et.started_ms)));
    }
}

/* A hosted group's state: role, term, indexes, content. */
static void group_fields(struct kv_server *s, struct shard *sh, json_t *o)
{
    group_raft_fields(s, sh, o);
    uint64_t hash, keys;
    if (kv_sm_hash(sh->sm, &hash, &keys) == KV_OK) {
        char hex[20];
        snprintf(hex, sizeof(hex), "%016" PRIx64, hash);
        json_object_set_new(o, "content_hash", json_string(hex));
        json_object_set_new(o, "keys", json_integer((json_int_t)keys));
    }
    uint64_t sessions, expired, clock;
    if (kv_sm_sessions(sh->sm, &sessions, &expired, &clock) == KV_OK) {
        json_object_set_new(o, "sessions", json_integer((json_int_t)sessions));
        json_object_set_new(o, "log_clock_ms", json_integer((json_int_t)clock));
    }
    /* The running hash the replicas compare (relay.c), and its alarm. */
    raft_index at;
    char hex[20];
    kv_sm_running_hash(sh->sm, &at, &hash);
    snprintf(hex, sizeof(hex), "%016" PRIx64, hash);
    json_object_set_new(o, "running_hash", json_string(hex));
    json_object_set_new(o, "running_hash_index", json_integer((json_int_t)at));
    json_object_set_new(o, "corrupt", json_boolean(sh->corrupt));
}

/* The alarms raised on this node: one per corrupt shard (etcd's CORRUPT
 * alarm). */
static json_t *alarms_json(struct kv_server *s)
{
    json_t *list = json_array();
    for (uint32_t i = 0; i < s->n_shards; i++) {
        const struct shard *sh = &s->shards[i];
        if (!sh->hosted || !sh->corrupt)
            continue;
        json_t *a = json_object();
        char hex[20];
        json_object_set_new(a, "alarm", json_string("corrupt"));
        json_object_set_new(a, "shard", json_integer(sh->index));
        json_object_set_new(a, "group", json_integer((json_int_t)sh->group));
        json_object_set_new(a, "index", json_integer((json_int_t)sh->corrupt_index));
        snprintf(hex, sizeof(hex), "%016" PRIx64, sh->corrupt_hash);
        json_object_set_new(a, "hash", json_string(hex));
        snprintf(hex, sizeof(hex), "%016" PRIx64, sh->expected_hash);
        json_object_set_new(a, "expected_hash", json_string(hex));
        json_object_set_new(a, "found", json_string(sh->corrupt_detail));
        json_object_set_new(a, "action",
                            json_string("this node serves no reads of the shard; replace its "
                                        "data and restart it (docs/kvd.md, 6a)"));
        json_array_append_new(list, a);
    }
    return list;
}

/* Every member's addresses; reachability; on the leader of sh, how far
 * each follower has replicated. */
static json_t *peers_json(struct kv_server *s, struct shard *sh)
{
    json_t *peers = json_array();
    bool leader = sh && leads(s, sh);
    struct raft *r = sh ? core(s, sh) : NULL;
    for (size_t i = 0; i < s->cfg.n_peers; i++) {
        const struct kv_peer *p = &s->cfg.peers[i];
        if (!members_has(s, p->id))
            continue; /* removed (its address stays known until the groups let it go) */
        json_t *po = json_object();
        json_object_set_new(po, "id", json_integer((json_int_t)p->id));
        char addr[96];
        snprintf(addr, sizeof(addr), "%s:%u", p->client_host, p->resp_port);
        json_object_set_new(po, "resp", json_string(addr));
        snprintf(addr, sizeof(addr), "%s:%u", p->client_host, p->http_port);
        json_object_set_new(po, "http", json_string(addr));
        snprintf(addr, sizeof(addr), "%s:%u", p->host, p->raft_port);
        json_object_set_new(po, "raft", json_string(addr));
        if (p->id != s->cfg.id) {
            /* Reachable: our connection is up and no fault rule drops all
             * we send it (the scripts' partitions in loopback mode). */
            bool up = transport_peer_connected(raft_node_transport(s->node), p->id);
            for (size_t k = 0; up && k < s->n_faults; k++) {
                const struct transport_fault *f = &s->faults[k];
                if ((f->peer == 0 || f->peer == p->id) && (f->directions & TRANSPORT_OUT) &&
                    f->message_type == 0 && f->drop_pct == 100)
                    up = false;
            }
            json_object_set_new(po, "reachable", json_boolean(up));
        }
        struct raft_peer_status ps;
        if (leader && p->id != s->cfg.id && raft_peer_status(r, p->id, &ps)) {
            json_object_set_new(po, "match_index", json_integer((json_int_t)ps.match_index));
            json_object_set_new(po, "next_index", json_integer((json_int_t)ps.next_index));
            json_object_set_new(po, "replicating", json_boolean(ps.is_replicating));
        } else if (leader && p->id == s->cfg.id) {
            json_object_set_new(po, "match_index", json_integer((json_int_t)raft_last_index(r)));
        }
        json_array_append_new(peers, po);
    }
    return peers;
}

json_t *kv_server_status(struct kv_server *s)
{
    struct raft_node_stats st;
    raft_node_stats(s->node, &st);
    const struct ring_map *m = ring_map(s->ring);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)s->cfg.id));
    char cid[20];
    snprintf(cid, sizeof(cid), "%016" PRIx64, s->cfg.cluster_id);
    json_object_set_new(o, "cluster_id", json_string(cid));
    struct shard *top = first_hosted(s);
    if (top)
        group_fields(s, top, o);
    else
        json_object_set_new(o, "role", json_string(node_failed(s) ? "failed" : "none"));
    json_object_set_new(o, "read_mode", json_string(read_mode_name(s->cfg.read_mode)));
    json_object_set_new(o, "fsyncs", json_integer((json_int_t)st.commits));
    json_object_set_new(o, "shards", json_integer(m->shards));
    json_object_set_new(o, "replicas", json_integer(m->replicas));
    json_object_set_new(o, "epoch", json_integer((json_int_t)m->epoch));
    int leading = 0;
    json_t *groups = json_array();
    for (uint32_t i = 0; i < s->n_shards; i++) {
        struct shard *sh = &s->shards[i];
        if (!sh->hosted)
            continue;
        leading += leads(s, sh);
        json_t *g = json_object();
        json_object_set_new(g, "shard", json_integer(sh->index));
        json_object_set_new(g, "group", json_integer((json_int_t)sh->group));
        group_fields(s, sh, g);
        json_array_append_new(groups, g);
    }
    json_object_set_new(o, "groups", groups);
    json_object_set_new(o, "leading", json_integer(leading));
    const char *why = raft_node_error(s->node);
    json_object_set_new(o, "error", why ? json_string(why) : json_null());
    json_object_set_new(o, "alarms", alarms_json(s));
    json_object_set_new(o, "peers", peers_json(s, top));
    return o;
}

/* ------------------------------------------------------------------------
 * /metrics: one table of families; values are emitted with their labels
 * (group="N" for what is per Raft group).
 * ------------------------------------------------------------------------ */

enum metric_id {
    M_TERM,
    M_IS_LEADER,
    M_LEADING,
    M_FAILED,
    M_ELECTIONS,
    M_LEADERSHIPS,
    M_COMMIT,
    M_APPLIED,
    M_LAST,
    M_FSYNCS,
    M_TXNS,
    M_TXN_BYTES,
    M_TXN_SECONDS,
    M_ENTRIES_PERSISTED,
    M_ENTRIES_PER_FSYNC,
    M_GROUPS_PER_FSYNC,
    M_ENTRIES_APPLIED,
    M_APPLY_COMMITS,
    M_REQUESTS,
    M_FORWARDED,
    M_RETRIES,
    M_REDIRECTS,
    M_FANOUTS,
    M_BALANCE_TRANSFERS,
    M_MEMBERS_EPOCH,
    M_MEMBERS,
    M_MOVES,
    M_MOVES_PLANNED,
    M_FRAMES,
    M_REFUSED,
    M_FAULTS,
    M_CLIENTS,
    M_CLIENTS_MAX,
    M_CLIENTS_CLOSED,
    M_SNAPSHOT_INDEX,
    M_SNAPSHOTS,
    M_SESSIONS,
    M_SESSIONS_EXPIRED,
    M_SESSIONS_RENEWED,
    M_KEYS,
    M_REQUEST_SECONDS,
    M_FSYNC_SECONDS,
    M_PEER_LAG,
    M_CORRUPT,
    M_HASH_CHECKS,
    M_TRACE_RECORDS,
    M_TRACE_DROPPED,
    M_TRACE_DROPPED_BYTES,
    M_TRACE_STREAMS,
    M_TRACE_QUEUED_MAX,
    M_COUNT
};

static const struct metric_def {
    const char *name, *type, *help;
} METRICS[M_COUNT] = {
    [M_TERM] = {"raftkv_term", "gauge", "Current Raft term."},
    [M_IS_LEADER] = {"raftkv_is_leader", "gauge", "1 if this node leads the group."},
    [M_LEADING] = {"raftkv_leaders", "gauge",
                   "Groups this node leads (spread evenly when there are several shards)."},
    [M_FAILED] = {"raftkv_failed", "gauge",
                  "1 if the node stopped taking work (a storage error: see /v1/status, error) "
                  "until it is restarted."},
    [M_ELECTIONS] = {"raftkv_elections_total", "counter",
                     "Elections this node started (as candidate)."},
    [M_LEADERSHIPS] = {"raftkv_leaderships_total", "counter", "Times this node became leader."},
    [M_COMMIT] = {"raftkv_commit_index", "gauge", "Highest log index known committed."},
    [M_APPLIED] = {"raftkv_applied_index", "gauge",
                   "Highest log index applied to the state machine."},
    [M_LAST] = {"raftkv_last_index", "gauge", "Last index in the log."},
    [M_FSYNCS] = {"raftkv_fsyncs_total", "counter",
                  "Storage commits (one fsync each, all groups)."},
    [M_TXNS] = {"raftkv_storage_transactions_total", "counter",
                "Storage transactions: thread=\"log\" (log writes, what acknowledgements wait "
                "for) and thread=\"apply\" (the state machine's)."},
    [M_TXN_BYTES] = {"raftkv_storage_bytes_written_total", "counter",
                     "Bytes the storage transactions' commits wrote (dirty pages and meta), "
                     "as Linux counts them for the thread."},
    [M_TXN_SECONDS] = {"raftkv_storage_seconds_total", "counter",
                       "Time in storage transactions: phase=\"build\" (log writes; applying "
                       "entries), phase=\"commit\" (LMDB writing pages and syncing)."},
    [M_ENTRIES_PERSISTED] = {"raftkv_entries_persisted_total", "counter",
                             "Log entries written by those commits."},
    [M_ENTRIES_PER_FSYNC] = {"raftkv_entries_per_fsync", "gauge",
                             "Average log entries per storage commit, all groups together."},
    [M_GROUPS_PER_FSYNC] = {"raftkv_updates_per_fsync", "gauge",
                            "Average updates of the cores (of any group) whose writes shared one "
                            "storage commit."},
    [M_ENTRIES_APPLIED] = {"raftkv_entries_applied_total", "counter",
                           "Entries applied to the state machine."},
    [M_APPLY_COMMITS] = {"raftkv_apply_commits_total", "counter",
                         "Commits that only applied entries: on the loop thread (--apply loop), "
                         "or on a pool thread alone or joined by the next writes while they "
                         "lingered (--apply-linger)."},
    [M_REQUESTS] = {"raftkv_requests_total", "counter", "Client commands by outcome."},
    [M_FORWARDED] = {"raftkv_forwarded_total", "counter",
                     "Commands sent to their shard's leader by this node."},
    [M_RETRIES] = {"raftkv_retries_total", "counter",
                   "Commands tried again (leader change, lost answer)."},
    [M_REDIRECTS] = {"raftkv_redirects_total", "counter",
                     "Forwarded requests sent again at once: the shard's new leader became known, "
                     "or the link to the node they went to broke."},
    [M_FANOUTS] = {"raftkv_split_commands_total", "counter",
                   "MGET, DEL and EXISTS commands split over several shards."},
    [M_BALANCE_TRANSFERS] = {"raftkv_balance_transfers_total", "counter",
                             "Leaderships this node handed to a shard's preferred leader."},
    [M_MEMBERS_EPOCH] = {"raftkv_members_epoch", "gauge",
                         "Epoch of the members table in force here (bumped by every change)."},
    [M_MEMBERS] = {"raftkv_members", "gauge", "Nodes in the members table."},
    [M_MOVES] = {"raftkv_moves_total", "counter",
                 "Moves of a group to its target replicas this node led, by state (started, "
                 "done)."},
    [M_MOVES_PLANNED] = {"raftkv_moves_planned", "gauge",
                         "Groups this node leads that wait for a move to end before theirs "
                         "starts (--rebalance-concurrency)."},
    [M_FRAMES] = {"raftkv_transport_frames_total", "counter", "Raft transport frames."},
    [M_REFUSED] = {"raftkv_transport_refused_total", "counter",
                   "Connections refused (foreign cluster or version, not a member, wrong cluster "
                   "secret, no handshake in time, oversized or malformed frames, a peer whose data "
                   "dir was replaced)."},
    [M_FAULTS] = {"raftkv_fault_injected_total", "counter", "Messages the fault filter acted on."},
    [M_CLIENTS] = {"raftkv_clients", "gauge", "Client connections open (RESP and HTTP)."},
    [M_CLIENTS_MAX] = {"raftkv_clients_max", "gauge", "The --max-clients limit."},
    [M_CLIENTS_CLOSED] = {"raftkv_clients_closed_total", "counter",
                          "Client connections refused or closed by a limit: max_clients, "
                          "timeout (a partial request held too long), output (replies not "
                          "read), too_large (a request over --max-request-bytes)."},
    [M_SNAPSHOT_INDEX] = {"raftkv_snapshot_index", "gauge", "Index of the current snapshot."},
    [M_SNAPSHOTS] = {"raftkv_snapshots_total", "counter",
                     "Snapshots taken here or installed from the leader."},
    [M_SESSIONS] = {"raftkv_sessions", "gauge",
                    "Client sessions in the state machine (thesis 6.3)."},
    [M_SESSIONS_EXPIRED] = {"raftkv_sessions_expired_total", "counter",
                            "Sessions this node's state machine expired."},
    [M_SESSIONS_RENEWED] = {"raftkv_sessions_renewed_total", "counter",
                            "Commands of a connection whose session had expired, run again as "
                            "seq 1 of a new one."},
    [M_KEYS] = {"raftkv_keys", "gauge", "Keys in the group's state machine."},
    [M_REQUEST_SECONDS] = {"raftkv_request_seconds", "histogram",
                           "Client command latency at this node."},
    [M_FSYNC_SECONDS] = {"raftkv_fsync_seconds", "histogram", "Duration of storage commits."},
    [M_PEER_LAG] = {"raftkv_peer_lag_entries", "gauge",
                    "How far each follower's log is behind the leader's."},
    [M_CORRUPT] = {"raftkv_corrupt", "gauge",
                   "1 if this node's copy of the group differs from the majority's (content "
                   "hash check): it serves no reads of it until restarted with good data."},
    [M_HASH_CHECKS] = {"raftkv_hash_checks_total", "counter",
                       "Content hashes this node compared with another replica's at the same "
                       "applied index, by result."},
    [M_TRACE_RECORDS] = {"raftkv_trace_records_total", "counter",
                         "JSON trace records made (--trace-file, GET /v1/events)."},
    [M_TRACE_DROPPED] = {"raftkv_trace_stream_dropped_total", "counter",
                         "Trace records not sent to a /v1/events reader that was too slow (it is "
                         "told how many)."},
    [M_TRACE_DROPPED_BYTES] = {"raftkv_trace_stream_dropped_bytes_total", "counter",
                               "Bytes of those records: what the node did not buffer."},
    [M_TRACE_STREAMS] = {"raftkv_trace_streams", "gauge", "Open /v1/events streams."},
    [M_TRACE_QUEUED_MAX] = {"raftkv_trace_stream_queued_bytes_max", "gauge",
                            "The most bytes any /v1/events stream has had waiting unsent (each "
                            "is bounded)."},
};

struct out {
    void (*emit)(void *arg, const char *text);
    void *arg;
};

static void family(struct out *o, enum metric_id id)
{
    char line[512];
    snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n", METRICS[id].name, METRICS[id].help,
             METRICS[id].name, METRICS[id].type);
    o->emit(o->arg, line);
}

/* One sample; labels without braces ("" for none). */
static void sample(struct out *o, enum metric_id id, const char *labels, uint64_t v)
{
    char line[256];
    snprintf(line, sizeof(line), "%s%s%s%s %" PRIu64 "\n", METRICS[id].name, *labels ? "{" : "",
             labels, *labels ? "}" : "", v);
    o->emit(o->arg, line);
}

static void sample_real(struct out *o, enum metric_id id, const char *labels, double v)
{
    char line[256];
    snprintf(line, sizeof(line), "%s%s%s%s %.3f\n", METRICS[id].name, *labels ? "{" : "", labels,
             *labels ? "}" : "", v);
    o->emit(o->arg, line);
}

/* A family with one unlabelled sample. */
static void single(struct out *o, enum metric_id id, uint64_t v)
{
    family(o, id);
    sample(o, id, "", v);
}

static void histogram_samples(struct out *o, enum metric_id id, const char *labels,
                              const struct histogram *h)
{
    char line[256];
    const char *name = METRICS[id].name;
    uint64_t cum = 0;
    for (size_t k = 0; k <= LAT_BUCKETS; k++) {
        cum += h->buckets[k];
        char le[32];
        if (k < LAT_BUCKETS)
            snprintf(le, sizeof(le), "%g", LAT_BOUNDS[k]);
        else
            snprintf(le, sizeof(le), "+Inf");
        snprintf(line, sizeof(line), "%s_bucket{%s,le=\"%s\"} %" PRIu64 "\n", name, labels, le,
                 cum);
        o->emit(o->arg, line);
    }
    snprintf(line, sizeof(line), "%s_sum{%s} %.6f\n%s_count{%s} %" PRIu64 "\n", name, labels,
             h->sum, name, labels, h->count);
    o->emit(o->arg, line);
}

/* Per-group families: one sample per hosted group. */
typedef uint64_t (*group_value)(struct kv_server *s, struct shard *sh);

static uint64_t g_term(struct kv_server *s, struct shard *sh)
{
    return raft_current_term(core(s, sh));
}
static uint64_t g_is_leader(struct kv_server *s, struct shard *sh)
{
    return leads(s, sh);
}
static uint64_t g_elections(struct kv_server *s, struct shard *sh)
{
    (void)s;
    return sh->became_candidate;
}
static uint64_t g_leaderships(struct kv_server *s, struct shard *sh)
{
    (void)s;
    return sh->became_leader;
}
static uint64_t g_commit(struct kv_server *s, struct shard *sh)
{
    return raft_commit_index(core(s, sh));
}
static uint64_t g_applied(struct kv_server *s, struct shard *sh)
{
    (void)s;
    return kv_sm_applied(sh->sm);
}
static uint64_t g_last(struct kv_server *s, struct shard *sh)
{
    return raft_last_index(core(s, sh));
}
static uint64_t g_snapshot_index(struct kv_server *s, struct shard *sh)
{
    (void)s;
    return sh->snap_index;
}
static uint64_t g_keys(struct kv_server *s, struct shard *sh)
{
    (void)s;
    uint64_t keys = 0, bytes;
    return kv_sm_stat(sh->sm, &keys, &bytes) == KV_OK ? keys : 0;
}
static uint64_t g_sessions(struct kv_server *s, struct shard *sh)
{
    (void)s;
    uint64_t n = 0, expired, clock;
    return kv_sm_sessions(sh->sm, &n, &expired, &clock) == KV_OK ? n : 0;
}
static uint64_t g_sessions_expired(struct kv_server *s, struct shard *sh)
{
    (void)s;
    uint64_t n, expired = 0, clock;
    return kv_sm_sessions(sh->sm, &n, &expired, &clock) == KV_OK ? expired : 0;
}

static uint64_t g_corrupt(struct kv_server *s, struct shard *sh)
{
    (void)s;
    return sh->corrupt;
}

static void per_group(struct out *o, struct kv_server *s, enum metric_id id, group_value f)
{
    family(o, id);
    for (uint32_t i = 0; i < s->n_shards; i++) {
        struct shard *sh = &s->shards[i];
        if (!sh->hosted)
            continue;
        char labels[48];
        snprintf(labels, sizeof(labels), "group=\"%" PRIu64 "\"", sh->group);
        sample(o, id, labels, f(s, sh));
    }
}

static void raft_metrics(struct out *o, struct kv_server *s)
{
    static const struct {
        enum metric_id id;
        group_value f;
    } groups[] = {{M_TERM, g_term},
                  {M_IS_LEADER, g_is_leader},
                  {M_ELECTIONS, g_elections},
                  {M_LEADERSHIPS, g_leaderships},
                  {M_COMMIT, g_commit},
                  {M_APPLIED, g_applied},
                  {M_LAST, g_last},
                  {M_SNAPSHOT_INDEX, g_snapshot_index},
                  {M_KEYS, g_keys},
                  {M_SESSIONS, g_sessions},
                  {M_SESSIONS_EXPIRED, g_sessions_expired},
                  {M_CORRUPT, g_corrupt}};
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
        per_group(o, s, groups[i].id, groups[i].f);
    uint64_t leading = 0, taken = 0, installed = 0;
    for (uint32_t i = 0; i < s->n_shards; i++)
        if (s->shards[i].hosted) {
            leading += leads(s, &s->shards[i]);
            taken += s->shards[i].snapshots_taken;
            installed += s->shards[i].snapshots_installed;
        }
    single(o, M_LEADING, leading);
    single(o, M_FAILED, node_failed(s));
    family(o, M_SNAPSHOTS);
    sample(o, M_SNAPSHOTS, "how=\"taken\"", taken);
    sample(o, M_SNAPSHOTS, "how=\"installed\"", installed);
    single(o, M_BALANCE_TRANSFERS, s->transfers_balance);
    single(o, M_MEMBERS_EPOCH, s->table ? s->table->epoch : 0);
    single(o, M_MEMBERS, s->table ? s->table->n_nodes : 0);
    family(o, M_MOVES);
    sample(o, M_MOVES, "state=\"started\"", s->moves_started);
    sample(o, M_MOVES, "state=\"done\"", s->moves_done);
    single(o, M_MOVES_PLANNED, s->moves_planned);
    family(o, M_HASH_CHECKS);
    sample(o, M_HASH_CHECKS, "result=\"ok\"", s->hash_checks_ok);
    sample(o, M_HASH_CHECKS, "result=\"mismatch\"", s->hash_checks_mismatch);
}

static void storage_metrics(struct out *o, struct kv_server *s)
{
    struct raft_node_stats st;
    raft_node_stats(s->node, &st);
    single(o, M_FSYNCS, st.commits);
    {
        static const char *const thread[2] = {"log", "apply"};
        char line[320];
        family(o, M_TXNS);
        for (int k = 0; k < 2; k++) {
            snprintf(line, sizeof(line), "thread=\"%s\"", thread[k]);
            sample(o, M_TXNS, line, st.txn[k].txns);
        }
        family(o, M_TXN_BYTES);
        for (int k = 0; k < 2; k++) {
            snprintf(line, sizeof(line), "thread=\"%s\"", thread[k]);
            sample(o, M_TXN_BYTES, line, st.txn[k].bytes_written);
        }
        family(o, M_TXN_SECONDS);
        for (int k = 0; k < 2; k++) {
            snprintf(line, sizeof(line),
                     "raftkv_storage_seconds_total{thread=\"%s\",phase=\"build\"} %.6f\n"
                     "raftkv_storage_seconds_total{thread=\"%s\",phase=\"commit\"} %.6f\n",
                     thread[k], st.txn[k].build_seconds, thread[k], st.txn[k].sync_seconds);
            o->emit(o->arg, line);
        }
    }
    single(o, M_ENTRIES_PERSISTED, st.entries);
    family(o, M_ENTRIES_PER_FSYNC);
    sample_real(o, M_ENTRIES_PER_FSYNC, "",
                st.commits ? (double)st.entries / (double)st.commits : 0.0);
    family(o, M_GROUPS_PER_FSYNC);
    sample_real(o, M_GROUPS_PER_FSYNC, "",
                st.commits ? (double)st.writes / (double)st.commits : 0.0);
    single(o, M_ENTRIES_APPLIED, st.applied);
    family(o, M_APPLY_COMMITS);
    sample(o, M_APPLY_COMMITS, "how=\"alone\"", st.apply_only);
    sample(o, M_APPLY_COMMITS, "how=\"joined\"", st.joined);
    sample(o, M_APPLY_COMMITS, "how=\"on_loop\"", st.on_loop);
    family(o, M_FSYNC_SECONDS);
    char line[256];
    uint64_t cum = 0;
    for (size_t k = 0; k <= RAFT_NODE_COMMIT_BUCKETS; k++) {
        cum += st.commit_buckets[k];
        if (k < RAFT_NODE_COMMIT_BUCKETS)
            snprintf(line, sizeof(line), "raftkv_fsync_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                     RAFT_NODE_COMMIT_BOUNDS[k], cum);
        else
            snprintf(line, sizeof(line),
                     "raftkv_fsync_seconds_bucket{le=\"+Inf\"} %" PRIu64
                     "\nraftkv_fsync_seconds_sum %.6f\nraftkv_fsync_seconds_count %" PRIu64 "\n",
                     cum, st.commit_seconds, st.commits);
        o->emit(o->arg, line);
    }
}

static void client_metrics(struct out *o, struct kv_server *s)
{
    family(o, M_REQUESTS);
    sample(o, M_REQUESTS, "outcome=\"ok\"", s->ops_ok);
    sample(o, M_REQUESTS, "outcome=\"timeout\"", s->ops_timeout);
    sample(o, M_REQUESTS, "outcome=\"unavailable\"", s->ops_unavailable);
    sample(o, M_REQUESTS, "outcome=\"bad\"", s->ops_bad);
    single(o, M_FORWARDED, s->forwarded);
    single(o, M_RETRIES, s->retried);
    single(o, M_REDIRECTS, s->redirected);
    single(o, M_FANOUTS, s->fanouts);
    single(o, M_SESSIONS_RENEWED, s->sessions_renewed);
    family(o, M_REQUEST_SECONDS);
    histogram_samples(o, M_REQUEST_SECONDS, "kind=\"write\"", &s->lat_write);
    histogram_samples(o, M_REQUEST_SECONDS, "kind=\"read\"", &s->lat_read);
    const struct tcp_limits *lim = s->cfg.limits;
    if (lim) {
        single(o, M_CLIENTS, lim->clients);
        single(o, M_CLIENTS_MAX, lim->max_clients);
        family(o, M_CLIENTS_CLOSED);
        sample(o, M_CLIENTS_CLOSED, "why=\"max_clients\"", lim->refused);
        sample(o, M_CLIENTS_CLOSED, "why=\"timeout\"", lim->timed_out);
        sample(o, M_CLIENTS_CLOSED, "why=\"output\"", lim->output_closed);
        sample(o, M_CLIENTS_CLOSED, "why=\"too_large\"", lim->too_large);
    }
}

static void transport_metrics(struct out *o, struct kv_server *s)
{
    struct transport_stats ts;
    transport_get_stats(raft_node_transport(s->node), &ts);
    family(o, M_FRAMES);
    sample(o, M_FRAMES, "direction=\"out\"", ts.frames_sent);
    sample(o, M_FRAMES, "direction=\"in\"", ts.frames_received);
    family(o, M_REFUSED);
    sample(o, M_REFUSED, "why=\"hello\"", ts.refused_hellos);
    sample(o, M_REFUSED, "why=\"member\"", ts.refused_members);
    sample(o, M_REFUSED, "why=\"auth\"", ts.refused_auth);
    sample(o, M_REFUSED, "why=\"handshake_timeout\"", ts.handshake_timeouts);
    sample(o, M_REFUSED, "why=\"oversized\"", ts.oversized_frames);
    sample(o, M_REFUSED, "why=\"malformed\"", ts.malformed_frames);
    sample(o, M_REFUSED, "why=\"incarnation\"", ts.refused_incarnation);
    family(o, M_FAULTS);
    sample(o, M_FAULTS, "action=\"drop\"", ts.fault_dropped);
    sample(o, M_FAULTS, "action=\"duplicate\"", ts.fault_duplicated);
    sample(o, M_FAULTS, "action=\"delay\"", ts.fault_delayed);
}

/* On the leader of each group: how far behind each follower is. */
static void lag_metrics(struct out *o, struct kv_server *s)
{
    bool header = false;
    for (uint32_t i = 0; i < s->n_shards; i++) {
        struct shard *sh = &s->shards[i];
        if (!sh->hosted || !leads(s, sh))
            continue;
        struct raft *r = core(s, sh);
        for (size_t k = 0; k < s->cfg.n_peers; k++) {
            struct raft_peer_status ps;
            raft_id id = s->cfg.peers[k].id;
            if (id == s->cfg.id || !raft_peer_status(r, id, &ps))
                continue;
            if (!header)
                family(o, M_PEER_LAG);
            header = true;
            raft_index last = raft_last_index(r);
            char labels[80];
            snprintf(labels, sizeof(labels), "group=\"%" PRIu64 "\",peer=\"%" PRIu64 "\"",
                     sh->group, id);
            sample(o, M_PEER_LAG, labels, last > ps.match_index ? last - ps.match_index : 0);
        }
    }
}

void kv_server_metrics(struct kv_server *s, void (*emit)(void *arg, const char *text), void *arg)
{
    struct out o = {emit, arg};
    raft_metrics(&o, s);
    storage_metrics(&o, s);
    client_metrics(&o, s);
    transport_metrics(&o, s);
    lag_metrics(&o, s);
    const struct kv_trace *t = &s->trace;
    single(&o, M_TRACE_RECORDS, t->records);
    single(&o, M_TRACE_DROPPED, t->sub_dropped);
    single(&o, M_TRACE_DROPPED_BYTES, t->sub_dropped_bytes);
    single(&o, M_TRACE_STREAMS, t->n_subs);
    single(&o, M_TRACE_QUEUED_MAX, t->queued_max);
}
