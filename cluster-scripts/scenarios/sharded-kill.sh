#!/usr/bin/env bash
# sharded-kill — 5 nodes, 8 shards of 3 replicas; kill -9 of the node that leads the
# most shards, under a write load.
#
# Expected: each shard the node led elects a new leader among its own replicas (the two
# left are a majority of three) within a few election timeouts, and takes writes again;
# the shards it did not lead keep their leaders (they lost at most a follower). The
# node restarts on its data, catches up in every group it hosts, and kvd's balancer
# hands it back the shards it is the preferred leader of. Verdict: no acknowledged
# write lost, at most one leader per term in each shard, each shard's replicas
# identical.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster 5 --shards "${SCENARIO_SHARDS:-8}" --replicas 3
PIN_KEYS=false # this story picks its keys shard by shard
if [ "$SHARDS" -le 1 ]; then
    fail "needs a sharded cluster (this one has one group)"
    exit 1
fi

say "Who leads what"
declare -A LEAD0=()
while read -r s l; do LEAD0[$s]=$l; done <<<"$LEADERS"
for i in $(seq 1 "$N"); do
    led=$(awk -v i="$i" '$2 == i { printf "%s%s", sep, $1; sep = "," }' <<<"$LEADERS")
    note "node $i leads shard(s) ${led:-none}"
done
# The victim: the node that leads the most shards (the lowest id among equals).
K=$(awk '$2 != 0 { n[$2]++ } END { for (k in n) print n[k], k }' <<<"$LEADERS" | sort -k1,1nr -k2,2n | head -1 | cut -d' ' -f2)
mapfile -t KS < <(awk -v k="$K" '$2 == k { print $1 }' <<<"$LEADERS")
expect "node $K leads several shards (${KS[*]})" [ "${#KS[@]}" -ge 2 ]

# Two keys on each of its shards: one written at the moment of the kill, one once
# the shards have new leaders.
declare -A KEY=() KEY0=()
while read -r s k0 k; do KEY0[$s]=$k0 KEY[$s]=$k; done < <(keys_on_shards 2 kill-)
S=$((K % N + 1)) # a surviving node to write through

say "A client writes through every node in turn"
WRITER_SECONDS=60 start_writer
sleep 1.5

say "kill -9 node $K, leader of shard(s) $(IFS=,; echo "${KS[*]}")"
cluster kill "$K" | sed 's/^/   /'
# At once, a write to each of its shards through node S: the server finds no leader,
# waits for one (up to --request-timeout) and retries; how long each took is what a
# client of that shard sees of the failover.
writes=()
for s in "${KS[@]}"; do writes+=("$S:${KEY0[$s]}:at-the-kill"); done
write_parallel "${writes[@]}"
for s in "${KS[@]}"; do
    o=${OUTCOME[${KEY0[$s]}]}
    if [ "$o" = OK ]; then
        note "a write to shard $s sent through node $S at the kill: acknowledged after ${OUTCOME_MS[${KEY0[$s]}]} ms"
    else
        note "a write to shard $s sent through node $S at the kill: after ${OUTCOME_MS[${KEY0[$s]}]} ms, $o"
    fi
done
new_leaders() {
    local s l
    cluster_shard_leaders >/dev/null
    while read -r s l; do
        [ "$l" != 0 ] && [ "$l" != "$K" ] || return 1
    done <<<"$LEADERS"
}
if wait_for 10 new_leaders; then
    pass "every shard has a leader again, acknowledged by a majority of its replicas"
else
    fail "not every shard has a new leader 10 s after the kill: $(shard_leaders_line)"
fi
declare -A LEAD1=()
while read -r s l; do LEAD1[$s]=$l; done <<<"$LEADERS"
outside=0
for s in "${KS[@]}"; do
    l=${LEAD1[$s]}
    note "shard $s (replicas $(replicas_of "$s")): node $l leads it now, term $(SHARD=$s info "$l" term)"
    [[ ",$(replicas_of "$s")," == *",$l,"* ]] || outside=$((outside + 1))
done
expect "each of node $K's shards elected its new leader among its own replicas" [ "$outside" -eq 0 ]
# The other shards keep their leaders -- unless their leader handed one over: a node
# that took over node $K's shards may now lead more than its share, and the balance
# (kvd's route.c) moves a shard off it by leadership transfer, which its log names.
same=0 others=0 handed=0
for s in $(seq 0 $((SHARDS - 1))); do
    [ "${LEAD0[$s]}" = "$K" ] && continue
    others=$((others + 1))
    if [ "${LEAD1[$s]}" = "${LEAD0[$s]}" ]; then
        same=$((same + 1))
    elif grep -q "shard $s: handing leadership to node ${LEAD1[$s]}," "$CDIR/${LEAD0[$s]}.log"; then
        handed=$((handed + 1))
        note "shard $s: node ${LEAD0[$s]} handed it to node ${LEAD1[$s]} (it led more than its share)"
    fi
done
expect "the $others shards node $K did not lead kept their leaders or handed them over ($same kept, $handed handed over)" \
    [ $((same + handed)) -eq "$others" ]
writes=()
for s in "${KS[@]}"; do writes+=("$S:${KEY[$s]}:after"); done
write_parallel "${writes[@]}"
ok=0
for s in "${KS[@]}"; do [ "${OUTCOME[${KEY[$s]}]}" = OK ] && ok=$((ok + 1)); done
expect "its shards take writes (${ok} of ${#KS[@]} acknowledged through node $S)" [ "$ok" -eq "${#KS[@]}" ]
sleep 1

say "Restart node $K on its data"
cluster restart "$K" | sed 's/^/   /'
t1=$SECONDS
if wait_for 15 leaders_balanced; then
    note "kvd's balancer handed node $K back its preferred shards within about $((SECONDS - t1)) s: $(shard_leaders_line)"
else
    note "the leaders are not back on their preferred nodes yet: $(shard_leaders_line)"
fi
sleep 1
stop_writer

note "${#ACKED[@]} writes acknowledged in all; the longest stretch without one, any shard: $WORST_GAP_MS ms"
final_checks
