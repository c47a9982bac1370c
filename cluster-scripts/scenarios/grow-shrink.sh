#!/usr/bin/env bash
# grow-shrink — 5 nodes, 8 shards of 3 replicas, under a steady write load: the cluster
# grows to 7 nodes (cluster add-node, twice), then shrinks to 4 (cluster remove-node of
# nodes 1, 2 and 3, the oldest: new machines in, old ones out).
#
# Expected: at each step only the shards whose replica set the ring changes move (kvctl
# ring before and after). A replica slot moved is one learner added, caught up (by
# InstallSnapshot: the leaders compact their logs every 200 entries here), promoted, and
# one old replica removed -- leadership handed over first when it led -- one
# single-server change at a time (thesis §4.1, §4.2.1, §3.10). The writer never waits
# long: each change is one log entry of one group. The cluster starts from the
# consistent-hashing ring's placement; from the first change on, the members table
# stores it and a join or a leave moves the fewest slots (kv/ring.h): the ideal is a
# fair share, R*G/(N+1) when a node joins N, R*G/N when one of N leaves.
#
# Verdict: no acknowledged write lost (every one read back), each shard's replicas
# identical, at most one leader per term in each shard; and at every step, the replica
# slots moved at most 1.5x the ideal, and kvd moved exactly what the ring changed (every
# group's voters are the ring's replicas, no learner added where nothing had to move).
# It changes the cluster's members, so it always starts a cluster of its own.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

SCENARIO_OWN=1
KVD_OPTS="--snapshot-entries 200 --snapshot-trailing 50 ${KVD_OPTS:-}"
need_cluster 5 --shards "${SCENARIO_SHARDS:-8}" --replicas 3
PIN_KEYS=false
if [ "$SHARDS" -le 1 ]; then
    fail "needs a sharded cluster (this one has one group)"
    exit 1
fi
PRELOAD=${PRELOAD:-2000} # keys written before the first step, 200-byte values
BOUND=1.5                # the most replica slots a step may move, in ideals

# replica_sets: "SHARD R1,R2,R3" per shard, the ids sorted, from RING.
replica_sets() { jq -r '.ring[] | "\(.shard) \(.replicas | sort | map(tostring) | join(","))"' <<<"$RING"; }
# shard_data: "SHARD KEYS BYTES" per shard (kvctl ring: each shard as a replica of it says).
shard_data() { cluster kvctl --json ring | jq -r '.ring[] | "\(.shard) \(.keys // 0) \(.bytes // 0)"'; }
holdings() { # holdings: "node I: K shards" for every member, on one line
    jq -r '. as $m | [.nodes[] as $i | "node \($i): \([$m.ring[] | select(.replicas | index($i))] | length)"] |
        join("  ")' <<<"$RING"
}
ids_minus() { comm -23 <(tr , '\n' <<<"$1" | sort) <(tr , '\n' <<<"$2" | sort) | paste -sd, -; }

# The nodes' logs: what each step added to them.
declare -A LOGMARK=()
mark_logs() {
    local f
    for f in "$CDIR"/[0-9]*.log; do LOGMARK[$f]=$(wc -l <"$f"); done
}
new_log_lines() {
    local f
    for f in "$CDIR"/[0-9]*.log; do tail -n +$((${LOGMARK[$f]:-0} + 1)) "$f"; done
}

# A writer through the nodes listed in writer-nodes (the scenario keeps it to the
# members that stay): unique keys, through each node in turn, over one connection per
# node (a redis-cli answering line by line: no process per write, so a stall of a few
# milliseconds shows); each outcome with its time and latency in writer.log and ops.log.
start_steady_writer() {
    printf '%s\n' "$@" >"$CDIR/writer-nodes"
    (
        declare -A IN=() OUT=() CLI=()
        connect() {
            local n=$1 i o
            rm -f "$CDIR/w$n.in" "$CDIR/w$n.out"
            mkfifo "$CDIR/w$n.in" "$CDIR/w$n.out"
            stdbuf -oL redis-cli -p "$(port "$n")" <"$CDIR/w$n.in" >"$CDIR/w$n.out" 2>&1 &
            CLI[$n]=$!
            exec {i}>"$CDIR/w$n.in" {o}<"$CDIR/w$n.out"
            IN[$n]=$i OUT[$n]=$o
        }
        hang_up() { # after a timeout or a lost connection: a late answer must not be read as the next one
            local n=$1
            eval "exec ${IN[$n]}>&- ${OUT[$n]}<&-"
            kill "${CLI[$n]}" 2>/dev/null || true
            wait "${CLI[$n]}" 2>/dev/null || true
            unset "IN[$n]" "OUT[$n]" "CLI[$n]"
        }
        trap 'for n in "${!CLI[@]}"; do kill "${CLI[$n]}" 2>/dev/null; done' EXIT
        trap '' PIPE # a connection that died: an error to handle, not the end of the writer
        end=$((SECONDS + ${WRITER_SECONDS:-300})) k=0
        while [ $SECONDS -lt $end ] && [ ! -e "$CDIR/writer.stop" ]; do
            mapfile -t via <"$CDIR/writer-nodes"
            k=$((k + 1))
            n=${via[$((k % ${#via[@]}))]}
            [ -n "${IN[$n]:-}" ] || connect "$n"
            t0=${EPOCHREALTIME/./}
            out=""
            fd=${IN[$n]}
            if { printf 'SET g%s %s\n' "$k" "$k" 1>&"$fd"; } 2>/dev/null; then
                read -r -t 5 -u "${OUT[$n]}" out || out=${out:-timeout}
            fi
            [ -n "$out" ] || out="connection lost"
            t1=${EPOCHREALTIME/./}
            [ "$out" = OK ] || hang_up "$n"
            ms=$(((t1 - t0) / 1000))
            printf '%s %s g%s %s %s %s\n' $((t1 / 1000)) "$ms" "$k" "$k" "$n" "${out// /_}" >>"$CDIR/writer.log"
            printf '%(%T)T.%s node=%s SET g%s %s -> %s (%s ms)\n' -1 "${t1: -6:3}" "$n" "$k" "$k" "$out" "$ms" >>"$OPS"
            sleep 0.005
        done
    ) &
    WRITER_PID=$!
}
writer_nodes() { printf '%s\n' "$@" >"$CDIR/writer-nodes.new" && mv "$CDIR/writer-nodes.new" "$CDIR/writer-nodes"; }
stop_steady_writer() {
    touch "$CDIR/writer.stop"
    wait "$WRITER_PID" 2>/dev/null || true
    WRITER_PID=""
    local key val out
    while read -r _ _ key val _ out; do
        [ "$out" = OK ] && ACKED[$key]=$val
    done <"$CDIR/writer.log"
}
# stall_in FROM TO (ms): "GAP LATENCY FAILED WRITES": the longest stretch between two
# acknowledged writes that overlaps the window, the slowest write in it, the writes in
# it that failed, and all of them.
stall_in() {
    awk -v a="$1" -v b="$2" '
        $1 >= a && $1 <= b { n++; if ($2 > lat) lat = $2; if ($6 != "OK") bad++ }
        $6 == "OK" { if (prev != "" && $1 >= a && prev <= b && $1 - prev > gap) gap = $1 - prev; prev = $1 }
        END { printf "%d %d %d %d\n", gap, lat, bad, n }' "$CDIR/writer.log"
}

say "The cluster: $SHARDS shards x $REPLICAS replicas on nodes $(members | paste -sd, -)"
while read -r s r; do note "shard $s: replicas $r"; done < <(replica_sets)
note "shards per node: $(holdings)"

say "Preload: $PRELOAD keys of 200 bytes, through every node, 16 connections"
pad=$(printf '%0192d' 0)
tmp=$(mktemp -d)
for j in $(seq 0 15); do
    (for i in $(seq $((j + 1)) 16 "$PRELOAD"); do printf 'SET pre%s %s\n' "$i" "v$i-$pad"; done |
        timeout 120 redis-cli -p "$(port $((j % N + 1)))" >"$tmp/$j" 2>&1) &
done
wait
now=$(date +%T.%3N) # one time for the lot, recorded in one go
for j in $(seq 0 15); do
    mapfile -t answers <"$tmp/$j"
    k=0
    for i in $(seq $((j + 1)) 16 "$PRELOAD"); do
        printf '%s node=%s SET pre%s v%s-... -> %s\n' "$now" $((j % N + 1)) "$i" "$i" "${answers[$k]:-none}"
        [ "${answers[$k]:-}" = OK ] && ACKED["pre$i"]="v$i-$pad"
        k=$((k + 1))
    done
done >>"$OPS"
rm -rf "$tmp"
expect "the preload is acknowledged (${#ACKED[@]} of $PRELOAD)" [ "${#ACKED[@]}" -eq "$PRELOAD" ]

say "A client writes through every node in turn, for the whole story"
mapfile -t ids < <(members)
start_steady_writer "${ids[@]}"
sleep 2

# step join | leave NODE: one change of members, narrated and checked.
declare -a SUMMARY=() WINDOWS=()
STEP=0
step() {
    local kind=$1 node=${2:-} before after n_before ideal slots=0 shards_moved=0 t0 t1 out rc s a b
    local in gone_ids keys bytes data lines moves learners extra=0 copied_keys=0 copied_bytes=0 snap=0 k
    STEP=$((STEP + 1))
    refresh_ring
    before=$(replica_sets)
    n_before=$(members | wc -l)
    if [ "$kind" = join ]; then
        node=$((N + 1))
        say "Step $STEP: node $node joins ($n_before -> $((n_before + 1)) nodes): cluster add-node"
        ideal=$(awk -v r="$REPLICAS" -v g="$SHARDS" -v n="$n_before" 'BEGIN { printf "%.2f", r * g / (n + 1) }')
    else
        say "Step $STEP: node $node leaves ($n_before -> $((n_before - 1)) nodes): cluster remove-node $node"
        ideal=$(awk -v r="$REPLICAS" -v g="$SHARDS" -v n="$n_before" 'BEGIN { printf "%.2f", r * g / n }')
        # A client stops using a node that is being taken out.
        mapfile -t ids < <(members | grep -vx "$node")
        writer_nodes "${ids[@]}"
    fi
    mark_logs
    t0=$(date +%s%3N)
    if [ "$kind" = join ]; then
        if out=$(cluster add-node 2>&1); then rc=0; else rc=$?; fi
    else
        if out=$(cluster remove-node "$node" 2>&1); then rc=0; else rc=$?; fi
    fi
    t1=$(date +%s%3N)
    printf '%s\n' "$out" | sed 's/^/   /'
    if [ "$rc" -ne 0 ]; then
        fail "cluster ${kind/join/add-node} failed (exit $rc)"
        exit 1
    fi
    if [ "$kind" = join ]; then
        mapfile -t ids < <(members)
        writer_nodes "${ids[@]}"
    fi
    refresh_ring
    after=$(replica_sets)
    data=$(shard_data)
    lines=$(new_log_lines)
    while read -r s a; do
        b=$(awk -v s="$s" '$1 == s { print $2 }' <<<"$before")
        learners=$(grep -c "shard $s (group $((s + 1))): adding node [0-9]* as a learner" <<<"$lines" || true)
        if [ "$a" = "$b" ]; then
            [ "$learners" -eq 0 ] || { extra=$((extra + learners)); note "shard $s: the ring did not change it, yet $learners learner(s) were added"; }
            continue
        fi
        in=$(ids_minus "$a" "$b")
        gone_ids=$(ids_minus "$b" "$a")
        read -r _ keys bytes < <(awk -v s="$s" '$1 == s' <<<"$data")
        k=$(tr , '\n' <<<"$in" | grep -c .)
        slots=$((slots + k))
        shards_moved=$((shards_moved + 1))
        copied_keys=$((copied_keys + k * keys))
        copied_bytes=$((copied_bytes + k * bytes))
        [ "$learners" -le "$k" ] || extra=$((extra + learners - k))
        moves=$(sed -n "s/.*shard $s (group $((s + 1))): move done in \([0-9]*\) ms (\([0-9]*\) snapshot bytes sent).*/\1 ms, \2 snapshot bytes/p" <<<"$lines" | paste -sd';' -)
        snap=$((snap + $(sed -n "s/.*shard $s (group $((s + 1))): move done in [0-9]* ms (\([0-9]*\) snapshot bytes sent).*/\1/p" <<<"$lines" | awk '{ t += $1 } END { print t + 0 }')))
        note "shard $s: replicas $b -> $a (node $in in, node $gone_ids out): $keys keys, $bytes bytes to copy; ${moves:-no 'move done' line}"
    done <<<"$after"
    local handed
    handed=$(grep -c "this node leaves the group: handing leadership" <<<"$lines" || true)
    [ "$handed" -eq 0 ] || note "$handed shard(s) led by a leaving replica: leadership handed over first (§3.10)"
    note "$shards_moved shard(s) moved, $slots replica slot(s) of $((REPLICAS * SHARDS)) (ideal $ideal: the $([ "$kind" = join ] && echo "joining" || echo "leaving") node's fair share); $copied_keys keys, $copied_bytes bytes copied; $snap snapshot bytes sent; $((t1 - t0)) ms"
    note "shards per node now: $(holdings)"
    expect "step $STEP: $slots replica slots moved, at most $BOUND x the ideal $ideal" \
        awk -v m="$slots" -v i="$ideal" -v k="$BOUND" 'BEGIN { exit !(m <= k * i + 1e-9) }'
    # kvd moved what the ring changed, nothing else: every group's voters are the ring's
    # replicas (rebalance status), and no learner was added where nothing had to move.
    local off
    off=$(cluster kvctl --json rebalance status | jq -r --argjson ring "$RING" '
        .groups[] | select(.shard != null) | .shard as $s |
        ($ring.ring[] | select(.shard == $s) | .replicas | sort) as $want |
        select((.voters | sort) != $want or (.learners | length) > 0) |
        "shard \($s): voters \(.voters | map(tostring) | join(",")), learners \(.learners | map(tostring) | join(",")), ring \($want | map(tostring) | join(","))"')
    expect "step $STEP: kvd moved exactly the ring's changes (voters = ring replicas in every shard; $extra learner(s) added beyond them)" \
        [ -z "$off" ] && [ "$extra" -eq 0 ]
    [ -z "$off" ] || printf '%s\n' "$off" | sed 's/^/     /'
    WINDOWS+=("$t0 $t1")
    SUMMARY+=("$STEP|$([ "$kind" = join ] && echo "+node $node" || echo "-node $node")|$n_before->$(members | wc -l)|$shards_moved|$slots|$ideal|$copied_keys|$copied_bytes|$snap|$((t1 - t0))")
}

step join
step join
step leave 1
step leave 2
step leave 3
sleep 2
stop_steady_writer

say "Summary"
printf '   %-4s %-8s %-6s %-7s %-6s %-6s %-7s %-9s %-9s %-8s %s\n' step change nodes shards slots ideal keys bytes snapshot took "writer: longest stall / slowest write / failed of"
for k in "${!SUMMARY[@]}"; do
    IFS='|' read -r st change nn sm sl id ck cb sn ms <<<"${SUMMARY[$k]}"
    read -r w0 w1 <<<"${WINDOWS[$k]}"
    read -r gap lat bad n <<<"$(stall_in "$w0" "$w1")"
    printf '   %-4s %-8s %-6s %-7s %-6s %-6s %-7s %-9s %-9s %-8s %s\n' "$st" "$change" "$nn" "$sm" "$sl" "$id" "$ck" "$cb" "$sn" "${ms}ms" \
        "${gap} ms / ${lat} ms / $bad of $n"
done
read -r gap lat bad n <<<"$(stall_in 0 99999999999999)"
note "the writer: $n writes, $bad not acknowledged; longest stretch without an acknowledged write ${gap} ms, slowest write ${lat} ms"
note "${#ACKED[@]} acknowledged writes in all (the preload and the writer's)"
note "the members now: $(members | paste -sd, -); shards per node: $(holdings)"
final_checks
