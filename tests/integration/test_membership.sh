#!/usr/bin/env bash
# Nodes come and go (docs/membership.md): a node joins under load (kvd --join) and its
# shards move to it by Raft membership change; the leader of the metadata group (the
# members table, group 0) is removed and its shards move away; a joining node killed
# -9 in the middle of its moves finishes them after its restart; a move cut by a
# partition converges after the heal. Throughout: every acknowledged write is read
# back, each group ends at its target replicas, and the replicas of a shard agree.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

KVCTL=${KVCTL:-$(dirname "$KVD")/kvctl}
EXTRA=(--shards 4 --enable-fault-injection)
start_cluster
check "every shard elects a leader" wait_until 10 eq "$(r 1 SET hello world)" OK

kvctl() { timeout 120 "$KVCTL" --node "127.0.0.1:$(resp_port "$1")" "${@:2}"; }

# join I M: start node I empty, asking member M (its HTTP door) to add it.
join() {
    local i=$1
    "$KVD" --id "$i" --data "$T/$i" --peers "$i=127.0.0.1:$(raft_port "$i"):$(resp_port "$i"):$(http_port "$i")" \
        --join "127.0.0.1:$(http_port "$2")" --election-timeout 300 --heartbeat 50 \
        --enable-fault-injection >>"$T/$i.log" 2>&1 &
    PID[i]=$!
}
listening() { [[ "$(timeout 2 redis-cli -p "$(resp_port "$1")" PING 2>/dev/null)" = PONG ]]; }

# A writer through node 2 for the whole test: batches of 100 SETs, one connection each;
# line n of batch b's output is the answer to w<b>_<n>. Bounded: 300 batches at most.
writer() {
    local b n
    for b in $(seq 1 300); do
        [ -e "$T/stop" ] && break
        for n in $(seq 1 100); do echo "SET w${b}_$n v${b}_$n"; done |
            timeout 30 redis-cli -p "$(resp_port 2)" >"$T/writer.$b" 2>&1 || true
    done
}
writer &
WRITER=$!

join 4 2
check "node 4 starts with --join" wait_until 15 listening 4
check "it is in the members table" eq "$(kvctl 1 --json node list | jq '[.nodes[].id] | index(4) != null')" true
check "every group reaches its target replicas (node 4's shards moved to it)" \
    kvctl 1 rebalance wait 60
hosted4=$(timeout 5 curl -s "127.0.0.1:$(http_port 4)/v1/status" | jq '.groups | length')
check "node 4 holds replicas of some shards ($hosted4)" test "${hosted4:-0}" -ge 1
moved=$(cat "$T"/[123].log | grep -c "adding node 4 as a learner" || true)
check "each move added node 4 as a learner first ($moved groups)" test "$moved" -ge 2
promoted=$(cat "$T"/[123].log | grep -c "node 4 caught up: promoting it" || true)
check "and promoted it once it had caught up" test "$promoted" -ge 2

# Remove the leader of the metadata group (it hands group 0 over first).
meta_leader=$(kvctl 1 --json rebalance status | jq '.groups[] | select(.group == 0) | .leader')
check "group 0 has a leader ($meta_leader)" test -n "$meta_leader"
[ "$meta_leader" = 2 ] && other=3 || other=2
check "kvctl node remove $meta_leader" kvctl "$other" node remove "$meta_leader"
check "every group moves off node $meta_leader" kvctl "$other" rebalance wait 60
check "node $meta_leader handed leadership over before leaving" \
    grep -q "this node leaves the group: handing leadership" "$T/$meta_leader.log"
dropped() { [ "$(grep -c "left group" "$T/$meta_leader.log")" -ge 2 ]; }
check "node $meta_leader dropped the replicas it no longer holds" wait_until 15 dropped
check "the members table no longer lists it" \
    eq "$(kvctl "$other" --json node list | jq "[.nodes[].id] | index($meta_leader)")" null
check "a removal that would leave fewer nodes than replicas is refused" \
    grep -q "cannot hold 3 replicas" <<<"$(kvctl "$other" node remove 4 2>&1)"

# A node killed -9 while its shards move to it finishes after a restart.
join 5 "$other"
check "node 5 joins" wait_until 15 listening 5
adding5() { cat "$T"/[1234].log | grep -q "adding node 5 as a learner"; }
check "a group starts moving to it" wait_until 15 adding5
kill9 5
join 5 "$other"
check "node 5, killed -9 as its shards moved to it and restarted, gets them all" \
    kvctl 4 rebalance wait 60

# Node 5 loses its data: started again empty, its peers refuse it (its incarnation
# changed); kvctl node replace takes it out of every group and forgets the old
# incarnation, and --join brings it back as a new member.
kill9 5
rm -rf "${T:?}/5"
join 5 "$other"
refused5() { cat "$T"/[1234].log | grep -q "refusing node 5 from .*data dir was replaced"; }
check "a wiped node 5 is refused by its peers" wait_until 15 refused5
kill9 5
check "kvctl node replace 5 (remove, wait, forget)" kvctl "$other" node replace 5
join 5 "$other"
check "node 5 starts again, empty, with --join" wait_until 15 listening 5
member5() { [ "$(kvctl "$other" --json node list | jq '[.nodes[].id] | index(5) != null')" = true ]; }
check "it is a member again" wait_until 15 member5
check "node 5 comes back as a new member and gets its shards" kvctl "$other" rebalance wait 60
check "it serves: a write through it" eq "$(r 5 SET after-replace yes)" OK

# A partition in the middle of a rebalance: node 5 cut off from everyone (fault filter),
# node 4 removed; the moves that need node 5 wait, and converge after the heal.
cut='{"rules":[{"peer":0,"direction":"both","type":"any","drop":100}]}'
timeout 5 curl -s -X PUT -d "$cut" "127.0.0.1:$(http_port 5)/v1/admin/faults" >/dev/null
check "with node 5 cut off, node 4 is removed" kvctl "$other" node remove 4
fails() { ! "$@"; }
check "the moves to node 5 wait while it is cut off" fails kvctl "$other" rebalance wait 3
timeout 5 curl -s -X DELETE "127.0.0.1:$(http_port 5)/v1/admin/faults" >/dev/null
check "after the heal, every group reaches its target replicas" kvctl "$other" rebalance wait 60

touch "$T/stop"
wait "$WRITER" || true
acked=$(cat "$T"/writer.* | grep -c '^OK$' || true)
batches=$(find "$T" -name "writer.*" | wc -l)
check "the writer had writes acknowledged all along ($acked in $batches batches)" test "$batches" -ge 5
# Read them all back over one connection: the keys acknowledged, and the values expected.
: >"$T/expected"
for f in "$T"/writer.*; do
    b=${f##*.}
    awk -v b="$b" '$0 == "OK" { print "w" b "_" NR " v" b "_" NR }' "$f" >>"$T/expected"
done
got=$(awk '{ print "GET " $1 }' "$T/expected" | timeout 60 redis-cli -p "$(resp_port "$other")")
lost=$(paste -d' ' <(awk '{ print $2 }' "$T/expected") <(printf '%s\n' "$got") | awk '$1 != $2' | wc -l)
check "every acknowledged write reads back" eq "$lost" 0

# The replicas of each shard agree: same applied index, same content hash.
members=$(kvctl "$other" --json node list | jq -r '.nodes[].id')
agree() {
    local i s out=""
    for i in $members; do
        out+=$(timeout 5 curl -s "127.0.0.1:$(http_port "$i")/v1/status" |
            jq -r '.groups[] | "\(.shard) \(.applied) \(.content_hash)"')$'\n'
    done
    for s in 0 1 2 3; do
        [ "$(grep "^$s " <<<"$out" | sort -u | wc -l)" = 1 ] || return 1
    done
}
check "each shard's replicas hold the same data" wait_until 15 agree
finish
