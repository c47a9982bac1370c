#!/usr/bin/env bash
# oneway-loss — first one direction of one link fails (the leader's messages to one
# follower are dropped, the follower's still arrive), then 20% of all messages are lost.
#
# Expected: with pre-vote and check-quorum the deaf follower cannot depose the leader
# (its pre-votes are refused by nodes that hear the leader): same leader, same term,
# writes commit through the others; under loss the cluster commits, slower; after the
# heal everyone agrees.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster "${NODES:-3}"
cluster wait-leader --timeout 10 >/dev/null
L=$(leader)
F=$((L % N + 1))
T0=$(info "$L" term)
say "Leader node $L (term $T0); its messages to node $F are dropped"
cluster oneway "$L" "$F" | sed 's/^/   /'
for k in $(seq 1 10); do
    write "$L" "o$k" "$k"
    sleep 0.2
done
expect "writes commit through the other followers" [ "${ACKED[o10]:-}" = 10 ]
expect "the leader is undisturbed (node $L, term $T0)" test "$(leader)/$(info "$L" term)" = "$L/$T0"
cluster heal >/dev/null
say "20% message loss everywhere"
cluster loss 20 | sed 's/^/   /'
ok=0
for k in $(seq 1 15); do
    write "$(leader || echo "$L")" "l$k" "$k"
    [ "$LAST" = OK ] && ok=$((ok + 1))
done
note "$ok of 15 writes acknowledged under 20% loss"
expect "the cluster commits under loss" [ "$ok" -gt 0 ]
say "Heal"
cluster heal | sed 's/^/   /'
final_checks
