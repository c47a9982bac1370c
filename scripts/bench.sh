#!/usr/bin/env bash
# bench.sh — `make bench`, the cluster part: kvbench against a 3-node kvd cluster on
# 127.0.0.1 with fsync on, SET and GET at 1, 16 and 64 connections, over RESP and over
# HTTP; sharded clusters (3 nodes with 1, 4 and 16 shards, 5 nodes with 16 shards of 3
# replicas: SET and GET at 64 connections spread over every node); and, when etcd is
# installed (make bench-peers: Debian's etcd-server), the same load on a 3-member etcd (v3
# JSON gateway, fsync on) in the same run, with the ratios; when redis-server is installed,
# a single Redis with appendfsync always (the cost of one fsynced, unreplicated write). Also
# failover (kill -9 of the leader under a writer that talks to a follower: when the write in
# flight at the kill is answered, and the first one sent after it) for kvd and etcd, and
# kvd's resident memory at rest and after the load. Figures are printed, never asserted.
# BENCH_SHARDS=0 skips the sharded part.
#
#   scripts/bench.sh BINDIR [SECONDS]
#
# Everything lives in a temporary directory on ports 26xxx (kvd) and 27xxx (etcd) and is
# stopped (by PID) when the script exits, however it exits. BENCH_ETCD=0 skips etcd.
set -euo pipefail
# shellcheck source=scripts/kvd-cluster.sh
. "$(dirname "$0")/kvd-cluster.sh"

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "$0"
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
declare -A RPS # "system op conns" -> requests per second
declare -A FAILOVER # system -> the failover line

# rss_mib PID...: the largest resident set among the processes, in MiB.
rss_mib() {
    local p m=0 k
    for p in "$@"; do
        k=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        [ "${k:-0}" -gt "$m" ] && m=$k
    done
    awk -v k="$m" 'BEGIN { printf "%.1f", k / 1024 }'
}

# failover SYSTEM LEADER-PID KVBENCH-ARGS...: a writer on one connection to a follower;
# kill -9 of the leader 2 s in, then 10 s to watch (etcd answers a write its dead leader never
# got only at its request timeout, 7 s); the line kvbench prints about it, remembered.
failover() {
    local system=$1 pid=$2 out
    shift 2
    out=$("$BIN/kvbench" "$@" --op set --connections 1 --seconds 12 --kill "$pid" \
        --kill-after 2 2>&1) || true
    FAILOVER[$system]=$(grep '^failover:' <<<"$out" | sed 's/^failover: //')
    echo "  ${FAILOVER[$system]:-no failover line: $out}"
}

# run SYSTEM KVBENCH-ARGS...: one kvbench line, printed, its req/s remembered.
run() {
    local system=$1 line op conns
    shift
    line=$("$BIN/kvbench" "$@" --seconds "$SECS") || {
        echo "$system: kvbench failed: $line" >&2
        return 0
    }
    echo "  $line"
    read -r op conns _ <<<"$line"
    RPS["$system $op $conns"]=$(awk '{print $4}' <<<"$line")
}

# ---- kvd
kvd_cluster bench "$BIN" "$DIR" 26000
RSS_REST=$(rss_mib "${PIDS[@]}")
echo "kvd: 3 nodes on 127.0.0.1, fsync on (append-only log), linearizable reads (ReadIndex); leader node $leader"
echo "each line: $SECS s of closed-loop load on the leader, 100-byte values, 10,000 keys"
echo "over RESP (redis protocol):"
for op in set get; do
    for c in 1 16 64; do
        run kvd --node "127.0.0.1:$((26100 + leader))" --metrics "127.0.0.1:$((26200 + leader))" \
            --op "$op" --connections "$c"
    done
done
echo "over HTTP/JSON (PUT/GET /v1/kv/KEY):"
for op in set get; do
    for c in 1 16 64; do
        run kvd-http --proto http --node "127.0.0.1:$((26200 + leader))" --op "$op" --connections "$c"
    done
done
echo "through a follower (forwarded to the leader), RESP:"
f=$((leader % N + 1))
run kvd-follower --node "127.0.0.1:$((26100 + f))" --op set --connections 64
run kvd-follower --node "127.0.0.1:$((26100 + f))" --op get --connections 64
RSS_LOAD=$(rss_mib "${PIDS[@]}")
echo "kvd resident memory (largest node): $RSS_REST MiB at rest, $RSS_LOAD MiB after the load above"
# The leader now, not the one elected at the start: a loaded cluster may have changed it.
now=$(redis-cli -p $((26100 + f)) RAFT.LEADER 2>/dev/null | head -1 || true)
if [[ $now =~ ^[0-9]+$ ]] && [ "$now" -ge 1 ] && [ "$now" -le "$N" ]; then
    leader=$now
    f=$((leader % N + 1))
fi
echo "failover: kill -9 of the leader (node $leader), a writer on one connection to node $f:"
failover kvd "${PIDS[$((leader - 1))]}" --node "127.0.0.1:$((26100 + f))"
kill -TERM "${PIDS[@]}" 2>/dev/null || true
wait "${PIDS[@]}" 2>/dev/null || true
PIDS=()

# ---- kvd with shards: every node coordinates, and leads some of the shards
# sharded NODES SHARDS: start that cluster, wait until every shard has a leader and the
# leaders have spread, load it through every node, stop it.
sharded() {
    local n=$1 g=$2 i dir="$DIR/sharded-$1-$2" p="" nodes=() metrics=() led leaders
    mkdir -p "$dir"
    for i in $(seq 1 "$n"); do
        p+="${p:+,}$i=127.0.0.1:$((26000 + i)):$((26100 + i)):$((26200 + i))"
    done
    for i in $(seq 1 "$n"); do
        "$BIN/kvd" --id "$i" --data "$dir/$i" --peers "$p" --shards "$g" --replicas 3 \
            >"$dir-$i.log" 2>&1 &
        PIDS+=("$!")
        nodes+=(--node "127.0.0.1:$((26100 + i))")
        metrics+=(--metrics "127.0.0.1:$((26200 + i))")
    done
    # Every shard led, then a few seconds for the leaders to spread (route.c).
    for _ in $(seq 1 100); do
        led=$(for i in $(seq 1 "$n"); do
            curl -s --max-time 1 "127.0.0.1:$((26200 + i))/v1/status" 2>/dev/null |
                jq -r '.groups[]? | select(.role == "leader") | .shard' 2>/dev/null
        done | sort -u | wc -l)
        [ "$led" -eq "$g" ] && break
        sleep 0.1
    done
    # Spread: no node leads more than its share, rounded up (or 15 s).
    for _ in $(seq 1 150); do
        led=$(for i in $(seq 1 "$n"); do
            curl -s --max-time 1 "127.0.0.1:$((26200 + i))/v1/status" | jq -r .leading
        done | sort -n | tail -1)
        [ "$led" -le $(((g + n - 1) / n)) ] && break
        sleep 0.1
    done
    leaders=$(for i in $(seq 1 "$n"); do
        curl -s --max-time 1 "127.0.0.1:$((26200 + i))/v1/status" | jq -r .leading
    done | paste -sd/)
    echo "kvd: $n nodes, $g shard(s) of 3 replicas, leaders per node $leaders;" \
        "64 connections spread over the $n nodes"
    for op in set get; do
        run "kvd-$n-$g" "${nodes[@]}" "${metrics[@]}" --op "$op" --connections 64
    done
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
    PIDS=()
}
if [ "${BENCH_SHARDS:-1}" != 0 ]; then
    echo "sharded (fsyncs and entries per fsync summed over the nodes):"
    sharded 3 1
    sharded 3 4
    sharded 3 16
    sharded 5 16
fi

# ---- a single Redis, appendfsync always: one fsynced write, not replicated
if command -v redis-server >/dev/null 2>&1; then
    mkdir -p "$DIR/redis"
    redis-server --port 27500 --bind 127.0.0.1 --dir "$DIR/redis" --appendonly yes \
        --appendfsync always --save '' --daemonize no >"$DIR/redis.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 50); do
        redis-cli -p 27500 PING >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'): one server, appendonly yes," \
        "appendfsync always (nothing replicated)"
    for c in 1 64; do
        run redis --node 127.0.0.1:27500 --op set --connections "$c"
    done
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
    PIDS=()
else
    echo "redis-server is not installed: no single-server line (make bench-peers installs it)"
fi

# ---- etcd, side by side
if [ "${BENCH_ETCD:-1}" = 0 ]; then
    echo "etcd: skipped (BENCH_ETCD=0)"
    exit 0
fi
if ! command -v etcd >/dev/null 2>&1; then
    echo "etcd is not installed: no side-by-side comparison (make bench-peers installs it; then make bench)"
    exit 0
fi
cluster=""
for i in $(seq 1 $N); do
    cluster+="${cluster:+,}e$i=http://127.0.0.1:$((27100 + i))"
done
for i in $(seq 1 $N); do
    etcd --name "e$i" --data-dir "$DIR/etcd$i" \
        --listen-client-urls "http://127.0.0.1:$((27000 + i))" \
        --advertise-client-urls "http://127.0.0.1:$((27000 + i))" \
        --listen-peer-urls "http://127.0.0.1:$((27100 + i))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((27100 + i))" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token "kvd-bench-$$" >"$DIR/etcd$i.log" 2>&1 &
    PIDS+=("$!")
done
# etcd_leader: the member whose own id is the leader id it reports (in $eleader; 15 s at most).
etcd_leader() {
    eleader=""
    for _ in $(seq 1 150); do
        for i in $(seq 1 $N); do
            st=$(curl -s --max-time 1 -X POST "http://127.0.0.1:$((27000 + i))/v3/maintenance/status" \
                -d '{}' 2>/dev/null || true)
            if [ -n "$st" ] && [ "$(jq -r '.leader // empty' <<<"$st" 2>/dev/null)" != "" ] &&
                [ "$(jq -r '.leader' <<<"$st")" = "$(jq -r '.header.member_id' <<<"$st")" ]; then
                eleader=$i
                return 0
            fi
        done
        sleep 0.1
    done
}
etcd_leader
if [ -z "$eleader" ]; then
    echo "etcd: no leader elected; no comparison. Logs:" >&2
    tail -n 5 "$DIR"/etcd*.log >&2
    exit 0
fi
echo "etcd $(etcd --version | awk '/etcd Version/ {print $3}'): 3 members on 127.0.0.1, fsync on," \
    "v3 JSON gateway (linearizable range); leader member $eleader"
for op in set get; do
    for c in 1 16 64; do
        run etcd --proto etcd --node "127.0.0.1:$((27000 + eleader))" --op "$op" --connections "$c"
    done
done
etcd_leader # the leader now: a loaded cluster may have changed it
if [ -n "$eleader" ]; then
    ef=$((eleader % N + 1))
    echo "failover: kill -9 of the leader (member $eleader), a writer on one connection to member $ef:"
    failover etcd "${PIDS[$((eleader - 1))]}" --proto etcd --node "127.0.0.1:$((27000 + ef))"
else
    echo "failover: etcd has no leader now; skipped"
fi

if [ "${BENCH_SHARDS:-1}" != 0 ]; then
    echo "sharded, requests per second at 64 connections (ratio = kvd / etcd, same run):"
    printf '  %-4s %14s %14s %14s %14s %10s\n' op "3 nodes G=1" "3 nodes G=4" "3 nodes G=16" \
        "5 nodes G=16" "best/etcd"
    for op in set get; do
        best=0
        for k in 3-1 3-4 3-16 5-16; do
            v=${RPS["kvd-$k $op 64"]:-0}
            best=$(awk -v a="$v" -v b="$best" 'BEGIN { print (a > b) ? a : b }')
        done
        e=${RPS["etcd $op 64"]:-0}
        printf '  %-4s %14s %14s %14s %14s %10s\n' "$op" "${RPS["kvd-3-1 $op 64"]:-0}" \
            "${RPS["kvd-3-4 $op 64"]:-0}" "${RPS["kvd-3-16 $op 64"]:-0}" \
            "${RPS["kvd-5-16 $op 64"]:-0}" \
            "$(awk -v a="$best" -v b="$e" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')"
    done
fi
echo "side by side, requests per second (ratio = kvd / etcd, same load, same machine):"
printf '  %-4s %5s %12s %12s %12s %10s %10s\n' op conns kvd-resp kvd-http etcd resp/etcd http/etcd
for op in set get; do
    for c in 1 16 64; do
        k=${RPS["kvd $op $c"]:-0} h=${RPS["kvd-http $op $c"]:-0} e=${RPS["etcd $op $c"]:-0}
        printf '  %-4s %5s %12s %12s %12s %10s %10s\n' "$op" "$c" "$k" "$h" "$e" \
            "$(awk -v a="$k" -v b="$e" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')" \
            "$(awk -v a="$h" -v b="$e" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')"
    done
done
if [ -n "${RPS["redis set 64"]:-}" ]; then
    printf '  kvd / a single fsyncing Redis, SET: %s at 1 connection, %s at 64\n' \
        "$(awk -v a="${RPS["kvd set 1"]:-0}" -v b="${RPS["redis set 1"]}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "-" }')" \
        "$(awk -v a="${RPS["kvd set 64"]:-0}" -v b="${RPS["redis set 64"]}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "-" }')"
fi
echo "failover after kill -9 of the leader (writer on a follower, one connection):"
echo "  kvd:  ${FAILOVER[kvd]:-(not measured)}"
echo "  etcd: ${FAILOVER[etcd]:-(not measured)}"
echo "kvd resident memory: $RSS_REST MiB at rest, $RSS_LOAD MiB after the single-group load"
