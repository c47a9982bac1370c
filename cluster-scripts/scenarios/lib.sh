#!/usr/bin/env bash
# lib.sh — what every scenario shares: narration, client operations recorded with
# their outcomes, and the checks every scenario ends with.
#
# A scenario uses the cluster already running in CLUSTER_DIR when it has the nodes it
# needs (`cluster up -n 5` first, as the README shows), and otherwise starts its own
# in a temporary directory and stops it at the end, however the script ends.
# KVD_OPTS adds kvd options to a cluster it starts (e.g. "--no-check-quorum
# --allow-unsafe --read-mode unsafe_local" to watch a weakened server get caught).
# Every client operation goes to ops.log in the cluster directory: time, node,
# operation, key, value, outcome.
#
# The checks: no acknowledged write lost; replicas identical after the heal (same
# applied index and content hash everywhere); at most one leader per term (from the
# nodes' logs). A failed expectation prints FAIL and the scenario exits non-zero.
set -euo pipefail

SCEN_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER="$SCEN_HERE/../cluster"
NAME=$(basename "$0" .sh)
FAILS=0
OWN=false
ELECTION_MS=500
declare -A ACKED=()  # key -> value, every write that was acknowledged
declare -A REFUSED=() # key -> value, writes that got an error (must never appear, where noted)

if [ -t 1 ]; then
    B=$'\033[1m' RED=$'\033[31m' GREEN=$'\033[32m' R=$'\033[0m'
else
    B="" RED="" GREEN="" R=""
fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$R"; }
note() { printf '   %s\n' "$*"; }
fail() {
    FAILS=$((FAILS + 1))
    printf '   %sFAIL%s %s\n' "$RED" "$R" "$*"
}
pass() { printf '   ok   %s\n' "$*"; }
expect() { # expect DESCRIPTION CMD...
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

cluster() { "$CLUSTER" "$@"; }

# need_cluster N: use the running cluster if it has N nodes, else start one.
need_cluster() {
    local n=$1
    if [ -z "${SCENARIO_OWN:-}" ] && [ "$(cat "${CLUSTER_DIR:-$PWD/cluster-run}/n" 2>/dev/null || echo 0)" = "$n" ] &&
        cluster leader >/dev/null 2>&1; then
        note "using the running $n-node cluster in ${CLUSTER_DIR:-$PWD/cluster-run}"
        cluster heal >/dev/null
    else
        OWN=true
        CLUSTER_DIR=$(mktemp -d /tmp/scenario-"$NAME".XXXXXX)
        export CLUSTER_DIR
        note "starting a $n-node cluster in $CLUSTER_DIR"
        # shellcheck disable=SC2086 # KVD_OPTS is a list of options
        cluster up -n "$n" -- --election-timeout "$ELECTION_MS" --heartbeat 50 \
            --request-timeout 2000 ${KVD_OPTS:-} >/dev/null
    fi
    CDIR=${CLUSTER_DIR:-$PWD/cluster-run}
    OPS=$CDIR/ops.log
    N=$n
    : >>"$OPS"
    START_LINE=$(wc -l <"$OPS")
}

finish_cluster() {
    [ -z "$WRITER_PID" ] || kill "$WRITER_PID" 2>/dev/null || true
    CDIR=${CDIR:-${CLUSTER_DIR:-}}
    if $OWN; then
        cluster down >/dev/null 2>&1 || true
        # Kept for reading after a failure, unless told (SCENARIO_CLEAN: a control
        # expected to fail) or asked to keep it anyway (KEEP).
        if { [ "$FAILS" -eq 0 ] || [ -n "${SCENARIO_CLEAN:-}" ]; } && [ -z "${KEEP:-}" ]; then
            rm -rf "$CDIR"
        else
            echo "   (the cluster's logs and ops.log stay in $CDIR)"
        fi
    else
        cluster heal >/dev/null 2>&1 || true
    fi
}
trap finish_cluster EXIT
trap 'exit 130' INT TERM

port() { echo $((6380 + ${CLUSTER_PORTS:-0} + $1)); }
record() { printf '%s node=%s %s\n' "$(date +%T.%3N)" "$1" "$2" >>"$OPS"; }

# write NODE KEY VALUE: SET through NODE; the outcome goes to LAST and ops.log.
# (Not in a subshell: it remembers what was acknowledged.)
LAST=""
write() {
    LAST=$(timeout 5 redis-cli -p "$(port "$1")" SET "$2" "$3" 2>&1 | head -1) || LAST="timeout"
    record "$1" "SET $2 $3 -> $LAST"
    if [ "$LAST" = OK ]; then
        ACKED[$2]=$3
    else
        REFUSED[$2]=$3
    fi
}
written() { write "$@"; [ "$LAST" = OK ]; }

# A client writing in the background: unique keys through the nodes in turn, each
# outcome with its time in writer.log. It stops by itself after WRITER_SECONDS
# (default 120).
WRITER_PID=""
start_writer() {
    (
        end=$((SECONDS + ${WRITER_SECONDS:-120})) k=0
        while [ $SECONDS -lt $end ]; do
            k=$((k + 1))
            n=$((k % N + 1))
            out=$(timeout 3 redis-cli -p "$(port "$n")" SET "w$k" "$k" 2>&1 | head -1) || out=timeout
            printf '%s w%s %s %s\n' "$(date +%s%3N)" "$k" "$k" "${out// /_}" >>"$CDIR/writer.log"
            record "$n" "SET w$k $k -> $out"
            sleep 0.02
        done
    ) &
    WRITER_PID=$!
}

# stop_writer: stop it, remember what it got acknowledged, and set WORST_GAP_MS to
# the longest stretch between two acknowledged writes.
WORST_GAP_MS=0
stop_writer() {
    [ -n "$WRITER_PID" ] || return 0
    kill "$WRITER_PID" 2>/dev/null || true
    wait "$WRITER_PID" 2>/dev/null || true
    WRITER_PID=""
    local t key val out prev=""
    while read -r t key val out; do
        [ "$out" = OK ] || continue
        ACKED[$key]=$val
        if [ -n "$prev" ] && [ $((t - prev)) -gt "$WORST_GAP_MS" ]; then
            WORST_GAP_MS=$((t - prev))
        fi
        prev=$t
    done <"$CDIR/writer.log"
}

# read NODE KEY: GET through NODE (linearizable unless the server was told otherwise).
read_key() {
    local out
    out=$(timeout 5 redis-cli -p "$(port "$1")" GET "$2" 2>&1 | head -1) || out="timeout"
    record "$1" "GET $2 -> ${out:-(nil)}"
    echo "$out"
}

info() { # info NODE FIELD
    timeout 2 redis-cli -p "$(port "$1")" INFO 2>/dev/null | tr -d '\r' | sed -n "s/^raft_$2://p"
}

leader() { cluster leader 2>/dev/null; }

# wait_for SECONDS CMD...: poll until CMD succeeds. CMD is evaluated afresh each
# time (eval), so write conditions in single quotes:
#   wait_for 5 '[ "$(info "$OLD" role)" != leader ]'
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    while [ $SECONDS -lt "$deadline" ]; do
        eval "$*" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    eval "$*" >/dev/null 2>&1
}

# A leader among NODES (comma list) acknowledged by them.
leader_among() {
    local l
    l=$(leader) || return 1
    [[ ",$1," == *",$l,"* ]] && echo "$l"
}

# ---------------------------------------------------------------------------
# The checks every scenario ends with.

converged() {
    local i h a h1="" a1=""
    for i in $(seq 1 "$N"); do
        h=$(info "$i" content_hash)
        a=$(info "$i" applied)
        [ -n "$h" ] && [ -n "$a" ] || return 1
        if [ -z "$h1" ]; then
            h1=$h
            a1=$a
        fi
        [ "$h" = "$h1" ] && [ "$a" = "$a1" ] || return 1
    done
    [ "$a1" -ge "$(info "$(leader)" commit)" ]
}

check_no_acked_write_lost() {
    local l k lost=0 v
    l=$(leader) || { fail "no leader to read from"; return; }
    for k in "${!ACKED[@]}"; do
        v=$(read_key "$l" "$k")
        if [ "$v" != "${ACKED[$k]}" ]; then
            lost=$((lost + 1))
            note "acknowledged $k=${ACKED[$k]} but read '${v}'"
        fi
    done
    if [ "$lost" -eq 0 ]; then
        pass "no acknowledged write lost (${#ACKED[@]} checked through the leader, linearizable reads)"
    else
        fail "$lost acknowledged writes lost"
    fi
}

# check_never_visible KEY...: writes that were refused must not have happened.
check_never_visible() {
    local l k v seen=0
    l=$(leader) || return 0
    for k in "$@"; do
        v=$(read_key "$l" "$k")
        if [ -n "$v" ]; then
            seen=$((seen + 1))
            note "the refused write $k=${REFUSED[$k]:-?} is visible: '$v'"
        fi
    done
    if [ "$seen" -eq 0 ]; then
        pass "none of the $# refused writes became visible"
    else
        fail "$seen refused writes became visible"
    fi
}

check_one_leader_per_term() {
    local bad
    bad=$(cat "$CDIR"/*.log 2>/dev/null | sed -n 's/^kvd \([0-9]*\): leader in term \([0-9]*\).*/\2 \1/p' |
        sort -u | awk '{ n[$1]++; who[$1] = who[$1] " " $2 } END { for (t in n) if (n[t] > 1) print "term " t ":" who[t] }')
    if [ -z "$bad" ]; then
        pass "at most one leader per term (every node's log)"
    else
        fail "two leaders in one term: $bad"
    fi
}

final_checks() {
    say "Checks"
    if wait_for 15 converged; then
        pass "replicas identical: every node applied index $(info 1 applied), content hash $(info 1 content_hash)"
    else
        fail "replicas differ after the heal:"
        local i
        for i in $(seq 1 "$N"); do
            note "node $i: applied $(info "$i" applied) hash $(info "$i" content_hash)"
        done
    fi
    check_no_acked_write_lost
    check_one_leader_per_term
    local ops
    ops=$(($(wc -l <"$OPS") - START_LINE))
    note "$ops client operations recorded in $OPS"
    echo
    if [ "$FAILS" -eq 0 ]; then
        printf '%sPASS%s %s\n' "$GREEN" "$R" "$NAME"
    else
        printf '%sFAIL%s %s (%d expectation(s) failed)\n' "$RED" "$R" "$NAME" "$FAILS"
        exit 1
    fi
}
