#!/usr/bin/env bash
# A 3-node cluster of real processes: election, replication, forwarding from a
# follower, a retried command applied once, kill -9 of the leader losing nothing
# acknowledged, and a restart of every node on the same data.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

start_cluster
check "a leader is elected within 5 s" wait_until 5 has_leader
L=$(leader)
check "exactly one node says it leads" eq "$(leader)" "$L"
F=$((L % NODES + 1))

# Replication: writes through the leader, then every node applies them.
for k in $(seq 1 50); do
    r "$L" SET "key$k" "value$k" >/dev/null
done
want=$(info "$L" commit)
all_applied() {
    local i
    for i in $(seq 1 "$NODES"); do
        [ "$(info "$i" applied)" -ge "$want" ] || return 1
    done
}
check "all nodes apply the 50 writes" wait_until 5 all_applied
check "a follower answers a read (forwarded to the leader)" eq "$(r "$F" GET key7)" value7

# Forwarding: a write sent to a follower.
# Heartbeats (and the ReadIndex rounds of reads) reach an idle follower many times a second;
# its answers wait for no fsync, because nothing of its log is waiting to be written.
f0=$(metric "$F" raftkv_fsyncs_total)
for i in $(seq 1 40); do r "$L" GET key7 >/dev/null; done
sleep 1
check "an idle follower's heartbeat answers need no fsync" eq "$(metric "$F" raftkv_fsyncs_total)" "$f0"
check "a write sent to a follower succeeds" eq "$(r "$F" SET fwd yes)" OK
check "the follower forwarded it" test "$(metric "$F" raftkv_forwarded_total)" -ge 1
check "and the leader has it" eq "$(r "$L" GET fwd)" yes
check "INCR through a follower" eq "$(r "$F" INCR counter)" 1
check "MGET sees both" eq "$(r "$F" MGET fwd counter nope | tr '\n' ' ')" "yes 1  "
check "CAS with the right value" eq "$(r "$F" CAS fwd yes no)" 1
check "CAS with a stale value" eq "$(r "$F" CAS fwd yes maybe)" 0
check "SET NX on an existing key is nil" eq "$(r "$F" SET fwd x NX)" ""
check "DEL counts" eq "$(r "$F" DEL fwd nope)" 1

# Exactly once: the same {client, seq} sent to two nodes is applied once.
check "a command under an explicit session" eq "$(r "$L" SESSION 77 1 INCR once)" 1
check "its retry through another node gets the same answer" eq "$(r "$F" SESSION 77 1 INCR once)" 1
check "and was not applied twice" eq "$(r "$F" GET once)" 1
check "the next seq applies" eq "$(r "$F" SESSION 77 2 INCR once)" 2
check "an older seq is refused" eq "$(r "$F" SESSION 77 1 INCR once | cut -c1-19)" "ERR session expired"

# kill -9 of the leader: a new leader, and every acknowledged write still there.
acked=()
for k in $(seq 1 100); do
    if [ "$(r "$F" SET "ack$k" "v$k")" = OK ]; then
        acked+=("$k")
    fi
done
check "100 writes acknowledged before the crash" eq "${#acked[@]}" 100
kill9 "$L"
new_leader() { local l; l=$(leader) && [ "$l" != "$L" ]; }
check "a new leader within 5 s of kill -9" wait_until 5 new_leader
L2=$(leader)
missing=0
for k in "${acked[@]}"; do
    [ "$(r "$L2" GET "ack$k")" = "v$k" ] || missing=$((missing + 1))
done
check "no acknowledged write lost" eq "$missing" 0
check "writes go on with two nodes" eq "$(r "$L2" SET after crash)" OK

# The killed node comes back and catches up.
start_node "$L"
caught_up() { [ "$(r "$L" GET after)" = crash ] && [ "$(info "$L" applied)" -ge "$(info "$L2" commit)" ]; }
check "the restarted node catches up" wait_until 5 caught_up

# Every node stops on SIGTERM and restarts on the same data.
term=$(info "$L2" term)
stopped=0
for i in $(seq 1 "$NODES"); do
    stop_node "$i" && stopped=$((stopped + 1))
done
check "every node exits cleanly on SIGTERM" eq "$stopped" "$NODES"
start_cluster
check "a leader after a full restart" wait_until 5 has_leader
L3=$(leader)
check "the term did not go back" test "$(info "$L3" term)" -ge "$term"
check "data survived the restart" eq "$(r "$L3" GET key50)/$(r "$L3" GET ack100)/$(r "$L3" GET once)" "value50/v100/2"
finish
