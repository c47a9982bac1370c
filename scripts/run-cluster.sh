#!/usr/bin/env bash
# run-cluster.sh — `make run`: a 3-node kvd cluster on 127.0.0.1, in the foreground.
#
#   scripts/run-cluster.sh KVD [N]
#
# Node i keeps its data in run/i (kept between runs, so a restart continues where it
# stopped; `rm -rf run` starts afresh) and logs to run/i.log, which this script follows.
# Ctrl-C (or SIGTERM) stops every node it started, by PID, and waits for them.
set -euo pipefail

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "$0"
}

KVD=${1:-}
N=${2:-3}
if [ -z "$KVD" ] || [ ! -x "$KVD" ]; then
    usage >&2
    exit 2
fi
mkdir -p run
PIDS=()
cleanup() {
    trap - INT TERM EXIT
    if [ -n "${TAIL_PID:-}" ]; then
        kill "$TAIL_PID" 2>/dev/null || true
    fi
    if [ ${#PIDS[@]} -gt 0 ]; then
        echo
        echo "stopping nodes (pids ${PIDS[*]})"
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        wait "${PIDS[@]}" 2>/dev/null || true
    fi
}
trap cleanup INT TERM EXIT

for i in $(seq 1 "$N"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$((6380 + i))") 2>/dev/null; then
        echo "port $((6380 + i)) is already in use: is another cluster running? (stop it first)" >&2
        exit 1
    fi
done
# The cluster secret: a process that cannot read run/secret cannot take part in Raft,
# even one that knows the cluster's name and a node's id (docs/kvd.md, Security).
if [ ! -s run/secret ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >run/secret)
fi
for i in $(seq 1 "$N"); do
    "$KVD" --id "$i" --data "run/$i" --nodes "$N" --cluster-secret run/secret >>"run/$i.log" 2>&1 &
    PIDS+=("$!")
done

# Wait (bounded) for a leader.
leader=""
for _ in $(seq 1 100); do
    leader=$(redis-cli -p 6381 RAFT.LEADER 2>/dev/null | head -1 || true)
    [ -n "$leader" ] && break
    for pid in "${PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "a node exited at start; its log:" >&2
            tail -n 20 run/*.log >&2
            exit 1
        fi
    done
    sleep 0.1
done

cat <<TXT

  A $N-node Raft cluster is running (data in run/, logs in run/*.log).
  Leader: node ${leader:-"(not elected yet)"}.

    node   redis-cli        HTTP                     raft
TXT
for i in $(seq 1 "$N"); do
    printf '    %-6s %-16s %-24s %s\n' "$i" "-p $((6380 + i))" "127.0.0.1:$((8380 + i))" "127.0.0.1:$((9380 + i))"
done
cat <<TXT

  Try, in another terminal:
    redis-cli -p 6381 set hello world
    redis-cli -p 6382 get hello            (any node answers; followers forward)
    curl -s 127.0.0.1:8383/v1/status
    redis-cli -p 6381 info                 (see the "# Raft" section)
    kill -9 <pid of the leader>            (pids: ${PIDS[*]}; a new leader takes over)

  The nodes prove to each other that they hold run/secret (kvd --cluster-secret); the
  fault filter is off here (cluster-scripts/cluster turns it on to break things).

  Ctrl-C stops every node. Following the logs:

TXT
tail -n 0 -F run/*.log &
TAIL_PID=$!
wait "${PIDS[@]}" || true
