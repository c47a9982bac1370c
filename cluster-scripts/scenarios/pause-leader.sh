#!/usr/bin/env bash
# pause-leader — SIGSTOP the leader past the election timeout, then SIGCONT it.
#
# Expected: the others elect a new leader while it sleeps; when it wakes up it learns
# the newer term and steps down; nothing acknowledged is lost.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster "${NODES:-3}"
cluster wait-leader --timeout 10 >/dev/null
OLD=$(leader)
REST=$(seq 1 "$N" | grep -vx "$OLD" | paste -sd, -)
T0=$(info "$OLD" term)
expect "a write before" written "$OLD" before 1
say "SIGSTOP node $OLD (leader of term $T0)"
cluster stop "$OLD" | sed 's/^/   /'
NEW=""
find_new() { NEW=$(leader_among "$REST"); }
if wait_for 10 find_new && find_new; then
    pass "node $NEW took over (term $(info "$NEW" term))"
else
    fail "no new leader while node $OLD was paused"
fi
expect "writes go on" written "${NEW:-${REST%%,*}}" during 2
say "SIGCONT node $OLD"
cluster cont "$OLD" | sed 's/^/   /'
# (Sharded: or already leads it again in a newer term, handed back by the balancer.)
expect "it steps down" wait_for 5 '[ "$(info "$OLD" role)" = follower ] || { [ "$SHARDS" -gt 1 ] && [ "$(info "$OLD" term)" -gt "$T0" ]; }'
expect "and follows node ${NEW:-?} in a newer term" wait_for 5 'rejoined "$OLD" "${NEW:-x}"'
rejoined_how "$OLD" "${NEW:-x}"
final_checks
