#!/usr/bin/env bash
# The state machine is not synced at each commit (raft/io/storage.c, open_sm_env): a
# process crash keeps it (the page cache), and after a machine crash it is rebuilt from
# the snapshot files and the log. A machine restart is simulated with RAFTKV_BOOT_ID: a
# node killed with -9 and started in "another boot" throws its state machines away and
# rebuilds them -- with the same content as every other replica, nothing acknowledged
# lost; one stopped cleanly synced them and rebuilds nothing.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

export RAFTKV_BOOT_ID=boot-1
EXTRA=(--snapshot-entries 100 --snapshot-trailing 20)
start_cluster
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
F=$((L % NODES + 1))
ok=0
for k in $(seq 1 300); do
    [ "$(r "$L" SET "key$k" "value$k")" = OK ] || break
    ok=$((ok + 1))
done
check "300 writes" eq "$ok" 300
snapshotted() { [ "$(info "$F" snapshot_index)" -ge 100 ]; }
check "the follower took snapshots (its log is compacted)" wait_until 5 snapshotted
check "every replica holds the same data" wait_until 5 same_hash

# A process crash: the same boot, nothing rebuilt.
kill9 "$F"
start_node "$F"
check "killed and started in the same boot, it trusts its state machine" \
    test "$(grep -c 'rebuilding the state machines' "$T/$F.log")" -eq 0
check "and holds the same data" wait_until 10 same_hash

# A machine crash: another boot, the state machines rebuilt.
kill9 "$F"
RAFTKV_BOOT_ID=boot-2 start_node "$F"
check "started in another boot after a kill, it rebuilds its state machines" \
    grep -q 'rebuilding the state machines from the snapshots and the log' "$T/$F.log"
check "from its snapshot" grep -q 'caught up with the snapshot its log records' "$T/$F.log"
check "to the same data as every other replica" wait_until 10 same_hash
check "with every key" eq "$(info "$F" keys)" 300

# The leader too, while writes go on at the others.
kill9 "$L"
check "a new leader" wait_until 10 has_leader
N2=$(leader)
check "a write while the old leader is down" eq "$(r "$N2" SET during crash)" OK
RAFTKV_BOOT_ID=boot-3 start_node "$L"
check "the old leader rebuilds too" grep -q 'rebuilding the state machines' "$T/$L.log"
check "and catches up with what it missed" wait_until 10 same_hash
check "reads see everything" eq "$(r "$L" GET key300)/$(r "$L" GET during)" "value300/crash"

# A clean stop syncs the state machine: no rebuild in the next boot.
stop_node "$F"
before=$(grep -c 'rebuilding the state machines' "$T/$F.log")
RAFTKV_BOOT_ID=boot-4 start_node "$F"
check "stopped cleanly, started in another boot: nothing to rebuild" \
    test "$(grep -c 'rebuilding the state machines' "$T/$F.log")" -eq "$before"
check "and the same data" wait_until 10 same_hash
finish
