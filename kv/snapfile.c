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

void snap_file(struct kv_server *s, char *buf, size_t len, raft_index index)
{
    snprintf(buf, len, "%s/g%d-%020" PRIu64 ".snap", s->snap_dir, GROUP, index);
}

static void snap_named(struct kv_server *s, char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "%s/g%d-%s", s->snap_dir, GROUP, what);
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Delete every snapshot file but the current one (and what is staging). */
void snap_cleanup(struct kv_server *s, bool all_temporary)
{
    DIR *d = opendir(s->snap_dir);
    if (!d)
        return;
    char keep[PATH_MAX], path[PATH_MAX + 256];
    snap_file(s, keep, sizeof(keep), s->snap_index);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
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
    char tmp[PATH_MAX];
    raft_index index;
    uint64_t size, checksum;
    int rc;
    char err[256];
};

static void snap_work(uv_work_t *req)
{
    struct snap_job *j = req->data;
    j->rc = kv_sm_snapshot_write(j->s->sm, j->tmp, &j->index, &j->size, &j->checksum, j->err,
                                 sizeof(j->err));
}

static void snap_done(uv_work_t *req, int status)
{
    struct snap_job *j = req->data;
    struct kv_server *s = j->s;
    s->snap_busy = false;
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
    snap_file(s, path, sizeof(path), j->index);
    if (j->index == s->snap_index || rename(j->tmp, path)) {
        unlink(j->tmp); /* nothing new since the last one */
        free(j);
        return;
    }
    sync_dir(s->snap_dir);
    int rv = raft_node_snapshot_taken(s->node, GROUP, j->index, j->size, j->checksum);
    if (rv == RAFT_OK) {
        s->snap_index = j->index;
        s->snapshots_taken++;
        snap_cleanup(s, false);
        iolog("kvd %" PRIu64 ": snapshot at index %" PRIu64 " (%" PRIu64 " bytes)\n", s->cfg.id,
              j->index, j->size);
    } else {
        unlink(path);
    }
    free(j);
}

void cb_snapshot_wanted(void *data, uint64_t group, raft_index index)
{
    struct kv_server *s = data;
    (void)group;
    (void)index; /* taken at what the state machine has committed by then */
    if (s->snap_busy || s->stopping)
        return;
    struct snap_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->s = s;
    snap_named(s, j->tmp, sizeof(j->tmp), "tmp.snap");
    j->req.data = j;
    if (uv_queue_work(s->loop, &j->req, snap_work, snap_done)) {
        free(j);
        return;
    }
    s->snap_busy = true;
}

int cb_snapshot_read(void *data, uint64_t group, raft_index index, uint64_t offset, void *buf,
                     size_t len)
{
    struct kv_server *s = data;
    (void)group;
    if (s->read_fd < 0 || s->read_fd_index != index) {
        if (s->read_fd >= 0)
            close(s->read_fd);
        char path[PATH_MAX];
        snap_file(s, path, sizeof(path), index);
        s->read_fd = open(path, O_RDONLY | O_CLOEXEC);
        s->read_fd_index = index;
        if (s->read_fd < 0) {
            iolog("kvd %" PRIu64 ": cannot read snapshot %s: %s\n", s->cfg.id, path,
                  strerror(errno));
            return -1;
        }
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(s->read_fd, (char *)buf + done, len - done, (off_t)(offset + done));
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

int cb_snapshot_chunk(void *data, uint64_t group, const struct raft_install_snapshot *is)
{
    struct kv_server *s = data;
    (void)group;
    char path[PATH_MAX];
    snap_named(s, path, sizeof(path), "staging.snap");
    if (is->offset == 0 || s->staging_fd < 0) {
        if (s->staging_fd >= 0)
            close(s->staging_fd);
        s->staging_fd =
            open(path, O_WRONLY | O_CREAT | (is->offset == 0 ? O_TRUNC : 0) | O_CLOEXEC, 0644);
    }
    bool ok = s->staging_fd >= 0;
    size_t done = 0;
    while (ok && done < is->len) {
        ssize_t n = pwrite(s->staging_fd, (const char *)is->data + done, is->len - done,
                           (off_t)(is->offset + done));
        ok = n > 0;
        done += ok ? (size_t)n : 0;
    }
    if (!is->done)
        return ok ? 0 : -1;
    ok = ok && fsync(s->staging_fd) == 0;
    close(s->staging_fd);
    s->staging_fd = -1;
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
    (void)group;
    char path[PATH_MAX];
    snap_named(s, path, sizeof(path), "staging.snap");
    int rc = kv_sm_install_stage(s->sm, txn, path, index, err, errlen);
    return rc == KV_OK ? STORAGE_OK : rc == KV_EFULL ? STORAGE_EFULL : STORAGE_EIO;
}

void cb_snapshot_installed(void *data, uint64_t group, raft_index index, bool committed)
{
    struct kv_server *s = data;
    (void)group;
    kv_sm_staged_done(s->sm, committed);
    if (!committed)
        return;
    char from[PATH_MAX], to[PATH_MAX];
    snap_named(s, from, sizeof(from), "staging.snap");
    snap_file(s, to, sizeof(to), index);
    if (rename(from, to) == 0) {
        sync_dir(s->snap_dir);
        s->snap_index = index;
        snap_cleanup(s, false);
    }
    s->snapshots_installed++;
    iolog("kvd %" PRIu64 ": installed the leader's snapshot at index %" PRIu64 "\n", s->cfg.id,
          index);
    serve_reads(s);
}
