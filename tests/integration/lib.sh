#!/usr/bin/env bash
# lib.sh — helpers for the integration tests: real kvd processes on 127.0.0.1.
#
# Sourced by tests/integration/test_*.sh. Each test gets its own ports (from its PID)
# and a temporary directory; every node it starts is recorded by PID and stopped on
# exit, whatever happens. Waits poll a condition with a timeout; nothing sleeps for
# ordering. A test ends with `finish`, which prints "NAME: N passed, M failed" (and the
# nodes' logs when something failed).
set -euo pipefail

KVD=${KVD:-build/cc/kvd}
NODES=${NODES:-3}
T=$(mktemp -d /tmp/kvd-it.XXXXXX)
# Below the ephemeral range (32768-60999), so no client socket holds our ports (IT_BASE
# chooses them instead: node i gets IT_BASE+i, +10+i and +20+i).
BASE=${IT_BASE:-$((20000 + ($$ % 300) * 40))}
PASS=0
FAIL=0
declare -a PID=()
EXTRA=()

raft_port() { echo $((BASE + $1)); }
resp_port() { echo $((BASE + 10 + $1)); }
http_port() { echo $((BASE + 20 + $1)); }

peers() {
    local i list=""
    for i in $(seq 1 "$NODES"); do
        list+="${list:+,}$i=127.0.0.1:$(raft_port "$i"):$(resp_port "$i"):$(http_port "$i")"
    done
    echo "$list"
}

cleanup() {
    local i
    exec 2>/dev/null # bash would report each node it reaps as "Killed"
    for i in "${!PID[@]}"; do
        kill -KILL "${PID[$i]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# start_node I [kvd options...]: node I of the cluster, fast elections for tests.
start_node() {
    local i=$1
    shift
    "$KVD" --id "$i" --data "$T/$i" --peers "$(peers)" --election-timeout 300 --heartbeat 50 \
        ${EXTRA[@]+"${EXTRA[@]}"} "$@" >>"$T/$i.log" 2>&1 &
    PID[i]=$!
    # Listening within 5 s, or say why not (its log) and fail.
    local deadline=$((SECONDS + 5))
    # (A node that wants a password answers NOAUTH: it is listening too.)
    until [[ "$(timeout 2 redis-cli -p "$(resp_port "$i")" PING 2>/dev/null)" =~ ^(PONG|NOAUTH) ]]; do
        if ! kill -0 "${PID[i]}" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            echo "    node $i did not start:"
            tail -n 5 "$T/$i.log" | sed 's/^/      /'
            return 1
        fi
        sleep 0.02
    done
}

# shellcheck disable=SC2120 # options are optional
start_cluster() {
    local i
    for i in $(seq 1 "$NODES"); do
        start_node "$i" "$@"
    done
}

alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }

kill9() {
    kill -KILL "${PID[$1]}" 2>/dev/null || true
    wait "${PID[$1]}" 2>/dev/null || true
    unset "PID[$1]"
}

# stop_node I: SIGTERM, and wait (bounded) for a clean exit; returns its exit status.
stop_node() {
    local pid=${PID[$1]} rc=0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "    node $1 did not stop within 5 s of SIGTERM"
        kill -KILL "$pid" 2>/dev/null || true
        rc=1
    fi
    wait "$pid" 2>/dev/null || rc=$?
    unset "PID[$1]"
    return "$rc"
}

# r I ARGS...: redis-cli against node I (raw output: errors as "ERR ...", nil as "").
# RCLI_AUTH holds redis-cli's options to authenticate, when the nodes need it.
RCLI_AUTH=()
r() {
    local i=$1
    shift
    timeout 8 redis-cli -p "$(resp_port "$i")" ${RCLI_AUTH[@]+"${RCLI_AUTH[@]}"} "$@" 2>&1
}

# info I FIELD: a field of the "# Raft" section of INFO.
info() {
    r "$1" INFO | tr -d '\r' | sed -n "s/^raft_$2://p"
}

# CURL_AUTH holds curl's options to authenticate, when the nodes need it.
CURL_AUTH=()
metric() {
    timeout 5 curl -s ${CURL_AUTH[@]+"${CURL_AUTH[@]}"} "127.0.0.1:$(http_port "$1")/metrics" |
        grep -E "^$2 " | awk '{print $2}'
}

# wait_until SECONDS CMD...: poll CMD every 50 ms until it succeeds or time runs out.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    while [ $SECONDS -lt $deadline ]; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.05
    done
    "$@" >/dev/null 2>&1
}

# The id of the leader among the live nodes, if exactly one claims it.
leader() {
    local i found=""
    for i in $(seq 1 "$NODES"); do
        alive "$i" || continue
        if [ "$(info "$i" role)" = leader ]; then
            [ -n "$found" ] && return 1
            found=$i
        fi
    done
    [ -n "$found" ] && echo "$found"
}

has_leader() { leader >/dev/null; }

# Every node reports the same content hash (the same data: kvd.md 6a).
same_hash() {
    local h1 h i
    h1=$(info 1 content_hash)
    for i in $(seq 2 "$NODES"); do
        h=$(info "$i" content_hash)
        [ -n "$h" ] && [ "$h" = "$h1" ] || return 1
    done
}

# check DESCRIPTION CMD...: one assertion. With IT_FAILFAST=1 the test ends at
# its first failure (the labs' grader, labs/grade.sh: the checks after it would
# mostly wait out their timeouts on a broken server).
check() {
    local what=$1
    shift
    if "$@"; then
        PASS=$((PASS + 1))
        echo "  ok    $what"
    else
        FAIL=$((FAIL + 1))
        echo "  FAIL  $what"
        if [ "${IT_FAILFAST:-0}" = 1 ]; then
            finish || true
            exit 1
        fi
    fi
}

# eq A B: for check (prints both when they differ).
eq() {
    [ "$1" = "$2" ] && return 0
    echo "    expected '$2', got '$1'"
    return 1
}

finish() {
    local name
    name=$(basename "$0" .sh)
    if [ "$FAIL" -gt 0 ]; then
        local f
        for f in "$T"/*.log; do
            [ -f "$f" ] || continue
            echo "--- $f (last 30 lines)"
            tail -n 30 "$f"
        done
    fi
    echo "$name: $PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}
