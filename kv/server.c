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
    int rc = kv_sm_open(env, group, &s->sm, err, errlen);
    if (rc)
        return rc;
    *applied = kv_sm_applied(s->sm);
    return 0;
}

/* On the storage thread, in the group commit transaction. */
static int cb_apply(void *data, uint64_t group, void *txn, const struct raft_entry *e, size_t n,
                    void **result, char *err, size_t errlen)
{
    struct kv_server *s = data;
    (void)group;
    struct kv_result *results = calloc(n, sizeof(*results));
    if (!results) {
        snprintf(err, errlen, "out of memory applying");
        return STORAGE_ENOMEM;
    }
    int rc = kv_sm_stage(s->sm, txn, e, n, results, err, errlen);
    if (rc) {
        free(results);
        return rc == KV_EFULL ? STORAGE_EFULL : STORAGE_EIO;
    }
    *result = results;
    return STORAGE_OK;
}

/* Answer the writes executed here, as soon as their results exist. */
static void cb_results(void *data, uint64_t group, const struct raft_entry *e, size_t n,
                       void *result)
{
    struct kv_server *s = data;
    (void)group;
    (void)e;
    const struct kv_result *results = result;
    for (size_t i = 0; i < n; i++) {
        const struct kv_result *r = &results[i];
        if (!r->client_id)
            continue;
        struct exec **p = &s->by_session[exec_bucket(r->client_id, r->seq)];
        while (*p) {
            struct exec *x = *p;
            if (x->client_id != r->client_id || x->seq != r->seq) {
                p = &x->chain;
                continue;
            }
            exec_answer(s, x, &s->writes, KVPB__REPLY_CODE__REPLY_OK, NULL, r);
            p = &s->by_session[exec_bucket(r->client_id, r->seq)];
        }
    }
}

static void cb_applied(void *data, uint64_t group, const struct raft_entry *e, size_t n,
                       void *result, bool committed)
{
    struct kv_server *s = data;
    (void)group;
    (void)e;
    kv_sm_staged_done(s->sm, committed);
    struct kv_result *results = result;
    for (size_t i = 0; results && i < n; i++)
        kv_result_free(&results[i]);
    free(results);
    if (!committed)
        fail_execs(s, KVPB__REPLY_CODE__REPLY_UNAVAILABLE, raft_node_error(s->node));
    serve_reads(s);
}

static void cb_proposals_dropped(void *data, uint64_t group, int rv)
{
    struct kv_server *s = data;
    (void)group;
    /* Which writes were in that batch is not known here: fail them all;
     * coordinators retry, and a write that did go in is answered from the
     * session table rather than applied twice. */
    fail_writes(s, reply_code_of(rv), reply_message_of(s, rv));
}

static void cb_read_done(void *data, uint64_t group, const struct raft_read *rd)
{
    struct kv_server *s = data;
    (void)group;
    for (struct exec *x = s->reads; x; x = x->next) {
        if (x->read_id != rd->id)
            continue;
        if (rd->status != RAFT_OK) {
            exec_answer(s, x, &s->reads, reply_code_of(rd->status), raft_strerror(rd->status),
                        NULL);
            return;
        }
        x->read_index = rd->index;
        x->read_ready = true;
        serve_reads(s);
        return;
    }
}

static void cb_role_changed(void *data, uint64_t group, enum raft_role role, raft_id leader)
{
    struct kv_server *s = data;
    (void)group;
    iolog("kvd %" PRIu64 ": %s in term %" PRIu64 " (leader %" PRIu64 ")\n", s->cfg.id,
          raft_role_name(role), raft_current_term(core(s)), leader);
    if (role == RAFT_CANDIDATE)
        s->became_candidate++;
    if (role == RAFT_LEADER)
        s->became_leader++;
    else
        fail_execs(s, KVPB__REPLY_CODE__REPLY_NOT_LEADER, "leadership changed");
}

static void cb_stopped(void *data);

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
    s->read_fd = s->staging_fd = -1;
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
    static const uint64_t groups[] = {GROUP};
    struct raft_node_config nc = {.cluster_id = cfg->cluster_id,
                                  .id = cfg->id,
                                  .data_dir = cfg->data_dir,
                                  .map_size_bytes = cfg->map_size_bytes,
                                  .host = self->host,
                                  .port = self->raft_port,
                                  .peers = peers,
                                  .n_peers = cfg->n_peers,
                                  .groups = groups,
                                  .n_groups = 1,
                                  .raft = cfg->raft,
                                  .tick_ms = cfg->tick_ms ? cfg->tick_ms : 10,
                                  .trace = cfg->trace,
                                  .apply_linger_us = cfg->apply_linger_us,
                                  .cluster_secret = cfg->cluster_secret};
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
                                                         .stopped = cb_stopped};
    int rc = raft_node_start(&s->node, loop, &nc, &callbacks, s, err, errlen);
    if (rc) {
        if (s->sm)
            kv_sm_close(s->sm);
        free(s);
        return rc;
    }
    transport_on_forward(raft_node_transport(s->node), on_relay, s);
    /* The snapshot the core starts from must be on disk to be sent. */
    mkdir(s->snap_dir, 0755);
    struct raft_snapshot_meta meta;
    if (raft_snapshot(core(s), &meta)) {
        s->snap_index = meta.index;
        char path[PATH_MAX];
        snap_file(s, path, sizeof(path), meta.index);
        if (kv_snapshot_file_check(path, meta.size, meta.checksum, NULL) != KV_OK)
            fprintf(stderr,
                    "kvd %" PRIu64 ": warning: snapshot file %s is missing or damaged; followers "
                    "that need it wait for the next snapshot\n",
                    cfg->id, path);
    }
    snap_cleanup(s, true);
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

static const struct kv_peer *peer_of(struct kv_server *s, raft_id id)
{
    for (size_t i = 0; i < s->cfg.n_peers; i++)
        if (s->cfg.peers[i].id == id)
            return &s->cfg.peers[i];
    return NULL;
}

const struct kv_peer *kv_server_leader(struct kv_server *s)
{
    return peer_of(s, raft_leader(core(s)));
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

int kv_server_transfer(struct kv_server *s, raft_id to)
{
    return raft_node_transfer(s->node, GROUP, to);
}

int kv_server_set_faults(struct kv_server *s, const struct transport_fault *rules, size_t n)
{
    int rc = transport_set_faults(raft_node_transport(s->node), rules, n);
    if (rc == 0) {
        if (n)
            memcpy(s->faults, rules, n * sizeof(*rules));
        s->n_faults = n;
        iolog("kvd %" PRIu64 ": fault filter: %zu rule%s\n", s->cfg.id, n, n == 1 ? "" : "s");
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
    if (s->sm)
        kv_sm_close(s->sm);
    if (s->read_fd >= 0)
        close(s->read_fd);
    if (s->staging_fd >= 0)
        close(s->staging_fd);
    free(s);
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
    while (s->requests)
        request_finish(s, s->requests, KV_UNAVAILABLE, "the node is shutting down", NULL);
    fail_execs(s, KVPB__REPLY_CODE__REPLY_UNAVAILABLE, "the node is shutting down");
    s->closing = 2 + s->snap_busy; /* the timer, the node, a snapshot being written */
    uv_timer_stop(&s->sweep);
    uv_close((uv_handle_t *)&s->sweep, on_sweep_close);
    raft_node_stop(s->node);
}
