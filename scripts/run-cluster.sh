#!/usr/bin/env bash
# run-cluster.sh — `make run`: a 3-node kvd cluster on 127.0.0.1, in the foreground.
#
#   scripts/run-cluster.sh KVD [N [SHARDS]]
#
# The keys are spread over SHARDS shards (default 2 per node: 6 for 3 nodes, so each
# node leads two once kvd has balanced the leaders), each its own Raft group on 3 of
# the nodes (docs/sharding.md); SHARDS=1 is the classic single group on every node.
# Node i keeps its data in run/i (kept between runs, so a restart continues where it
# stopped; `rm -rf run` starts afresh) and logs to run/i.log, which this script follows.
# The shard count is fixed when the data is created: on data made with another one,
# kvd refuses to start, and this script says how to go on (it never deletes data).
# Ctrl-C (or SIGTERM) stops every node it started, by PID, and waits for them.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

KVD=${1:-}
N=${2:-3}
SHARDS=${3:-}
SHARDS=${SHARDS:-$((2 * N))}
if [ -z "$KVD" ] || [ ! -x "$KVD" ]; then
    usage >&2
    exit 2
fi
if ! [[ $N =~ ^[1-9][0-9]*$ ]] || ! [[ $SHARDS =~ ^[1-9][0-9]*$ ]]; then
    echo "run-cluster: NODES and SHARDS are positive numbers (NODES=$N SHARDS=$SHARDS)" >&2
    exit 2
fi
KVCTL=$(dirname "$KVD")/kvctl
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
# recorded_shards: the shard count run/1's data was created with (data from before
# shards, without a placement file, is one shard), or nothing if there is no data.
recorded_shards() {
    if [ -s run/1/placement ]; then
        sed -n 's/^shards \([0-9]*\)$/\1/p' run/1/placement
    elif [ -e run/1/data.mdb ]; then
        echo 1
    fi
}

# A node refused its data because of the placement: kvd's own words, and the ways on.
placement_refused() {
    local why had
    why=$(new_logs | grep -h 'was created with --' | tail -n 1 | sed 's/^[0-9:.]* //')
    had=$(recorded_shards)
    cat >&2 <<TXT

  The data in run/ was made with another placement than this start asks for
  (${had:-?} shard(s); this start: SHARDS=$SHARDS), and kvd refuses to mix them:

    $why

  Either keep that data and run it as it was made:

    make run SHARDS=${had:-1}

  or start afresh (this deletes the keys in run/):

    rm -rf run && make run

TXT
}

# What the nodes write from now on (the logs are kept between runs).
declare -A LOG_START=()
for i in $(seq 1 "$N"); do
    LOG_START[$i]=$(($(stat -c %s "run/$i.log" 2>/dev/null || echo 0) + 1))
done
new_logs() {
    local i
    for i in $(seq 1 "$N"); do
        tail -c "+${LOG_START[$i]}" "run/$i.log" 2>/dev/null || true
    done
}

for i in $(seq 1 "$N"); do
    # Fault injection on: the dashboard's controls partition and heal through it (loopback only).
    "$KVD" --id "$i" --data "run/$i" --nodes "$N" --cluster-secret run/secret --shards "$SHARDS" \
        --enable-fault-injection >>"run/$i.log" 2>&1 &
    PIDS+=("$!")
done

# Wait (bounded) until every shard has a leader (one group: until it has one).
leader=""
all_led() {
    if [ "$SHARDS" -gt 1 ]; then
        redis-cli -p 6381 RAFT.RING 2>/dev/null | jq -e '(.ring | length) as $n | $n > 0 and ([.ring[] | select(.leader > 0)] | length) == $n' \
            >/dev/null 2>&1
    else
        leader=$(redis-cli -p 6381 RAFT.LEADER 2>/dev/null | head -1 || true)
        [ -n "$leader" ]
    fi
}
for _ in $(seq 1 100); do
    all_led && break
    for pid in "${PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            if new_logs | grep -q 'was created with --'; then
                placement_refused
            else
                echo "a node exited at start; its log:" >&2
                tail -n 20 run/*.log >&2
            fi
            exit 1
        fi
    done
    sleep 0.1
done

if [ "$SHARDS" -gt 1 ]; then
    replicas=$(redis-cli -p 6381 RAFT.RING 2>/dev/null | jq -r '.replicas // empty' 2>/dev/null || true)
    cat <<TXT

  A $N-node cluster of $SHARDS shards is running (data in run/, logs in run/*.log).
  Each shard is its own Raft group on ${replicas:-3} of the nodes, with its own leader; a key's
  shard comes from consistent hashing (docs/sharding.md). A few seconds after start kvd
  spreads the leaders: each node leads about $(((SHARDS + N - 1) / N)). SHARDS=1 make run: one group.

    node   redis-cli        HTTP                     raft
TXT
else
    cat <<TXT

  A $N-node Raft cluster is running (data in run/, logs in run/*.log).
  Leader: node ${leader:-"(not elected yet)"}.

    node   redis-cli        HTTP                     raft
TXT
fi
for i in $(seq 1 "$N"); do
    printf '    %-6s %-16s %-24s %s\n' "$i" "-p $((6380 + i))" "127.0.0.1:$((8380 + i))" "127.0.0.1:$((9380 + i))"
done
echo
echo "  dashboard: http://127.0.0.1:8381/ui/   (any node's /ui/ shows the whole cluster; docs/dashboard.md)"
if [ "$SHARDS" -gt 1 ]; then
    echo
    echo "  Try, in another terminal:"
    printf '    %-38s %s\n' \
        "redis-cli -p 6382 set k v" "(any node answers: it forwards to the leader of k's shard)" \
        "$KVCTL locate k" "(k's hash, its shard, the shard's replicas and leader)" \
        "$KVCTL ring" "(every shard: share of the keys, replicas, leader, term, keys)" \
        "$KVCTL status" "(a shard x node table: L leader, F follower, term, commit)" \
        "redis-cli -p 6381 mget k a b" "(keys of several shards: split and gathered)" \
        "curl -s 127.0.0.1:8383/v1/locate/k" "" \
        "kill -9 <pid>" "(pids: ${PIDS[*]}; the shards it led elect new leaders)"
else
    cat <<TXT

  Try, in another terminal:
    redis-cli -p 6381 set hello world
    redis-cli -p 6382 get hello            (any node answers; followers forward)
    curl -s 127.0.0.1:8383/v1/status
    redis-cli -p 6381 info                 (see the "# Raft" section)
    kill -9 <pid of the leader>            (pids: ${PIDS[*]}; a new leader takes over)
TXT
fi
cat <<TXT

  The nodes prove to each other that they hold run/secret (kvd --cluster-secret); the
  fault filter is off here (cluster-scripts/cluster turns it on to break things).

  Ctrl-C stops every node. Following the logs:

TXT
tail -n 0 -F run/*.log &
TAIL_PID=$!
wait "${PIDS[@]}" || true
