/* errors.h — kvd's error codes, each kind in its own range (as LMDB keeps
 * its codes apart from errno's), so that a code says where it came from
 * wherever it ends up, and one kv_strerror() for all of them. raft.h's
 * RAFT_ codes (1..99) and storage.h's STORAGE_ codes (301..) are the
 * libraries'; these are kvd's. */
#ifndef KV_ERRORS_H
#define KV_ERRORS_H

/* The state machine (sm.c). */
enum {
    KV_OK = 0,
    KV_EFULL = 101, /* the map is full: nothing of the batch was applied */
    KV_EIO = 102,
    KV_ENOMEM = 103,
    KV_EORDER = 104,   /* entries not consecutive after the applied index */
    KV_EDAMAGED = 105, /* a stored value fails its checksum: this copy must not be served */
};

/* How a command ended, for the front doors (server.h). */
enum kv_code {
    KV_DONE = 0,          /* result holds the state machine's answer */
    KV_TIMEOUT = 201,     /* not committed (or read) before the deadline */
    KV_UNAVAILABLE = 202, /* the node refuses work (storage full, shutting down) */
    KV_BAD = 203,         /* malformed command */
};

/* A word for any of them (and for raft.h's and storage.h's). */
const char *kv_strerror(int code);

#endif /* KV_ERRORS_H */
