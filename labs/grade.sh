#!/usr/bin/env bash
# grade.sh — grade one lab with the simulator (make grade LAB=N).
#
#   labs/grade.sh N        RAFTSIM=path/to/raftsim (default build/cc/raftsim)
#
# Runs the lab's scenarios (judged by their until/expect commands and the
# checker, not by the recorded trace: raftsim run --expect-only) and its
# budgets of random fault schedules (raftsim seeds), and prints a table:
# test, PASS or FAIL, time. For the first failure it prints a short trace
# excerpt and the command that replays it. Ends with "lab N: P passed, F
# failed"; exit status 1 if F > 0. Run from the top of a tree (the real one
# or a lab copy). GRADE_FAILFAST=1 stops at the first failure (the labs'
# test in make test uses it); GRADE_JOBS=J runs seed searches in J jobs
# (default 2). Which tests grade which lab: docs/labs.md.
set -euo pipefail

lab=${1:-}
raftsim=${RAFTSIM:-build/cc/raftsim}
jobs=${GRADE_JOBS:-2}
failfast=${GRADE_FAILFAST:-0}

# The tests of each lab: "scenario NAME" (tests/scenario/NAME.txt) or
# "seeds NAME COUNT RAFTSIM-SEEDS-OPTIONS..." (a budget of random schedules,
# every one checked after every event, liveness after the faults heal).
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
    esac
}

if ! tests_for "$lab" >/dev/null 2>&1; then
    echo "usage: labs/grade.sh N   (N: 1 to 5; make grade LAB=N)" >&2
    exit 2
fi
if [ ! -x "$raftsim" ]; then
    echo "grade: $raftsim is not built (make $raftsim)" >&2
    exit 2
fi

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
    if [ "$kind" = scenario ]; then
        label="$name"
        replay="$raftsim run -v --expect-only tests/scenario/$name.txt"
        "$raftsim" run -v --expect-only "tests/scenario/$name.txt" >"$log" 2>"$errs" || status=$?
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
