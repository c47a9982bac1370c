#!/usr/bin/env bash
# minority-partition — two followers of five are cut off from the rest.
#
# Expected: no progress on the minority side (its writes fail with an explicit error),
# progress on the majority side with the leader undisturbed; after the heal the two
# catch up.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster 5
cluster wait-leader --timeout 10 >/dev/null
L=$(leader)
TERM0=$(info "$L" term)
mapfile -t others < <(seq 1 "$N" | grep -vx "$L")
MIN="${others[0]},${others[1]}"
MAJ=$(seq 1 "$N" | grep -vxE "${others[0]}|${others[1]}" | paste -sd, -)
say "Leader: node $L; cutting off followers $MIN"
cluster partition "$MIN" "$MAJ" | sed 's/^/   /'
for k in 1 2 3 4 5; do
    write "$L" "maj$k" "$k"
done
expect "the majority side commits (5 writes through node $L)" [ "${ACKED[maj5]:-}" = 5 ]
write "${others[0]}" min1 x
note "a write at node ${others[0]} (minority) -> $LAST"
expect "the minority side makes no progress" [ "$LAST" != OK ]
expect "the leader was not disturbed (still node $L, term $TERM0)" test "$(leader)/$(info "$L" term)" = "$L/$TERM0"
say "Heal"
cluster heal | sed 's/^/   /'
expect "the minority catches up" wait_for 10 '[ "$(read_key "${others[1]}" maj5)" = 5 ]'
check_never_visible min1
final_checks
