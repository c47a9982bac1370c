#!/usr/bin/env bash
# sharded-partition — 5 nodes, 8 shards of 3 replicas; the network splits 2 | 3.
#
# Expected: each shard is its own Raft group on 3 of the 5 nodes, so in a 2 | 3 split
# every shard keeps a majority of its replicas on exactly one side: the shards that
# have two replicas among the two cut-off nodes live on there — two nodes are a
# minority of the cluster but a majority of those shards — and the others on the
# three. Through a node of either side, the shards whose majority is on that side
# elect a leader there if they need one and take writes; the others refuse them with
# NOQUORUM (no leader of the shard reachable within 5 s) rather than accept what they
# could lose. The cluster is partly available from both sides, never wholly from
# either. After the heal every shard takes writes through every node, the refused
# writes never appear, and the checks hold shard by shard.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster 5 --shards "${SCENARIO_SHARDS:-8}" --replicas 3
PIN_KEYS=false # this story picks its keys shard by shard
if [ "$SHARDS" -le 1 ] || [ "$REPLICAS" != 3 ]; then
    fail "needs a sharded cluster of 3 replicas per shard (this one: $SHARDS shards, $REPLICAS replicas)"
    exit 1
fi

# The two nodes to cut off: a pair that holds two replicas of the most shards (among
# equals, the one jq's max_by picks: the same on every run, as the map is), so that
# both sides keep some shards.
PAIR=$(jq -r --argjson n "$N" '
    [range(1; $n + 1) as $a | range($a + 1; $n + 1) as $b |
        {p: "\($a),\($b)", c: ([.ring[] | select((.replicas | index($a)) and (.replicas | index($b)))] | length)}] |
    max_by(.c) | .p' <<<"$RING")
SMALL=$PAIR
BIG=$(seq 1 "$N" | grep -vxE "${PAIR/,/|}" | paste -sd, -)
SB=${SMALL%%,*} # a node of each side, to send writes through
BB=${BIG%%,*}
declare -A SIDE=() # shard -> small or big: where its majority of replicas is
for s in $(seq 0 $((SHARDS - 1))); do
    in_small=$(replicas_of "$s" | tr , '\n' | grep -cxE "${SMALL/,/|}" || true)
    if [ "$in_small" -ge 2 ]; then SIDE[$s]=small; else SIDE[$s]=big; fi
done
shards_on() { for s in $(seq 0 $((SHARDS - 1))); do [ "${SIDE[$s]}" = "$1" ] && echo "$s"; done | paste -sd, -; }

# Keys on each shard: written before, during the partition through the big side and
# through the small side, and after the heal through both.
declare -A KB=() KP=() KS=() KAB=() KAS=()
while read -r s k1 k2 k3 k4 k5; do
    KB[$s]=$k1 KP[$s]=$k2 KS[$s]=$k3 KAB[$s]=$k4 KAS[$s]=$k5
done < <(keys_on_shards 5 key)

say "A sharded cluster: $SHARDS shards, each a Raft group on $REPLICAS of the $N nodes"
declare -A LEAD0=()
while read -r s l; do LEAD0[$s]=$l; done <<<"$LEADERS"
for s in $(seq 0 $((SHARDS - 1))); do
    note "shard $s: replicas $(replicas_of "$s"), leader node ${LEAD0[$s]}"
done
writes=()
for s in $(seq 0 $((SHARDS - 1))); do writes+=("$((s % N + 1)):${KB[$s]}:before$s"); done
write_parallel "${writes[@]}"
ok=0
for s in $(seq 0 $((SHARDS - 1))); do [ "${OUTCOME[${KB[$s]}]}" = OK ] && ok=$((ok + 1)); done
expect "a write to each shard is acknowledged ($ok of $SHARDS)" [ "$ok" -eq "$SHARDS" ]

say "Partition: {$SMALL} | {$BIG}"
cluster partition "$SMALL" "$BIG" | sed 's/^/   /'
note "every shard has 3 replicas, so each keeps a majority on exactly one side:"
note "  on {$SMALL} (two nodes: a minority of the cluster, a majority of these): shards $(shards_on small)"
note "  on {$BIG}: shards $(shards_on big)"
# Each shard led from the side that holds its majority.
right_side_leaders() {
    local s l side
    cluster_shard_leaders >/dev/null
    while read -r s l; do
        [ "$l" != 0 ] || return 1
        if [ "${SIDE[$s]}" = small ]; then side=$SMALL; else side=$BIG; fi
        [[ ",$side," == *",$l,"* ]] || return 1
    done <<<"$LEADERS"
}
t0=$SECONDS
if wait_for 15 right_side_leaders; then
    pass "every shard is led from the side that holds its majority (after about $((SECONDS - t0)) s)"
else
    fail "some shards have no leader on their majority's side: $(shard_leaders_line)"
fi
while read -r s l; do
    if [ "$l" != "${LEAD0[$s]}" ]; then
        note "shard $s: its leader node ${LEAD0[$s]} was cut off from its majority; node $l was elected"
    fi
done <<<"$LEADERS"

say "Writes to every shard, through node $BB (big side) and node $SB (small side), all at once"
writes=()
for s in $(seq 0 $((SHARDS - 1))); do
    writes+=("$BB:${KP[$s]}:big$s" "$SB:${KS[$s]}:small$s")
done
write_parallel "${writes[@]}"
printf '   %-6s %-9s %-13s %-28s %s\n' shard replicas "majority on" "through node $BB (big side)" "through node $SB (small side)"
bad_big=0 bad_small=0
for s in $(seq 0 $((SHARDS - 1))); do
    ob=${OUTCOME[${KP[$s]}]} os=${OUTCOME[${KS[$s]}]}
    printf '   %-6s %-9s %-13s %-28s %s\n' "$s" "$(replicas_of "$s")" "{$([ "${SIDE[$s]}" = small ] && echo "$SMALL" || echo "$BIG")}" \
        "${ob%% *} (${OUTCOME_MS[${KP[$s]}]} ms)" "${os%% *} (${OUTCOME_MS[${KS[$s]}]} ms)"
    if [ "${SIDE[$s]}" = big ]; then
        [ "$ob" = OK ] || bad_big=$((bad_big + 1))
        [[ $os == NOQUORUM* ]] || bad_small=$((bad_small + 1))
    else
        [ "$os" = OK ] || bad_small=$((bad_small + 1))
        [[ $ob == NOQUORUM* ]] || bad_big=$((bad_big + 1))
    fi
done
for s in $(seq 0 $((SHARDS - 1))); do
    [ "${SIDE[$s]}" = small ] && { note "node $BB, shard $s: ${OUTCOME[${KP[$s]}]}"; break; }
done
for s in $(seq 0 $((SHARDS - 1))); do
    [ "${SIDE[$s]}" = big ] && { note "node $SB, shard $s: ${OUTCOME[${KS[$s]}]}"; break; }
done
expect "through node $BB: shards $(shards_on big) write, shards $(shards_on small) refuse with NOQUORUM" [ "$bad_big" -eq 0 ]
expect "through node $SB: shards $(shards_on small) write, shards $(shards_on big) refuse with NOQUORUM" [ "$bad_small" -eq 0 ]

# The refused writes, read linearizably on the side that holds each shard's majority:
# none of them is there. (The big side's refusals are read through node $SB, the small
# side's through node $BB.)
refused_big=() refused_small=()
for s in $(seq 0 $((SHARDS - 1))); do
    if [ "${SIDE[$s]}" = small ]; then
        [ "${OUTCOME[${KP[$s]}]}" = OK ] || refused_small+=("${KP[$s]}")
    else
        [ "${OUTCOME[${KS[$s]}]}" = OK ] || refused_big+=("${KS[$s]}")
    fi
done
seen=$( { [ ${#refused_small[@]} -eq 0 ] || read_many "$SB" "${refused_small[@]}"
    [ ${#refused_big[@]} -eq 0 ] || read_many "$BB" "${refused_big[@]}"; } | grep -c . || true)
expect "none of the $((${#refused_small[@]} + ${#refused_big[@]})) refused writes is visible where its shard has its majority ($seen seen)" [ "$seen" -eq 0 ]

say "Heal"
cluster heal | sed 's/^/   /'
if ! cluster wait-leader --timeout 15 >/dev/null; then
    cluster_shard_leaders >/dev/null
    fail "not every shard has a leader after the heal: $(shard_leaders_line)"
fi
writes=()
for s in $(seq 0 $((SHARDS - 1))); do
    writes+=("$BB:${KAB[$s]}:after-big$s" "$SB:${KAS[$s]}:after-small$s")
done
write_parallel "${writes[@]}"
ok=0
for s in $(seq 0 $((SHARDS - 1))); do
    [ "${OUTCOME[${KAB[$s]}]}" = OK ] && ok=$((ok + 1))
    [ "${OUTCOME[${KAS[$s]}]}" = OK ] && ok=$((ok + 1))
done
expect "every shard takes writes through both nodes again ($ok of ${#writes[@]} acknowledged)" [ "$ok" -eq "${#writes[@]}" ]
# After the heal: a NOQUORUM says whether the write ever left the node it was sent to.
# "it was not applied" (no leader was reachable) must hold for good. "it was handed to a
# leader and may still take effect" is an unknown outcome, like a timeout: the command
# may wait in the transport's queue across the partition (netns mode: the partition
# stalls the connection; loopback mode's fault filter drops the frame instead) and be
# committed after the heal -- counted here, not failed.
never=() maybe=()
for k in "${refused_small[@]}" "${refused_big[@]}"; do
    if grep -q "it was not applied" <<<"${OUTCOME[$k]}"; then never+=("$k"); else maybe+=("$k"); fi
done
if [ ${#never[@]} -gt 0 ]; then
    late=$(read_many "$(leader)" "${never[@]}" | grep -c . || true)
    expect "none of the ${#never[@]} writes answered 'it was not applied' appears after the heal ($late seen)" [ "$late" -eq 0 ]
fi
if [ ${#maybe[@]} -gt 0 ]; then
    late=$(read_many "$(leader)" "${maybe[@]}" | grep -c . || true)
    note "of the ${#maybe[@]} writes answered 'it was handed to a leader and may still take effect',"
    note "$late took effect after the heal (their forwarded command waited in a transport queue)"
fi
final_checks
