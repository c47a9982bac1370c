/* errors.c — see errors.h. */
#include "errors.h"

#include "raft.h"
#include "storage.h"

const char *kv_strerror(int code)
{
    switch (code) {
    case 0:
        return "ok";
    case KV_EFULL:
        return "the state machine's map is full";
    case KV_EIO:
        return "the state machine cannot read or write its database";
    case KV_ENOMEM:
        return "out of memory";
    case KV_EORDER:
        return "entries applied out of order";
    case KV_EDAMAGED:
        return "a stored value fails its checksum";
    case KV_TIMEOUT:
        return "not done before the deadline";
    case KV_UNAVAILABLE:
        return "the node refuses work";
    case KV_BAD:
        return "malformed command";
    default:
        if (code >= 301 && code < 400)
            return storage_strerror(code);
        return raft_strerror(code);
    }
}
