/* auth.c — client passwords and the admin token; see auth.h. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void digest(const void *secret, size_t len, uint8_t out[32])
{
    crypto_generichash(out, 32, secret, len, NULL, 0);
}

int kv_secret_read(const char *path, const char *what, char *out, size_t outlen, size_t *len,
                   char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen, "%s %s can be read by others (mode %03o): chmod 600 it", what, path,
                 (unsigned)(st.st_mode & 0777));
        close(fd);
        return -1;
    }
    ssize_t n = read(fd, out, outlen);
    close(fd);
    *len = 0;
    while (n > 0 && *len < (size_t)n && out[*len] != '\n' && out[*len] != '\r')
        (*len)++;
    if (*len == 0) {
        snprintf(err, errlen, "%s %s is empty (put the secret on its first line)", what, path);
        return -1;
    }
    return 0;
}

/* A secret from its file, hashed. */
static int load_one(const char *path, const char *what, uint8_t out[32], char *err, size_t errlen)
{
    char buf[1024];
    size_t len;
    int rc = kv_secret_read(path, what, buf, sizeof(buf), &len, err, errlen);
    if (rc == 0)
        digest(buf, len, out);
    sodium_memzero(buf, sizeof(buf));
    return rc;
}

int kv_auth_load(struct kv_auth *a, const char *password_file, const char *admin_file, char *err,
                 size_t errlen)
{
    memset(a, 0, sizeof(*a));
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium cannot start");
        return -1;
    }
    if (password_file) {
        if (load_one(password_file, "--requirepass", a->password, err, errlen))
            return -1;
        a->has_password = true;
    }
    if (admin_file) {
        if (load_one(admin_file, "--admin-token", a->admin, err, errlen))
            return -1;
        a->has_admin = true;
    }
    if (a->has_password && a->has_admin && sodium_memcmp(a->password, a->admin, 32) == 0) {
        snprintf(err, errlen, "the admin token must differ from the client password");
        return -1;
    }
    return 0;
}

enum kv_access kv_auth_default(const struct kv_auth *a)
{
    if (a->has_password)
        return KV_ACCESS_NONE;
    return a->has_admin ? KV_ACCESS_DATA : KV_ACCESS_ADMIN;
}

enum kv_access kv_auth_check(const struct kv_auth *a, const char *user, const void *secret,
                             size_t len)
{
    uint8_t d[32];
    digest(secret, len, d);
    bool as_admin = user && !strcmp(user, "admin");
    bool as_client = !user || !as_admin;
    if ((!user || as_admin) && a->has_admin && sodium_memcmp(d, a->admin, 32) == 0)
        return KV_ACCESS_ADMIN;
    if (as_client && a->has_password && sodium_memcmp(d, a->password, 32) == 0)
        return a->has_admin ? KV_ACCESS_DATA : KV_ACCESS_ADMIN;
    return KV_ACCESS_NONE;
}
