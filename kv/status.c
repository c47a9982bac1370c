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
static bool node_failed(const struct kv_server *s)
{
    return raft_node_error(s->node) != NULL;
}

static const char *role_name(struct kv_server *s)
{
    return node_failed(s) ? "failed" : raft_role_name(raft_role_of(core(s)));
}

static bool leads(struct kv_server *s)
{
    return !node_failed(s) && raft_role_of(core(s)) == RAFT_LEADER;
}

json_t *kv_server_status(struct kv_server *s)
{
    struct raft *r = core(s);
    struct raft_node_stats st;
    raft_node_stats(s->node, &st);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)s->cfg.id));
    char cid[20];
    snprintf(cid, sizeof(cid), "%016" PRIx64, s->cfg.cluster_id);
    json_object_set_new(o, "cluster_id", json_string(cid));
    json_object_set_new(o, "role", json_string(role_name(s)));
    json_object_set_new(o, "term", json_integer((json_int_t)raft_current_term(r)));
    json_object_set_new(o, "leader", json_integer((json_int_t)raft_leader(r)));
    json_object_set_new(o, "commit", json_integer((json_int_t)raft_commit_index(r)));
    json_object_set_new(o, "applied", json_integer((json_int_t)kv_sm_applied(s->sm)));
    json_object_set_new(o, "last_index", json_integer((json_int_t)raft_last_index(r)));
    json_object_set_new(o, "read_mode", json_string(read_mode_name(s->cfg.read_mode)));
    json_object_set_new(o, "fsyncs", json_integer((json_int_t)st.commits));
    json_object_set_new(o, "snapshot_index", json_integer((json_int_t)s->snap_index));
    uint64_t hash, keys;
    if (kv_sm_hash(s->sm, &hash, &keys) == KV_OK) {
        char hex[20];
        snprintf(hex, sizeof(hex), "%016" PRIx64, hash);
        json_object_set_new(o, "content_hash", json_string(hex));
        json_object_set_new(o, "keys", json_integer((json_int_t)keys));
    }
    uint64_t sessions, expired, clock;
    if (kv_sm_sessions(s->sm, &sessions, &expired, &clock) == KV_OK) {
        json_object_set_new(o, "sessions", json_integer((json_int_t)sessions));
        json_object_set_new(o, "log_clock_ms", json_integer((json_int_t)clock));
    }
    const char *why = raft_node_error(s->node);
    json_object_set_new(o, "error", why ? json_string(why) : json_null());
    json_t *peers = json_array();
    bool leader = leads(s);
    for (size_t i = 0; i < s->cfg.n_peers; i++) {
        const struct kv_peer *p = &s->cfg.peers[i];
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
    json_object_set_new(o, "peers", peers);
    return o;
}

static void emit_histogram(void (*emit)(void *, const char *), void *arg, const char *name,
                           const char *labels, const struct histogram *h)
{
    char line[256];
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
        emit(arg, line);
    }
    snprintf(line, sizeof(line), "%s_sum{%s} %.6f\n%s_count{%s} %" PRIu64 "\n", name, labels,
             h->sum, name, labels, h->count);
    emit(arg, line);
}

void kv_server_metrics(struct kv_server *s, void (*emit)(void *arg, const char *text), void *arg)
{
    struct raft *r = core(s);
    struct raft_node_stats st;
    raft_node_stats(s->node, &st);
    struct transport_stats ts;
    transport_get_stats(raft_node_transport(s->node), &ts);
    char buf[4096];
    snprintf(
        buf, sizeof(buf),
        "# HELP raftkv_term Current Raft term.\n# TYPE raftkv_term gauge\n"
        "raftkv_term{group=\"%d\"} %" PRIu64 "\n"
        "# HELP raftkv_is_leader 1 if this node leads the group.\n"
        "# TYPE raftkv_is_leader gauge\nraftkv_is_leader{group=\"%d\"} %d\n"
        "# HELP raftkv_failed 1 if the node stopped taking work (a storage error: see "
        "/v1/status, error) until it is restarted.\n"
        "# TYPE raftkv_failed gauge\nraftkv_failed %d\n"
        "# HELP raftkv_elections_total Elections this node started (as candidate).\n"
        "# TYPE raftkv_elections_total counter\nraftkv_elections_total{group=\"%d\"} %" PRIu64 "\n"
        "# HELP raftkv_leaderships_total Times this node became leader.\n"
        "# TYPE raftkv_leaderships_total counter\nraftkv_leaderships_total{group=\"%d\"} "
        "%" PRIu64 "\n"
        "# HELP raftkv_commit_index Highest log index known committed.\n"
        "# TYPE raftkv_commit_index gauge\nraftkv_commit_index{group=\"%d\"} %" PRIu64 "\n"
        "# HELP raftkv_applied_index Highest log index applied to the state machine.\n"
        "# TYPE raftkv_applied_index gauge\nraftkv_applied_index{group=\"%d\"} %" PRIu64 "\n"
        "# HELP raftkv_last_index Last index in the log.\n"
        "# TYPE raftkv_last_index gauge\nraftkv_last_index{group=\"%d\"} %" PRIu64 "\n"
        "# HELP raftkv_fsyncs_total Storage commits (one fsync each, all groups).\n"
        "# TYPE raftkv_fsyncs_total counter\nraftkv_fsyncs_total %" PRIu64 "\n"
        "# HELP raftkv_entries_persisted_total Log entries written by those commits.\n"
        "# TYPE raftkv_entries_persisted_total counter\nraftkv_entries_persisted_total "
        "%" PRIu64 "\n"
        "# HELP raftkv_entries_per_fsync Average log entries per storage commit.\n"
        "# TYPE raftkv_entries_per_fsync gauge\nraftkv_entries_per_fsync %.3f\n"
        "# HELP raftkv_entries_applied_total Entries applied to the state machine.\n"
        "# TYPE raftkv_entries_applied_total counter\nraftkv_entries_applied_total %" PRIu64 "\n"
        "# HELP raftkv_apply_commits_total Commits that only applied entries: alone (a sync of "
        "their own) or joined by the next writes while they lingered (--apply-linger).\n"
        "# TYPE raftkv_apply_commits_total counter\n"
        "raftkv_apply_commits_total{how=\"alone\"} %" PRIu64 "\n"
        "raftkv_apply_commits_total{how=\"joined\"} %" PRIu64 "\n",
        GROUP, raft_current_term(r), GROUP, leads(s), node_failed(s), GROUP, s->became_candidate,
        GROUP, s->became_leader, GROUP, raft_commit_index(r), GROUP, kv_sm_applied(s->sm), GROUP,
        raft_last_index(r), st.commits, st.entries,
        st.commits ? (double)st.entries / (double)st.commits : 0.0, st.applied, st.apply_only,
        st.joined);
    emit(arg, buf);
    snprintf(buf, sizeof(buf),
             "# HELP raftkv_requests_total Client commands by outcome.\n"
             "# TYPE raftkv_requests_total counter\n"
             "raftkv_requests_total{outcome=\"ok\"} %" PRIu64 "\n"
             "raftkv_requests_total{outcome=\"timeout\"} %" PRIu64 "\n"
             "raftkv_requests_total{outcome=\"unavailable\"} %" PRIu64 "\n"
             "raftkv_requests_total{outcome=\"bad\"} %" PRIu64 "\n"
             "# HELP raftkv_forwarded_total Commands sent to the leader by this node.\n"
             "# TYPE raftkv_forwarded_total counter\nraftkv_forwarded_total %" PRIu64 "\n"
             "# HELP raftkv_retries_total Commands tried again (leader change, lost answer).\n"
             "# TYPE raftkv_retries_total counter\nraftkv_retries_total %" PRIu64 "\n"
             "# HELP raftkv_transport_frames_total Raft transport frames.\n"
             "# TYPE raftkv_transport_frames_total counter\n"
             "raftkv_transport_frames_total{direction=\"out\"} %" PRIu64 "\n"
             "raftkv_transport_frames_total{direction=\"in\"} %" PRIu64 "\n"
             "# HELP raftkv_transport_refused_total Connections refused (foreign cluster or "
             "version, not a member, wrong cluster secret, no handshake in time, oversized or "
             "malformed frames).\n# TYPE raftkv_transport_refused_total counter\n"
             "raftkv_transport_refused_total{why=\"hello\"} %" PRIu64 "\n"
             "raftkv_transport_refused_total{why=\"member\"} %" PRIu64 "\n"
             "raftkv_transport_refused_total{why=\"auth\"} %" PRIu64 "\n"
             "raftkv_transport_refused_total{why=\"handshake_timeout\"} %" PRIu64 "\n"
             "raftkv_transport_refused_total{why=\"oversized\"} %" PRIu64 "\n"
             "raftkv_transport_refused_total{why=\"malformed\"} %" PRIu64 "\n"
             "# HELP raftkv_fault_injected_total Messages the fault filter acted on.\n"
             "# TYPE raftkv_fault_injected_total counter\n"
             "raftkv_fault_injected_total{action=\"drop\"} %" PRIu64 "\n"
             "raftkv_fault_injected_total{action=\"duplicate\"} %" PRIu64 "\n"
             "raftkv_fault_injected_total{action=\"delay\"} %" PRIu64 "\n",
             s->ops_ok, s->ops_timeout, s->ops_unavailable, s->ops_bad, s->forwarded, s->retried,
             ts.frames_sent, ts.frames_received, ts.refused_hellos, ts.refused_members,
             ts.refused_auth, ts.handshake_timeouts, ts.oversized_frames, ts.malformed_frames,
             ts.fault_dropped, ts.fault_duplicated, ts.fault_delayed);
    emit(arg, buf);
    const struct tcp_limits *lim = s->cfg.limits;
    if (lim) {
        snprintf(buf, sizeof(buf),
                 "# HELP raftkv_clients Client connections open (RESP and HTTP).\n"
                 "# TYPE raftkv_clients gauge\nraftkv_clients %u\n"
                 "# HELP raftkv_clients_max The --max-clients limit.\n"
                 "# TYPE raftkv_clients_max gauge\nraftkv_clients_max %u\n"
                 "# HELP raftkv_clients_closed_total Client connections refused or closed by a "
                 "limit: max_clients, timeout (a partial request held too long), output (replies "
                 "not read).\n# TYPE raftkv_clients_closed_total counter\n"
                 "raftkv_clients_closed_total{why=\"max_clients\"} %" PRIu64 "\n"
                 "raftkv_clients_closed_total{why=\"timeout\"} %" PRIu64 "\n"
                 "raftkv_clients_closed_total{why=\"output\"} %" PRIu64 "\n",
                 lim->clients, lim->max_clients, lim->refused, lim->timed_out, lim->output_closed);
        emit(arg, buf);
    }
    snprintf(buf, sizeof(buf),
             "# HELP raftkv_snapshot_index Index of the current snapshot.\n"
             "# TYPE raftkv_snapshot_index gauge\nraftkv_snapshot_index{group=\"%d\"} %" PRIu64 "\n"
             "# HELP raftkv_snapshots_total Snapshots taken here or installed from the leader.\n"
             "# TYPE raftkv_snapshots_total counter\n"
             "raftkv_snapshots_total{how=\"taken\"} %" PRIu64 "\n"
             "raftkv_snapshots_total{how=\"installed\"} %" PRIu64 "\n",
             GROUP, s->snap_index, s->snapshots_taken, s->snapshots_installed);
    emit(arg, buf);
    uint64_t sessions, expired, clock;
    if (kv_sm_sessions(s->sm, &sessions, &expired, &clock) == KV_OK) {
        snprintf(
            buf, sizeof(buf),
            "# HELP raftkv_sessions Client sessions in the state machine (thesis 6.3).\n"
            "# TYPE raftkv_sessions gauge\nraftkv_sessions{group=\"%d\"} %" PRIu64 "\n"
            "# HELP raftkv_sessions_expired_total Sessions this node's state machine expired.\n"
            "# TYPE raftkv_sessions_expired_total counter\n"
            "raftkv_sessions_expired_total{group=\"%d\"} %" PRIu64 "\n"
            "# HELP raftkv_sessions_renewed_total Commands of a connection whose session had "
            "expired, run again as seq 1 of a new one.\n"
            "# TYPE raftkv_sessions_renewed_total counter\n"
            "raftkv_sessions_renewed_total %" PRIu64 "\n",
            GROUP, sessions, GROUP, expired, s->sessions_renewed);
        emit(arg, buf);
    }
    emit(arg, "# HELP raftkv_request_seconds Client command latency at this node.\n"
              "# TYPE raftkv_request_seconds histogram\n");
    emit_histogram(emit, arg, "raftkv_request_seconds", "kind=\"write\"", &s->lat_write);
    emit_histogram(emit, arg, "raftkv_request_seconds", "kind=\"read\"", &s->lat_read);
    emit(arg, "# HELP raftkv_fsync_seconds Duration of storage commits.\n"
              "# TYPE raftkv_fsync_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t k = 0; k <= RAFT_NODE_COMMIT_BUCKETS; k++) {
        cum += st.commit_buckets[k];
        if (k < RAFT_NODE_COMMIT_BUCKETS)
            snprintf(buf, sizeof(buf), "raftkv_fsync_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                     RAFT_NODE_COMMIT_BOUNDS[k], cum);
        else
            snprintf(buf, sizeof(buf),
                     "raftkv_fsync_seconds_bucket{le=\"+Inf\"} %" PRIu64
                     "\nraftkv_fsync_seconds_sum %.6f\nraftkv_fsync_seconds_count %" PRIu64 "\n",
                     cum, st.commit_seconds, st.commits);
        emit(arg, buf);
    }
    if (leads(s)) {
        emit(arg, "# HELP raftkv_peer_lag_entries How far each follower's log is behind the "
                  "leader's.\n# TYPE raftkv_peer_lag_entries gauge\n");
        for (size_t i = 0; i < s->cfg.n_peers; i++) {
            struct raft_peer_status ps;
            raft_id id = s->cfg.peers[i].id;
            if (id == s->cfg.id || !raft_peer_status(r, id, &ps))
                continue;
            raft_index last = raft_last_index(r);
            snprintf(buf, sizeof(buf),
                     "raftkv_peer_lag_entries{peer=\"%" PRIu64 "\"} %" PRIu64 "\n", id,
                     last > ps.match_index ? last - ps.match_index : 0);
            emit(arg, buf);
        }
    }
}

/* The sweep timer and the node both closed: free the rest. */
