#!/usr/bin/env bash
# leader-isolation — the leader alone is cut off from everyone.
#
# Expected: the others elect a new leader within a few election timeouts and go on
# committing; the isolated leader commits nothing and steps down; after the heal it
# follows the new leader and catches up.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster "${NODES:-3}"
cluster wait-leader --timeout 10 >/dev/null
OLD=$(leader)
REST=$(seq 1 "$N" | grep -vx "$OLD" | paste -sd, -)
say "Leader: node $OLD (term $(info "$OLD" term)); isolating it"
expect "a write before" written "$OLD" a 1
cluster isolate "$OLD" | sed 's/^/   /'
t0=$SECONDS
NEW=""
find_new() { NEW=$(leader_among "$REST"); }
if wait_for 10 find_new && find_new; then
    pass "nodes $REST elected node $NEW in about $((SECONDS - t0)) s (term $(info "$NEW" term))"
else
    fail "no new leader among $REST"
fi
M=${NEW:-${REST%%,*}}
expect "the new leader commits" written "$M" b 2
write "$OLD" c 3
expect "the isolated node acknowledges nothing" [ "$LAST" != OK ]
expect "and steps down" wait_for 5 '[ "$(info "$OLD" role)" != leader ]'
say "Heal"
cluster heal | sed 's/^/   /'
expect "node $OLD follows node $M" wait_for 10 'rejoined "$OLD" "$M"'
rejoined_how "$OLD" "$M"
check_never_visible c
final_checks
