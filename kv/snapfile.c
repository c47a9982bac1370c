/* snapfile.c — snapshot files (§7). See server_internal.h. */
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
 * Snapshots (§7): files <data>/snap/g<group>-<index>.snap, written from an
 * LMDB read transaction on a worker thread (writers go on meanwhile), read
 * in chunks by the leader, staged and installed by followers.
 * ------------------------------------------------------------------------ */

void snap_file(struct kv_server *s, const struct shard *sh, char *buf, size_t len, raft_index index)
{
    snprintf(buf, len, "%s/g%" PRIu64 "-%020" PRIu64 ".snap", s->snap_dir, sh->group, index);
}

static void snap_named(struct kv_server *s, const struct shard *sh, char *buf, size_t len,
                       const char *what)
{
    snprintf(buf, len, "%s/g%" PRIu64 "-%s", s->snap_dir, sh->group, what);
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Delete every snapshot file of the shard but the current one (and what
 * is staging). */
void snap_cleanup(struct kv_server *s, struct shard *sh, bool all_temporary)
{
    DIR *d = opendir(s->snap_dir);
    if (!d)
        return;
    char keep[PATH_MAX], path[PATH_MAX + 256], prefix[32];
    snap_file(s, sh, keep, sizeof(keep), sh->snap_index);
    snprintf(prefix, sizeof(prefix), "g%" PRIu64 "-", sh->group);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", s->snap_dir, e->d_name);
        bool temporary = strstr(e->d_name, "-tmp") || strstr(e->d_name, "-staging");
        if (strcmp(path, keep) && (!temporary || all_temporary))
            unlink(path);
    }
    closedir(d);
}

struct snap_job {
    uv_work_t req;
    struct kv_server *s;
    struct shard *sh;
    char tmp[PATH_MAX];
    raft_index index;
    uint64_t size, checksum;
    int rc;
    char err[256];
};

static void snap_work(uv_work_t *req)
{
    struct snap_job *j = req->data;
    j->rc = kv_sm_snapshot_write(j->sh->sm, j->tmp, &j->index, &j->size, &j->checksum, j->err,
                                 sizeof(j->err));
}

static void snap_done(uv_work_t *req, int status)
{
    struct snap_job *j = req->data;
    struct kv_server *s = j->s;
    struct shard *sh = j->sh;
    sh->snap_busy = false;
    s->snap_jobs--;
    if (status || j->rc || s->stopping) {
        if (j->rc)
            iolog("kvd %" PRIu64 ": %s\n", s->cfg.id, j->err);
        unlink(j->tmp);
        free(j);
        if (s->stopping)
            server_release(s);
        return;
    }
    char path[PATH_MAX];
    snap_file(s, sh, path, sizeof(path), j->index);
    if (j->index == sh->snap_index || rename(j->tmp, path)) {
        unlink(j->tmp); /* nothing new since the last one */
        free(j);
        return;
    }
    sync_dir(s->snap_dir);
    int rv = raft_node_snapshot_taken(s->node, sh->group, j->index, j->size, j->checksum);
    if (rv == RAFT_OK) {
        sh->snap_index = j->index;
        sh->snapshots_taken++;
        snap_cleanup(s, sh, false);
        iolog("kvd %" PRIu64 ": group %" PRIu64 " snapshot at index %" PRIu64 " (%" PRIu64
              " bytes)\n",
              s->cfg.id, sh->group, j->index, j->size);
    } else {
        unlink(path);
    }
    free(j);
}

void cb_snapshot_wanted(void *data, uint64_t group, raft_index index)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    (void)index; /* taken at what the state machine has committed by then */
    if (!sh || sh->snap_busy || s->stopping)
        return;
    struct snap_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->s = s;
    j->sh = sh;
    snap_named(s, sh, j->tmp, sizeof(j->tmp), "tmp.snap");
    j->req.data = j;
    if (uv_queue_work(s->loop, &j->req, snap_work, snap_done)) {
        free(j);
        return;
    }
    sh->snap_busy = true;
    s->snap_jobs++;
}

int cb_snapshot_read(void *data, uint64_t group, raft_index index, uint64_t offset, void *buf,
                     size_t len)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    if (sh->read_fd < 0 || sh->read_fd_index != index) {
        if (sh->read_fd >= 0)
            close(sh->read_fd);
        char path[PATH_MAX];
        snap_file(s, sh, path, sizeof(path), index);
        sh->read_fd = open(path, O_RDONLY | O_CLOEXEC);
        sh->read_fd_index = index;
        if (sh->read_fd < 0) {
            iolog("kvd %" PRIu64 ": cannot read snapshot %s: %s\n", s->cfg.id, path,
                  strerror(errno));
            return -1;
        }
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(sh->read_fd, (char *)buf + done, len - done, (off_t)(offset + done));
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    sh->snap_bytes_sent += len; /* a replica being added catches up this way (members.c) */
    return 0;
}

int cb_snapshot_chunk(void *data, uint64_t group, const struct raft_install_snapshot *is)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    char path[PATH_MAX];
    snap_named(s, sh, path, sizeof(path), "staging.snap");
    if (is->offset == 0 || sh->staging_fd < 0) {
        if (sh->staging_fd >= 0)
            close(sh->staging_fd);
        sh->staging_fd =
            open(path, O_WRONLY | O_CREAT | (is->offset == 0 ? O_TRUNC : 0) | O_CLOEXEC, 0644);
    }
    bool ok = sh->staging_fd >= 0;
    size_t done = 0;
    while (ok && done < is->len) {
        ssize_t n = pwrite(sh->staging_fd, (const char *)is->data + done, is->len - done,
                           (off_t)(is->offset + done));
        ok = n > 0;
        done += ok ? (size_t)n : 0;
    }
    if (!is->done)
        return ok ? 0 : -1;
    ok = ok && fsync(sh->staging_fd) == 0;
    close(sh->staging_fd);
    sh->staging_fd = -1;
    raft_index at = 0;
    if (!ok || kv_snapshot_file_check(path, is->total_size, is->checksum, &at) != KV_OK ||
        at != is->last_index) {
        iolog("kvd %" PRIu64 ": received snapshot at %" PRIu64 " fails its check\n", s->cfg.id,
              is->last_index);
        return -1;
    }
    return 1;
}

int cb_snapshot_install(void *data, uint64_t group, void *txn, raft_index index, char *err,
                        size_t errlen)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    char path[PATH_MAX];
    snap_named(s, sh, path, sizeof(path), "staging.snap");
    int rc = kv_sm_install_stage(sh->sm, txn, path, index, err, errlen);
    return rc == KV_OK ? STORAGE_OK : rc == KV_EFULL ? STORAGE_EFULL : STORAGE_EIO;
}

/* At start: the log records snapshot meta->index, which the state machine
 * does not hold (node.c, reconcile). It is in one of two files: the
 * received one, still staged (the crash came before the install), or the
 * current one. */
int cb_snapshot_restore(void *data, uint64_t group, void *txn,
                        const struct raft_snapshot_meta *meta, char *err, size_t errlen)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    char staged[PATH_MAX], current[PATH_MAX];
    snap_named(s, sh, staged, sizeof(staged), "staging.snap");
    snap_file(s, sh, current, sizeof(current), meta->index);
    raft_index at = 0;
    const char *path = NULL;
    if (kv_snapshot_file_check(current, meta->size, meta->checksum, &at) == KV_OK &&
        at == meta->index) {
        path = current;
        /* What is staged is older, or the start of a transfer the restart
         * abandons: it must not be renamed over the current file. */
        unlink(staged);
    } else if (kv_snapshot_file_check(staged, meta->size, meta->checksum, &at) == KV_OK &&
               at == meta->index) {
        path = staged; /* cb_snapshot_installed renames it */
    } else {
        snprintf(err, errlen,
                 "group %" PRIu64 ": the log records a snapshot at %" PRIu64
                 " that the state machine does not hold, and neither %s nor %s is that snapshot "
                 "(replace the node: docs/kvd.md)",
                 group, meta->index, current, staged);
        return STORAGE_ECORRUPT;
    }
    int rc = kv_sm_install_stage(sh->sm, txn, path, meta->index, err, errlen);
    return rc == KV_OK ? STORAGE_OK : rc == KV_EFULL ? STORAGE_EFULL : STORAGE_EIO;
}

void cb_snapshot_installed(void *data, uint64_t group, raft_index index, bool committed)
{
    struct kv_server *s = data;
    struct shard *sh = shard_of_group(s, group);
    kv_sm_staged_done(sh->sm, committed);
    if (!committed)
        return;
    char from[PATH_MAX], to[PATH_MAX];
    snap_named(s, sh, from, sizeof(from), "staging.snap");
    snap_file(s, sh, to, sizeof(to), index);
    if (rename(from, to) == 0) {
        sync_dir(s->snap_dir);
        sh->snap_index = index;
        snap_cleanup(s, sh, false);
    }
    sh->snapshots_installed++;
    iolog("kvd %" PRIu64 ": group %" PRIu64 " installed the leader's snapshot at index %" PRIu64
          "\n",
          s->cfg.id, group, index);
    serve_reads(s, sh);
}
