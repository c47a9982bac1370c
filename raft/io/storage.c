/* storage.c — stable storage on LMDB; see storage.h for the layout.
 *
 * Every value is encoded little-endian by hand, so a data directory means
 * the same on every machine. Log keys are MDB_INTEGERKEY (native size_t).
 */
/* flock() is BSD, not POSIX, and RUSAGE_THREAD is Linux's: glibc declares
 * them only with this. */
#define _GNU_SOURCE
#include "storage.h"

#include "iolog.h"
#include "le.h"
#include "wal.h"

#include <errno.h>
#include <xxhash.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
    MAX_DBS = 4096,     /* named databases: 4 per group plus the node's */
    GROUP_CACHE = 256,  /* groups whose handles are kept open */
    SNAP_HEADER = 8 * 5 /* index, term, size, checksum, member count */
};

struct group_dbis {
    uint64_t group;
    MDB_dbi log, meta;
    bool open;
};

enum { MAX_PEER_INCARNATIONS = 256 };

struct storage {
    int lock_fd;          /* holds the data directory's lock (lock_dir) */
    uint64_t incarnation; /* this directory's (storage.h) */
    struct {
        uint64_t id, incarnation;
    } peers[MAX_PEER_INCARNATIONS]; /* recorded peers' incarnations ("peer:<id>" in node) */
    size_t n_peers;
    size_t header; /* of a log record: 9, or 17 with a checksum (format 2) */
    MDB_env *env;
    /* The state machine's environment: <data>/sm, or env itself in a data
     * directory made before the split (storage.h). */
    MDB_env *sm_env;
    bool sm_separate;
    bool sm_rebuilt;      /* thrown away at open: written unsynced in another boot */
    char sm_marker[4200]; /* its "unsynced" file */
    char sm_dir[4096];
    MDB_dbi node;
    struct group_dbis groups[GROUP_CACHE];
    size_t n_groups;
    size_t hook_writes;          /* groups written by storage_write_more in this commit */
    struct storage_cost last;    /* of the last storage_commit_with (storage.h) */
    struct storage_cost sm_last; /* of the last storage_commit_sm */
    /* The Raft log of every group, when it is an append-only file
     * (<data>/log, wal.h): a data directory made by this build, unless
     * RAFTKV_LOG_STORE=lmdb. NULL: the log is in env (the databases
     * g<g>.log and g<g>.meta), as every directory made before. */
    struct wal *wal;
    bool log_wal; /* the node database says so (check_identity) */
};

const char *storage_strerror(int code)
{
    switch (code) {
    case STORAGE_OK:
        return "ok";
    case STORAGE_EIO:
        return "storage: I/O error";
    case STORAGE_EFULL:
        return "storage full";
    case STORAGE_EMISMATCH:
        return "data directory of another cluster or node";
    case STORAGE_ECORRUPT:
        return "stored data damaged";
    case STORAGE_ENOMEM:
        return "out of memory";
    case STORAGE_ELOCKED:
        return "data directory in use by another process";
    default:
        return "unknown storage error";
    }
}

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int lmdb_error(char *err, size_t errlen, int rc, const char *what)
{
    if (rc == MDB_MAP_FULL)
        return fail(err, errlen, STORAGE_EFULL,
                    "storage full (MDB_MAP_FULL) while %s: nothing of this write was stored; "
                    "restart the node with a larger map (kvd --map-size)",
                    what);
    /* LMDB passes on ENOSPC only when a write fit nothing at all; a write
     * the kernel cut short it reports as EIO, and that is what a full disk
     * usually gives: a commit's writev starts on pages the file already has
     * and runs into new ones (seen on a full tmpfs). Both need the same
     * care. */
    if (rc == ENOSPC)
        return fail(err, errlen, STORAGE_EIO,
                    "storage: no space left on device while %s: nothing of this write was "
                    "acknowledged; free space on the data directory's file system, then restart "
                    "the node",
                    what);
    if (rc == EIO)
        return fail(err, errlen, STORAGE_EIO,
                    "storage: I/O error while %s, most often a full disk (no space left on "
                    "device) that cut a write short: nothing of this write was acknowledged; "
                    "free space (df) or check the disk (dmesg), then restart the node",
                    what);
    return fail(err, errlen, STORAGE_EIO, "storage: %s: %s", what, mdb_strerror(rc));
}

static int put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t v)
{
    uint8_t buf[8];
    put64(buf, v);
    MDB_val k = {strlen(key), (void *)key}, d = {8, buf};
    return mdb_put(txn, dbi, &k, &d, 0);
}

/* 0 when absent. */
static int get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *v)
{
    MDB_val k = {strlen(key), (void *)key}, d;
    int rc = mdb_get(txn, dbi, &k, &d);
    *v = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc == 0 && d.mv_size == 8)
        *v = get64(d.mv_data);
    return rc;
}

/* ------------------------------------------------------------------------
 * Open
 * ------------------------------------------------------------------------ */

/* This directory's incarnation, drawn if it has none yet; and the peers'
 * recorded ones. In txn (a write transaction the caller commits). */
static int load_incarnations(struct storage *st, MDB_txn *txn)
{
    int rc = get_u64(txn, st->node, "incarnation", &st->incarnation);
    if (rc)
        return rc;
    while (!st->incarnation)
        randombytes_buf(&st->incarnation, sizeof(st->incarnation));
    if ((rc = put_u64(txn, st->node, "incarnation", st->incarnation)))
        return rc;
    MDB_cursor *c;
    if ((rc = mdb_cursor_open(txn, st->node, &c)))
        return rc;
    static const char prefix[] = "peer:";
    MDB_val k = {sizeof(prefix) - 1, (void *)prefix}, d;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        if (k.mv_size <= sizeof(prefix) - 1 || memcmp(k.mv_data, prefix, sizeof(prefix) - 1))
            break;
        char id[24];
        size_t n = k.mv_size - (sizeof(prefix) - 1);
        if (n >= sizeof(id) || d.mv_size != 8 || st->n_peers == MAX_PEER_INCARNATIONS)
            continue;
        memcpy(id, (char *)k.mv_data + sizeof(prefix) - 1, n);
        id[n] = '\0';
        st->peers[st->n_peers].id = strtoull(id, NULL, 10);
        st->peers[st->n_peers++].incarnation = get64(d.mv_data);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

uint64_t storage_incarnation(const struct storage *st)
{
    return st->incarnation;
}

uint64_t storage_peer_incarnation(const struct storage *st, uint64_t id)
{
    for (size_t i = 0; i < st->n_peers; i++)
        if (st->peers[i].id == id)
            return st->peers[i].incarnation;
    return 0;
}

/* Record peer id's incarnation, or forget it (incarnation 0), in a
 * transaction of its own. */
static int peer_record(struct storage *st, uint64_t id, uint64_t incarnation, char *err,
                       size_t errlen)
{
    const char *what =
        incarnation ? "recording a peer's incarnation" : "forgetting a peer's incarnation";
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return lmdb_error(err, errlen, rc, what);
    char key[32];
    snprintf(key, sizeof(key), "peer:%llu", (unsigned long long)id);
    MDB_val k = {strlen(key), key};
    rc = incarnation ? put_u64(txn, st->node, key, incarnation) : mdb_del(txn, st->node, &k, NULL);
    if (rc && rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return lmdb_error(err, errlen, rc, what);
    }
    if ((rc = mdb_txn_commit(txn)))
        return lmdb_error(err, errlen, rc, what);
    for (size_t i = 0; i < st->n_peers; i++)
        if (st->peers[i].id == id)
            st->peers[i] = st->peers[--st->n_peers];
    if (incarnation) {
        st->peers[st->n_peers].id = id;
        st->peers[st->n_peers++].incarnation = incarnation;
    }
    return STORAGE_OK;
}

int storage_set_peer_incarnation(struct storage *st, uint64_t id, uint64_t incarnation, char *err,
                                 size_t errlen)
{
    if (st->n_peers == MAX_PEER_INCARNATIONS && !storage_peer_incarnation(st, id))
        return fail(err, errlen, STORAGE_ENOMEM, "storage: too many peers to record");
    return peer_record(st, id, incarnation, err, errlen);
}

int storage_forget_peer_incarnation(struct storage *st, uint64_t id, char *err, size_t errlen)
{
    return peer_record(st, id, 0, err, errlen);
}

static int check_identity(struct storage *st, uint64_t cluster_id, uint64_t node_id,
                          const char *path, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return lmdb_error(err, errlen, rc, "opening the node database");
    if ((rc = mdb_dbi_open(txn, "node", MDB_CREATE, &st->node))) {
        mdb_txn_abort(txn);
        return lmdb_error(err, errlen, rc, "opening the node database");
    }
    uint64_t have_cluster, have_node, have_version, sm = 0, log = 0;
    get_u64(txn, st->node, "sm", &sm);
    get_u64(txn, st->node, "log", &log);
    get_u64(txn, st->node, "cluster", &have_cluster);
    get_u64(txn, st->node, "node", &have_node);
    get_u64(txn, st->node, "version", &have_version);
    if (have_version == 0) { /* a fresh directory: record who owns it */
        /* Its log is an append-only file (wal.h) unless a test asks for
         * the LMDB log of older directories, which this build still runs. */
        const char *store = getenv("RAFTKV_LOG_STORE");
        bool lmdb_log = store && strcmp(store, "lmdb") == 0;
        if ((rc = put_u64(txn, st->node, "log", lmdb_log ? 0 : 1)))
            return mdb_txn_abort(txn), lmdb_error(err, errlen, rc, "recording the log's format");
        st->log_wal = !lmdb_log;
        if ((rc = put_u64(txn, st->node, "cluster", cluster_id)) ||
            (rc = put_u64(txn, st->node, "node", node_id)) ||
            (rc = put_u64(txn, st->node, "version", STORAGE_FORMAT_VERSION)) ||
            (rc = put_u64(txn, st->node, "sm", 1)) || (rc = load_incarnations(st, txn))) {
            mdb_txn_abort(txn);
            return lmdb_error(err, errlen, rc, "recording the node's identity");
        }
        rc = mdb_txn_commit(txn);
        st->header = 17;
        st->sm_separate = true;
        return rc ? lmdb_error(err, errlen, rc, "recording the node's identity") : STORAGE_OK;
    }
    /* Ours (drawn now for a directory older than incarnations) and the
     * peers' recorded ones: committed only if the identity checks out. */
    if ((rc = load_incarnations(st, txn))) {
        mdb_txn_abort(txn);
        return lmdb_error(err, errlen, rc, "reading the incarnations");
    }
    bool same = have_cluster == cluster_id && have_node == node_id &&
                (have_version == STORAGE_FORMAT_VERSION || have_version == 1);
    if (!same)
        mdb_txn_abort(txn);
    else if ((rc = mdb_txn_commit(txn)))
        return lmdb_error(err, errlen, rc, "recording the node's incarnation");
    /* Format 1 has no checksums in its log records; such a directory is
     * still read and written as it was made. */
    if (have_version != STORAGE_FORMAT_VERSION && have_version != 1)
        return fail(err, errlen, STORAGE_EMISMATCH,
                    "data dir %s has storage format %llu, this build reads 1 and %d (use a "
                    "fresh --data)",
                    path, (unsigned long long)have_version, STORAGE_FORMAT_VERSION);
    st->header = have_version == 1 ? 9 : 17;
    st->sm_separate = sm == 1;
    st->log_wal = log == 1;
    if (have_cluster != cluster_id || have_node != node_id)
        return fail(err, errlen, STORAGE_EMISMATCH,
                    "data dir %s belongs to cluster %016llx node %llu, not cluster %016llx node "
                    "%llu (use a fresh --data, or the --id and cluster it was made for)",
                    path, (unsigned long long)have_cluster, (unsigned long long)have_node,
                    (unsigned long long)cluster_id, (unsigned long long)node_id);
    return STORAGE_OK;
}

/* One process per data directory. Two kvds on one LMDB environment would
 * each take the other's writes for its own, and their peers would accept
 * both as the same node: two voters with one vote. flock() rather than
 * fcntl() locks, because a second open in the same process must fail too
 * and closing an unrelated descriptor of the file must not drop the lock;
 * the kernel drops it with the process, so kill -9 leaves nothing stale.
 * The file names its holder, for the message of the one refused. */
static int lock_dir(const char *path, uint64_t cluster_id, uint64_t node_id, int *out, char *err,
                    size_t errlen)
{
    char file[4096];
    snprintf(file, sizeof(file), "%s/kvd.lock", path);
    int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(err, errlen, STORAGE_EIO, "storage: cannot open %s: %s", file, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e != EWOULDBLOCK) {
            close(fd);
            return fail(err, errlen, STORAGE_EIO, "storage: cannot lock %s: %s", file, strerror(e));
        }
        /* The holder writes its name just after taking the lock: give it a
         * moment if we came in between. */
        char who[128] = "";
        long pid = 0;
        for (int tries = 0; tries < 20 && pid <= 0; tries++) {
            ssize_t len = pread(fd, who, sizeof(who) - 1, 0);
            who[len > 0 ? len : 0] = '\0';
            pid = strtol(who, NULL, 10);
            if (pid <= 0)
                nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
        }
        close(fd);
        char *nl = strchr(who, '\n'), *end = nl ? strchr(nl + 1, '\n') : NULL;
        if (end)
            *end = '\0';
        if (pid <= 0)
            return fail(err, errlen, STORAGE_ELOCKED,
                        "data dir %s is in use by another process (another kvd with this "
                        "--data?)",
                        path);
        return fail(err, errlen, STORAGE_ELOCKED,
                    "data dir %s is in use by process %ld (%s%sanother kvd with this --data?)",
                    path, pid, nl && nl[1] ? nl + 1 : "", nl && nl[1] ? "; " : "");
    }
    char who[128];
    int len = snprintf(who, sizeof(who), "%ld\nnode %llu of cluster %016llx\n", (long)getpid(),
                       (unsigned long long)node_id, (unsigned long long)cluster_id);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, who, (size_t)len, 0) != len) {
        int e = errno;
        close(fd);
        return fail(err, errlen, STORAGE_EIO, "storage: cannot write %s: %s", file, strerror(e));
    }
    *out = fd;
    return STORAGE_OK;
}

/* LMDB maps its data file and trusts the meta pages at its start: a file
 * shorter than they claim makes the first read past its end a SIGBUS, with
 * no word of why. So read the meta pages first, the way they lie on disk
 * (native byte order and word size): each page opens with a header (page
 * number: a word; two 16-bit fields, the second the page's flags; 32 bits
 * more), and a meta page's body is: magic (32 bits), format version (32
 * bits), two words (address, map size), the free and main databases'
 * records (32 bits, of which the free database's holds the page size, two
 * 16-bit fields, five words each), the last page used and the transaction
 * id (a word each). Page 0 sits at offset 0, page 1 one page further. */
enum {
    WORD = sizeof(size_t),
    PAGE_HEADER = WORD + 8,
    META_FLAGS = WORD + 2,
    META_MAGIC = PAGE_HEADER,
    META_VERSION = PAGE_HEADER + 4,
    META_PSIZE = PAGE_HEADER + 8 + 2 * WORD, /* the free database's first field */
    DB_RECORD = 8 + 5 * WORD,                /* a database's record; its root page last */
    META_FREE_ROOT = PAGE_HEADER + 8 + 2 * WORD + 8 + 4 * WORD,
    META_MAIN_ROOT = META_FREE_ROOT + DB_RECORD,
    META_LAST_PG = PAGE_HEADER + 8 + 2 * WORD + 2 * DB_RECORD,
    META_TXNID = META_LAST_PG + WORD,
    META_END = META_TXNID + WORD,
    P_META = 0x08,
    LMDB_MAGIC = 0xBEEFC0DE,
    LMDB_DATA_VERSION = 1,
};

struct meta_page {
    uint32_t psize;
    size_t last_pg, txnid;
    size_t roots[2]; /* the free and main databases' root pages (~0: empty) */
};

/* NULL when the meta page in buf (page number pgno) is sound, else why not. */
static const char *read_meta(const uint8_t *buf, size_t pgno, struct meta_page *m)
{
    size_t number;
    uint16_t flags;
    uint32_t magic, version;
    memcpy(&number, buf, WORD);
    memcpy(&flags, buf + META_FLAGS, 2);
    memcpy(&magic, buf + META_MAGIC, 4);
    memcpy(&version, buf + META_VERSION, 4);
    memcpy(&m->psize, buf + META_PSIZE, 4);
    memcpy(&m->last_pg, buf + META_LAST_PG, WORD);
    memcpy(&m->roots[0], buf + META_FREE_ROOT, WORD);
    memcpy(&m->roots[1], buf + META_MAIN_ROOT, WORD);
    memcpy(&m->txnid, buf + META_TXNID, WORD);
    if (magic != LMDB_MAGIC || number != pgno || !(flags & P_META))
        return "is not an LMDB meta page";
    if (version != LMDB_DATA_VERSION)
        return "of an LMDB format version this build does not read";
    if (m->psize < 512 || m->psize > 65536 || (m->psize & (m->psize - 1)))
        return "has an impossible page size";
    if (m->last_pg < 1)
        return "has an impossible last page";
    return NULL;
}

#define RESTORE_ADVICE "(restore it from a copy, or replace the node)"

/* Whether every page in use can be read: a child process opens the
 * environment and reads every record of every database, every page of
 * each; a read past the end of a truncated file kills it with SIGBUS, not
 * us. Run only when the file is shorter than its meta page counts, which
 * a healthy file can be too (pages taken and freed in one transaction are
 * never written). */
static bool readable_in_child(const char *path)
{
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi main_db;
        MDB_cursor *names;
        MDB_val k, d;
        if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, MAX_DBS) ||
            mdb_env_set_mapsize(env, (size_t)1 << 40) ||
            mdb_env_open(env, path, MDB_RDONLY | MDB_NOLOCK, 0644) ||
            mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) || mdb_dbi_open(txn, NULL, 0, &main_db) ||
            mdb_cursor_open(txn, main_db, &names))
            _exit(1);
        volatile uint8_t sum = 0;
        while (mdb_cursor_get(names, &k, &d, MDB_NEXT) == 0) {
            char name[512];
            MDB_dbi db;
            MDB_cursor *c;
            if (k.mv_size >= sizeof(name))
                continue;
            memcpy(name, k.mv_data, k.mv_size);
            name[k.mv_size] = '\0';
            if (mdb_dbi_open(txn, name, 0, &db) || mdb_cursor_open(txn, db, &c))
                continue; /* a plain record of the main database */
            MDB_val ck, cd;
            while (mdb_cursor_get(c, &ck, &cd, MDB_NEXT) == 0)
                for (size_t i = 0; i < cd.mv_size; i += 1024)
                    sum ^= ((const uint8_t *)cd.mv_data)[i];
            mdb_cursor_close(c);
        }
        /* Every page was read: none lies past the end. (The sum is only
         * there so the reads cannot be optimised away; its value is not.) */
        _exit(sum & 0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* A missing or empty data file is a fresh directory; anything else must
 * hold its meta pages, its roots, and every page in use. */
static int check_data_file(const char *path, char *err, size_t errlen)
{
    char file[4096];
    snprintf(file, sizeof(file), "%s/data.mdb", path);
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return STORAGE_OK;
    if (fd < 0)
        return fail(err, errlen, STORAGE_EIO, "data file %s cannot be read: %s", file,
                    strerror(errno));
    struct stat sb;
    uint8_t page[2][META_END];
    struct meta_page m[2];
    ssize_t got[2] = {0, 0};
    const char *why[2] = {NULL, NULL};
    int e = 0;
    if (fstat(fd, &sb) != 0)
        e = errno;
    else if (sb.st_size > 0 && (got[0] = pread(fd, page[0], META_END, 0)) < 0)
        e = errno;
    else if (got[0] == META_END && !(why[0] = read_meta(page[0], 0, &m[0])) &&
             (got[1] = pread(fd, page[1], META_END, m[0].psize)) < 0)
        e = errno;
    close(fd);
    if (e)
        return fail(err, errlen, STORAGE_EIO, "data file %s cannot be read: %s", file, strerror(e));
    unsigned long long size = (unsigned long long)sb.st_size;
    if (size == 0)
        return STORAGE_OK;
    if (got[0] < META_END)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "data file %s is truncated: %llu bytes, too few for LMDB's first meta "
                    "page " RESTORE_ADVICE,
                    file, size);
    if (why[0])
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "data file %s is unreadable: its meta page 0 %s " RESTORE_ADVICE, file, why[0]);
    const struct meta_page *newest = &m[0];
    if (got[1] == META_END) {
        if ((why[1] = read_meta(page[1], 1, &m[1])))
            return fail(err, errlen, STORAGE_ECORRUPT,
                        "data file %s is unreadable: its meta page 1 %s " RESTORE_ADVICE, file,
                        why[1]);
        if (m[1].psize != m[0].psize)
            return fail(err, errlen, STORAGE_ECORRUPT,
                        "data file %s is unreadable: its meta pages disagree on the page size "
                        "(%u, %u) " RESTORE_ADVICE,
                        file, m[0].psize, m[1].psize);
        if (m[1].txnid > m[0].txnid)
            newest = &m[1];
    }
    /* A short page 1 is the truncation below. The last page a meta page
     * counts may never have been written (a page taken at the end of the
     * file and freed in the same transaction: LMDB's own copy stops at the
     * file's size), so it cannot be the measure; both meta pages and both
     * databases' roots -- the first pages any read touches -- must be in
     * the file. */
    unsigned long long need = 2ULL * newest->psize;
    for (int i = 0; i < 2; i++)
        if (newest->roots[i] != (size_t)-1 && (newest->roots[i] + 1ULL) * newest->psize > need)
            need = (newest->roots[i] + 1ULL) * newest->psize;
    unsigned long long counted = (newest->last_pg + 1ULL) * newest->psize;
    if (size < need || (size < counted && !readable_in_child(path)))
        return fail(
            err, errlen, STORAGE_ECORRUPT,
            "data file %s is truncated: %llu bytes, LMDB needs at least %llu " RESTORE_ADVICE, file,
            size, counted);
    return STORAGE_OK;
}

/* This boot of the machine: what a process crash keeps (the page cache)
 * and a machine crash does not. RAFTKV_BOOT_ID stands in for it in tests
 * (a machine restart, simulated). */
static void boot_id(char *out, size_t len)
{
    const char *fake = getenv("RAFTKV_BOOT_ID");
    if (fake && *fake) {
        snprintf(out, len, "%s", fake);
        return;
    }
    snprintf(out, len, "unknown");
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f)
        return;
    if (fgets(out, (int)len, f))
        out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

static int sync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* The state machine's environment, <path>/sm, commits without syncing
 * (MDB_NOSYNC): the log is what must survive a crash, and the state
 * machine is what the log and the snapshot files rebuild. A process crash
 * (kill -9) loses nothing of it -- its writes are in the page cache, and
 * LMDB is consistent there. A machine crash may lose some, and may even
 * tear it (pages written out of order), so the file "unsynced" says, while
 * the environment is open, which boot of the machine wrote to it unsynced:
 * opened again in another boot, with the file still there, it is thrown
 * away and rebuilt -- every group's state machine starts empty and
 * node.c's reconcile() installs its latest snapshot file (the log keeps
 * every entry after it) or replays its whole log. A clean close syncs it
 * and removes the file. Before the log forgets entries (compaction) it is
 * synced too (storage_sync_sm), which keeps replays short. */
static int open_sm_env(struct storage *st, const char *path, size_t map_size_bytes, char *err,
                       size_t errlen)
{
    char dir[4096], marker[4200], file[4200], boot[64], was[64] = "";
    snprintf(dir, sizeof(dir), "%s/sm", path);
    snprintf(marker, sizeof(marker), "%s/unsynced", dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return fail(err, errlen, STORAGE_EIO, "storage: cannot create %s: %s", dir,
                    strerror(errno));
    boot_id(boot, sizeof(boot));
    FILE *f = fopen(marker, "r");
    if (f) {
        if (!fgets(was, sizeof(was), f))
            was[0] = '\0';
        was[strcspn(was, "\n")] = '\0';
        fclose(f);
    }
    if (f && strcmp(was, boot) != 0) {
        iolog("storage: %s was written unsynced before the machine restarted (boot %s, now %s): "
              "rebuilding the state machines from the snapshots and the log\n",
              dir, was, boot);
        snprintf(file, sizeof(file), "%s/data.mdb", dir);
        if (unlink(file) != 0 && errno != ENOENT)
            return fail(err, errlen, STORAGE_EIO, "storage: cannot remove %s: %s", file,
                        strerror(errno));
        snprintf(file, sizeof(file), "%s/lock.mdb", dir);
        unlink(file);
        st->sm_rebuilt = true;
    }
    /* Said before the first unsynced write of this boot. */
    if (!f || strcmp(was, boot) != 0) {
        f = fopen(marker, "w");
        bool ok = f && fprintf(f, "%s\n", boot) > 0;
        ok = f && fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
        if (f)
            fclose(f);
        if (!ok || sync_path(dir) != 0)
            return fail(err, errlen, STORAGE_EIO, "storage: cannot write %s: %s", marker,
                        strerror(errno));
    }
    int rc = check_data_file(dir, err, errlen);
    if (rc != STORAGE_OK)
        return rc;
    if ((rc = mdb_env_create(&st->sm_env))) {
        st->sm_env = st->env;
        return lmdb_error(err, errlen, rc, "creating the state machine's environment");
    }
    if ((rc = mdb_env_set_maxdbs(st->sm_env, MAX_DBS)) ||
        (rc = mdb_env_set_mapsize(st->sm_env, map_size_bytes)) ||
        (rc = mdb_env_open(st->sm_env, dir, MDB_NOSYNC, 0644))) {
        mdb_env_close(st->sm_env);
        st->sm_env = st->env;
        return lmdb_error(err, errlen, rc, "opening the state machine's environment");
    }
    snprintf(st->sm_marker, sizeof(st->sm_marker), "%s", marker);
    snprintf(st->sm_dir, sizeof(st->sm_dir), "%s", dir);
    return STORAGE_OK;
}

int storage_open(const char *path, uint64_t cluster_id, uint64_t node_id, size_t map_size_bytes,
                 struct storage **out, char *err, size_t errlen)
{
    int rc;
    *out = NULL;
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return fail(err, errlen, STORAGE_EIO, "storage: cannot create %s: %s", path,
                    strerror(errno));
    struct storage *st = calloc(1, sizeof(*st));
    if (!st)
        return fail(err, errlen, STORAGE_ENOMEM, "storage: out of memory");
    /* Locked before LMDB sees the directory: LMDB's own lock file lets
     * any number of processes share an environment. */
    if ((rc = lock_dir(path, cluster_id, node_id, &st->lock_fd, err, errlen)) != STORAGE_OK) {
        free(st);
        return rc;
    }
    if ((rc = check_data_file(path, err, errlen)) != STORAGE_OK)
        goto err_after_lock;
    if (sodium_init() < 0) { /* for the incarnation's random bytes */
        rc = fail(err, errlen, STORAGE_EIO, "storage: libsodium failed to initialise");
        goto err_after_lock;
    }
    if ((rc = mdb_env_create(&st->env))) {
        rc = lmdb_error(err, errlen, rc, "creating the environment");
        goto err_after_lock;
    }
    /* Default flags: every commit is durable (never MDB_NOSYNC: an acknowledged write must survive
     * a crash). */
    if ((rc = mdb_env_set_maxdbs(st->env, MAX_DBS)) ||
        (rc = mdb_env_set_mapsize(st->env, map_size_bytes)) ||
        (rc = mdb_env_open(st->env, path, 0, 0644))) {
        rc = lmdb_error(err, errlen, rc, "opening the environment");
        goto err_after_env;
    }
    if ((rc = check_identity(st, cluster_id, node_id, path, err, errlen)) != STORAGE_OK)
        goto err_after_env;
    st->sm_env = st->env;
    if (st->sm_separate && (rc = open_sm_env(st, path, map_size_bytes, err, errlen)) != STORAGE_OK)
        goto err_after_env;
    if (st->log_wal) {
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s/log", path);
        if ((rc = wal_open(dir, 0, &st->wal, err, errlen)) != STORAGE_OK) {
            if (st->sm_env != st->env)
                mdb_env_close(st->sm_env);
            goto err_after_env;
        }
    }
    *out = st;
    return STORAGE_OK;

err_after_env:
    mdb_env_close(st->env);
err_after_lock:
    close(st->lock_fd);
    free(st);
    return rc;
}

void storage_close(struct storage *st)
{
    if (!st)
        return;
    /* The environments first: the next holder may open them the moment
     * the lock is gone. A state machine synced at close needs no rebuild
     * after a machine restart. */
    if (st->sm_env && st->sm_env != st->env) {
        if (mdb_env_sync(st->sm_env, 1) == 0 && unlink(st->sm_marker) == 0)
            sync_path(st->sm_dir);
        mdb_env_close(st->sm_env);
    }
    wal_close(st->wal);
    mdb_env_close(st->env);
    close(st->lock_fd);
    free(st);
}

/* The handles of a group's databases, opened (and created) in txn. */
static int group_dbis(struct storage *st, MDB_txn *txn, uint64_t group, bool create,
                      struct group_dbis **out)
{
    for (size_t i = 0; i < st->n_groups; i++)
        if (st->groups[i].group == group) {
            *out = &st->groups[i];
            return 0;
        }
    char name[40];
    struct group_dbis g = {.group = group};
    unsigned flags = create ? MDB_CREATE : 0;
    snprintf(name, sizeof(name), "g%llu.log", (unsigned long long)group);
    int rc = mdb_dbi_open(txn, name, flags | MDB_INTEGERKEY, &g.log);
    if (rc)
        return rc;
    snprintf(name, sizeof(name), "g%llu.meta", (unsigned long long)group);
    if ((rc = mdb_dbi_open(txn, name, flags, &g.meta)))
        return rc;
    g.open = true;
    /* Handles opened in a write transaction stay valid once it commits;
     * cache only then (the caller passes create for write transactions). */
    if (st->n_groups < GROUP_CACHE && create) {
        st->groups[st->n_groups] = g;
        *out = &st->groups[st->n_groups++];
        return 0;
    }
    static struct group_dbis scratch;
    scratch = g;
    *out = &scratch;
    return 0;
}

/* ------------------------------------------------------------------------
 * Commit
 * ------------------------------------------------------------------------ */

/* A log key (LMDB does not promise alignment). */
static size_t key_of(const MDB_val *k)
{
    size_t v;
    memcpy(&v, k->mv_data, sizeof(v));
    return v;
}

/* Delete every log key >= from (downwards: every key <= from).
 *
 * Each step finds its next victim afresh, at the end it works from
 * (MDB_LAST or MDB_FIRST), and passes LMDB no memory of LMDB's own: a key
 * or value LMDB returns points into its page and is valid only until the
 * next update in the transaction (lmdb.h, "Values returned from the
 * database are valid only until a subsequent update operation"). An
 * earlier version searched again after mdb_cursor_del() with the key the
 * cursor had returned -- bytes the delete had just moved -- and in a log
 * of more than one page deleted entries it had to keep (a hole) and kept
 * ones it had to delete (a stale range, which a restart would load). A
 * descent per entry costs O(log n); truncations are short suffixes, and
 * dropping a whole log is one mdb_drop(). */
static int delete_from(MDB_txn *txn, MDB_dbi log, size_t from, bool downwards)
{
    if (!downwards && from <= 1)
        return mdb_drop(txn, log, 0); /* every key: empty it, keep the handle */
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, log, &c);
    if (rc)
        return rc;
    MDB_val k, d;
    MDB_cursor_op at = downwards ? MDB_FIRST : MDB_LAST;
    while ((rc = mdb_cursor_get(c, &k, &d, at)) == 0) {
        size_t key = key_of(&k);
        if (downwards ? key > from : key < from)
            break;
        if ((rc = mdb_cursor_del(c, 0)))
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* A log record's checksum (format 2): XXH64 over its index, term, type and
 * data, so that a flipped bit anywhere in it -- or a record under another
 * key -- is found when it is read, not served. */
static uint64_t entry_checksum(size_t index, const uint8_t *record, const void *data, size_t len)
{
    uint8_t head[17]; /* index, term, type */
    put64(head, index);
    memcpy(head + 8, record, 9);
    return XXH64(data, len, XXH64(head, sizeof(head), 0));
}

static int put_entry(const struct storage *st, MDB_txn *txn, MDB_dbi log,
                     const struct raft_entry *e)
{
    size_t key = (size_t)e->index;
    MDB_val k = {sizeof(key), &key}, d = {st->header + e->len, NULL};
    /* MDB_RESERVE: LMDB gives us the space, we fill it: one copy. */
    int rc = mdb_put(txn, log, &k, &d, MDB_RESERVE);
    if (rc)
        return rc;
    uint8_t *p = d.mv_data;
    put64(p, e->term);
    p[8] = (uint8_t)e->type;
    if (st->header > 9)
        put64(p + 9, entry_checksum(key, p, e->data, e->len));
    if (e->len)
        memcpy(p + st->header, e->data, e->len);
    return 0;
}

static int put_snapshot(MDB_txn *txn, MDB_dbi meta, const struct raft_snapshot_meta *s)
{
    size_t len = SNAP_HEADER + s->n_members * 9;
    MDB_val k = {4, "snap"}, d = {len, NULL};
    int rc = mdb_put(txn, meta, &k, &d, MDB_RESERVE);
    if (rc)
        return rc;
    uint8_t *p = d.mv_data;
    put64(p, s->index);
    put64(p + 8, s->term);
    put64(p + 16, s->size);
    put64(p + 24, s->checksum);
    put64(p + 32, s->n_members);
    for (size_t i = 0; i < s->n_members; i++) {
        put64(p + SNAP_HEADER + 9 * i, s->members[i].id);
        p[SNAP_HEADER + 9 * i + 8] = s->members[i].is_voter ? 1 : 0;
    }
    return 0;
}

/* The log after installing a snapshot at (index, term): its tail after the
 * snapshot if the stored entry at index has that term, else nothing. */
static int log_after_install(MDB_txn *txn, struct group_dbis *g, const struct raft_snapshot_meta *s)
{
    size_t key = (size_t)s->index;
    MDB_val k = {sizeof(key), &key}, d;
    int rc = mdb_get(txn, g->log, &k, &d);
    if (rc && rc != MDB_NOTFOUND)
        return rc;
    bool agrees = rc == 0 && d.mv_size >= 9 && get64(d.mv_data) == s->term;
    rc = agrees ? delete_from(txn, g->log, (size_t)s->index, true) /* <= index */
                : delete_from(txn, g->log, 1, false);              /* everything */
    if (rc)
        return rc;
    if ((rc = put_u64(txn, g->meta, "first", s->index + 1)) ||
        (rc = put_u64(txn, g->meta, "prev_term", s->term)))
        return rc;
    return 0;
}

static int write_log(struct storage *st, MDB_txn *txn, const struct storage_group_write *w,
                     struct group_dbis **out)
{
    struct group_dbis *g;
    int rc = group_dbis(st, txn, w->group, true, &g);
    if (rc)
        return rc;
    *out = g;
    if (w->hard_state && ((rc = put_u64(txn, g->meta, "term", w->term)) ||
                          (rc = put_u64(txn, g->meta, "vote", w->vote))))
        return rc;
    if (w->truncate_from && (rc = delete_from(txn, g->log, (size_t)w->truncate_from, false)))
        return rc;
    for (size_t i = 0; i < w->n_entries; i++)
        if ((rc = put_entry(st, txn, g->log, &w->entries[i])))
            return rc;
    if (w->snapshot && w->install && (rc = log_after_install(txn, g, w->snapshot)))
        return rc;
    if (w->snapshot && (rc = put_snapshot(txn, g->meta, w->snapshot)))
        return rc;
    if (w->compact_index) {
        uint64_t first;
        if ((rc = get_u64(txn, g->meta, "first", &first)))
            return rc;
        if (w->compact_index + 1 > first) {
            if ((rc = delete_from(txn, g->log, (size_t)w->compact_index, true)) ||
                (rc = put_u64(txn, g->meta, "first", w->compact_index + 1)) ||
                (rc = put_u64(txn, g->meta, "prev_term", w->compact_term)))
                return rc;
        }
    }
    return 0;
}

/* Host contract 1 as stored: after each write a group's log is one run
 * first..last -- no hole, nothing left below `first` -- and it holds the
 * last entry just written (the index PERSISTED will report), unless the
 * same write compacted or replaced it. Checked inside the transaction, so
 * a write that would break it is never committed and the node stops at
 * once, saying why, instead of failing at its next start. Three B-tree
 * descents per write. */
/* The index of the stored snapshot (0: none). */
static int snapshot_index(MDB_txn *txn, MDB_dbi meta, uint64_t *index)
{
    MDB_val k = {4, "snap"}, d;
    int rc = mdb_get(txn, meta, &k, &d);
    *index = rc == 0 && d.mv_size >= 8 ? get64(d.mv_data) : 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int check_log(MDB_txn *txn, struct group_dbis *g, const struct storage_group_write *w,
                     char *err, size_t errlen)
{
    uint64_t first, snap;
    MDB_stat stat;
    int rc = get_u64(txn, g->meta, "first", &first);
    if (rc || (rc = mdb_stat(txn, g->log, &stat)) || (rc = snapshot_index(txn, g->meta, &snap)))
        return lmdb_error(err, errlen, rc, "checking the log");
    first = first ? first : 1;
    /* What the log dropped, the snapshot must hold (§7): a log that starts
     * after its snapshot has lost entries S+1..first-1 for good. */
    if (first - 1 > snap)
        return fail(
            err, errlen, STORAGE_ECORRUPT,
            "storage: group %llu: this write would leave the log starting at %llu after "
            "its snapshot at %llu (entries %llu..%llu in neither); nothing of it was stored",
            (unsigned long long)g->group, (unsigned long long)first, (unsigned long long)snap,
            (unsigned long long)snap + 1, (unsigned long long)first - 1);
    size_t lo = 0, hi = 0;
    if (stat.ms_entries) {
        MDB_cursor *c;
        MDB_val k, d;
        if ((rc = mdb_cursor_open(txn, g->log, &c)))
            return lmdb_error(err, errlen, rc, "checking the log");
        if ((rc = mdb_cursor_get(c, &k, &d, MDB_FIRST)) == 0) {
            lo = key_of(&k);
            if ((rc = mdb_cursor_get(c, &k, &d, MDB_LAST)) == 0)
                hi = key_of(&k);
        }
        mdb_cursor_close(c);
        if (rc)
            return lmdb_error(err, errlen, rc, "checking the log");
        if (lo != first || hi - lo + 1 != stat.ms_entries)
            return fail(err, errlen, STORAGE_ECORRUPT,
                        "storage: group %llu: this write would leave the log with %s (first index "
                        "%llu, %zu entries stored in %zu..%zu); nothing of it was stored",
                        (unsigned long long)g->group,
                        lo < first   ? "entries before its first index"
                        : lo > first ? "its first entries missing"
                                     : "a hole",
                        (unsigned long long)first, (size_t)stat.ms_entries, lo, hi);
    }
    if (!w->n_entries)
        return STORAGE_OK;
    const struct raft_entry *last = &w->entries[w->n_entries - 1];
    raft_index gone = w->compact_index;
    if (w->install && w->snapshot && w->snapshot->index > gone)
        gone = w->snapshot->index;
    if (last->index <= gone)
        return STORAGE_OK;
    size_t key = (size_t)last->index;
    MDB_val k = {sizeof(key), &key}, d;
    rc = mdb_get(txn, g->log, &k, &d);
    if (rc && rc != MDB_NOTFOUND)
        return lmdb_error(err, errlen, rc, "checking the log");
    if (rc || d.mv_size < 9 || get64(d.mv_data) != last->term)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: group %llu: entry %llu of term %llu was written but is not stored; "
                    "nothing of this write was stored",
                    (unsigned long long)g->group, (unsigned long long)last->index,
                    (unsigned long long)last->term);
    return STORAGE_OK;
}

/* One group's write and its check; a STORAGE_ code with err filled. */
static int write_group(struct storage *st, MDB_txn *txn, const struct storage_group_write *w,
                       char *err, size_t errlen)
{
    struct group_dbis *g = NULL;
    int rc = write_log(st, txn, w, &g);
    if (rc)
        return lmdb_error(err, errlen, rc, "writing the log");
    return check_log(txn, g, w, err, errlen);
}

int storage_commit(struct storage *st, const struct storage_group_write *writes, size_t n,
                   char *err, size_t errlen)
{
    return storage_commit_with(st, writes, n, NULL, NULL, err, errlen);
}

int storage_write_more(struct storage *st, void *txn, const struct storage_group_write *writes,
                       size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        int rc = write_group(st, txn, &writes[i], err, errlen);
        if (rc)
            return rc;
    }
    st->hook_writes += n;
    return STORAGE_OK;
}

uint64_t storage_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Bytes this thread has written to files (page cache included): Linux
 * counts them per thread, in 512-byte blocks. */
uint64_t storage_thread_bytes_written(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_oublock * 512;
}

/* Commit txn, begun at t0, and say what that cost. */
static int timed_commit(MDB_txn *txn, uint64_t t0, struct storage_cost *cost)
{
    uint64_t t1 = storage_clock_ns(), b1 = storage_thread_bytes_written();
    int rc = mdb_txn_commit(txn);
    cost->build_ns = t1 - t0;
    cost->commit_ns = storage_clock_ns() - t1;
    cost->bytes = storage_thread_bytes_written() - b1;
    return rc;
}

void storage_last_cost(const struct storage *st, struct storage_cost *out)
{
    *out = st->last;
}

int storage_commit_with(struct storage *st, const struct storage_group_write *writes, size_t n,
                        storage_hook hook, void *arg, char *err, size_t errlen)
{
    if (st->wal) {
        /* A hook applies in the log's transaction: only a directory whose
         * state machine shares the log's environment does that, and such
         * a directory predates the append-only log. */
        if (hook)
            return fail(err, errlen, STORAGE_EIO,
                        "storage: a commit hook needs the LMDB log (a bug: no caller does this)");
        int rc = wal_commit(st->wal, writes, n, err, errlen);
        wal_last_cost(st->wal, &st->last);
        return rc;
    }
    MDB_txn *txn;
    size_t cached = st->n_groups;
    st->hook_writes = 0;
    st->last = (struct storage_cost){0};
    uint64_t t0 = storage_clock_ns();
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return lmdb_error(err, errlen, rc, "starting a write");
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = write_group(st, txn, &writes[i], err, errlen);
    if (rc) {
        mdb_txn_abort(txn);
        st->n_groups = cached; /* handles opened in an aborted txn are void */
        return rc;
    }
    if (hook && (rc = hook(arg, txn, err, errlen)) != STORAGE_OK) {
        mdb_txn_abort(txn);
        st->n_groups = cached;
        return rc;
    }
    /* The commit is the fsync: durable when it returns (host contract 1). */
    rc = timed_commit(txn, t0, &st->last);
    if (rc) {
        st->n_groups = cached;
        return lmdb_error(err, errlen, rc, "committing");
    }
    return STORAGE_OK;
}

/* ------------------------------------------------------------------------
 * Load
 * ------------------------------------------------------------------------ */

/* The base configuration: "base" -> the voters' ids, 8 bytes each. */
enum { BASE_MAX = 64 };

static int load_base(MDB_txn *txn, MDB_dbi meta, struct storage_loaded *out)
{
    MDB_val k = {4, "base"}, d;
    int rc = mdb_get(txn, meta, &k, &d);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    size_t n = d.mv_size / 8;
    if (d.mv_size % 8 || n > BASE_MAX)
        return STORAGE_ECORRUPT;
    out->base = calloc(n ? n : 1, sizeof(*out->base));
    if (!out->base)
        return STORAGE_ENOMEM;
    for (size_t i = 0; i < n; i++)
        out->base[i] = get64((const uint8_t *)d.mv_data + 8 * i);
    out->n_base = n;
    out->has_base = true;
    return 0;
}

int storage_set_base(struct storage *st, uint64_t group, const raft_id *voters, size_t n, char *err,
                     size_t errlen)
{
    if (st->wal)
        return wal_set_base(st->wal, group, voters, n, err, errlen);
    if (n > BASE_MAX)
        return fail(err, errlen, STORAGE_EIO, "storage: group %llu: %zu voters (at most %d)",
                    (unsigned long long)group, n, BASE_MAX);
    uint8_t buf[BASE_MAX * 8];
    for (size_t i = 0; i < n; i++)
        put64(buf + 8 * i, voters[i]);
    MDB_txn *txn;
    struct group_dbis *g;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return lmdb_error(err, errlen, rc, "recording a group's base configuration");
    size_t cached = st->n_groups;
    MDB_val k = {4, "base"}, d = {n * 8, buf};
    if ((rc = group_dbis(st, txn, group, true, &g)) || (rc = mdb_put(txn, g->meta, &k, &d, 0))) {
        mdb_txn_abort(txn);
        st->n_groups = cached;
        return lmdb_error(err, errlen, rc, "recording a group's base configuration");
    }
    if ((rc = mdb_txn_commit(txn)))
        return lmdb_error(err, errlen, rc, "recording a group's base configuration");
    return STORAGE_OK;
}

int storage_drop_group(struct storage *st, uint64_t group, storage_hook hook, void *arg, char *err,
                       size_t errlen)
{
    if (st->wal) {
        if (hook)
            return fail(err, errlen, STORAGE_EIO,
                        "storage: a drop hook needs the LMDB log (a bug: no caller does this)");
        return wal_drop_group(st->wal, group, err, errlen);
    }
    MDB_txn *txn;
    struct group_dbis *g;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return lmdb_error(err, errlen, rc, "dropping a group");
    size_t cached = st->n_groups;
    static const char *const drop[] = {"first", "prev_term", "snap"};
    MDB_val base = {4, "base"}, none = {0, ""};
    if (!(rc = group_dbis(st, txn, group, true, &g)) && !(rc = mdb_drop(txn, g->log, 0))) {
        for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]) && !rc; i++) {
            MDB_val k = {strlen(drop[i]), (void *)drop[i]};
            rc = mdb_del(txn, g->meta, &k, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
        }
        if (!rc)
            rc = mdb_put(txn, g->meta, &base, &none, 0); /* hosted again: it joins */
    }
    if (rc) {
        mdb_txn_abort(txn);
        st->n_groups = cached;
        return lmdb_error(err, errlen, rc, "dropping a group");
    }
    int hrc = hook ? hook(arg, txn, err, errlen) : STORAGE_OK;
    if (hrc != STORAGE_OK) {
        mdb_txn_abort(txn);
        st->n_groups = cached;
        return hrc;
    }
    if ((rc = mdb_txn_commit(txn)))
        return lmdb_error(err, errlen, rc, "dropping a group");
    return STORAGE_OK;
}

static int load_snapshot(MDB_txn *txn, MDB_dbi meta, struct storage_loaded *out)
{
    MDB_val k = {4, "snap"}, d;
    int rc = mdb_get(txn, meta, &k, &d);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    const uint8_t *p = d.mv_data;
    if (d.mv_size < SNAP_HEADER)
        return STORAGE_ECORRUPT;
    uint64_t n = get64(p + 32);
    if (n > 64 || d.mv_size != SNAP_HEADER + n * 9)
        return STORAGE_ECORRUPT;
    out->members = calloc(n ? n : 1, sizeof(*out->members));
    if (!out->members)
        return STORAGE_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        out->members[i].id = get64(p + SNAP_HEADER + 9 * i);
        out->members[i].is_voter = p[SNAP_HEADER + 9 * i + 8] & 1;
    }
    out->snapshot = (struct raft_snapshot_meta){get64(p),      get64(p + 8), get64(p + 16),
                                                get64(p + 24), out->members, (size_t)n};
    out->persisted.snapshot = &out->snapshot;
    out->persisted.applied_index = out->snapshot.index;
    return 0;
}

/* What a damaged log means, and what to do about it (appended to every
 * diagnosis of diagnose_log). */
#define DAMAGED_ADVICE                                                                             \
    "; this node may have acknowledged entries it no longer holds, or kept entries it had to "     \
    "delete, so it must not rejoin with this log. Move its data directory aside and start it "     \
    "empty only while the other nodes alone are a majority and are caught up with their leader "   \
    "(they then hold every committed entry; see docs/kvd.md, \"A node that will not start\")"

/* Read the stored log once and say what, if anything, breaks host
 * contract 1: a record that does not decode, entries below the first
 * index (a compaction or snapshot install left them), a hole, or a term
 * that goes down (a stale range a truncation left: Log Matching, §5.3,
 * makes terms non-decreasing along any log). *bytes is the data size
 * when the log is sound. */
static int diagnose_log(const struct storage *st, MDB_txn *txn, MDB_dbi log, uint64_t group,
                        raft_index first, raft_term prev_term, size_t *bytes, char *err,
                        size_t errlen)
{
    size_t header = st->header, sum = 0;
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, log, &c);
    if (rc)
        return lmdb_error(err, errlen, rc, "reading the log");
    size_t n = 0, lo = 0, hi = 0, below = 0, below_lo = 0, below_hi = 0;
    size_t bad = 0, bad_size = 0, hole = 0, drop = 0;
    raft_term last_term = prev_term, drop_term = 0, drop_prev = 0;
    raft_index expect = first;
    MDB_val k, d;
    *bytes = 0;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        size_t index = key_of(&k);
        lo = n++ ? lo : index;
        hi = index;
        *bytes += d.mv_size;
        if (d.mv_size < header) {
            bad = bad ? bad : index, bad_size = bad_size ? bad_size : d.mv_size;
            continue;
        }
        const uint8_t *rec = d.mv_data;
        if (header > 9 && !sum &&
            get64(rec + 9) != entry_checksum(index, rec, rec + header, d.mv_size - header))
            sum = index;
        if (index < first) {
            below_lo = below++ ? below_lo : index;
            below_hi = index;
            continue;
        }
        if (index != expect && !hole)
            hole = expect;
        expect = index + 1;
        raft_term term = get64(d.mv_data);
        if (term < last_term && !drop)
            drop = index, drop_term = term, drop_prev = last_term;
        last_term = term;
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND)
        return lmdb_error(err, errlen, rc, "reading the log");
    unsigned long long g = group;
    if (sum)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu: entry %zu fails its checksum (its bytes changed "
                    "on disk; stored %zu..%zu)" DAMAGED_ADVICE,
                    g, sum, lo, hi);
    if (bad)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu: entry %zu does not decode (a record of %zu bytes, "
                    "stored %zu..%zu)" DAMAGED_ADVICE,
                    g, bad, bad_size, lo, hi);
    if (below)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu holds %zu entries (%zu..%zu) below its first index "
                    "%llu, which a compaction or snapshot install had to delete (stored "
                    "%zu..%zu)" DAMAGED_ADVICE,
                    g, below, below_lo, below_hi, (unsigned long long)first, lo, hi);
    if (hole)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu has a hole at %zu (first index %llu, stored "
                    "%zu..%zu)" DAMAGED_ADVICE,
                    g, hole, (unsigned long long)first, lo, hi);
    if (drop)
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu: entry %zu has term %llu after term %llu (terms "
                    "never go down along a log: a stale range a truncation had to delete; stored "
                    "%zu..%zu)" DAMAGED_ADVICE,
                    g, drop, (unsigned long long)drop_term, (unsigned long long)drop_prev, lo, hi);
    return STORAGE_OK;
}

static int load_entries(const struct storage *st, MDB_txn *txn, MDB_dbi log, uint64_t group,
                        struct storage_loaded *out, char *err, size_t errlen)
{
    size_t bytes = 0;
    int rc = diagnose_log(st, txn, log, group, out->persisted.first_index, out->persisted.prev_term,
                          &bytes, err, errlen);
    if (rc)
        return rc;
    MDB_stat stat;
    MDB_cursor *c;
    if ((rc = mdb_stat(txn, log, &stat)) || (rc = mdb_cursor_open(txn, log, &c)))
        return lmdb_error(err, errlen, rc, "reading the log");
    size_t n = 0, cap = stat.ms_entries;
    out->entries = calloc(cap ? cap : 1, sizeof(*out->entries));
    out->arena = malloc(bytes ? bytes : 1);
    if (!out->entries || !out->arena) {
        mdb_cursor_close(c);
        return fail(err, errlen, STORAGE_ENOMEM, "storage: group %llu: out of memory",
                    (unsigned long long)group);
    }
    uint8_t *at = out->arena;
    MDB_val k, d;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0 && n < cap;
         rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        memcpy(at, (const uint8_t *)d.mv_data + st->header, d.mv_size - st->header);
        out->entries[n++] = (struct raft_entry){.term = get64(d.mv_data),
                                                .index = key_of(&k),
                                                .type = ((const uint8_t *)d.mv_data)[8],
                                                .data = at,
                                                .len = d.mv_size - st->header};
        at += d.mv_size - st->header;
    }
    mdb_cursor_close(c);
    out->persisted.entries = out->entries;
    out->persisted.n_entries = n;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return lmdb_error(err, errlen, rc, "reading the log");
    return STORAGE_OK;
}

int storage_load(struct storage *st, uint64_t group, struct storage_loaded *out, char *err,
                 size_t errlen)
{
    if (st->wal)
        return wal_load(st->wal, group, out, err, errlen);
    memset(out, 0, sizeof(*out));
    /* Open (or create, empty) the group's databases in a write
     * transaction, so that their handles outlive it. */
    MDB_txn *txn;
    struct group_dbis *g;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return lmdb_error(err, errlen, rc, "opening a group");
    size_t cached = st->n_groups;
    if ((rc = group_dbis(st, txn, group, true, &g)) || (rc = mdb_txn_commit(txn))) {
        if (rc)
            st->n_groups = cached;
        return lmdb_error(err, errlen, rc, "opening a group");
    }
    struct group_dbis handles = *g;
    g = &handles;
    if ((rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn)))
        return lmdb_error(err, errlen, rc, "starting a read");
    uint64_t term = 0, vote = 0, first = 0, prev_term = 0;
    if (rc == 0)
        rc = get_u64(txn, g->meta, "term", &term);
    if (rc == 0)
        rc = get_u64(txn, g->meta, "vote", &vote);
    if (rc == 0)
        rc = get_u64(txn, g->meta, "first", &first);
    if (rc == 0)
        rc = get_u64(txn, g->meta, "prev_term", &prev_term);
    out->persisted.current_term = term;
    out->persisted.voted_for = vote;
    out->persisted.first_index = first ? first : 1;
    out->persisted.prev_term = prev_term;
    if (rc == 0)
        rc = load_base(txn, g->meta, out);
    if (rc == 0)
        rc = load_snapshot(txn, g->meta, out);
    raft_index snap = out->persisted.snapshot ? out->snapshot.index : 0;
    if (rc == 0 && out->persisted.first_index - 1 > snap) {
        unsigned long long from = out->persisted.first_index;
        mdb_txn_abort(txn);
        storage_loaded_free(out);
        return fail(err, errlen, STORAGE_ECORRUPT,
                    "storage: log of group %llu starts at %llu but its snapshot is at %llu: "
                    "entries %llu..%llu are in neither" DAMAGED_ADVICE,
                    (unsigned long long)group, from, (unsigned long long)snap,
                    (unsigned long long)snap + 1, from - 1);
    }
    if (rc == 0) {
        rc = load_entries(st, txn, g->log, group, out, err, errlen);
        mdb_txn_abort(txn);
        if (rc)
            storage_loaded_free(out);
        return rc;
    }
    mdb_txn_abort(txn);
    if (rc == STORAGE_ECORRUPT || rc == STORAGE_ENOMEM) {
        storage_loaded_free(out);
        return fail(err, errlen, rc, "storage: group %llu: %s", (unsigned long long)group,
                    rc == STORAGE_ECORRUPT ? "its snapshot record does not decode"
                                           : "out of memory");
    }
    if (rc) {
        storage_loaded_free(out);
        return lmdb_error(err, errlen, rc, "reading a group");
    }
    return STORAGE_OK;
}

void storage_loaded_free(struct storage_loaded *l)
{
    free(l->base);
    free(l->entries);
    free(l->members);
    free(l->arena);
    memset(l, 0, sizeof(*l));
}

int storage_commit_sm(struct storage *st, storage_hook hook, void *arg, char *err, size_t errlen)
{
    MDB_txn *txn;
    st->sm_last = (struct storage_cost){0};
    uint64_t t0 = storage_clock_ns();
    int rc = mdb_txn_begin(st->sm_env, NULL, 0, &txn);
    if (rc)
        return lmdb_error(err, errlen, rc, "starting a state machine write");
    if ((rc = hook(arg, txn, err, errlen)) != STORAGE_OK) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = timed_commit(txn, t0, &st->sm_last);
    return rc ? lmdb_error(err, errlen, rc, "committing the state machine") : STORAGE_OK;
}

void storage_last_sm_cost(const struct storage *st, struct storage_cost *out)
{
    *out = st->sm_last;
}

int storage_sync_sm(struct storage *st, char *err, size_t errlen)
{
    if (!st->sm_separate)
        return STORAGE_OK; /* one environment: every commit synced it */
    int rc = mdb_env_sync(st->sm_env, 1);
    return rc ? lmdb_error(err, errlen, rc, "syncing the state machine") : STORAGE_OK;
}

bool storage_sm_rebuilt(const struct storage *st)
{
    return st->sm_rebuilt;
}

bool storage_sm_separate(const struct storage *st)
{
    return st->sm_separate;
}

void *storage_sm_env(struct storage *st)
{
    return st->sm_env;
}

void *storage_env(struct storage *st)
{
    return st->env;
}
