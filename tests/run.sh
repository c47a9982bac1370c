#!/usr/bin/env bash
# run.sh — every test suite of `make test`, and one total at the end.
#
# Each suite prints a last line "<name>: N passed, M failed"; this script adds
# them up and ends with "N passed, M failed" (exit status 1 if M > 0).
# OBJ is the build folder (set by the Makefile); SEEDS the number of random
# simulator schedules (default 5000).
set -euo pipefail

OBJ=${OBJ:-build/cc}
SEEDS=${SEEDS:-5000}
total_pass=0
total_fail=0
failed_suites=()

# run_suite NAME CMD...: run one suite, echo its output, add up its last line.
run_suite() {
    local name=$1
    shift
    local out status=0 t0=$SECONDS
    echo "== $name"
    out=$("$@" 2>&1) || status=$?
    printf '%s\n' "$out" | sed 's/^/  /'
    echo "  ($((SECONDS - t0)) s)"
    local last p f
    last=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -n 1 || true)
    if [[ $last =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        p=${BASH_REMATCH[1]}
        f=${BASH_REMATCH[2]}
    else
        p=0
        f=1
    fi
    # A suite that crashed or exited non-zero with no failure counted is a failure.
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    if [ "$f" -ne 0 ]; then
        failed_suites+=("$name")
    fi
}

# expect_ok NAME CMD...: a single check that must exit 0.
expect_ok() {
    local name=$1
    shift
    if "$@"; then
        echo "1 passed, 0 failed"
    else
        echo "0 passed, 1 failed ($name)"
        return 1
    fi
}

start=$SECONDS

for t in "$OBJ"/tests/test_*; do
    [ -x "$t" ] || continue
    run_suite "unit: $(basename "$t")" "$t"
done

# The linearizability checker's command line (its library has a unit suite above).
run_suite "lincheck: command line" env OBJ="$OBJ" tests/lincheck/test_cli.sh

run_suite "scenarios: tests/scenario" "$OBJ/raftsim" run tests/scenario/*.txt

# The trace as JSON lines: every record validates against docs/trace.schema.json.
run_suite "trace: JSON records of every scenario and some random schedules validate" \
    env OBJ="$OBJ" tests/trace/test_trace_json.sh

run_suite "simulator: $SEEDS random schedules (3 and 5 nodes, all faults)" \
    "$OBJ/raftsim" seeds --count "$SEEDS" --nodes 3,5

# Basic Raft as in the paper (no pre-vote, no check-quorum): without those
# guards, votes and commits face every interleaving on their own.
# (No membership changes here: without check-quorum there is no leader lease,
# and a removed server that never learns of its removal keeps deposing
# leaders -- the disruptive server of thesis §4.2.3.)
run_suite "simulator: $((SEEDS / 2)) random schedules of basic Raft (pre-vote and check-quorum off)" \
    "$OBJ/raftsim" seeds --count "$((SEEDS / 2))" --from 100001 --nodes 3,5 \
    --faults partition,oneway,crash,pause,drop,dup,delay,reorder \
    --prevote off --check-quorum off

# The checker must be able to fail: the Figure 8 bug has to be caught within
# a budget of 20,000 seeds of crashes and partitions (it stops at the first).
run_suite "simulator: unsafe_commit_old_term is caught (Figure 8)" \
    expect_ok "State Machine Safety found" \
    "$OBJ/raftsim" seeds --count 20000 --nodes 3,5 --faults crash,partition \
    --unsafe-commit-old-term --expect-violation "State Machine Safety"

# The catalogue of planted bugs (docs/simulator.md, "Planted bugs"): each one
# must be caught by a safety property on the default fault mix within 200
# seeds (the first seed that catches it is the same whatever the number of
# jobs, so this is deterministic).
run_suite "simulator: every planted bug is caught (raftsim mutants)" \
    "$OBJ/raftsim" mutants --count 200 --jobs 2 --max-seconds 30

# The clients' history check (docs/simulator.md, "Clients and their history") must
# be able to fail on its own: with the checker's index-level read check off
# (--history-only), a planted stale-read bug must still be caught, as a client sees it.
run_suite "simulator: a stale read is caught by the client history alone" \
    expect_ok "client history violation found" \
    "$OBJ/raftsim" seeds --count 200 --jobs 2 --bug lease-too-long --history-only \
    --expect-violation "client history not linearizable"

# The labs (docs/labs.md): the real code passes every lab's grade, and each
# lab's generated copy, with its regions of raft/core cut out, compiles and
# fails that grade (so the grader can tell).
run_suite "labs: the real code passes every lab; each lab's stubbed copy fails it" \
    env OBJ="$OBJ" tests/labs/test_labs.sh

# And the guard against disk loss (Raft §5.4 assumes stable storage): with
# unsafe_trust_wiped, a node that lost its disk is taken back at once, the voter
# it was; some schedule of crashes, partitions and membership changes (the
# ones where crashes sometimes lose the disk) must then lose a committed entry.
run_suite "simulator: unsafe_trust_wiped is caught (disk loss)" \
    expect_ok "State Machine Safety found" \
    "$OBJ/raftsim" seeds --count 20000 --nodes 3,5 --faults crash,partition,membership \
    --unsafe-trust-wiped --expect-violation "State Machine Safety"

# A short, deterministic pass of each fuzz target (make fuzz runs longer).
for f in "${FUZZ_DIR:-build/fuzz}"/fuzz_*; do
    [ -x "$f" ] || continue
    runs=200000
    # Each run of the snapshot target writes a file and an LMDB transaction.
    [ "$(basename "$f")" = fuzz_snapshot ] && runs=20000
    run_suite "fuzz: $(basename "$f") ($runs runs, seed 1)" \
        expect_ok "no crash" "$f" -seed=1 -runs="$runs" -max_len=512
done

for t in tests/integration/test_*.sh; do
    run_suite "integration: $(basename "$t" .sh) (real kvd processes on 127.0.0.1)" \
        env KVD="$OBJ/kvd" "$t"
done

# The cluster scripts' scenarios, each on its own cluster (ports shifted by 10000, so
# a `make run` cluster can stay up), and one negative control: a weakened server
# (no check-quorum, reads from local state) must make split-brain report FAIL.
# Loopback mode always; netns mode (real packet drops between network namespaces) where
# it works: as root, with unshare, nsenter, ip, nft and socat.
modes=(loopback)
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v nsenter >/dev/null &&
    command -v nft >/dev/null && command -v socat >/dev/null && command -v ip >/dev/null; then
    modes+=(netns)
else
    echo "== cluster scenarios in netns mode: skipped (they need root and nft, socat, unshare)"
fi
for mode in "${modes[@]}"; do
    for t in cluster-scripts/scenarios/*.sh; do
        [ "$(basename "$t")" = lib.sh ] && continue
        # The membership scenarios run one to two and a half minutes each: disk-loss in
        # loopback mode only here, grow-shrink not at all (test_membership covers joins
        # and removals); make soak-cluster runs both in both modes. The scenarios whose
        # faults are processes' (kill, pause, restart) are the same in both modes: loopback
        # here, netns in make soak-cluster.
        case "$mode $(basename "$t")" in
        *" grow-shrink.sh" | "netns disk-loss.sh") continue ;;
        "netns kill-majority.sh" | "netns pause-leader.sh" | "netns rolling-restart.sh" | \
            "netns sharded-kill.sh") continue ;;
        esac
        # The three longest network-fault stories run once: in netns mode (real packet drops)
        # where it runs, else in loopback mode; make soak-cluster runs them in both.
        case " ${modes[*]} $mode $(basename "$t")" in
        *" netns loopback flapping.sh" | *" netns loopback bridge.sh" | \
            *" netns loopback oneway-loss.sh") continue ;;
        esac
        run_suite "cluster scenario: $(basename "$t" .sh) ($mode mode)" \
            expect_ok "PASS" env KVD="$OBJ/kvd" SCENARIO_OWN=1 CLUSTER_PORTS=10000 \
            CLUSTER_NET="$mode" timeout 300 "$t"
    done
done
run_suite "cluster script: netns mode without root (as nobody, in a user namespace)" \
    env KVD="$OBJ/kvd" tests/integration/cluster_rootless.sh

weakened_split_brain() {
    local out
    if out=$(env KVD="$OBJ/kvd" SCENARIO_OWN=1 SCENARIO_CLEAN=1 CLUSTER_PORTS=10000 CLUSTER_NET=loopback \
        KVD_OPTS="--no-check-quorum --allow-unsafe --read-mode unsafe_local" timeout 180 \
        cluster-scripts/scenarios/split-brain.sh 2>&1); then
        printf '%s\n' "$out"
        echo "the weakened server passed: the scenario cannot fail"
        return 1
    fi
    printf '%s\n' "$out" | grep -E "STALE READ|SPLIT BRAIN|^FAIL"
}
run_suite "cluster scenario: split-brain catches a weakened server (no check-quorum, unsafe_local reads)" \
    expect_ok "FAIL reported" weakened_split_brain

# Linearizability (docs/lincheck.md): clients' histories under a nemesis, checked by
# lincheck. The real cluster must come out LINEARIZABLE; a weakened one (reads from
# local state, a leader that keeps leading alone) must be caught with a VIOLATION.
check_run() { # check_run EXPECTED-EXIT KVD-OPTS CHECK-ARGS...
    local want=$1 opts=$2 rc=0 out
    shift 2
    out=$(env KVD="$OBJ/kvd" SCENARIO_CLEAN=1 CLUSTER_PORTS=10000 CLUSTER_NET=loopback \
        KVD_OPTS="$opts" LINCHECK_BUDGET=60 timeout 240 cluster-scripts/check "$@" 2>&1) || rc=$?
    printf '%s\n' "$out" | grep -E "^== |fault [0-9]+:|kvcheck:|^(LINEARIZABLE|VIOLATION|UNKNOWN)" || true
    [ "$rc" = "$want" ] || { echo "check exited $rc, expected $want"; return 1; }
}
run_suite "linearizability check: 3 nodes under partitions, isolation, kill -9 and pauses" \
    expect_ok "LINEARIZABLE" check_run 0 "" --nodes 3 --time 30 --nemesis partition,isolate,kill,pause \
    --seed 11
run_suite "linearizability check: a weakened server (unsafe_local reads, no check-quorum) is caught" \
    expect_ok "VIOLATION found" check_run 1 "--read-mode unsafe_local --no-check-quorum --allow-unsafe" \
    --nodes 3 --time 25 --nemesis isolate,partition --seed 12

for t in tests/lint/*.sh; do
    run_suite "lint: $(basename "$t")" "$t"
done

echo
if [ ${#failed_suites[@]} -gt 0 ]; then
    printf 'failed suite: %s\n' "${failed_suites[@]}"
fi
echo "time: $((SECONDS - start)) s"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
