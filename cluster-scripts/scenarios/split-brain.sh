#!/usr/bin/env bash
# split-brain — 5 nodes; the leader and one follower are cut off from the other three.
#
# Expected: the majority (3) elects a new leader and keeps committing; writes sent to
# the old leader are never acknowledged and never become visible; a read at the old
# leader does not return stale data; the old leader steps down (check-quorum, thesis
# §6.2); after the heal its uncommitted entries are truncated and all five nodes hold
# identical data. Run it against a weakened server to watch it fail:
#   KVD_OPTS="--no-check-quorum --allow-unsafe --read-mode unsafe_local" split-brain.sh
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster 5
say "A healthy cluster"
cluster wait-leader --timeout 10 >/dev/null
OLD=$(leader)
F=$((OLD % N + 1))
MAJ=$(seq 1 "$N" | grep -vxE "$OLD|$F" | paste -sd, -)
note "leader: node $OLD (term $(info "$OLD" term))"
expect "write x=before through the leader" written "$OLD" x before

say "Partition: {$OLD,$F} | {$MAJ} — the leader is on the minority side"
cluster partition "$OLD,$F" "$MAJ" | sed 's/^/   /'
NEW=""
find_new() { NEW=$(leader_among "$MAJ"); }
if wait_for $((ELECTION_MS * 6 / 1000 + 3)) find_new && find_new; then
    pass "the majority elected node $NEW (term $(info "$NEW" term))"
else
    fail "the majority did not elect a leader"
fi
M=${NEW:-${MAJ%%,*}}
expect "the majority commits x=after through node $M" written "$M" x after
for k in 1 2 3; do
    write "$M" "maj$k" "v$k"
done
expect "and three more writes" [ "${ACKED[maj3]:-}" = v3 ]

say "The old leader, cut off"
write "$OLD" lost1 "written-to-the-old-leader"
note "SET lost1 at node $OLD -> $LAST"
expect "a write at the old leader is not acknowledged" [ "$LAST" != OK ]
out=$(read_key "$OLD" x)
note "GET x at node $OLD -> ${out:-(nil)}"
if [ "$out" = before ]; then
    fail "STALE READ: node $OLD answered x=before while the majority has committed x=after"
else
    pass "no stale read at the old leader (its answer: ${out:-(nil)})"
fi
stepped_down() { [ "$(info "$OLD" role)" != leader ]; }
if wait_for $((ELECTION_MS * 4 / 1000 + 2)) stepped_down; then
    pass "the old leader stepped down (it lost its majority: check-quorum), now $(info "$OLD" role)"
else
    fail "SPLIT BRAIN: node $OLD still says it leads term $(info "$OLD" term) while node ${NEW:-?} leads term $(info "$M" term)"
fi

say "Heal"
cluster heal | sed 's/^/   /'
cluster wait-leader --timeout 10 | sed 's/^/   /' || fail "no leader after the heal"
expect "the old leader sees x=after" wait_for 5 '[ "$(read_key "$OLD" x)" = after ]'
check_never_visible lost1
final_checks
