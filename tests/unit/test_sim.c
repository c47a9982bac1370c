/* The simulator and its checker: raft/sim. The checker is only worth
 * something if it can fail, so each property is shown failing on a forged
 * update, and the simulator is shown to be deterministic. */
#include "../../raft/sim/sim_internal.h"
#include "harness.h"

#include <stdlib.h>

/* The whole trace of one random run, as a string. */
static char *run_to_string(uint64_t seed, unsigned nodes)
{
    char *buf = NULL, verdict[512];
    size_t len = 0;
    struct sim_random_options o;
    sim_random_options_default(&o, seed, nodes);
    o.chaos_ms = 2000;
    o.out = open_memstream(&buf, &len);
    CHECK(o.out);
    int rv = sim_random_run(&o, verdict, sizeof(verdict), NULL);
    fprintf(o.out, "%s\n", verdict);
    fclose(o.out);
    CHECK_EQ(rv, 0);
    return buf;
}

static void test_same_seed_same_trace(void)
{
    uint64_t seed = harness_seed(99);
    char *a = run_to_string(seed, 5), *b = run_to_string(seed, 5), *c = run_to_string(seed + 1, 5);
    CHECK(strlen(a) > 1000);
    CHECK_STR(a, b);
    CHECK(strcmp(a, c) != 0);
    free(a);
    free(b);
    free(c);
}

static struct sim *quiet_sim(unsigned nodes)
{
    struct sim_options o;
    sim_options_default(&o, nodes, 1);
    struct sim *s = sim_new(&o);
    CHECK(s);
    return s;
}

static struct raft_update leader_update(raft_term term)
{
    struct raft_update u;
    memset(&u, 0, sizeof(u));
    u.role = RAFT_LEADER;
    u.role_changed = true;
    u.current_term = term;
    return u;
}

static void test_checker_catches_two_leaders(void)
{
    struct sim *s = quiet_sim(3);
    struct raft_update u = leader_update(5);
    check_update(s, &s->nodes[0], &u);
    CHECK(sim_violation(s) == NULL);
    check_update(s, &s->nodes[1], &u);
    CHECK(sim_violated(s, "Election Safety"));
    sim_free(s);
}

static void test_checker_catches_log_mismatch(void)
{
    struct sim *s = quiet_sim(3);
    struct raft_entry a = {.term = 1, .index = 1, .data = "a", .len = 1};
    struct raft_entry b = {.term = 1, .index = 1, .data = "b", .len = 1};
    struct raft_update u;
    memset(&u, 0, sizeof(u));
    u.entries = &a;
    u.n_entries = 1;
    check_update(s, &s->nodes[0], &u);
    /* Recorded once durable: an entry only in memory may vanish in a crash. */
    sim_log_append(&s->nodes[0].disk, &a);
    check_durable_entry(s, &s->nodes[0], 1);
    u.entries = &b;
    check_update(s, &s->nodes[1], &u);
    CHECK(sim_violated(s, "Log Matching"));
    sim_free(s);
}

/* A server that crashed before its term or entries were durable may take
 * the same term again and put another entry at the index (seed 3858 of the
 * swarm schedule: a single voter elects itself without a message): what
 * never left its memory never existed. */
static void test_checker_forgets_entries_never_durable(void)
{
    struct sim *s = quiet_sim(3);
    struct raft_entry a = {.term = 1, .index = 1, .data = "a", .len = 1};
    struct raft_entry b = {.term = 1, .index = 1, .data = "b", .len = 1};
    struct raft_update u;
    memset(&u, 0, sizeof(u));
    u.entries = &a;
    u.n_entries = 1;
    check_update(s, &s->nodes[0], &u);
    sim_log_truncate(&s->nodes[0].mem, 1); /* the crash */
    u.entries = &b;
    check_update(s, &s->nodes[0], &u);
    sim_log_append(&s->nodes[0].disk, &b);
    check_durable_entry(s, &s->nodes[0], 1);
    CHECK(sim_violation(s) == NULL);
    sim_free(s);
}

static void test_checker_catches_divergent_commit(void)
{
    struct sim *s = quiet_sim(3);
    struct raft_entry a = {.term = 1, .index = 1, .data = "a", .len = 1};
    struct raft_entry b = {.term = 2, .index = 1, .data = "b", .len = 1};
    struct raft_update u;
    memset(&u, 0, sizeof(u));
    u.entries = &a;
    u.n_entries = 1;
    u.commit_index = 1;
    check_update(s, &s->nodes[0], &u);
    CHECK(sim_violation(s) == NULL);
    u.entries = &b;
    check_update(s, &s->nodes[1], &u);
    CHECK(sim_violated(s, "State Machine Safety"));
    sim_free(s);
}

static void test_checker_catches_leader_append_only(void)
{
    struct sim *s = quiet_sim(3);
    struct raft_entry a = {.term = 1, .index = 1, .data = "a", .len = 1};
    struct raft_update u = leader_update(1);
    u.entries = &a;
    u.n_entries = 1;
    check_update(s, &s->nodes[0], &u);
    struct raft_update v = leader_update(1);
    v.role_changed = false;
    v.truncate_from = 1;
    check_update(s, &s->nodes[0], &v);
    CHECK(sim_violated(s, "Leader Append-Only"));
    sim_free(s);
}

static void test_checker_catches_stale_read(void)
{
    struct sim *s = quiet_sim(3);
    struct sim_read rd = {.id = 1, .node = 1, .must_see = 4};
    struct raft_read served = {.id = 1, .index = 3, .status = RAFT_OK};
    check_read_served(s, &rd, &served);
    CHECK(sim_violated(s, "Linearizability"));
    sim_free(s);
}

/* A crash loses what was not yet durable; a restart recovers what was. */
static bool has_leader(struct sim *s, void *arg)
{
    (void)arg;
    return sim_leader(s) != 0;
}

static void test_crash_restart_recovers_durable_log(void)
{
    struct sim *s = quiet_sim(3);
    CHECK(sim_run_until(s, 5000, has_leader, NULL));
    raft_index last = 0;
    CHECK_EQ(sim_propose(s, 0, 5, NULL, &last), RAFT_OK);
    sim_run_for(s, 200);
    CHECK(sim_all_committed(s, last, false));
    for (raft_id id = 1; id <= 3; id++)
        sim_crash(s, id);
    for (raft_id id = 1; id <= 3; id++)
        sim_restart(s, id);
    for (raft_id id = 1; id <= 3; id++)
        CHECK_EQ(raft_last_index(sim_raft(s, id)), last);
    CHECK(sim_run_until(s, 5000, has_leader, NULL));
    sim_run_for(s, 300);
    CHECK(sim_violation(s) == NULL);
    sim_free(s);
}

/* Disk loss (Raft §5.4 assumes stable storage): the wiped node's peers
 * refuse its new incarnation, so it stays empty (its answers to the leader
 * never arrive) until the operator replaces it (thesis §4.1, §4.2.1); with
 * unsafe_trust_wiped it is taken back at once and catches up as it is. */
static bool replaced(struct sim *s, void *arg)
{
    (void)arg;
    return sim_replacing(s) == 0;
}

static raft_index wipe_a_follower(struct sim *s, raft_id *wiped)
{
    CHECK(sim_run_until(s, 5000, has_leader, NULL));
    raft_index last = 0;
    CHECK_EQ(sim_propose(s, 0, 5, NULL, &last), RAFT_OK);
    sim_run_for(s, 200);
    CHECK(sim_all_committed(s, last, false));
    *wiped = sim_leader(s) == 1 ? 2 : 1;
    sim_lose_disk(s, *wiped);
    sim_restart(s, *wiped);
    CHECK_EQ(raft_last_index(sim_raft(s, *wiped)), 0);
    sim_run_for(s, 300);
    return last;
}

/* The client history check can fail: a write is answered, then the
 * leader's store forgets it, and a read of that key served there sees the
 * old value, as a stale read would (thesis §6.3). The same history without
 * the forgery is linearizable. */
static bool history_with_read_after_write(bool forget)
{
    struct sim *s = quiet_sim(3);
    CHECK(sim_run_until(s, 5000, has_leader, NULL));
    raft_id l = sim_leader(s);
    CHECK_EQ(sim_client_write(s, l, 1), RAFT_OK);
    sim_run_for(s, 200);
    CHECK_EQ(s->ops[0].state, SIM_OP_OK);
    if (forget)
        memset(s->nodes[l - 1].kv, 0, sizeof(s->nodes[l - 1].kv));
    bool read_it = false;
    for (int i = 0; i < 32 && !read_it; i++) {
        CHECK_EQ(sim_client_read(s, l), RAFT_OK);
        sim_run_for(s, 50);
        const struct sim_client_op *o = &s->ops[s->n_ops - 1];
        read_it = o->key == s->ops[0].key && o->state == SIM_OP_OK;
    }
    CHECK(read_it);
    bool ok = sim_check_history(s);
    CHECK_EQ(ok, !sim_violated(s, "Linearizability"));
    if (!ok)
        CHECK(strstr(sim_violation(s), "client history not linearizable") != NULL);
    sim_free(s);
    return ok;
}

static void test_history_catches_stale_read(void)
{
    CHECK(history_with_read_after_write(false));
    CHECK(!history_with_read_after_write(true));
}

static void test_disk_loss_refused_until_replaced(void)
{
    struct sim *s = quiet_sim(3);
    raft_id wiped;
    raft_index last = wipe_a_follower(s, &wiped);
    CHECK_EQ(raft_last_index(sim_raft(s, wiped)), 0);
    CHECK(sim_replace(s, wiped));
    CHECK(!sim_replace(s, wiped)); /* one at a time */
    CHECK(sim_run_until(s, 5000, replaced, NULL));
    CHECK(raft_last_index(sim_raft(s, wiped)) > last);
    CHECK(sim_violation(s) == NULL);
    sim_free(s);
}

static void test_disk_loss_trusted_with_the_unsafe_knob(void)
{
    struct sim_options o;
    sim_options_default(&o, 3, 1);
    o.unsafe_trust_wiped = true;
    CHECK(sim_new(&o) == NULL); /* refused without allow_unsafe, as the core's knobs */
    o.raft.allow_unsafe = true;
    struct sim *s = sim_new(&o);
    CHECK(s);
    raft_id wiped;
    raft_index last = wipe_a_follower(s, &wiped);
    CHECK(raft_last_index(sim_raft(s, wiped)) >= last);
    sim_free(s);
}

int main(int argc, char **argv)
{
    static const struct harness_test tests[] = {
        HARNESS_TEST(test_same_seed_same_trace),
        HARNESS_TEST(test_checker_catches_two_leaders),
        HARNESS_TEST(test_checker_catches_log_mismatch),
        HARNESS_TEST(test_checker_forgets_entries_never_durable),
        HARNESS_TEST(test_checker_catches_divergent_commit),
        HARNESS_TEST(test_checker_catches_leader_append_only),
        HARNESS_TEST(test_checker_catches_stale_read),
        HARNESS_TEST(test_history_catches_stale_read),
        HARNESS_TEST(test_crash_restart_recovers_durable_log),
        HARNESS_TEST(test_disk_loss_refused_until_replaced),
        HARNESS_TEST(test_disk_loss_trusted_with_the_unsafe_knob),
    };
    return harness_main(argc, argv, "sim", tests, sizeof(tests) / sizeof(tests[0]));
}
