/* buf.h — a growable byte buffer for replies the front doors build. */
#ifndef KV_BUF_H
#define KV_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct buf {
    char *p;
    size_t len, cap;
    bool oom; /* an append failed: the buffer holds a prefix only */
};

void buf_append(struct buf *b, const void *data, size_t len);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hand the bytes over (the caller frees them) and leave b empty. */
char *buf_take(struct buf *b, size_t *len);
void buf_free(struct buf *b);

#endif /* KV_BUF_H */
