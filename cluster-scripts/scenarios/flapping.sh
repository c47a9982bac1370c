#!/usr/bin/env bash
# flapping — partitions that change every few hundred milliseconds, for a few seconds,
# while a client keeps writing.
#
# Expected: some writes fail, none acknowledged is lost, never two leaders in a term,
# and once the network settles the replicas agree. SEED picks the partitions (printed).
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster 5
cluster wait-leader --timeout 10 >/dev/null
SEED=${SEED:-$((RANDOM))}
RANDOM=$SEED
say "Flapping partitions for about 5 s (SEED=$SEED replays them)"
ok=0 failed=0
for round in $(seq 1 12); do
    mapfile -t order < <(printf '%s\n' 1 2 3 4 5 | awk -v s="$((SEED + round))" 'BEGIN{srand(s)} {print rand(), $1}' | sort | cut -d' ' -f2)
    cut=$((RANDOM % 3 + 1))
    a=$(printf '%s\n' "${order[@]:0:$cut}" | paste -sd, -)
    b=$(printf '%s\n' "${order[@]:$cut}" | paste -sd, -)
    cluster partition "$a" "$b" >/dev/null
    note "round $round: $a | $b"
    for _ in 1 2; do
        n=$((RANDOM % N + 1))
        write "$n" "f$round-$n-$RANDOM" "r$round"
        if [ "$LAST" = OK ]; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
    done
    sleep 0.2
done
note "$ok writes acknowledged, $failed refused or timed out"
say "Heal"
cluster heal | sed 's/^/   /'
cluster wait-leader --timeout 15 | sed 's/^/   /' || fail "no leader after the heal"
expect "writes work again" written "$(leader)" after flapping
final_checks
