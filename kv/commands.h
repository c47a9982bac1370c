/* commands.h — the commands kvd's front doors know, in one table, as
 * Redis keeps its command table: for each command its name, how many
 * arguments it takes, flags saying what it does and who may run it, the
 * kv.proto Op it becomes (for the key-value commands) and where its keys
 * are. The Redis door (resp.c) dispatches through it; the HTTP door
 * (http.c) takes from it the op, the read/write nature and the access its
 * routes need; the arity errors of both come from here.
 *
 * The handlers are the doors': the table is indexed by enum kv_command_id
 * and resp.c keeps one handler per id (its handlers[]), so that this table
 * holds no door's types. Adding a command: an id here, a row in
 * commands.c, a handler in resp.c (resp_start refuses to start a door with
 * a command it has no handler for), and tests/unit/test_commands.c.
 */
#ifndef KV_COMMANDS_H
#define KV_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>

#include "auth.h"
#include "kv.pb-c.h"

/* Every command, by the order of kv_commands[]. */
enum kv_command_id {
    /* Key-value commands: a kv.proto Command for the state machine. */
    KV_ID_GET,
    KV_ID_SET,
    KV_ID_SETNX,
    KV_ID_CAS,
    KV_ID_INCR,
    KV_ID_DECR,
    KV_ID_INCRBY,
    KV_ID_DECRBY,
    KV_ID_DEL,
    KV_ID_EXISTS,
    KV_ID_MGET,
    /* Sessions and authentication. */
    KV_ID_SESSION,
    KV_ID_AUTH,
    KV_ID_HELLO,
    /* Answered by the node itself. */
    KV_ID_PING,
    KV_ID_ECHO,
    KV_ID_QUIT,
    KV_ID_SELECT,
    KV_ID_CLIENT,
    KV_ID_READONLY,
    KV_ID_READWRITE,
    KV_ID_COMMAND,
    KV_ID_CONFIG,
    KV_ID_INFO,
    KV_ID_RAFT_STATUS,
    KV_ID_RAFT_LEADER,
    KV_ID_RAFT_RING,
    KV_ID_RAFT_LOCATE,
    KV_ID_RAFT_TRANSFER,
    KV_ID_RAFT_FORGET,
    KV_ID_RAFT_NODES,
    KV_ID_RAFT_NODE,
    KV_ID_RAFT_REBALANCE,
    /* Transactions: known, and refused. */
    KV_ID_MULTI,
    KV_ID_EXEC,
    KV_ID_DISCARD,
    KV_ID_WATCH,
    KV_ID_UNWATCH,
    KV_ID_COUNT /* how many commands there are */
};

/* What a command is (struct kv_command.flags). */
enum {
    /* Reads keys: `op` is its Command op, answered by ReadIndex or a lease
     * (sm.h kv_op_is_read), outside any session. */
    KV_CMD_READ = 1 << 0,
    /* Writes keys: `op` is its Command op, committed through the log under
     * a session {client_id, seq} (thesis §6.3). */
    KV_CMD_WRITE = 1 << 1,
    /* A control operation (leadership transfer, the fault filter): needs the
     * admin token (auth.h KV_ACCESS_ADMIN). */
    KV_CMD_ADMIN = 1 << 2,
    /* Allowed before authenticating (AUTH, HELLO, QUIT). Any other command
     * needs at least the password (KV_ACCESS_DATA). */
    KV_CMD_NO_AUTH = 1 << 3,
    /* Known but not supported: refused with the reason, whatever its
     * arguments (MULTI and the rest of transactions). */
    KV_CMD_REFUSED = 1 << 4,
};

struct kv_command {
    const char *name; /* upper case, as documented; looked up ignoring case */
    int min_argc;     /* arguments at least, the command's name included */
    int max_argc;     /* at most; -1: no maximum */
    unsigned flags;   /* KV_CMD_* */
    Kvpb__Op op;      /* with KV_CMD_READ or KV_CMD_WRITE: the Command's op */
    /* Where its keys are in argv, as Redis' COMMAND INFO says it: first and
     * last position (0: no keys; last -1: to the end of argv), step 1. */
    int first_key, last_key;
    size_t max_keys;   /* most keys one command may name (0: no limit) */
    const char *usage; /* its syntax, for the error on a wrong argument count
                        * (NULL: Redis' "wrong number of arguments") */
};

/* The table, indexed by enum kv_command_id. Static: never changes. */
extern const struct kv_command kv_commands[KV_ID_COUNT];

/* Size of the buffers the error texts below are written into: enough for
 * any of them (names are cut at 32 bytes, as Redis cuts them). */
enum { KV_COMMAND_ERR_SIZE = 160 };

/* The command called `name` (len bytes, any case; need not be
 * NUL-terminated), or NULL if kvd knows no such command. */
const struct kv_command *kv_command_lookup(const char *name, size_t len);

/* Its id: its index in kv_commands[]. */
enum kv_command_id kv_command_id(const struct kv_command *cmd);

/* The access a command with these flags needs (auth.h): KV_ACCESS_NONE for
 * KV_CMD_NO_AUTH, KV_ACCESS_ADMIN for KV_CMD_ADMIN, else KV_ACCESS_DATA.
 * Both doors decide with this; flags 0 is a plain data-path request. */
enum kv_access kv_command_access(unsigned flags);

/* Its arity as Redis' COMMAND INFO gives it: N for exactly N arguments,
 * -N for at least N. */
int kv_command_arity(const struct kv_command *cmd);

/* Whether argc arguments (the name included) are a count cmd takes, and
 * name no more keys than it allows. If not, *err (KV_COMMAND_ERR_SIZE
 * bytes) receives the error text, from kv_command_arity_error() or, for
 * too many keys, "MGET takes at most 64 keys". as_typed is the name as the
 * client sent it (NUL-terminated), which the text repeats. */
bool kv_command_check_args(const struct kv_command *cmd, int argc, const char *as_typed, char *err);

/* The error text for a wrong argument count, into err (KV_COMMAND_ERR_SIZE
 * bytes): the command's usage ("usage: AUTH [username] password") when it
 * has one, else Redis' "wrong number of arguments for 'get' command" with
 * the name as typed (as_typed; NULL: the table's). */
void kv_command_arity_error(const struct kv_command *cmd, const char *as_typed, char *err);

/* "unknown command 'name'" (as typed, NUL-terminated) into err
 * (KV_COMMAND_ERR_SIZE bytes). */
void kv_command_unknown_error(const char *as_typed, char *err);

/* Its flags as Redis' COMMAND INFO words them ("readonly", "write",
 * "admin", "no_auth"): up to max of them into words (static strings);
 * returns how many. */
size_t kv_command_flag_words(const struct kv_command *cmd, const char **words, size_t max);

#endif /* KV_COMMANDS_H */
