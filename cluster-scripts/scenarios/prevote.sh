#!/usr/bin/env bash
# prevote — a follower is isolated for a while, then rejoins (thesis §9.6).
#
# Expected: with pre-vote (the default) the isolated node never raises its term, so
# when it rejoins the leader is undisturbed: same leader, same term. Run again with
# KVD_OPTS="--no-prevote --no-check-quorum --allow-unsafe" to see the other story: its
# term climbs while it is alone and its return forces a new election.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster "${NODES:-3}"
cluster wait-leader --timeout 10 >/dev/null
L=$(leader)
F=$((L % N + 1))
T0=$(info "$L" term)
say "Leader node $L (term $T0); isolating follower $F for $((ELECTION_MS * 6)) ms"
cluster isolate "$F" | sed 's/^/   /'
sleep "$((ELECTION_MS * 6 / 1000)).$(((ELECTION_MS * 6 % 1000) / 100))"
note "node $F, alone: term $(info "$F" term), $(info "$F" role)"
say "Rejoin"
cluster heal | sed 's/^/   /'
sleep 1
cluster wait-leader --timeout 10 >/dev/null || true
T1=$(info "$(leader || echo "$L")" term)
note "after the rejoin: leader node $(leader || echo '?'), term $T1 (before: node $L, term $T0)"
if [[ " ${KVD_OPTS:-} " == *" --no-prevote "* ]]; then
    expect "without pre-vote the term jumped" [ "$T1" -gt "$T0" ]
else
    expect "with pre-vote the leader is undisturbed" test "$(leader)/$T1" = "$L/$T0"
fi
expect "writes work" written "$(leader)" after rejoin
final_checks
