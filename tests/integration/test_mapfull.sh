#!/usr/bin/env bash
# A full LMDB map: writes fail with a clear error, nothing acknowledged is lost,
# nothing half-applied is visible, and the cluster goes on once restarted with a
# larger map (kvd --map-size).
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

EXTRA=(--request-timeout 2000)
start_cluster --map-size 2
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
value=$(head -c 100000 /dev/zero | tr '\0' v)
acked=()
err=""
for k in $(seq 1 60); do
    out=$(r "$L" SET "big$k" "$value")
    if [ "$out" = OK ]; then
        acked+=("$k")
    else
        err=$out
        break
    fi
done
echo "    ${#acked[@]} writes of 100 kB acknowledged, then: ${err:0:160}"
check "some writes fit" test "${#acked[@]}" -ge 3
check "then a write fails" test -n "$err"
check "with an error naming the full map" grep -q "MDB_MAP_FULL" <<<"$err"
check "and saying what to do" grep -q -- "--map-size" <<<"$err"

for i in $(seq 1 "$NODES"); do
    kill9 "$i"
done
EXTRA=(--request-timeout 5000)
start_cluster --map-size 64
check "restarted with a larger map, a leader" wait_until 5 has_leader
L=$(leader)
lost=0
for k in "${acked[@]}"; do
    [ "$(r "$L" GET "big$k" | wc -c)" -eq 100001 ] || lost=$((lost + 1))
done
check "every acknowledged write is there" eq "$lost" 0
check "and new writes succeed" eq "$(r "$L" SET "big-after" "$value")" OK
check "the counter is consistent on all nodes" eq "$(r 1 EXISTS big1 big-after)" 2
finish
