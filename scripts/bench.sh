#!/usr/bin/env bash
# bench.sh — `make bench`, the cluster part: kvbench against a 3-node kvd cluster on
# 127.0.0.1 with fsync on, SET and GET at 1, 16 and 64 connections. Figures are printed,
# never asserted.
#
#   scripts/bench.sh BINDIR [SECONDS]
#
# The cluster lives in a temporary directory on ports 26xxx and is stopped (by PID) when
# the script exits, however it exits. A side-by-side etcd run is not written yet; the
# script says so at the end.
set -euo pipefail

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "$0"
}

BIN=${1:-}
SECS=${2:-5}
if [ -z "$BIN" ] || [ ! -x "$BIN/kvd" ] || [ ! -x "$BIN/kvbench" ]; then
    usage >&2
    exit 2
fi
DIR=$(mktemp -d /tmp/kvd-bench.XXXXXX)
PIDS=()
cleanup() {
    if [ ${#PIDS[@]} -gt 0 ]; then
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        wait "${PIDS[@]}" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

N=3
peers=""
for i in $(seq 1 $N); do
    peers+="${peers:+,}$i=127.0.0.1:$((26000 + i)):$((26100 + i)):$((26200 + i))"
done
for i in $(seq 1 $N); do
    "$BIN/kvd" --id "$i" --data "$DIR/$i" --peers "$peers" >"$DIR/$i.log" 2>&1 &
    PIDS+=("$!")
done
leader=""
for _ in $(seq 1 100); do
    leader=$(redis-cli -p 26101 RAFT.LEADER 2>/dev/null | head -1 || true)
    [ -n "$leader" ] && break
    sleep 0.1
done
if [ -z "$leader" ]; then
    echo "bench: no leader elected; logs:" >&2
    tail -n 5 "$DIR"/*.log >&2
    exit 1
fi
echo "kvd: 3 nodes on 127.0.0.1, fsync on (LMDB), linearizable reads (ReadIndex); leader node $leader"
echo "each line: $SECS s of closed-loop load on the leader, 100-byte values, 10,000 keys"
for op in set get; do
    for c in 1 16 64; do
        "$BIN/kvbench" --node "127.0.0.1:$((26100 + leader))" --metrics "127.0.0.1:$((26200 + leader))" \
            --op "$op" --connections "$c" --seconds "$SECS"
    done
done
echo "through a follower (forwarded to the leader):"
f=$((leader % N + 1))
"$BIN/kvbench" --node "127.0.0.1:$((26100 + f))" --op set --connections 64 --seconds "$SECS"
"$BIN/kvbench" --node "127.0.0.1:$((26100 + f))" --op get --connections 64 --seconds "$SECS"
if command -v etcd >/dev/null 2>&1; then
    echo "etcd is installed, but the side-by-side etcd run is not written yet: no ratio printed"
else
    echo "etcd is not installed: no side-by-side comparison (apt-get install etcd-server to add one later)"
fi
