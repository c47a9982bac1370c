/* The command table of the front doors: kv/commands.c. Every command the
 * Redis door accepts is found whatever its case, takes the arguments Redis
 * says it takes, maps to the kv.proto op the doors send, and needs the
 * access its flags say -- the doors decide with nothing else. */
#include "harness.h"
#include "commands.h"
#include "sm.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static const struct kv_command *find(const char *name)
{
    return kv_command_lookup(name, strlen(name));
}

/* Every row is its id's, named, found by its name in any case. */
static void test_lookup_finds_every_command_in_any_case(void)
{
    for (size_t i = 0; i < KV_ID_COUNT; i++) {
        const struct kv_command *cmd = &kv_commands[i];
        CHECK(cmd->name != NULL);
        CHECK_EQ(kv_command_id(cmd), i);
        char lower[32], mixed[32];
        size_t len = strlen(cmd->name);
        CHECK(len < sizeof(lower));
        for (size_t j = 0; j <= len; j++) {
            lower[j] = (char)tolower((unsigned char)cmd->name[j]);
            mixed[j] = j % 2 ? lower[j] : cmd->name[j];
        }
        if (find(cmd->name) != cmd || find(lower) != cmd || find(mixed) != cmd)
            harness_fail(__FILE__, __LINE__, "%s is not found as %s, %s and %s", cmd->name,
                         cmd->name, lower, mixed);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(kv_commands[j].name, cmd->name) != 0); /* one row per name */
    }
    /* What resp.c accepted before the table, by name. */
    static const char *const accepted[] = {
        "PING",   "ECHO",        "QUIT",        "SELECT",        "CLIENT",  "READONLY", "READWRITE",
        "MULTI",  "EXEC",        "DISCARD",     "WATCH",         "UNWATCH", "COMMAND",  "CONFIG",
        "INFO",   "RAFT.STATUS", "RAFT.LEADER", "RAFT.TRANSFER", "AUTH",    "HELLO",    "SESSION",
        "GET",    "SET",         "SETNX",       "CAS",           "INCR",    "DECR",     "INCRBY",
        "DECRBY", "DEL",         "EXISTS",      "MGET",
    };
    /* Added with shards (route.c) and members (members.c): the placement,
     * as kvctl ring and locate show it, and the members table. */
    static const char *const sharding[] = {"RAFT.RING",  "RAFT.LOCATE", "RAFT.FORGET",
                                           "RAFT.NODES", "RAFT.NODE",   "RAFT.REBALANCE"};
    for (size_t i = 0; i < sizeof(sharding) / sizeof(sharding[0]); i++)
        if (!find(sharding[i]))
            harness_fail(__FILE__, __LINE__, "%s is not in the table", sharding[i]);
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++)
        if (!find(accepted[i]))
            harness_fail(__FILE__, __LINE__, "%s is not in the table", accepted[i]);
    CHECK_EQ(sizeof(accepted) / sizeof(accepted[0]) + sizeof(sharding) / sizeof(sharding[0]),
             KV_ID_COUNT);
}

static void test_unknown_names_are_not_found(void)
{
    static const char *const unknown[] = {
        "",      "G",    "GE",           "GETT",   "GETX",  "XGET",  "FLUSHALL", "KEYS",
        "RAFT.", "RAFT", "RAFT.STATUSX", "SET NX", "MGET ", " MGET", "SESSIONS", "EVAL"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        if (find(unknown[i]))
            harness_fail(__FILE__, __LINE__, "'%s' is found", unknown[i]);
    /* The length is the name's: a NUL inside, or a prefix, is another name. */
    CHECK(kv_command_lookup("GET\0", 4) == NULL);
    CHECK(kv_command_lookup("GETX", 3) == &kv_commands[KV_ID_GET]);
    CHECK(kv_command_lookup("GET", 2) == NULL);
    CHECK(kv_command_lookup("PI\0G", 4) == NULL);
}

/* Redis' COMMAND INFO arity (N exactly, -N at least N), for the commands
 * Redis has: a client gets the error Redis would give it. */
static void test_arity_matches_redis(void)
{
    static const struct {
        const char *name;
        int arity;
    } redis[] = {
        {"GET", 2},      {"SET", -3},      {"SETNX", 3},    {"INCR", 2},    {"DECR", 2},
        {"INCRBY", 3},   {"DECRBY", 3},    {"DEL", -2},     {"EXISTS", -2}, {"MGET", -2},
        {"PING", -1},    {"ECHO", 2},      {"QUIT", -1},    {"SELECT", 2},  {"CLIENT", -2},
        {"READONLY", 1}, {"READWRITE", 1}, {"COMMAND", -1}, {"CONFIG", -2}, {"INFO", -1},
        {"AUTH", -2},    {"HELLO", -1},    {"MULTI", 1},    {"EXEC", 1},    {"DISCARD", 1},
        {"WATCH", -2},   {"UNWATCH", 1},
    };
    for (size_t i = 0; i < sizeof(redis) / sizeof(redis[0]); i++) {
        const struct kv_command *cmd = find(redis[i].name);
        CHECK(cmd != NULL);
        if (kv_command_arity(cmd) != redis[i].arity)
            harness_fail(__FILE__, __LINE__, "%s: arity %d, Redis says %d", redis[i].name,
                         kv_command_arity(cmd), redis[i].arity);
    }
    /* kvd's own. */
    CHECK_EQ(kv_command_arity(find("CAS")), 4);
    CHECK_EQ(kv_command_arity(find("SESSION")), -4);
    CHECK_EQ(kv_command_arity(find("RAFT.STATUS")), 1);
}

/* The bounds as kv_command_check_args applies them, at their edges. */
static void test_argument_counts_at_the_edges(void)
{
    char err[KV_COMMAND_ERR_SIZE];
    static const struct {
        const char *name;
        int argc;
        bool ok;
    } cases[] = {
        {"GET", 1, false},
        {"GET", 2, true},
        {"GET", 3, false},
        {"SET", 2, false},
        {"SET", 3, true},
        {"SET", 4, true}, /* NX: resp.c */
        {"CAS", 3, false},
        {"CAS", 4, true},
        {"CAS", 5, false},
        {"MGET", 1, false},
        {"MGET", 2, true},
        {"MGET", 1 + KV_MAX_KEYS, true},
        {"MGET", 2 + KV_MAX_KEYS, false},
        {"DEL", 1, false},
        {"DEL", 1 + KV_MAX_KEYS, true},
        {"DEL", 2 + KV_MAX_KEYS, false}, /* split by shard: at most KV_MAX_KEYS */
        {"EXISTS", 1 + KV_MAX_KEYS, true},
        {"EXISTS", 2 + KV_MAX_KEYS, false},
        {"AUTH", 1, false},
        {"AUTH", 2, true},
        {"AUTH", 3, true},
        {"AUTH", 4, false},
        {"SESSION", 3, false},
        {"SESSION", 4, true},
        {"SESSION", 100, true},
        {"RAFT.TRANSFER", 2, true},
        {"RAFT.TRANSFER", 3, true},
        {"RAFT.TRANSFER", 4, false},
        {"PING", 1, true},
        {"PING", 2, true},
        {"ECHO", 1, false},
        {"SELECT", 1, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct kv_command *cmd = find(cases[i].name);
        CHECK(cmd != NULL);
        err[0] = '\0';
        bool ok = kv_command_check_args(cmd, cases[i].argc, cases[i].name, err);
        if (ok != cases[i].ok)
            harness_fail(__FILE__, __LINE__, "%s with %d arguments: %s (%s)", cases[i].name,
                         cases[i].argc, ok ? "accepted" : "refused", err);
        CHECK(ok || err[0]);
    }
}

static void test_error_texts(void)
{
    char err[KV_COMMAND_ERR_SIZE];
    kv_command_arity_error(find("GET"), "get", err);
    CHECK_STR(err, "wrong number of arguments for 'get' command");
    kv_command_arity_error(find("MGET"), NULL, err);
    CHECK_STR(err, "wrong number of arguments for 'MGET' command");
    CHECK(!kv_command_check_args(find("set"), 2, "sEt", err));
    CHECK_STR(err, "wrong number of arguments for 'sEt' command");
    /* A command with a syntax of its own says it instead. */
    CHECK(!kv_command_check_args(find("AUTH"), 1, "auth", err));
    CHECK_STR(err, "usage: AUTH [username] password");
    CHECK(!kv_command_check_args(find("SESSION"), 2, "session", err));
    CHECK_STR(err, "usage: SESSION client-id seq command [args...]");
    CHECK(!kv_command_check_args(find("RAFT.TRANSFER"), 4, "raft.transfer", err));
    CHECK_STR(err, "usage: RAFT.TRANSFER [node-id [shard]]");
    CHECK(!kv_command_check_args(find("MGET"), 2 + KV_MAX_KEYS, "mget", err));
    CHECK_STR(err, "MGET takes at most 64 keys");
    /* A name is cut at 32 bytes, as Redis cuts it. */
    kv_command_unknown_error("FLUSHALL", err);
    CHECK_STR(err, "unknown command 'FLUSHALL'");
    kv_command_unknown_error("0123456789012345678901234567890123456789", err);
    CHECK_STR(err, "unknown command '01234567890123456789012345678901'");
}

/* Every op the doors send is some command's, and the table's read/write
 * flag agrees with the state machine's (sm.h kv_op_is_read), which the
 * coordinator routes by. */
static void test_every_op_is_reachable(void)
{
    static const Kvpb__Op ops[] = {KVPB__OP__OP_GET,    KVPB__OP__OP_SET,  KVPB__OP__OP_DEL,
                                   KVPB__OP__OP_EXISTS, KVPB__OP__OP_INCR, KVPB__OP__OP_CAS,
                                   KVPB__OP__OP_MGET};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        bool found = false;
        for (size_t j = 0; j < KV_ID_COUNT; j++)
            found |= (kv_commands[j].flags & (KV_CMD_READ | KV_CMD_WRITE)) &&
                     kv_commands[j].op == ops[i];
        if (!found)
            harness_fail(__FILE__, __LINE__, "no command sends op %d", (int)ops[i]);
    }
    for (size_t j = 0; j < KV_ID_COUNT; j++) {
        const struct kv_command *cmd = &kv_commands[j];
        bool read = cmd->flags & KV_CMD_READ, write = cmd->flags & KV_CMD_WRITE;
        CHECK(!(read && write));
        if ((read || write) && read != kv_op_is_read(cmd->op))
            harness_fail(__FILE__, __LINE__, "%s: %s, but its op is %s", cmd->name,
                         read ? "read" : "write", read ? "a write" : "a read");
        if (read || write)
            CHECK_EQ(cmd->first_key, 1); /* its first key follows its name */
    }
    /* The HTTP door's routes: /v1/kv/ GET, PUT, DELETE and /v1/cas/. */
    CHECK_EQ(find("GET")->op, KVPB__OP__OP_GET);
    CHECK_EQ(find("SET")->op, KVPB__OP__OP_SET);
    CHECK_EQ(find("DEL")->op, KVPB__OP__OP_DEL);
    CHECK_EQ(find("CAS")->op, KVPB__OP__OP_CAS);
    CHECK_EQ(find("SETNX")->op, KVPB__OP__OP_CAS);
    CHECK_EQ(find("DECRBY")->op, KVPB__OP__OP_INCR);
    CHECK(find("MGET")->flags & KV_CMD_READ);
    CHECK(find("DEL")->flags & KV_CMD_WRITE);
    CHECK_EQ(find("MGET")->max_keys, KV_MAX_KEYS);
}

/* Who may run what comes from the flags: before AUTH only AUTH, HELLO and
 * QUIT; the admin token for control commands; the password for the rest. */
static void test_access_comes_from_the_flags(void)
{
    for (size_t i = 0; i < KV_ID_COUNT; i++) {
        const struct kv_command *cmd = &kv_commands[i];
        enum kv_access want = KV_ACCESS_DATA;
        if (!strcmp(cmd->name, "AUTH") || !strcmp(cmd->name, "HELLO") || !strcmp(cmd->name, "QUIT"))
            want = KV_ACCESS_NONE;
        else if (!strcmp(cmd->name, "RAFT.TRANSFER") || !strcmp(cmd->name, "RAFT.FORGET") ||
                 !strcmp(cmd->name, "RAFT.NODE"))
            want = KV_ACCESS_ADMIN;
        if (kv_command_access(cmd->flags) != want)
            harness_fail(__FILE__, __LINE__, "%s needs access %d, not %d", cmd->name,
                         (int)kv_command_access(cmd->flags), (int)want);
    }
    CHECK_EQ(kv_command_access(0), KV_ACCESS_DATA);
    CHECK_EQ(kv_command_access(KV_CMD_ADMIN), KV_ACCESS_ADMIN); /* HTTP's fault filter */
    /* Transactions are refused, and nothing else is. */
    for (size_t i = 0; i < KV_ID_COUNT; i++) {
        const char *n = kv_commands[i].name;
        bool tx = !strcmp(n, "MULTI") || !strcmp(n, "EXEC") || !strcmp(n, "DISCARD") ||
                  !strcmp(n, "WATCH") || !strcmp(n, "UNWATCH");
        CHECK_EQ((kv_commands[i].flags & KV_CMD_REFUSED) != 0, tx);
    }
}

/* COMMAND INFO's flag words. */
static void test_flag_words(void)
{
    const char *w[8];
    CHECK_EQ(kv_command_flag_words(find("GET"), w, 8), 1);
    CHECK_STR(w[0], "readonly");
    CHECK_EQ(kv_command_flag_words(find("SET"), w, 8), 1);
    CHECK_STR(w[0], "write");
    CHECK_EQ(kv_command_flag_words(find("AUTH"), w, 8), 1);
    CHECK_STR(w[0], "no_auth");
    CHECK_EQ(kv_command_flag_words(find("RAFT.TRANSFER"), w, 8), 1);
    CHECK_STR(w[0], "admin");
    CHECK_EQ(kv_command_flag_words(find("PING"), w, 8), 0);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_lookup_finds_every_command_in_any_case),
        HARNESS_TEST(test_unknown_names_are_not_found),
        HARNESS_TEST(test_arity_matches_redis),
        HARNESS_TEST(test_argument_counts_at_the_edges),
        HARNESS_TEST(test_error_texts),
        HARNESS_TEST(test_every_op_is_reachable),
        HARNESS_TEST(test_access_comes_from_the_flags),
        HARNESS_TEST(test_flag_words),
    };
    return harness_main(argc, argv, "commands", tests, sizeof(tests) / sizeof(tests[0]));
}
