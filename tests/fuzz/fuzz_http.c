/* fuzz_http.c — libFuzzer target for the HTTP door's parsing (kv/http.c):
 * http-parser with the door's callbacks and limits (URL, headers, body,
 * chunked growth, Authorization), fed any bytes in slices; requests are
 * counted, not run. Never a crash, a leak or a buffer past its limit. */
#include "../../kv/http.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_server hs;
    memset(&hs, 0, sizeof(hs));
    settings_init(&hs.settings);
    struct conn c;
    memset(&c, 0, sizeof(c));
    c.hs = &hs;
    c.base.door = &hs.door; /* no limits: the default ones apply */
    http_parser_init(&c.parser, HTTP_REQUEST);
    c.parser.data = &c;
    c.keep_alive = true;
    size_t at = 0;
    while (at < size) {
        size_t n = http_parser_execute(&c.parser, &hs.settings, (const char *)data + at,
                                       size - at < 7 ? size - at : 7);
        at += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c.parser);
        if (e == HPE_PAUSED) { /* a whole request: the door would run it now */
            fuzz_assert(c.url.len <= MAX_URL && c.body.len <= MAX_BODY);
            c.complete = false;
            http_parser_pause(&c.parser, 0);
            continue;
        }
        if (e != HPE_OK || n == 0)
            break;
    }
    conn_release(&c.base);
    return 0;
}
