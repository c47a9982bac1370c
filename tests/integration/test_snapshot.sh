#!/usr/bin/env bash
# Snapshots in kvd (§7): the log is compacted behind a snapshot; a follower that was
# down while that happened catches up through InstallSnapshot; every replica ends with
# the same content hash; a node restarted after compaction starts from its snapshot.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

EXTRA=(--snapshot-entries 100 --snapshot-trailing 20)
start_cluster
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
F=$((L % NODES + 1))
check "a first write reaches everyone" eq "$(r "$L" SET first 1)" OK
kill9 "$F"
ok=0
for k in $(seq 1 600); do
    [ "$(r "$L" SET "key$k" "value$k")" = OK ] || break
    ok=$((ok + 1))
done
check "600 writes while a follower is down" eq "$ok" 600
snapshotted() { [ "$(info "$L" snapshot_index)" -ge 300 ]; }
check "the leader took snapshots" wait_until 5 snapshotted
start_node "$F"
caught_up() { [ "$(info "$F" applied)" -ge "$(info "$L" commit)" ]; }
check "the follower catches up" wait_until 10 caught_up
check "through InstallSnapshot" test "$(metric "$F" 'raftkv_snapshots_total\{how="installed"\}')" -ge 1
check "every replica holds the same data (content hash)" wait_until 5 same_hash
check "and the same number of keys" eq "$(info "$F" keys)" 601
check "a snapshot file is on the follower's disk" test "$(find "$T/$F/snap" -name 'g1-*.snap' | wc -l)" -eq 1

# The leader restarts from its compacted log and snapshot.
kill9 "$L"
start_node "$L"
check "a leader again" wait_until 5 has_leader
check "the old leader came back with its data" wait_until 5 same_hash
check "reads see everything" eq "$(r "$L" GET key600)/$(r "$F" GET first)" "value600/1"
finish
