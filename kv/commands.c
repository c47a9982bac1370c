/* commands.c — the command table of kvd's front doors; see commands.h.
 *
 * Arities are Redis' where Redis has the command (its COMMAND INFO: GET 2,
 * SET -3, MGET -2, ...), so a client gets the error Redis would give it;
 * kvd's own commands (CAS, SESSION, RAFT.*) take what their syntax says.
 */
#include "commands.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sm.h" /* KV_MAX_KEYS */

/* A command answered by the node itself: no op, no keys. */
#define LOCAL(name_, min_, max_, flags_, usage_)                                                   \
    {                                                                                              \
        .name = (name_), .min_argc = (min_), .max_argc = (max_), .flags = (flags_),                \
        .usage = (usage_)                                                                          \
    }
/* A key-value command: its op, its keys from argv[first_] to argv[last_]. */
#define KV(name_, min_, max_, flags_, op_, first_, last_)                                          \
    {                                                                                              \
        .name = (name_), .min_argc = (min_), .max_argc = (max_), .flags = (flags_),                \
        .op = KVPB__OP__OP_##op_, .first_key = (first_), .last_key = (last_)                       \
    }

const struct kv_command kv_commands[KV_ID_COUNT] = {
    [KV_ID_GET] = KV("GET", 2, 2, KV_CMD_READ, GET, 1, 1),
    /* SET key value NX is a CAS that expects the key absent (resp.c). */
    [KV_ID_SET] = KV("SET", 3, -1, KV_CMD_WRITE, SET, 1, 1),
    [KV_ID_SETNX] = KV("SETNX", 3, 3, KV_CMD_WRITE, CAS, 1, 1),
    [KV_ID_CAS] = KV("CAS", 4, 4, KV_CMD_WRITE, CAS, 1, 1),
    [KV_ID_INCR] = KV("INCR", 2, 2, KV_CMD_WRITE, INCR, 1, 1),
    [KV_ID_DECR] = KV("DECR", 2, 2, KV_CMD_WRITE, INCR, 1, 1),
    [KV_ID_INCRBY] = KV("INCRBY", 3, 3, KV_CMD_WRITE, INCR, 1, 1),
    [KV_ID_DECRBY] = KV("DECRBY", 3, 3, KV_CMD_WRITE, INCR, 1, 1),
    /* Multi-key commands are split by shard and gathered (route.c), at
     * most KV_MAX_KEYS keys; MGET's answer holds a value per key, and a
     * reply forwarded between nodes has room for KV_MAX_KEYS (relay.c). */
    [KV_ID_DEL] = {.name = "DEL",
                   .min_argc = 2,
                   .max_argc = -1,
                   .flags = KV_CMD_WRITE,
                   .op = KVPB__OP__OP_DEL,
                   .first_key = 1,
                   .last_key = -1,
                   .max_keys = KV_MAX_KEYS},
    [KV_ID_EXISTS] = {.name = "EXISTS",
                      .min_argc = 2,
                      .max_argc = -1,
                      .flags = KV_CMD_READ,
                      .op = KVPB__OP__OP_EXISTS,
                      .first_key = 1,
                      .last_key = -1,
                      .max_keys = KV_MAX_KEYS},
    [KV_ID_MGET] = {.name = "MGET",
                    .min_argc = 2,
                    .max_argc = -1,
                    .flags = KV_CMD_READ,
                    .op = KVPB__OP__OP_MGET,
                    .first_key = 1,
                    .last_key = -1,
                    .max_keys = KV_MAX_KEYS},

    [KV_ID_SESSION] = LOCAL("SESSION", 4, -1, 0, "SESSION client-id seq command [args...]"),
    [KV_ID_AUTH] = LOCAL("AUTH", 2, 3, KV_CMD_NO_AUTH, "AUTH [username] password"),
    [KV_ID_HELLO] =
        LOCAL("HELLO", 1, -1, KV_CMD_NO_AUTH, "HELLO [2 [AUTH username password] [SETNAME name]]"),

    [KV_ID_PING] = LOCAL("PING", 1, -1, 0, NULL),
    [KV_ID_ECHO] = LOCAL("ECHO", 2, 2, 0, NULL),
    [KV_ID_QUIT] = LOCAL("QUIT", 1, -1, KV_CMD_NO_AUTH, NULL),
    [KV_ID_SELECT] = LOCAL("SELECT", 2, 2, 0, NULL),
    [KV_ID_CLIENT] = LOCAL("CLIENT", 2, -1, 0, NULL),
    [KV_ID_READONLY] = LOCAL("READONLY", 1, 1, 0, NULL),
    [KV_ID_READWRITE] = LOCAL("READWRITE", 1, 1, 0, NULL),
    [KV_ID_COMMAND] = LOCAL("COMMAND", 1, -1, 0, NULL),
    [KV_ID_CONFIG] = LOCAL("CONFIG", 2, -1, 0, NULL),
    [KV_ID_INFO] = LOCAL("INFO", 1, -1, 0, NULL),
    [KV_ID_RAFT_STATUS] = LOCAL("RAFT.STATUS", 1, 1, 0, NULL),
    [KV_ID_RAFT_LEADER] = LOCAL("RAFT.LEADER", 1, 2, 0, "RAFT.LEADER [key]"),
    [KV_ID_RAFT_RING] = LOCAL("RAFT.RING", 1, 1, 0, NULL),
    [KV_ID_RAFT_LOCATE] = LOCAL("RAFT.LOCATE", 2, 2, 0, "RAFT.LOCATE key"),
    [KV_ID_RAFT_TRANSFER] =
        LOCAL("RAFT.TRANSFER", 1, 3, KV_CMD_ADMIN, "RAFT.TRANSFER [node-id [shard]]"),
    /* The operator brings a node back with an empty data dir (docs/kvd.md,
     * A node that lost its data). */
    [KV_ID_RAFT_FORGET] =
        LOCAL("RAFT.FORGET", 2, 3, KV_CMD_ADMIN, "RAFT.FORGET node-id [REPLACED]"),
    /* Members (docs/membership.md): the table, a change of it, and the
     * shard moves this node leads. */
    [KV_ID_RAFT_NODES] = LOCAL("RAFT.NODES", 1, 1, 0, NULL),
    [KV_ID_RAFT_NODE] = LOCAL("RAFT.NODE", 3, 8, KV_CMD_ADMIN,
                              "RAFT.NODE ADD node-id host raft-port resp-port http-port "
                              "[client-host] | RAFT.NODE REMOVE node-id"),
    [KV_ID_RAFT_REBALANCE] = LOCAL("RAFT.REBALANCE", 1, 1, 0, NULL),

    [KV_ID_MULTI] = LOCAL("MULTI", 1, 1, KV_CMD_REFUSED, NULL),
    [KV_ID_EXEC] = LOCAL("EXEC", 1, 1, KV_CMD_REFUSED, NULL),
    [KV_ID_DISCARD] = LOCAL("DISCARD", 1, 1, KV_CMD_REFUSED, NULL),
    [KV_ID_WATCH] = {.name = "WATCH",
                     .min_argc = 2,
                     .max_argc = -1,
                     .flags = KV_CMD_REFUSED,
                     .first_key = 1,
                     .last_key = -1},
    [KV_ID_UNWATCH] = LOCAL("UNWATCH", 1, 1, KV_CMD_REFUSED, NULL),
};

const struct kv_command *kv_command_lookup(const char *name, size_t len)
{
    for (size_t i = 0; i < KV_ID_COUNT; i++) {
        const struct kv_command *cmd = &kv_commands[i];
        if (strlen(cmd->name) == len && strncasecmp(cmd->name, name, len) == 0)
            return cmd;
    }
    return NULL;
}

enum kv_command_id kv_command_id(const struct kv_command *cmd)
{
    return (enum kv_command_id)(cmd - kv_commands);
}

enum kv_access kv_command_access(unsigned flags)
{
    if (flags & KV_CMD_NO_AUTH)
        return KV_ACCESS_NONE;
    if (flags & KV_CMD_ADMIN)
        return KV_ACCESS_ADMIN;
    return KV_ACCESS_DATA;
}

int kv_command_arity(const struct kv_command *cmd)
{
    return cmd->max_argc == cmd->min_argc ? cmd->min_argc : -cmd->min_argc;
}

void kv_command_arity_error(const struct kv_command *cmd, const char *as_typed, char *err)
{
    if (cmd->usage)
        snprintf(err, KV_COMMAND_ERR_SIZE, "usage: %s", cmd->usage);
    else
        snprintf(err, KV_COMMAND_ERR_SIZE, "wrong number of arguments for '%.32s' command",
                 as_typed ? as_typed : cmd->name);
}

bool kv_command_check_args(const struct kv_command *cmd, int argc, const char *as_typed, char *err)
{
    if (argc < cmd->min_argc || (cmd->max_argc >= 0 && argc > cmd->max_argc)) {
        kv_command_arity_error(cmd, as_typed, err);
        return false;
    }
    if (cmd->max_keys && cmd->first_key > 0) {
        int last = cmd->last_key < 0 ? argc - 1 : cmd->last_key;
        size_t keys = last >= cmd->first_key ? (size_t)(last - cmd->first_key + 1) : 0;
        if (keys > cmd->max_keys) {
            snprintf(err, KV_COMMAND_ERR_SIZE, "%s takes at most %zu keys", cmd->name,
                     cmd->max_keys);
            return false;
        }
    }
    return true;
}

void kv_command_unknown_error(const char *as_typed, char *err)
{
    snprintf(err, KV_COMMAND_ERR_SIZE, "unknown command '%.32s'", as_typed);
}

size_t kv_command_flag_words(const struct kv_command *cmd, const char **words, size_t max)
{
    static const struct {
        unsigned flag;
        const char *word;
    } map[] = {
        {KV_CMD_READ, "readonly"},
        {KV_CMD_WRITE, "write"},
        {KV_CMD_ADMIN, "admin"},
        {KV_CMD_NO_AUTH, "no_auth"},
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]) && n < max; i++)
        if (cmd->flags & map[i].flag)
            words[n++] = map[i].word;
    return n;
}
