#!/usr/bin/env bash
# disk-loss — 5 nodes, 4 shards of 3 replicas; a follower loses its disk and comes back
# empty, first the wrong way, then through the replace flow (cluster wipe).
#
# The danger (Raft §5.4 rests on stable storage): shard 0 has replicas L (its leader), F
# and X. X is cut off, and a write is acknowledged by L and F alone. F loses its data and
# is started again, empty; then L is cut off. If the empty F voted, X -- which never got
# the write -- would be elected by X and F, and the acknowledged write would be gone.
#
# Expected: F's data dir has a new incarnation, and its peers refuse it (their logs say
# "its data dir was replaced"), so X alone cannot elect itself: shard 0 has no leader
# while L is cut off, and a read of the write through X does not answer without it.
# After the heal the write reads back. Then `cluster wipe F` (stop, remove, the shards
# move away, kvctl forget, delete the data, --join) takes F back as a new, empty member:
# its shards move to it and its replicas hold the same data as the others. Verdict: no
# acknowledged write lost, each shard's replicas identical, at most one leader per term.
# It deletes a node's data, so it always starts a cluster of its own.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

SCENARIO_OWN=1
need_cluster 5 --shards "${SCENARIO_SHARDS:-4}" --replicas 3
PIN_KEYS=false # this story picks its keys shard by shard
if [ "$SHARDS" -le 1 ] || [ "$REPLICAS" != 3 ]; then
    fail "needs a sharded cluster of 3 replicas per shard (this one: $SHARDS shards, $REPLICAS replicas)"
    exit 1
fi
S=$SHARD
GROUP=$((S + 1))

# The nodes' logs: lines written since mark_logs.
declare -A LOGMARK=()
mark_logs() {
    local f
    for f in "$CDIR"/[0-9]*.log; do LOGMARK[$f]=$(wc -l <"$f"); done
}
new_lines_of() { tail -n +$((${LOGMARK[$CDIR/$1.log]:-0} + 1)) "$CDIR/$1.log"; }

L=$(leader)
IFS=, read -r -a REPS <<<"$(replicas_of "$S")"
F="" X=""
for i in $(printf '%s\n' "${REPS[@]}" | sort -n); do
    [ "$i" = "$L" ] && continue
    if [ -z "$F" ]; then F=$i; else X=$i; fi
done
OTHER=$(members | grep -vxE "$L|$F|$X" | head -1 || true) # a node with no replica of shard S

say "Shard $S: replicas $(replicas_of "$S"), leader node $L"
note "node $F will lose its disk; node $X will miss a write; node $OTHER holds no replica of shard $S"
declare -A KB=() KW=() KA=()
while read -r s k1 k2 k3; do KB[$s]=$k1 KW[$s]=$k2 KA[$s]=$k3; done < <(keys_on_shards 3 disk-)
writes=()
for s in $(seq 0 $((SHARDS - 1))); do writes+=("$((s % N + 1)):${KB[$s]}:before$s"); done
write_parallel "${writes[@]}"
ok=0
for s in $(seq 0 $((SHARDS - 1))); do [ "${OUTCOME[${KB[$s]}]}" = OK ] && ok=$((ok + 1)); done
expect "a write to each shard is acknowledged ($ok of $SHARDS)" [ "$ok" -eq "$SHARDS" ]

say "Node $X is cut off; a write to shard $S is acknowledged by node $L and node $F alone"
cluster isolate "$X" | sed 's/^/   /'
W=${KW[$S]}
write "$L" "$W" "held-by-$L-and-$F"
expect "the write $W is acknowledged through node $L ($LAST)" [ "$LAST" = OK ]
note "shard $S: node $L committed index $(info "$L" commit), node $F applied $(info "$F" applied), node $X applied $(info "$X" applied) (it lacks the write)"

say "Node $F loses its disk: kill -9, its data dir deleted, started again empty (no replace flow)"
mark_logs
cluster kill "$F" | sed 's/^/   /'
rm -rf "${CDIR:?}/$F"
note "deleted $CDIR/$F"
cluster restart "$F" | sed 's/^/   /'
# refusals N: how many connections node N refused because a peer's data dir was replaced
# (kvd logs the first; /metrics counts them all).
refusals() {
    timeout 2 curl -s "http://127.0.0.1:$(http_port "$1")/metrics" 2>/dev/null |
        sed -n 's/^raftkv_transport_refused_total{why="incarnation"} \([0-9]*\).*/\1/p'
}
refused_by() { # the nodes whose logs refuse node F since the mark
    local i
    for i in $(members); do
        [ "$i" = "$F" ] && continue
        new_lines_of "$i" | grep -q "refusing node $F .*its data dir was replaced" && echo "$i"
    done
    true
}
if wait_for 10 '[ -n "$(refused_by)" ]'; then
    pass "node $F's peers refuse it: nodes $(refused_by | paste -sd, -) logged it"
    new_lines_of "$(refused_by | head -1)" | grep -m1 "refusing node $F" | cut -c1-220 | sed 's/^/     /'
else
    fail "no peer refused node $F within 10 s (no 'its data dir was replaced' in their logs)"
fi

say "Now node $L is cut off instead; node $X is back with the others, node $F among them"
mark_logs
cluster isolate "$L" | sed 's/^/   /'
note "shard $S: node $X lacks the write, node $F is empty: if $F voted, $X would lead without it"
sleep $((ELECTION_MS * 6 / 1000))
elected=$(for i in "$X" "$F"; do new_lines_of "$i" | grep "shard $S (group $GROUP): leader in term" || true; done)
expect "no leader of shard $S on the side of nodes $X and $F after $((ELECTION_MS * 6)) ms (${elected:-none elected})" [ -z "$elected" ]
got=$(read_raw "$X" "$W")
note "a read of $W through node $X: ${got:-(nil)}"
expect "the read does not answer without the write (it waits for a leader and fails, or returns the value)" \
    [ -n "$got" ] && { [ "$got" = "held-by-$L-and-$F" ] || [[ $got == NOQUORUM* ]] || [[ $got == TRYAGAIN* ]] || [ "$got" = timeout ]; }

say "Heal"
cluster heal | sed 's/^/   /'
if cluster wait-leader --timeout 15 --shard "$S" >/dev/null 2>&1; then
    pass "shard $S has a leader again: node $(leader)"
else
    fail "shard $S has no leader 15 s after the heal"
fi
got=$(read_raw "$(leader || echo "$L")" "$W")
expect "the write acknowledged by nodes $L and $F reads back: ${got:-(nil)}" [ "$got" = "held-by-$L-and-$F" ]
r0=$(refusals "$L")
if wait_for 10 '[ "$(refusals "$L")" -gt "${r0:-0}" ]'; then
    pass "node $F is still refused after the heal (an empty node that was a voter must not vote): node $L's refusals for a replaced data dir went from $r0 to $(refusals "$L")"
else
    fail "node $L refused node $F no more within 10 s of the heal (raftkv_transport_refused_total{why=\"incarnation\"} stays at ${r0:-?})"
fi
note "node $F's replica of shard $S: applied $(info "$F" applied), while the shard committed $(info "$(leader || echo "$L")" commit): it gets nothing"

say "The replace flow: cluster wipe $F"
if cluster wipe "$F" 2>&1 | sed 's/^/   /'; then
    pass "cluster wipe $F: node $F is a member again, empty at the start, its shards moved to it"
else
    fail "cluster wipe $F failed"
fi
refresh_ring || true
mine=$(jq -r --argjson f "$F" '[.ring[] | select(.replicas | index($f)) | .shard] | map(tostring) | join(",")' <<<"$RING")
serving() { # node F hosts each of its shards, with the same applied index and hash as the shard's leader
    local s l a b
    for s in ${mine//,/ }; do
        l=$(cluster leader "$s" 2>/dev/null) || return 1
        a=$(SHARD=$s info "$F" content_hash)
        b=$(SHARD=$s info "$l" content_hash)
        [ -n "$a" ] && [ "$a" = "$b" ] && [ "$(SHARD=$s info "$F" applied)" = "$(SHARD=$s info "$l" applied)" ] || return 1
    done
}
if wait_for 15 serving; then
    pass "node $F serves its shards ($mine) again: each replica holds what its leader holds"
else
    fail "node $F does not hold its shards ($mine) like their leaders 15 s after the wipe"
fi
writes=()
for s in $(seq 0 $((SHARDS - 1))); do writes+=("$F:${KA[$s]}:after$s"); done
write_parallel "${writes[@]}"
ok=0
for s in $(seq 0 $((SHARDS - 1))); do [ "${OUTCOME[${KA[$s]}]}" = OK ] && ok=$((ok + 1)); done
expect "every shard takes writes through node $F ($ok of $SHARDS)" [ "$ok" -eq "$SHARDS" ]
final_checks
