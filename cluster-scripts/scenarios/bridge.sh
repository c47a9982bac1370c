#!/usr/bin/env bash
# bridge — Jepsen's majorities ring: {1,2,3} and {3,4,5} overlap in node 3, which alone
# talks to both sides; 1 and 2 cannot reach 4 and 5.
#
# Expected: two overlapping majorities never produce two leaders in one term; the
# cluster keeps (or regains) a leader that commits; after the heal all agree.
# shellcheck disable=SC2016 # wait_for evaluates its condition, written in single quotes
# shellcheck source=cluster-scripts/scenarios/lib.sh
. "$(dirname "$0")/lib.sh"

need_cluster 5
cluster wait-leader --timeout 10 >/dev/null
say "Leader: node $(leader); bridging 1,2,3 and 3,4,5 through node 3"
cluster partition 1,2,3 3,4,5 | sed 's/^/   /'
ok=0
for k in $(seq 1 20); do
    L=$(leader || echo 3)
    write "$L" "b$k" "$k"
    [ "$LAST" = OK ] && ok=$((ok + 1))
    sleep 0.1
done
note "$ok of 20 writes acknowledged under the bridge"
expect "the cluster still commits under the bridge" [ "$ok" -gt 0 ]
say "Heal"
cluster heal | sed 's/^/   /'
cluster wait-leader --timeout 10 | sed 's/^/   /' || fail "no leader after the heal"
final_checks
