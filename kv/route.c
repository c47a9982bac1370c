/* route.c — keys to shards: a command goes to its key's shard (ring.h);
 * MGET, DEL and EXISTS naming keys of several shards are split into one
 * part per shard and gathered; a connection's session is numbered per
 * shard; shard leaders are spread over the nodes. See server_internal.h.
 */
#include "server_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iolog.h"

enum {
    BALANCE_MS = 1000,              /* how often a node looks at the leaders it holds */
    BALANCE_BACKOFF_MAX_MS = 64000, /* a preferred leader that did not take over */
    BALANCE_BATCH = 4, /* transfers a node starts per look: spread soon, without a storm */
};

/* ------------------------------------------------------------------------
 * Sessions
 * ------------------------------------------------------------------------ */

int kv_session_init(struct kv_server *s, struct kv_session *sess)
{
    sess->n = s->n_shards;
    sess->slot = calloc(sess->n, sizeof(*sess->slot));
    if (!sess->slot)
        return -1;
    /* One client id for every shard (each keeps its own table); a shard
     * that expires it gives that slot a new one (coordinator.c). */
    sess->id = kv_server_new_client(s);
    for (uint32_t i = 0; i < sess->n; i++)
        sess->slot[i] = (struct kv_session_slot){sess->id, 0};
    return 0;
}

void kv_session_release(struct kv_session *sess)
{
    free(sess->slot);
    memset(sess, 0, sizeof(*sess));
}

/* ------------------------------------------------------------------------
 * Split and gather
 * ------------------------------------------------------------------------ */

/* A command whose keys live on several shards: one part per shard, each a
 * request of its own (its own session slot, retries and deadline). Not
 * atomic across shards: a DEL may be done on some and not others. */
struct fanout {
    struct kv_server *s;
    Kvpb__Op op;
    size_t n_keys;
    int parts_left;
    struct kv_value *values; /* MGET: by key position */
    int64_t integer;         /* DEL, EXISTS: summed */
    raft_index index;        /* the highest part's */
    Kvpb__Status status;     /* the first part's that was not OK */
    enum kv_code code;       /* the first part's error */
    char message[300];
    kv_done_cb cb;
    void *ctx;
};

struct fanout_part {
    struct fanout *f;
    size_t n;
    size_t keys[KV_MAX_KEYS]; /* positions in the whole command */
};

static void fanout_finish(struct fanout *f)
{
    struct kv_result r = {.status = f->status, .integer = f->integer, .index = f->index};
    if (f->op == KVPB__OP__OP_MGET) {
        r.values = f->values;
        r.n_values = f->n_keys;
    }
    struct kv_reply reply = {f->code, f->code == KV_DONE ? NULL : f->message,
                             f->code == KV_DONE ? &r : NULL};
    f->cb(f->ctx, &reply);
    for (size_t i = 0; i < f->n_keys; i++)
        free(f->values[i].data);
    free(f->values);
    free(f);
}

static void fanout_part_done(void *ctx, const struct kv_reply *reply)
{
    struct fanout_part *p = ctx;
    struct fanout *f = p->f;
    if (reply->code != KV_DONE) {
        if (f->code == KV_DONE) {
            f->code = reply->code;
            snprintf(f->message, sizeof(f->message), "%s%s", reply->message ? reply->message : "",
                     f->op == KVPB__OP__OP_DEL
                         ? " (a DEL over several shards is not atomic: the keys of the other "
                           "shards may be deleted)"
                         : "");
        }
    } else if (reply->result) {
        const struct kv_result *r = reply->result;
        if (r->status != KVPB__STATUS__STATUS_OK && f->status == KVPB__STATUS__STATUS_OK)
            f->status = r->status;
        f->integer += r->integer;
        if (r->index > f->index)
            f->index = r->index;
        for (size_t i = 0; f->op == KVPB__OP__OP_MGET && i < r->n_values && i < p->n; i++) {
            struct kv_value *v = &f->values[p->keys[i]];
            v->present = r->values[i].present;
            v->len = r->values[i].len;
            v->data = v->len ? malloc(v->len) : NULL;
            if (v->len && !v->data) {
                v->present = false;
                v->len = 0;
                if (f->code == KV_DONE) {
                    f->code = KV_UNAVAILABLE;
                    snprintf(f->message, sizeof(f->message), "out of memory");
                }
                continue;
            }
            if (v->len)
                memcpy(v->data, r->values[i].data, v->len);
        }
    }
    free(p);
    if (--f->parts_left == 0)
        fanout_finish(f);
}

/* The command's write session for shard sh: the connection's slot, or
 * the one the command names. */
static void number(struct kv_server *s, Kvpb__Command *cmd, struct shard *sh,
                   struct kv_session *session)
{
    (void)s;
    if (!session || kv_op_is_read(cmd->op) || sh->index >= session->n)
        return;
    struct kv_session_slot *slot = &session->slot[sh->index];
    cmd->client_id = slot->client_id;
    cmd->seq = ++slot->seq;
}

static void split(struct kv_server *s, const Kvpb__Command *cmd, const uint32_t *shard_of,
                  struct kv_session *session, int flags, uint64_t deadline, kv_done_cb cb,
                  void *ctx)
{
    struct fanout *f = calloc(1, sizeof(*f));
    struct kv_value *values = calloc(cmd->n_keys, sizeof(*values));
    if (!f || !values) {
        free(f);
        free(values);
        struct kv_reply reply = {KV_UNAVAILABLE, "out of memory", NULL};
        cb(ctx, &reply);
        return;
    }
    *f = (struct fanout){.s = s,
                         .op = cmd->op,
                         .n_keys = cmd->n_keys,
                         .values = values,
                         .code = KV_DONE,
                         .cb = cb,
                         .ctx = ctx};
    s->fanouts++;
    /* Build every part first: one may answer before the next is made (a
     * local read), and the count must not reach 0 early. */
    struct fanout_part *parts[KV_MAX_KEYS];
    uint32_t part_shard[KV_MAX_KEYS];
    size_t n_parts = 0;
    for (size_t i = 0; i < cmd->n_keys; i++) {
        size_t k = 0;
        while (k < n_parts && part_shard[k] != shard_of[i])
            k++;
        if (k == n_parts) {
            parts[k] = calloc(1, sizeof(*parts[k]));
            if (!parts[k]) {
                for (size_t j = 0; j < n_parts; j++)
                    free(parts[j]);
                free(values);
                free(f);
                struct kv_reply reply = {KV_UNAVAILABLE, "out of memory", NULL};
                cb(ctx, &reply);
                return;
            }
            parts[k]->f = f;
            part_shard[k] = shard_of[i];
            n_parts++;
        }
        parts[k]->keys[parts[k]->n++] = i;
    }
    f->parts_left = (int)n_parts;
    for (size_t k = 0; k < n_parts; k++) {
        Kvpb__Command part = *cmd;
        ProtobufCBinaryData keys[KV_MAX_KEYS];
        for (size_t i = 0; i < parts[k]->n; i++)
            keys[i] = cmd->keys[parts[k]->keys[i]];
        part.keys = keys;
        part.n_keys = parts[k]->n;
        struct shard *sh = &s->shards[part_shard[k]];
        number(s, &part, sh, session);
        request_start(s, sh, &part, session, flags, deadline, fanout_part_done, parts[k]);
    }
}

void kv_server_submit(struct kv_server *s, const Kvpb__Command *cmd, struct kv_session *session,
                      int flags, kv_done_cb cb, void *ctx)
{
    uint64_t deadline = now_ms(s) + s->cfg.request_timeout_ms;
    if (cmd->n_keys > KV_MAX_KEYS) {
        struct kv_reply reply = {KV_BAD, "too many keys in one command", NULL};
        cb(ctx, &reply);
        return;
    }
    uint32_t shard_of[KV_MAX_KEYS];
    bool several = false;
    /* LAB 6 BEGIN: keys to shards (docs/sharding.md, "Serving"). Put the
     * shard of each of the command's keys (cmd->keys[i].data and .len,
     * i < cmd->n_keys) on this node's key ring (s->ring, ring.h) in
     * shard_of[i], and set several when they are not all on one shard:
     * such a command is split into one part per shard and gathered.
     * STUB: for (size_t i = 0; i < cmd->n_keys; i++) shard_of[i] = 0; */
    for (size_t i = 0; i < cmd->n_keys; i++) {
        shard_of[i] = ring_shard_of(s->ring, cmd->keys[i].data, cmd->keys[i].len);
        several |= shard_of[i] != shard_of[0];
    }
    /* LAB 6 END */
    if (several) {
        split(s, cmd, shard_of, session, flags, deadline, cb, ctx);
        return;
    }
    struct shard *sh = &s->shards[cmd->n_keys ? shard_of[0] : 0];
    Kvpb__Command one = *cmd;
    number(s, &one, sh, session);
    request_start(s, sh, &one, session, flags, deadline, cb, ctx);
}

/* ------------------------------------------------------------------------
 * Leaders spread over the nodes
 *
 * Elections put leaders wherever timers fire first, often several on one
 * node. Each shard has a preferred leader, chosen the same way on every
 * node from the map alone: shards in order, each to the replica that has
 * been given the fewest so far (ties: ring order). A node that leads more
 * than its share (G/N, rounded up) hands shards it is not preferred for to
 * their preferred replicas (thesis §3.10) once they have everything; one
 * that does not take over is tried again later and less often (it may be
 * partitioned away). Each handover gives a shard to its preferred leader,
 * which never hands it on, so the handovers end.
 * ------------------------------------------------------------------------ */

void preferred_leaders(struct kv_server *s)
{
    const struct ring_map *m = ring_map(s->ring);
    uint32_t given[RING_MAX_NODES] = {0};
    for (uint32_t i = 0; i < s->n_shards; i++) {
        const uint64_t *reps = ring_replicas(s->ring, i);
        raft_id best = 0;
        uint32_t best_count = UINT32_MAX;
        size_t best_at = 0;
        for (uint32_t r = 0; r < m->replicas; r++) {
            size_t at = 0;
            while (at < m->n_nodes && m->nodes[at] != reps[r])
                at++;
            if (given[at] < best_count) {
                best = reps[r];
                best_count = given[at];
                best_at = at;
            }
        }
        given[best_at]++;
        s->shards[i].preferred_leader = best;
    }
}

static bool caught_up(struct kv_server *s, struct shard *sh, raft_id id)
{
    struct raft *r = core(s, sh);
    struct raft_peer_status ps;
    return raft_peer_status(r, id, &ps) && ps.is_voter && ps.is_replicating && !ps.inflight &&
           ps.match_index == raft_last_index(r) &&
           transport_peer_connected(raft_node_transport(s->node), id);
}

void balance_leaders(struct kv_server *s)
{
    uint64_t now = now_ms(s);
    if (s->n_shards < 2 || now < s->balance_at_ms)
        return;
    s->balance_at_ms = now + BALANCE_MS;
    /* Only a node that leads more than its share gives leaderships away,
     * so a transfer an operator asked for (RAFT.TRANSFER, before
     * maintenance) stays unless it overloads its new leader. */
    const struct ring_map *m = ring_map(s->ring);
    uint32_t share = (s->n_shards + (uint32_t)m->n_nodes - 1) / (uint32_t)m->n_nodes, led = 0;
    for (uint32_t i = 0; i < s->n_shards; i++)
        led += s->shards[i].hosted && raft_role_of(core(s, &s->shards[i])) == RAFT_LEADER;
    int started = 0, excess = (int)led - (int)share;
    for (uint32_t i = 0; i < s->n_shards && started < BALANCE_BATCH && started < excess; i++) {
        struct shard *sh = &s->shards[i];
        if (!sh->hosted || raft_role_of(core(s, sh)) != RAFT_LEADER)
            continue;
        raft_id to = sh->preferred_leader;
        if (to == s->cfg.id || now < sh->balance_next_ms || shard_peer_odd(sh, to) ||
            !caught_up(s, sh, to))
            continue; /* (a replica found corrupt is not given leadership) */
        sh->balance_backoff_ms =
            sh->balance_backoff_ms ? sh->balance_backoff_ms * 2 : 2 * BALANCE_MS;
        if (sh->balance_backoff_ms > BALANCE_BACKOFF_MAX_MS)
            sh->balance_backoff_ms = BALANCE_BACKOFF_MAX_MS;
        sh->balance_next_ms = now + sh->balance_backoff_ms;
        if (raft_node_transfer(s->node, sh->group, to) == RAFT_OK) {
            s->transfers_balance++;
            started++;
            iolog("kvd %" PRIu64 ": shard %u: handing leadership to node %" PRIu64
                  ", its preferred leader (leaders spread over nodes)\n",
                  s->cfg.id, sh->index, to);
        }
    }
}

/* ------------------------------------------------------------------------
 * The ring, as JSON
 * ------------------------------------------------------------------------ */

static json_t *shard_json(struct kv_server *s, struct shard *sh)
{
    const struct ring_map *m = ring_map(s->ring);
    json_t *o = json_object();
    json_object_set_new(o, "shard", json_integer(sh->index));
    json_object_set_new(o, "group", json_integer((json_int_t)sh->group));
    json_object_set_new(o, "share", json_real(ring_shard_share(s->ring, sh->index)));
    json_t *reps = json_array();
    const uint64_t *r = ring_replicas(s->ring, sh->index);
    for (uint32_t k = 0; k < m->replicas; k++)
        json_array_append_new(reps, json_integer((json_int_t)r[k]));
    json_object_set_new(o, "replicas", reps);
    json_object_set_new(o, "preferred_leader", json_integer((json_int_t)sh->preferred_leader));
    if (!sh->hosted) {
        json_object_set_new(o, "hosted", json_false());
        json_object_set_new(o, "leader", json_integer((json_int_t)sh->leader_hint));
        return o;
    }
    json_object_set_new(o, "hosted", json_true());
    group_raft_fields(s, sh, o);
    uint64_t keys, bytes;
    if (kv_sm_stat(sh->sm, &keys, &bytes) == KV_OK) {
        json_object_set_new(o, "keys", json_integer((json_int_t)keys));
        json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
    }
    return o;
}

json_t *kv_server_ring(struct kv_server *s)
{
    const struct ring_map *m = ring_map(s->ring);
    json_t *o = json_object();
    json_object_set_new(o, "node", json_integer((json_int_t)s->cfg.id));
    json_object_set_new(o, "epoch", json_integer((json_int_t)m->epoch));
    char fp[20];
    snprintf(fp, sizeof(fp), "%016" PRIx64, ring_fingerprint(s->ring));
    json_object_set_new(o, "fingerprint", json_string(fp));
    json_object_set_new(o, "shards", json_integer(m->shards));
    json_object_set_new(o, "replicas", json_integer(m->replicas));
    json_object_set_new(o, "vnodes", json_integer(m->vnodes));
    json_t *nodes = json_array();
    for (size_t i = 0; i < m->n_nodes; i++)
        json_array_append_new(nodes, json_integer((json_int_t)m->nodes[i]));
    json_object_set_new(o, "nodes", nodes);
    json_t *rows = json_array();
    for (uint32_t i = 0; i < s->n_shards; i++)
        json_array_append_new(rows, shard_json(s, &s->shards[i]));
    json_object_set_new(o, "ring", rows);
    return o;
}

json_t *kv_server_locate(struct kv_server *s, const void *key, size_t len)
{
    uint64_t hash = ring_key_hash(key, len);
    uint32_t shard = ring_shard_of_hash(s->ring, hash);
    json_t *o = shard_json(s, &s->shards[shard]);
    char hex[20];
    snprintf(hex, sizeof(hex), "%016" PRIx64, hash);
    json_object_set_new(o, "hash", json_string(hex));
    const struct kv_peer *l = kv_server_leader(s, key, len);
    if (l) {
        char addr[96];
        snprintf(addr, sizeof(addr), "%s:%u", l->client_host, l->resp_port);
        json_object_set_new(o, "leader_resp", json_string(addr));
    }
    return o;
}

/* ------------------------------------------------------------------------
 * The placement a data directory was made with: <data>/placement, written
 * at the first start. The shard count (and so every key's shard) is fixed
 * when a cluster is created; a start with other flags is refused, and one
 * without them takes the recorded values.
 * ------------------------------------------------------------------------ */

static int read_placement(const char *path, uint32_t v[3], char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 1 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    static const char *const names[3] = {"shards", "replicas", "vnodes"};
    char line[128];
    bool seen[3] = {false, false, false};
    while (fgets(line, sizeof(line), f)) {
        char name[32];
        unsigned long long n;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (sscanf(line, "%31s %llu", name, &n) != 2)
            goto bad;
        for (int i = 0; i < 3; i++)
            if (!strcmp(name, names[i]) && n >= 1 && n <= UINT32_MAX) {
                v[i] = (uint32_t)n;
                seen[i] = true;
            }
    }
    fclose(f);
    if (seen[0] && seen[1] && seen[2])
        return 0;
    f = NULL;
bad:
    if (f)
        fclose(f);
    snprintf(err, errlen, "%s is damaged (want lines 'shards N', 'replicas N', 'vnodes N')", path);
    return -1;
}

static int write_placement(const char *dir, const char *path, const uint32_t v[3], char *err,
                           size_t errlen)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    bool ok = f && fprintf(f,
                           "# The placement this node's cluster was created with (kv/ring.h).\n"
                           "# Fixed for the life of the data: every key's shard depends on it.\n"
                           "shards %u\nreplicas %u\nvnodes %u\n",
                           v[0], v[1], v[2]) > 0;
    ok = f && fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    if (f)
        ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "writing %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return 0;
}

int placement_settle(struct kv_server_config *cfg, char *err, size_t errlen)
{
    char path[PATH_MAX - 16], mdb[PATH_MAX];
    snprintf(path, sizeof(path), "%s/placement", cfg->data_dir);
    snprintf(mdb, sizeof(mdb), "%s/data.mdb", cfg->data_dir);
    if (mkdir(cfg->data_dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", cfg->data_dir, strerror(errno));
        return -1;
    }
    uint32_t rec[3];
    int rc = read_placement(path, rec, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 1 && access(mdb, F_OK) == 0) {
        /* Data from before shards existed: one group on every node. */
        rec[0] = 1;
        rec[1] = (uint32_t)cfg->n_peers;
        rec[2] = RING_DEFAULT_VNODES;
        rc = 2;
    }
    uint32_t want[3] = {cfg->shards, cfg->replicas, cfg->vnodes};
    if (rc == 1) { /* a new data dir: the flags or the defaults */
        want[0] = want[0] ? want[0] : 1;
        if (!want[1])
            want[1] = want[0] == 1 ? (uint32_t)cfg->n_peers
                                   : (cfg->n_peers < 3 ? (uint32_t)cfg->n_peers : 3);
        want[2] = want[2] ? want[2] : RING_DEFAULT_VNODES;
    } else {
        static const char *const flag[3] = {"--shards", "--replicas", "--vnodes"};
        for (int i = 0; i < 3; i++) {
            if (want[i] && want[i] != rec[i]) {
                snprintf(err, errlen,
                         "data dir %s was created with --shards %u --replicas %u --vnodes %u; "
                         "this start asks for %s %u. The placement is fixed when a cluster is "
                         "created: start with the recorded values (or without the flag), or "
                         "with a fresh --data",
                         cfg->data_dir, rec[0], rec[1], rec[2], flag[i], want[i]);
                return -1;
            }
            want[i] = rec[i];
        }
    }
    if (rc != 0 && write_placement(cfg->data_dir, path, want, err, errlen))
        return -1;
    cfg->shards = want[0];
    cfg->replicas = want[1];
    cfg->vnodes = want[2];
    return 0;
}
