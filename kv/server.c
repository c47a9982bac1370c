/* server.c — kvd's node: start, stop, accessors, and the Raft node's callbacks; the rest
 * of the server is split by job (server_internal.h). See server.h. */
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

/* ------------------------------------------------------------------------
 * Node callbacks
 * ------------------------------------------------------------------------ */

static int cb_open_group(void *data, uint64_t group, void *env, raft_index *applied, char *err,
                         size_t errlen)
{
    struct kv_server *s = data;
    if (group > s->n_shards) {
        snprintf(err, errlen, "group %" PRIu64 " is not a shard of the map", group);
        return -1;
    }
    struct shard *sh = group ? &s->shards[group - 1] : s->meta;
    if (!sh->by_session && !(sh->by_session = calloc(EXEC_BUCKETS, sizeof(*sh->by_session)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = kv_sm_open(env, group, &sh->sm, err, errlen);
    if (rc)
        return rc;
    sh->hosted = true; /* its core is created next (raft_node_add_group) */
    *applied = kv_sm_applied(sh->sm);
    /* The running content hash was summed from what is stored (sm.h). */
    const struct kv_sm_open_scan *scan = kv_sm_open_scan(sh->sm);
    if (scan->computed)
        iolog("kvd %" PRIu64 ": group %" PRIu64 ": data from an older kvd: its content hash "
              "computed once, by a scan of %" PRIu64 " keys in %" PRIu64 " ms\n",
              s->cfg.id, group, scan->keys, scan->ms);
    if (scan->mismatch) {
        char detail[120];
        snprintf(detail, sizeof(detail),
                 "the one stored with its data when it was written; found by the scan at start");
        raise_corrupt(s, sh, *applied, scan->scanned, scan->stored, detail);
    }
    return 0;
}

/* On the storage thread, in the group commit transaction. */
static int cb_apply(void *data, uint64_t group, void *txn, const struct raft_entry *e, size_t n,
                    void **result, char *err, size_t errlen)
{
    struct shard *sh = shard_of_group(data, group);
    struct kv_result *results = calloc(n, sizeof(*results));
    if (!results) {
        snprintf(err, errlen, "out of memory applying");
        return STORAGE_ENOMEM;
    }
    int rc = kv_sm_stage(sh->sm, txn, e, n, results, err, errlen);
    if (rc) {
        free(results);
        return rc == KV_EFULL ? STORAGE_EFULL : STORAGE_EIO;
    }
    *result = results;
    return STORAGE_OK;
}

/* ------------------------------------------------------------------------
 * JSON trace records (docs/trace.md)
 * ------------------------------------------------------------------------ */

/* The links this node's fault filter cuts (every message dropped, either
 * way), as the simulator's "net" record draws them. */
static void trace_net(struct kv_server *s)
{
    char buf[2048];
    struct tj j;
    if (!trace_begin(s, &j, buf, sizeof(buf), "net", 0))
        return;
    tj_open(&j, "cut", '[');
    for (size_t i = 0; i < s->n_faults; i++) {
        const struct transport_fault *f = &s->faults[i];
        if (f->drop_pct != 100 || f->message_type != 0 || !f->peer)
            continue;
        for (int dir = TRANSPORT_OUT; dir <= TRANSPORT_IN; dir <<= 1) {
            if (!(f->directions & dir))
                continue;
            tj_open(&j, NULL, '[');
            tj_elem_u64(&j, dir == TRANSPORT_OUT ? s->cfg.id : f->peer);
            tj_elem_u64(&j, dir == TRANSPORT_OUT ? f->peer : s->cfg.id);
            tj_close(&j, ']');
        }
    }
    tj_close(&j, ']');
    trace_end(s, &j, 0);
}

static void cb_trace_json(void *data, uint64_t group, const char *line, size_t len)
{
    struct kv_server *s = data;
    kv_trace_emit(&s->trace, group, line, len);
}

bool trace_begin(struct kv_server *s, struct tj *j, char *buf, size_t size, const char *kind,
                 uint64_t group)
{
    if (!kv_trace_on(&s->trace))
        return false;
    tj_begin(j, buf, size, raft_node_wall_ms(), kind, s->cfg.id, group);
    return true;
}

void trace_end(struct kv_server *s, struct tj *j, uint64_t group)
{
    size_t len = tj_end(j);
    if (len)
        kv_trace_emit(&s->trace, group, j->buf, len);
}

void trace_req(struct tj *j, uint64_t client_id, uint64_t seq)
{
    char req[48];
    snprintf(req, sizeof(req), "%016" PRIx64 ":%" PRIu64, client_id, seq);
    tj_str(j, "req", req);
}

static void trace_tracing(struct kv_server *s)
{
    raft_node_set_trace_json(s->node, kv_trace_on(&s->trace));
}

bool kv_server_trace_subscribe(struct kv_server *s, struct kv_trace_sub *sub)
{
    if (s->stopping || !kv_trace_subscribe(&s->trace, sub))
        return false;
    /* A new viewer needs the picture now: every group says its state at
     * its next step, and the network its cuts. */
    trace_tracing(s);
    trace_net(s);
    return true;
}

void kv_server_trace_unsubscribe(struct kv_server *s, struct kv_trace_sub *sub)
{
    if (sub->detached)
        return; /* the server stopped: s may be gone */
    kv_trace_unsubscribe(&s->trace, sub);
    trace_tracing(s);
}

void kv_server_trace_drained(struct kv_server *s, struct kv_trace_sub *sub)
{
    kv_trace_drained(&s->trace, sub);
}

const struct kv_trace *kv_server_trace(struct kv_server *s)
{
    return &s->trace;
}

/* Answer the writes executed here, as soon as their results exist. */
static void cb_results(void *data, uint64_t group, const struct raft_entry *e, size_t n,
                       void *result)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    const struct kv_result *results = result;
    for (size_t i = 0; i < n; i++) {
        const struct kv_result *r = &results[i];
        char buf[512];
        struct tj j;
        if (trace_begin(s, &j, buf, sizeof(buf), "apply", group)) {
            tj_u64(&j, "index", e[i].index);
            tj_u64(&j, "term", e[i].term);
            tj_str(&j, "entry",
                   e[i].type == RAFT_ENTRY_NOOP   ? "noop"
                   : e[i].type == RAFT_ENTRY_CONF ? "conf"
                                                  : "normal");
            if (r->client_id)
                trace_req(&j, r->client_id, r->seq);
            trace_end(s, &j, group);
        }
        if (!r->client_id)
            continue;
        struct exec **p = &sh->by_session[exec_bucket(r->client_id, r->seq)];
        while (*p) {
            struct exec *x = *p;
            if (x->client_id != r->client_id || x->seq != r->seq) {
                p = &x->chain;
                continue;
            }
            exec_answer(s, x, &sh->writes, KVPB__REPLY_CODE__REPLY_OK, NULL, r);
            p = &sh->by_session[exec_bucket(r->client_id, r->seq)];
        }
    }
}

static void cb_applied(void *data, uint64_t group, const struct raft_entry *e, size_t n,
                       void *result, bool committed)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    (void)e;
    kv_sm_staged_done(sh->sm, committed);
    struct kv_result *results = result;
    for (size_t i = 0; results && i < n; i++)
        kv_result_free(&results[i]);
    free(results);
    if (!committed)
        fail_all_execs(s, KVPB__REPLY_CODE__REPLY_UNAVAILABLE, raft_node_error(s->node));
    serve_reads(s, sh);
    if (sh == s->meta && committed)
        members_applied(s);
}

static void cb_proposals_dropped(void *data, uint64_t group, int rv)
{
    struct kv_server *s = data;
    /* Which writes were in that batch is not known here: fail them all;
     * coordinators retry, and a write that did go in is answered from the
     * session table rather than applied twice. */
    fail_writes(s, shard_of_group(s, group), reply_code_of(rv), reply_message_of(s, rv));
}

static void cb_read_done(void *data, uint64_t group, const struct raft_read *rd)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    for (struct exec *x = sh->reads; x; x = x->next) {
        if (x->read_id != rd->id)
            continue;
        if (rd->status != RAFT_OK) {
            exec_answer(s, x, &sh->reads, reply_code_of(rd->status), raft_strerror(rd->status),
                        NULL);
            return;
        }
        x->read_index = rd->index;
        x->read_ready = true;
        serve_reads(s, sh);
        return;
    }
}

static void cb_role_changed(void *data, uint64_t group, enum raft_role role, raft_id leader)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    char name[48];
    if (s->n_shards > 1 || sh == s->meta)
        iolog("kvd %" PRIu64 ": %s: %s in term %" PRIu64 " (leader %" PRIu64 ")\n", s->cfg.id,
              shard_name(s, sh, name, sizeof(name)), raft_role_name(role),
              raft_current_term(core(s, sh)), leader);
    else
        iolog("kvd %" PRIu64 ": %s in term %" PRIu64 " (leader %" PRIu64 ")\n", s->cfg.id,
              raft_role_name(role), raft_current_term(core(s, sh)), leader);
    if (leader) {
        sh->leader_hint = leader;
        requests_leader_known(s, sh, leader);
    }
    if (leader == sh->preferred_leader)
        sh->balance_backoff_ms = 0; /* the balance worked (route.c) */
    if (role == RAFT_CANDIDATE)
        sh->became_candidate++;
    if (role == RAFT_LEADER)
        sh->became_leader++;
    else
        fail_execs(s, sh, KVPB__REPLY_CODE__REPLY_NOT_LEADER, "leadership changed");
}

static void cb_stopped(void *data);

/* A struct shard for each of the G shards, and one for group 0. The ring
 * comes from the members table (members_start). */
static int alloc_shards(struct kv_server *s, char *err, size_t errlen)
{
    uint32_t G = s->cfg.shards;
    s->n_shards = G;
    s->shards = calloc(G + 1, sizeof(*s->shards));
    if (!s->shards) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i <= G; i++) {
        struct shard *sh = &s->shards[i];
        sh->index = i;
        sh->group = i < G ? ring_group_of_shard(i) : 0;
        sh->read_fd = sh->staging_fd = -1;
    }
    s->meta = &s->shards[G];
    return 0;
}

/* Snapshots the cores start from must be on disk to be sent. */
static void check_snapshot_files(struct kv_server *s)
{
    mkdir(s->snap_dir, 0755);
    for (uint32_t i = 0; i <= s->n_shards; i++) {
        struct shard *sh = &s->shards[i];
        if (!sh->hosted)
            continue;
        struct raft_snapshot_meta meta;
        if (raft_snapshot(core(s, sh), &meta)) {
            sh->snap_index = meta.index;
            char path[PATH_MAX];
            snap_file(s, sh, path, sizeof(path), meta.index);
            if (kv_snapshot_file_check(path, meta.size, meta.checksum, NULL) != KV_OK)
                fprintf(stderr,
                        "kvd %" PRIu64 ": warning: snapshot file %s is missing or damaged; "
                        "followers that need it wait for the next snapshot\n",
                        s->cfg.id, path);
        }
        snap_cleanup(s, sh, true);
    }
}

static void server_free(struct kv_server *s)
{
    for (uint32_t i = 0; s->shards && i <= s->n_shards; i++) {
        struct shard *sh = &s->shards[i];
        if (sh->sm)
            kv_sm_close(sh->sm);
        if (sh->read_fd >= 0)
            close(sh->read_fd);
        if (sh->staging_fd >= 0)
            close(sh->staging_fd);
        free(sh->by_session);
        free(sh->tally);
    }
    free(s->shards);
    ring_free(s->ring);
    if (s->table)
        kvpb__node_table__free_unpacked(s->table, NULL);
    free(s->table_raw);
    kv_trace_close(&s->trace);
    free(s);
}

int kv_server_start(struct kv_server **out, uv_loop_t *loop, const struct kv_server_config *cfg,
                    char *err, size_t errlen)
{
    struct kv_server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->loop = loop;
    s->cfg = *cfg;
    if (!s->cfg.request_timeout_ms)
        s->cfg.request_timeout_ms = 5000;
    s->prng = (uv_hrtime() ^ (cfg->id * 0x9e3779b97f4a7c15ULL)) | 1;
    snprintf(s->snap_dir, sizeof(s->snap_dir), "%s/snap", cfg->data_dir);
    struct raft_node_peer peers[KV_MAX_PEERS];
    const struct kv_peer *self = NULL;
    for (size_t i = 0; i < cfg->n_peers; i++) {
        peers[i] =
            (struct raft_node_peer){cfg->peers[i].id, cfg->peers[i].host, cfg->peers[i].raft_port};
        if (cfg->peers[i].id == cfg->id)
            self = &cfg->peers[i];
    }
    if (!self) {
        snprintf(err, errlen, "node %" PRIu64 " is not in the cluster's member list", cfg->id);
        free(s);
        return -1;
    }
    if (placement_settle(&s->cfg, err, errlen) || alloc_shards(s, err, errlen)) {
        server_free(s);
        return -1;
    }
    s->trace.node = cfg->id;
    if (cfg->trace_file &&
        kv_trace_open(&s->trace, cfg->trace_file,
                      cfg->trace_file_max_bytes ? cfg->trace_file_max_bytes : 64 << 20, err,
                      errlen)) {
        server_free(s);
        return -1;
    }
    /* Group 0 now; the shards once the members table is read from it
     * (members_start). A node that joins starts it empty: the leader sends
     * the configuration (thesis §4.2.1). */
    s->bootstrap = !cfg->join;
    raft_id members[KV_MAX_PEERS];
    for (size_t i = 0; i < cfg->n_peers; i++)
        members[i] = cfg->peers[i].id;
    struct raft_node_group group0 = {.id = 0,
                                     .voters = cfg->join ? NULL : members,
                                     .n_voters = cfg->join ? 0 : cfg->n_peers,
                                     .join = cfg->join};
    struct raft_node_config nc = {.cluster_id = cfg->cluster_id,
                                  .id = cfg->id,
                                  .data_dir = cfg->data_dir,
                                  .map_size_bytes = cfg->map_size_bytes,
                                  .host = self->host,
                                  .port = self->raft_port,
                                  .peers = peers,
                                  .n_peers = cfg->n_peers,
                                  .groups = &group0,
                                  .n_groups = 1,
                                  .raft = cfg->raft,
                                  .tick_ms = cfg->tick_ms ? cfg->tick_ms : 10,
                                  .trace = cfg->trace,
                                  .apply_linger_us = cfg->apply_linger_us,
                                  .apply_on_loop = !cfg->apply_thread,
                                  .cluster_secret = cfg->cluster_secret,
                                  .placement =
                                      ring_keys_fingerprint_of(s->cfg.shards, s->cfg.vnodes)};
    nc.raft.lease_reads = cfg->read_mode == KV_READ_LEASE;
    static const struct raft_node_callbacks callbacks = {.open_group = cb_open_group,
                                                         .apply = cb_apply,
                                                         .results = cb_results,
                                                         .applied = cb_applied,
                                                         .read_done = cb_read_done,
                                                         .role_changed = cb_role_changed,
                                                         .proposals_dropped = cb_proposals_dropped,
                                                         .snapshot_wanted = cb_snapshot_wanted,
                                                         .snapshot_read = cb_snapshot_read,
                                                         .snapshot_chunk = cb_snapshot_chunk,
                                                         .snapshot_install = cb_snapshot_install,
                                                         .snapshot_installed =
                                                             cb_snapshot_installed,
                                                         .snapshot_restore = cb_snapshot_restore,
                                                         .group_unknown = cb_group_unknown,
                                                         .group_drop = cb_group_drop,
                                                         .group_dropped = cb_group_dropped,
                                                         .stopped = cb_stopped,
                                                         .trace_json = cb_trace_json};
    int rc = raft_node_start(&s->node, loop, &nc, &callbacks, s, err, errlen);
    if (rc) {
        server_free(s);
        return rc;
    }
    raft_node_set_trace_json(s->node, kv_trace_on(&s->trace));
    if (members_start(s, err, errlen) || raft_node_error(s->node)) {
        if (raft_node_error(s->node))
            snprintf(err, errlen, "%s", raft_node_error(s->node));
        /* The node runs: stop it, and let the loop free everything. */
        s->closing = 1;
        raft_node_stop(s->node);
        return -1;
    }
    transport_on_forward(raft_node_transport(s->node), on_relay, s);
    check_snapshot_files(s);
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, requests_sweep, SWEEP_MS, SWEEP_MS);
    *out = s;
    return 0;
}

uint64_t kv_server_new_client(struct kv_server *s)
{
    uint64_t id;
    do
        id = next_random(s);
    while (id == 0);
    return id;
}

const struct kv_server_config *kv_server_config(struct kv_server *s)
{
    return &s->cfg;
}

const struct kv_peer *peer_of(struct kv_server *s, raft_id id)
{
    for (size_t i = 0; i < s->cfg.n_peers; i++)
        if (s->cfg.peers[i].id == id)
            return &s->cfg.peers[i];
    return NULL;
}

const struct kv_peer *kv_server_leader(struct kv_server *s, const void *key, size_t len)
{
    struct shard *sh = &s->shards[len ? ring_shard_of(s->ring, key, len) : 0];
    return peer_of(s, sh->hosted ? raft_leader(core(s, sh)) : sh->leader_hint);
}

uint32_t kv_server_shards(const struct kv_server *s)
{
    return s->n_shards;
}

const struct kv_peer *kv_server_self(struct kv_server *s)
{
    return peer_of(s, s->cfg.id);
}

struct tcp_limits *kv_server_limits(const struct kv_server *s)
{
    return s->cfg.limits;
}

const struct kv_auth *kv_server_auth(const struct kv_server *s)
{
    static const struct kv_auth open = {0};
    return s && s->cfg.auth ? s->cfg.auth : &open; /* no server (the door fuzzers): all open */
}

int kv_server_transfer(struct kv_server *s, int shard, raft_id to)
{
    if (shard >= 0) {
        if ((uint32_t)shard >= s->n_shards)
            return RAFT_EINVAL;
        struct shard *sh = &s->shards[shard];
        return sh->hosted ? raft_node_transfer(s->node, sh->group, to) : RAFT_ENOTLEADER;
    }
    int rv = RAFT_ENOTLEADER;
    for (uint32_t i = 0; i < s->n_shards; i++) {
        struct shard *sh = &s->shards[i];
        if (!sh->hosted || raft_role_of(core(s, sh)) != RAFT_LEADER)
            continue;
        int one = raft_node_transfer(s->node, sh->group, to);
        if (rv != RAFT_OK)
            rv = one;
    }
    return rv;
}

int kv_server_forget_peer(struct kv_server *s, raft_id id, bool replaced, char *err, size_t errlen)
{
    if (!peer_of(s, id)) {
        snprintf(err, errlen, "node %" PRIu64 " is not a node this one knows", id);
        return -1;
    }
    return raft_node_forget_peer(s->node, id, replaced, err, errlen) == RAFT_OK ? 0 : -1;
}

int kv_server_set_faults(struct kv_server *s, const struct transport_fault *rules, size_t n)
{
    int rc = transport_set_faults(raft_node_transport(s->node), rules, n);
    if (rc == 0) {
        if (n)
            memcpy(s->faults, rules, n * sizeof(*rules));
        s->n_faults = n;
        iolog("kvd %" PRIu64 ": fault filter: %zu rule%s\n", s->cfg.id, n, n == 1 ? "" : "s");
        trace_net(s);
    }
    return rc;
}

const struct transport_fault *kv_server_faults(struct kv_server *s, size_t *n)
{
    *n = s->n_faults;
    return s->faults;
}

void server_release(struct kv_server *s)
{
    if (--s->closing > 0)
        return;
    server_free(s);
}

static void on_sweep_close(uv_handle_t *h)
{
    server_release(h->data);
}

static void cb_stopped(void *data)
{
    server_release(data);
}

void kv_server_stop(struct kv_server *s)
{
    s->stopping = true;
    kv_trace_detach_all(&s->trace);
    raft_node_set_trace_json(s->node, kv_trace_on(&s->trace));
    while (s->requests)
        request_finish(s, s->requests, KV_UNAVAILABLE, "the node is shutting down", NULL);
    fail_all_execs(s, KVPB__REPLY_CODE__REPLY_UNAVAILABLE, "the node is shutting down");
    s->closing = 2 + s->snap_jobs; /* the timer, the node, the snapshots being written */
    uv_timer_stop(&s->sweep);
    uv_close((uv_handle_t *)&s->sweep, on_sweep_close);
    raft_node_stop(s->node);
}
