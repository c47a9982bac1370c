/* fuzz_resp.c — libFuzzer target for the Redis door's parser (kv/resp.c):
 * any bytes, in two reads, must be parsed into commands or refused with an
 * error, never crash, leak or overrun; every command parsed has at least
 * one argument and arguments of the lengths it says. The door's file is
 * included whole, so its static functions are what is tested. */
#include "../../kv/resp.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct resp_server rs; /* a door without limits: the default ones apply */
    struct conn c;
    memset(&c, 0, sizeof(c));
    c.base.door = &rs.door;
    c.rs = &rs;
    if (!(c.reader = reader_new()))
        return 0;
    char *copy = malloc(size ? size : 1);
    if (!copy) {
        redisReaderFree(c.reader);
        return 0;
    }
    if (size)
        memcpy(copy, data, size);
    size_t half = size / 2;
    if (parse(&c, copy, half))
        parse(&c, copy + half, size - half);
    while (c.head) {
        struct cmd *k = c.head;
        c.head = k->next;
        fuzz_assert(k->argc >= 1);
        for (int i = 0; i < k->argc; i++)
            fuzz_assert(k->argv[i][k->argvlen[i]] == '\0');
        cmd_free(k);
    }
    free(copy);
    redisReaderFree(c.reader);
    buf_free(&c.out);
    buf_free(&c.inl);
    return 0;
}
