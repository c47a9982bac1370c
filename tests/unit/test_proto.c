/* The wire and log formats (proto/raft.proto, proto/kv.proto) round-trip through protobuf-c. */
#include "harness.h"
#include "kv.pb-c.h"
#include "raft.pb-c.h"

#include <stdlib.h>

static void test_envelope_append_entries_round_trip(void)
{
    Raftpb__Entry e1 = RAFTPB__ENTRY__INIT, e2 = RAFTPB__ENTRY__INIT;
    e1.term = 3;
    e1.index = 7;
    e1.type = RAFTPB__ENTRY_TYPE__ENTRY_NORMAL;
    e1.data.data = (uint8_t *)"hello";
    e1.data.len = 5;
    e2.term = 3;
    e2.index = 8;
    e2.type = RAFTPB__ENTRY_TYPE__ENTRY_NOOP;
    Raftpb__Entry *entries[] = {&e1, &e2};
    Raftpb__AppendEntries ae = RAFTPB__APPEND_ENTRIES__INIT;
    ae.term = 3;
    ae.leader_id = 1;
    ae.prev_log_index = 6;
    ae.prev_log_term = 2;
    ae.n_entries = 2;
    ae.entries = entries;
    ae.leader_commit = 5;
    ae.read_seq = 9;
    Raftpb__Envelope env = RAFTPB__ENVELOPE__INIT;
    env.cluster_id = 0xfeedULL;
    env.from_node = 1;
    env.to_node = 2;
    env.group_id = 4;
    env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_APPEND_ENTRIES;
    env.append_entries = &ae;

    size_t len = raftpb__envelope__get_packed_size(&env);
    uint8_t *buf = malloc(len);
    CHECK(buf);
    CHECK_EQ(raftpb__envelope__pack(&env, buf), len);
    Raftpb__Envelope *got = raftpb__envelope__unpack(NULL, len, buf);
    CHECK(got);
    CHECK_EQ(got->cluster_id, 0xfeed);
    CHECK_EQ(got->group_id, 4);
    CHECK_EQ(got->payload_case, RAFTPB__ENVELOPE__PAYLOAD_APPEND_ENTRIES);
    CHECK_EQ(got->append_entries->n_entries, 2);
    CHECK_EQ(got->append_entries->entries[0]->term, 3);
    CHECK_EQ(got->append_entries->entries[0]->data.len, 5);
    CHECK(memcmp(got->append_entries->entries[0]->data.data, "hello", 5) == 0);
    CHECK_EQ(got->append_entries->entries[1]->type, RAFTPB__ENTRY_TYPE__ENTRY_NOOP);
    CHECK_EQ(got->append_entries->read_seq, 9);
    raftpb__envelope__free_unpacked(got, NULL);
    /* Truncated input is refused, not misread. */
    CHECK(raftpb__envelope__unpack(NULL, len - 3, buf) == NULL);
    free(buf);
}

static void test_hello_round_trip(void)
{
    Raftpb__Hello hello = RAFTPB__HELLO__INIT;
    hello.cluster_id = 42;
    hello.node_id = 3;
    hello.version = 1;
    Raftpb__Envelope env = RAFTPB__ENVELOPE__INIT;
    env.payload_case = RAFTPB__ENVELOPE__PAYLOAD_HELLO;
    env.hello = &hello;
    uint8_t buf[64];
    size_t len = raftpb__envelope__pack(&env, buf);
    Raftpb__Envelope *got = raftpb__envelope__unpack(NULL, len, buf);
    CHECK(got && got->payload_case == RAFTPB__ENVELOPE__PAYLOAD_HELLO);
    CHECK_EQ(got->hello->cluster_id, 42);
    CHECK_EQ(got->hello->version, 1);
    raftpb__envelope__free_unpacked(got, NULL);
}

static void test_kv_command_round_trip(void)
{
    Kvpb__Command cmd = KVPB__COMMAND__INIT;
    cmd.client_id = 77;
    cmd.seq = 12;
    cmd.op = KVPB__OP__OP_CAS;
    ProtobufCBinaryData key = {3, (uint8_t *)"key"};
    cmd.n_keys = 1;
    cmd.keys = &key;
    cmd.expected.data = (uint8_t *)"old";
    cmd.expected.len = 3;
    cmd.value.data = (uint8_t *)"new";
    cmd.value.len = 3;
    uint8_t buf[128];
    size_t len = kvpb__command__pack(&cmd, buf);
    Kvpb__Command *got = kvpb__command__unpack(NULL, len, buf);
    CHECK(got);
    CHECK_EQ(got->client_id, 77);
    CHECK_EQ(got->seq, 12);
    CHECK_EQ(got->op, KVPB__OP__OP_CAS);
    CHECK(got->n_keys == 1 && memcmp(got->keys[0].data, "key", 3) == 0);
    CHECK(memcmp(got->expected.data, "old", 3) == 0);
    kvpb__command__free_unpacked(got, NULL);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_envelope_append_entries_round_trip),
        HARNESS_TEST(test_hello_round_trip),
        HARNESS_TEST(test_kv_command_round_trip),
    };
    return harness_main(argc, argv, "proto", tests, sizeof(tests) / sizeof(tests[0]));
}
