#!/usr/bin/env bash
# grade.sh — grade one lab (make grade LAB=N).
#
#   labs/grade.sh N        RAFTSIM=path/to/raftsim (default build/cc/raftsim)
#                          GRADE_BIN=folder of kvd and tests/ (default: raftsim's)
#
# Labs 1-5 (the Raft core) are graded with the simulator: the lab's
# scenarios (judged by their until/expect commands and the checker, not by
# the recorded trace: raftsim run --expect-only) and its budgets of random
# fault schedules (raftsim seeds). Labs 6-7 (kvd: placement, routing,
# rebalancing) with unit tests, one line per test function, and an
# integration test of real kvd processes on 127.0.0.1, bounded in time. It
# prints a table: test, PASS or FAIL, time. For the first failure it prints
# a short excerpt and the command that replays it. Ends with "lab N: P
# passed, F failed"; exit status 1 if F > 0. Run from the top of a tree (the
# real one or a lab copy). GRADE_FAILFAST=1 stops at the first failure (the
# labs' test in make test uses it); GRADE_JOBS=J runs seed searches in J
# jobs (default 2); GRADE_UNIT_ONLY=1 leaves out the integration tests (the
# labs' test uses it to show quickly that a stubbed copy fails). Which tests
# grade which lab: docs/labs.md.
set -euo pipefail

lab=${1:-}
raftsim=${RAFTSIM:-build/cc/raftsim}
bin=${GRADE_BIN:-$(dirname "$raftsim")}
jobs=${GRADE_JOBS:-2}
failfast=${GRADE_FAILFAST:-0}
unit_only=${GRADE_UNIT_ONLY:-0}

# The tests of each lab: "scenario NAME" (tests/scenario/NAME.txt),
# "seeds NAME COUNT RAFTSIM-SEEDS-OPTIONS..." (a budget of random schedules,
# every one checked after every event, liveness after the faults heal),
# "unit BINARY TEST" (one test function of a unit suite, $bin/tests/BINARY)
# or "integration NAME SECONDS SCRIPT" (tests/integration/SCRIPT, stopped
# after SECONDS; it stops at its first failed check).
tests_for() {
    case $1 in
    1)
        echo "scenario InitialElection"
        echo "scenario ReElection"
        echo "scenario ManyElections"
        echo "scenario LeaderFailure"
        echo "scenario PreVoteRejoin"
        echo "scenario StaleLogCandidate"
        echo "scenario CheckQuorum"
        echo "seeds ElectionSeeds 300 --from 1001 --nodes 3,5 --faults partition,oneway,crash,pause"
        echo "seeds BasicRaftSeeds 200 --from 2001 --nodes 3,5 --faults partition,crash,pause --prevote off --check-quorum off"
        ;;
    2)
        echo "scenario BasicAgree"
        echo "scenario FailAgree"
        echo "scenario FailNoAgree"
        echo "scenario ConcurrentStarts"
        echo "scenario Rejoin"
        echo "scenario Backup"
        echo "scenario Count"
        echo "scenario RPCBytes"
        echo "scenario UnreliableAgree"
        echo "seeds UnreliableSeeds 300 --from 3001 --nodes 3,5 --faults partition,drop,dup,delay,reorder"
        echo "seeds ChurnSeeds 300 --from 4001 --nodes 3,5 --faults all"
        ;;
    3)
        echo "scenario BasicAgree"
        echo "scenario FollowerFailure"
        echo "scenario Persist1"
        echo "scenario Persist2"
        echo "scenario Persist3"
        echo "scenario Figure8Paper"
        echo "scenario Figure8"
        echo "seeds Figure8Seeds 400 --from 5001 --nodes 3,5 --faults crash,partition"
        echo "seeds ChurnSeeds 300 --from 6001 --nodes 3,5 --faults all"
        ;;
    4)
        echo "scenario SnapshotBasic"
        echo "scenario SnapshotInstall"
        echo "scenario SnapshotInstallCrash"
        echo "scenario SnapshotInstallUnreliable"
        echo "scenario SnapshotAllCrash"
        echo "scenario SnapshotInit"
        echo "scenario SlowFollowerTail"
        echo "scenario SnapshotInstallUnCrash"
        echo "seeds SnapshotSeeds 400 --from 7001 --nodes 3,5 --faults crash,partition,drop,dup,reorder"
        ;;
    5)
        echo "scenario ReadIndex"
        echo "scenario LeaseRead"
        echo "scenario LeaseReadSkewBound"
        echo "seeds ReadSeeds 400 --from 8001 --nodes 3,5 --faults all"
        echo "seeds ReadPartitionSeeds 300 --from 9001 --nodes 3,5 --faults partition,oneway,clock,pause"
        ;;
    6)
        for t in same_map_same_placement_in_any_node_order placement_is_the_same_in_every_build \
            lookups_match_a_linear_scan_of_the_rings every_shard_has_r_distinct_member_replicas \
            keys_per_shard_within_25_percent_of_mean_at_v64 share_predicts_keys_per_shard \
            one_shard_owns_the_whole_ring joining_node_takes_at_most_1_5x_its_fair_share \
            leaving_node_moves_only_its_own_replicas \
            stored_placement_joins_and_leaves_move_the_fewest_slots; do
            echo "unit test_ring test_$t"
        done
        echo "integration Sharding 240 test_sharding.sh"
        ;;
    7)
        for t in at_target_is_done missing_replica_added_as_learner_first one_change_at_a_time \
            learner_promoted_once_caught_up unwanted_member_removed_last \
            leaving_leader_hands_over_first handoff_target_is_a_wanted_voter \
            whole_move_keeps_its_voters; do
            echo "unit test_rebalance test_$t"
        done
        echo "integration Membership 300 test_membership.sh"
        ;;
    *)
        return 1
        ;;
    esac
}

title_for() {
    case $1 in
    1) echo "election and voting, with pre-vote (§5.2, §5.4.1; thesis §9.6)" ;;
    2) echo "replication and log backtracking (§5.3)" ;;
    3) echo "the commit rule and persistence (§5.4.2, §5.3, Figure 2)" ;;
    4) echo "snapshots and InstallSnapshot (§7)" ;;
    5) echo "ReadIndex and lease reads (thesis §6.4)" ;;
    6) echo "placement and routing in kvd (consistent hashing; Dynamo §4.2-4.3)" ;;
    7) echo "rebalancing a shard: learner, promote, remove (thesis §4.1-4.2, §3.10)" ;;
    esac
}

if ! tests_for "$lab" >/dev/null 2>&1; then
    echo "usage: labs/grade.sh N   (N: 1 to 7; make grade LAB=N)" >&2
    exit 2
fi
# What the lab's tests run must be built.
needs=()
while read -r kind name _ script; do
    case $kind in
    scenario | seeds) needs+=("$raftsim") ;;
    unit) needs+=("$bin/tests/$name") ;;
    integration) [ "$unit_only" = 1 ] || needs+=("$bin/kvd" "$bin/kvctl") ;;
    esac
done < <(tests_for "$lab")
for f in $(printf '%s\n' "${needs[@]}" | sort -u); do
    if [ ! -x "$f" ]; then
        echo "grade: $f is not built (make grade LAB=$lab builds what it needs)" >&2
        exit 2
    fi
done

now() { date +%s.%N; }
log=$(mktemp)
errs=$(mktemp)
first_fail=$(mktemp)
trap 'rm -f "$log" "$errs" "$first_fail"' EXIT

printf '== lab %s: %s\n' "$lab" "$(title_for "$lab")"
printf '%-62s %-6s %7s\n' "Test" "Result" "Time"
passed=0
failed=0
while read -r kind name rest; do
    if [ "$failfast" = 1 ] && [ "$failed" -gt 0 ]; then
        break
    fi
    start=$(now)
    status=0
    if [ "$kind" = integration ] && [ "$unit_only" = 1 ]; then
        continue
    fi
    if [ "$kind" = scenario ]; then
        label="$name"
        replay="$raftsim run -v --expect-only tests/scenario/$name.txt"
        "$raftsim" run -v --expect-only "tests/scenario/$name.txt" >"$log" 2>"$errs" || status=$?
    elif [ "$kind" = unit ]; then
        test=$rest
        label="$test"
        replay="$bin/tests/$name $test"
        "$bin/tests/$name" "$test" </dev/null >"$log" 2>&1 || status=$?
    elif [ "$kind" = integration ]; then
        read -r secs script <<<"$rest"
        label="$name: real kvd processes ($script)"
        replay="KVD=$bin/kvd tests/integration/$script"
        # timeout signals the test's whole process group: the script (whose
        # trap stops the nodes it started) and its kvd nodes; KILL 20 s later
        # if they have not gone. IT_FAILFAST: stop at the first failed check.
        IT_FAILFAST=1 KVD="$bin/kvd" KVCTL="$bin/kvctl" timeout -k 20 "$secs" \
            "tests/integration/$script" </dev/null >"$log" 2>"$errs" || status=$?
        if [ "$status" = 124 ] || [ "$status" = 137 ]; then
            echo "TIMEOUT: not done within $secs s" >>"$log"
        fi
    else
        read -r count opts <<<"$rest"
        label="$name: $count random schedules"
        replay=""
        # shellcheck disable=SC2086 # opts is a list of options
        "$raftsim" seeds --count "$count" --jobs "$jobs" $opts >"$log" 2>"$errs" || status=$?
    fi
    secs=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    if [ "$status" -eq 0 ]; then
        result=PASS
        passed=$((passed + 1))
    else
        result=FAIL
        failed=$((failed + 1))
        if [ ! -s "$first_fail" ]; then
            {
                echo "== the first failure: $label"
                if [ "$kind" = scenario ]; then
                    # The lines before the first failed command, and why.
                    at=$(grep -n -m 1 '^FAILED: ' "$log" | cut -d: -f1 || true)
                    if [ -n "$at" ]; then
                        sed -n "$((at > 20 ? at - 20 : 1)),${at}p" "$log"
                    else
                        tail -n 20 "$log"
                    fi
                    echo "== what failed (scenario line: why):"
                    head -n 5 "$errs"
                    echo "== replay (the whole trace): $replay"
                elif [ "$kind" = unit ]; then
                    # The harness names the failed check: file, line, values.
                    head -n 20 "$log"
                    echo "== replay: $replay"
                elif [ "$kind" = integration ]; then
                    # The checks up to the first that failed, and the last
                    # lines of each node's log (lib.sh's finish prints them).
                    at=$(grep -n -m 1 -E '^  FAIL  |^TIMEOUT' "$log" | cut -d: -f1 || true)
                    at=${at:-$(wc -l <"$log")}
                    sed -n "$((at > 12 ? at - 12 : 1)),${at}p" "$log"
                    sed -n '/^--- /,$p' "$log" | grep -v ' passed, ' | head -n 20
                    head -n 5 "$errs"
                    echo "== replay (and read the nodes' logs): $replay"
                else
                    # raftsim seeds explains its first failure itself: the
                    # property, the trace before it, the logs and a replay line.
                    grep -m 1 -E 'FAIL' "$log" || head -n 5 "$errs"
                    sed -n '/^The first failure, explained:/,/^raftsim seeds:/p' "$log" |
                        sed '1d;$d'
                fi
            } >"$first_fail"
        fi
    fi
    printf '%-62s %-6s %6ss\n' "$label" "$result" "$secs"
done < <(tests_for "$lab")

if [ -s "$first_fail" ]; then
    echo
    cat "$first_fail"
fi
echo
echo "lab $lab: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
