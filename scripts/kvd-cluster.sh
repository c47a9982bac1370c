#!/usr/bin/env bash
# kvd-cluster.sh — sourced by bench.sh and profile-write.sh: a 3-node kvd cluster on
# 127.0.0.1 for a measurement.
#
#   kvd_cluster NAME BIN DIR BASE [kvd options...]
#
# starts nodes 1..N (N from the caller, default 3) with Raft ports BASE+i, RESP BASE+100+i
# and HTTP BASE+200+i, data in DIR/i, logs in DIR/i.log; appends their PIDs to the
# caller's PIDS array (the caller stops them by PID) and sets `leader` once one is
# elected (10 s at most; otherwise it prints the logs and exits 1, as NAME).
kvd_cluster() {
    local name=$1 bin=$2 dir=$3 base=$4 i peers=""
    shift 4
    for i in $(seq 1 "${N:-3}"); do
        peers+="${peers:+,}$i=127.0.0.1:$((base + i)):$((base + 100 + i)):$((base + 200 + i))"
    done
    for i in $(seq 1 "${N:-3}"); do
        "$bin/kvd" --id "$i" --data "$dir/$i" --peers "$peers" "$@" >"$dir/$i.log" 2>&1 &
        PIDS+=("$!")
    done
    leader=""
    for _ in $(seq 1 100); do
        leader=$(redis-cli -p $((base + 101)) RAFT.LEADER 2>/dev/null | head -1 || true)
        [ -n "$leader" ] && return 0
        sleep 0.1
    done
    echo "$name: no leader elected; logs:" >&2
    tail -n 5 "$dir"/*.log >&2
    exit 1
}
