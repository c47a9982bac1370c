#!/usr/bin/env bash
# A node that lost its data must not vote (Raft §5.4 assumes stable storage survives
# a crash). Three nodes: a write is acknowledged by nodes 1 and 2 while node 3 is down;
# node 2's data dir is wiped and it starts again, empty; the old leader (1) stops and
# node 3 comes back. Nodes 2 and 3 are a majority -- and neither holds the write. If 3
# took 2's vote, it would lead without the acknowledged write. The incarnation each
# data dir draws makes 3 refuse the new 2 (it knew the old one), so no leader is
# elected without node 1; once 1 is back, the write is there.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

start_cluster
check "a leader is elected" wait_until 5 has_leader
check "every node has met the others (incarnations recorded)" eq "$(r 1 SET warm up)" OK
r 2 GET warm >/dev/null
r 3 GET warm >/dev/null

# Node 3 down; a write acknowledged by 1 and 2 only.
kill9 3
L=$(leader)
if [ "$L" = 2 ]; then
    # The scenario wants node 1 to lead (it is stopped later, and 2 is wiped).
    r 1 RAFT.LEADER >/dev/null
    timeout 5 redis-cli -p "$(resp_port 2)" RAFT.TRANSFER 1 >/dev/null || true
    leads1() { [ "$(leader)" = 1 ]; }
    wait_until 5 leads1 || true
fi
check "a write acknowledged with node 3 down" eq "$(r 1 SET precious yes)" OK
committed=$(info 1 commit)
on2() { [ "$(info 2 applied)" -ge "$committed" ]; }
check "node 2 has it too" wait_until 5 on2

# Node 2 loses its disk and starts again, empty.
kill9 2
rm -rf "${T:?}/2"
start_node 2
# Node 1, which holds the write, stops; node 3 comes back.
kill9 1
start_node 3
refused() { grep -q "refusing node 2 from .*data dir was replaced" "$T/3.log"; }
check "node 3 refuses the wiped node 2, saying why" wait_until 10 refused
sleep_ms() { sleep "$(awk -v ms="$1" 'BEGIN { print ms / 1000 }')"; }
sleep_ms 2500 # eight election timeouts: time enough for 2 and 3 to elect one of them
no_leader() {
    local i
    for i in 2 3; do
        [ "$(info "$i" role)" = leader ] && return 1
    done
    return 0
}
check "nodes 2 and 3 elect no leader without node 1 (the wiped node has no vote)" no_leader
check "a write through them fails rather than lose the acknowledged one" \
    grep -q "NOQUORUM" <<<"$(timeout 10 redis-cli -p "$(resp_port 3)" SET other x 2>&1)"
check "the refusal is counted" test "$(metric 3 'raftkv_transport_refused_total{why="incarnation"}')" -ge 1

# Node 1 returns: 1 and 3 elect a leader, and the acknowledged write is there.
start_node 1
check "with node 1 back, a leader is elected" wait_until 10 has_leader
check "and the acknowledged write survived" eq "$(r 3 GET precious)" yes
check "node 2 stays out (still refused) until it is replaced" \
    grep -q "data dir was replaced" <<<"$(tail -n 50 "$T/1.log" "$T/3.log")"

# The operator takes node 2 back empty, now that 1 and 3 hold everything.
KVCTL=${KVCTL:-$(dirname "$KVD")/kvctl}
out=$("$KVCTL" --node "127.0.0.1:$(resp_port 1)" forget 2 2>&1)
check "kvctl forget 2 tells the other nodes" grep -q "node 3: forgot it" <<<"$out"
want=$(info "$(leader)" commit)
caught_up() { [ "$(info 2 applied)" -ge "$want" ]; }
check "node 2 is taken back and catches up" wait_until 15 caught_up
check "and serves the acknowledged write" eq "$(r 2 GET precious)" yes

# Again, while one leader stays: it had node 2 at a high matchIndex, and the empty node
# refuses its next AppendEntries; the leader must probe it again from scratch (raft/core
# replication.c, lost_its_log) rather than take the refusals for stale ones forever.
for k in $(seq 1 30); do r 1 SET "more$k" v >/dev/null; done
L=$(leader)
if [ "$L" = 2 ]; then
    timeout 5 redis-cli -p "$(resp_port 2)" RAFT.TRANSFER 1 >/dev/null || true
    not2() { local l; l=$(leader) && [ "$l" != 2 ]; }
    wait_until 5 not2 || true
    L=$(leader)
fi
want=$(info "$L" commit)
up_to_date2() { [ "$(info 2 applied)" -ge "$want" ]; }
wait_until 5 up_to_date2 || true
kill9 2
rm -rf "${T:?}/2"
start_node 2
"$KVCTL" --node "127.0.0.1:$(resp_port 1)" forget 2 >/dev/null 2>&1 || true
r "$L" SET after-wipe yes >/dev/null
want=$(info "$L" commit)
check "with the same leader (node $L) throughout, the empty node 2 catches up" \
    wait_until 15 up_to_date2

finish
