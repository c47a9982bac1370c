#!/usr/bin/env bash
# kill-majority — kill -9 three of five nodes (the leader among them), then restart them.
#
# Expected: with two nodes left nothing commits (explicit errors, no hang); after the
# restart a leader is elected and every write acknowledged before the crash is there.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster 5
cluster wait-leader --timeout 10 >/dev/null
L=$(leader)
say "Leader: node $L; 20 acknowledged writes"
for k in $(seq 1 20); do
    write "$L" "k$k" "v$k"
done
expect "20 writes acknowledged" [ "${#ACKED[@]}" -eq 20 ]
mapfile -t victims < <( (echo "$L"; seq 1 "$N" | grep -vx "$L") | head -3)
say "kill -9 nodes ${victims[*]}"
for v in "${victims[@]}"; do
    cluster kill "$v" | sed 's/^/   /'
done
S=$(seq 1 "$N" | grep -vxE "${victims[0]}|${victims[1]}|${victims[2]}" | head -1)
write "$S" during crash
note "a write at node $S with three nodes down -> $LAST"
expect "no commit without a majority" [ "$LAST" != OK ]
say "Restart them"
for v in "${victims[@]}"; do
    cluster restart "$v" | sed 's/^/   /'
done
cluster wait-leader --timeout 15 | sed 's/^/   /' || fail "no leader after the restart"
final_checks
