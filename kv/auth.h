/* auth.h — who may use kvd's front doors, and for what.
 *
 * Two secrets, each optional, each read from a file (kvd --requirepass,
 * --admin-token): the password opens the data path (GET, SET, ... and
 * status); the admin token also opens control operations (leadership
 * transfer, the fault filter; membership later). Without an admin token
 * the password opens both; with neither, everything is open, which kvd
 * allows on loopback only (docs/kvd.md, Security and limits). Redis'
 * model: AUTH [user] password on RESP (user "default" or "admin"), and
 * HELLO ... AUTH; HTTP takes `Authorization: Bearer SECRET`.
 *
 * Secrets are compared by their BLAKE2b hashes with a constant-time
 * compare (libsodium), so neither their content nor their length leaks
 * through timing.
 */
#ifndef KV_AUTH_H
#define KV_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kv_access {
    KV_ACCESS_NONE = 0,  /* nothing but authenticating */
    KV_ACCESS_DATA = 1,  /* commands and status */
    KV_ACCESS_ADMIN = 2, /* and control operations */
};

struct kv_auth {
    bool has_password, has_admin;
    uint8_t password[32], admin[32]; /* hashes */
    bool fault_injection;            /* --enable-fault-injection */
};

/* Load the secrets (either path may be NULL). 0, or -1 with err filled: a
 * missing or empty file, or one that others can read. */
int kv_auth_load(struct kv_auth *a, const char *password_file, const char *admin_file, char *err,
                 size_t errlen);
/* A secret's file: its first line (without the newline) into out, *len
 * bytes; refused if missing, empty or readable by others. `what` names the
 * option in messages. 0, or -1 with err filled. */
int kv_secret_read(const char *path, const char *what, char *out, size_t outlen, size_t *len,
                   char *err, size_t errlen);
/* What a client that has not authenticated may do. */
enum kv_access kv_auth_default(const struct kv_auth *a);
/* What presenting this secret grants (KV_ACCESS_NONE: nothing: wrong). As
 * `user`, "admin" means the admin token and anything else the password;
 * NULL: either. */
enum kv_access kv_auth_check(const struct kv_auth *a, const char *user, const void *secret,
                             size_t len);

#endif /* KV_AUTH_H */
