#!/usr/bin/env bash
# rolling-restart — restart every node in turn, the leader last, while a client writes.
# Before the leader restarts it hands leadership over (RAFT.TRANSFER, thesis §3.10).
#
# Expected: the longest stretch without an acknowledged write stays under one election
# (2 election timeouts, plus a second for the restart itself); nothing acknowledged lost.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster "${NODES:-3}"
cluster wait-leader --timeout 10 >/dev/null
L=$(leader)
mapfile -t order < <(seq 1 "$N" | grep -vx "$L"; echo "$L")
start_writer
sleep 0.5
for n in "${order[@]}"; do
    if [ "$(leader || true)" = "$n" ]; then
        say "Node $n leads: transfer leadership first"
        timeout 5 redis-cli -p "$(port "$n")" RAFT.TRANSFER | sed 's/^/   /'
        wait_for 5 '[ "$(leader || echo "$n")" != "$n" ]' || note "transfer did not complete; restarting anyway"
    fi
    say "Restart node $n"
    cluster restart "$n" | sed 's/^/   /'
    cluster wait-leader --timeout 10 >/dev/null || fail "no leader after restarting node $n"
    sleep 0.5
done
stop_writer
limit=$((2 * ELECTION_MS + 1000))
note "${#ACKED[@]} writes acknowledged; longest stretch without one: $WORST_GAP_MS ms (limit $limit ms)"
expect "unavailability stayed under one election" [ "$WORST_GAP_MS" -le "$limit" ]
final_checks
