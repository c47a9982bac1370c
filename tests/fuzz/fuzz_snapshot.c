/* fuzz_snapshot.c — libFuzzer target for installing a snapshot file
 * (kv/sm.c, kv_sm_install_stage), the path a follower's received chunks
 * take: any records after a valid header must be installed or refused
 * ("does not decode"), never crash or write past a buffer. Each run's
 * transaction is aborted; one LMDB environment serves all runs. */
#define _POSIX_C_SOURCE 200809L
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "sm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static MDB_env *env;
static struct kv_sm *sm;
static char path[64];

static void setup(void)
{
    char dir[] = "/tmp/fuzz-snapshot-XXXXXX";
    if (!mkdtemp(dir) || mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) ||
        mdb_env_set_mapsize(env, 256 << 20) || mdb_env_open(env, dir, MDB_NOSYNC, 0600))
        abort();
    char err[256];
    if (kv_sm_open(env, 1, &sm, err, sizeof(err)) != KV_OK)
        abort();
    snprintf(path, sizeof(path), "%s/snap", dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!env)
        setup();
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    uint8_t head[16] = "RKVSNAP1";
    head[8] = 7; /* index 7, little-endian */
    fwrite(head, 1, sizeof(head), f);
    fwrite(data, 1, size, f);
    fclose(f);
    MDB_txn *txn;
    if (mdb_txn_begin(env, NULL, 0, &txn))
        abort();
    char err[256];
    kv_sm_install_stage(sm, txn, path, 7, err, sizeof(err));
    mdb_txn_abort(txn);
    kv_sm_staged_done(sm, false);
    /* Whatever the bytes, an install that was not committed leaves the
     * state machine where it was. */
    fuzz_assert(kv_sm_applied(sm) == 0);
    return 0;
}
