#!/usr/bin/env bash
# The corruption check (etcd's): the replicas of a shard compare their running content
# hashes at the same applied index every few seconds; the one whose hash differs from
# the majority's raises an alarm (log, /v1/status, raftkv_corrupt) and serves no reads
# of the shard. A healthy cluster never raises it -- under writes, across snapshots and
# their installs, across restarts. A value rewritten in a stopped node's data.mdb with
# a checksum that fits it (tests/integration/kvrewrite.c: no read notices) is found at
# restart by the node's own scan; rewritten with the stored hash made to fit as well,
# it is found only by the comparison with the other replicas.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

KVREWRITE=${KVREWRITE:-$(dirname "$KVD")/kvrewrite}
EXTRA=(--request-timeout 3000 --snapshot-entries 200 --snapshot-trailing 20)

# writes FROM TO NODE: SET k<i> v<i> for i in FROM..TO, with INCRs and DELs among them (every write kind moves the running hash).
writes() {
    local i
    for i in $(seq "$1" "$2"); do
        printf 'SET k%d v%d\n' "$i" "$i"
        if [ $((i % 7)) -eq 0 ]; then echo "INCR n"; fi
        if [ $((i % 11)) -eq 0 ]; then echo "DEL k$((i - 5))"; fi
    done | timeout 60 redis-cli -p "$(resp_port "$3")" >/dev/null
}

status() { timeout 5 curl -s "127.0.0.1:$(http_port "$1")/v1/status"; }
corrupt() { status "$1" | jq -r '.groups[0].corrupt'; }
alarms() { status "$1" | jq -r '.alarms | length'; }
checks() { metric "$1" "raftkv_hash_checks_total\{result=\"$2\"\}"; }
no_alarm() { # no_alarm I: status and metrics say node I's copy is fine
    [ "$(corrupt "$1")" = false ] && [ "$(alarms "$1")" = 0 ] &&
        [ "$(metric "$1" 'raftkv_corrupt\{group="1"\}')" = 0 ]
}
clean() { no_alarm "$1" && [ "$(checks "$1" mismatch)" = 0 ]; } # and it never saw a mismatch
all_clean() {
    local i
    for i in $(seq 1 "$NODES"); do clean "$i" || return 1; done
}
# checked_since I N: node I compared more than N hashes in agreement
checked_since() { [ "$(checks "$1" ok)" -gt "$2" ]; }
local_get() { # local_get I KEY: a read node I answers from its own copy (HTTP)
    timeout 5 curl -s "127.0.0.1:$(http_port "$1")/v1/kv/$2?consistency=local"
}

start_cluster
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
F=$((L % NODES + 1))
O=$((F % NODES + 1))
[ "$O" = "$L" ] && O=$((O % NODES + 1))

# --- No false alarm: writes, snapshots, an install, restarts ---------------------
writes 1 700 "$L"
ok_before=$(checks "$F" ok)
check "every replica compares hashes with its leader's ($ok_before so far on node $F)" \
    wait_until 10 checked_since "$F" "$ok_before"
check "and no node raises an alarm after several checkpoints" all_clean
check "the leader took snapshots" test "$(info "$L" snapshot_index)" -ge 200

stop_node "$F"
writes 701 1200 "$L"
start_node "$F"
caught_up() { [ "$(info "$F" applied)" -ge "$(info "$L" commit)" ]; }
check "a follower restarted behind a compaction catches up" wait_until 15 caught_up
check "through InstallSnapshot" \
    test "$(metric "$F" 'raftkv_snapshots_total\{how="installed"\}')" -ge 1
ok_before=$(checks "$F" ok)
writes 1201 1500 "$L"
check "the installed copy compares equal" wait_until 10 checked_since "$F" "$ok_before"
stop_node "$O"
start_node "$O"
ok_before=$(checks "$O" ok)
writes 1501 1600 "$L"
check "so does a restarted one" wait_until 10 checked_since "$O" "$ok_before"
check "no alarm anywhere" all_clean
same_running_hash() {
    local a b
    a=$(status "$L" | jq -r '.groups[0] | "\(.running_hash_index) \(.running_hash)"')
    b=$(status "$F" | jq -r '.groups[0] | "\(.running_hash_index) \(.running_hash)"')
    [ -n "$a" ] && [ "$a" = "$b" ]
}
check "at rest, leader and follower show the same running hash at the same index" \
    wait_until 5 same_running_hash

# --- A value changed on disk with a fitting checksum: the node's own scan ---------
good=$(r "$L" GET k42)
stop_node "$F"
check "kvrewrite changes k42 on node $F's disk" "$KVREWRITE" "$T/$F" 1 k42 evil
start_node "$F"
alarmed() { [ "$(corrupt "$1")" = true ]; }
check "node $F raises the alarm at start (its scan disagrees with the stored hash)" \
    wait_until 5 alarmed "$F"
check "logged, naming the shard and what to do" \
    grep -q "CORRUPT: shard 0 (group 1): this node's content hash at index .* replace this node's data" \
    "$T/$F.log"
check "in /v1/status alarms" eq "$(status "$F" | jq -r '.alarms[0].alarm')" corrupt
check "raftkv_corrupt{group=\"1\"} 1" eq "$(metric "$F" 'raftkv_corrupt\{group="1"\}')" 1
out=$(local_get "$F" k42)
echo "    $out"
check "a local read through node $F is refused, saying why" grep -q "is corrupt" <<<"$out"
out=$(printf 'READONLY\nGET k42\n' | timeout 8 redis-cli -p "$(resp_port "$F")" | tr '\n' ' ')
check "over RESP after READONLY too ($out)" grep -q "is corrupt" <<<"$out"
check "the same read through a healthy node works" eq "$(local_get "$O" k42 | jq -r .value)" "$good"
check "the other nodes raise no alarm" eval "no_alarm $L && no_alarm $O"

# Fixed (the good value, the stored hash made to fit) and restarted: the alarm clears.
stop_node "$F"
check "kvrewrite puts the good value back" "$KVREWRITE" "$T/$F" 1 k42 "$good" --fix-hash
start_node "$F"
ok_before=$(checks "$F" ok)
writes 1601 1700 "$L"
check "restarted with good data, the node compares equal again" \
    wait_until 10 checked_since "$F" "$ok_before"
check "and has no alarm" eq "$(corrupt "$F")" false

# --- The same change with the stored hash made to fit: only the comparison -------
stop_node "$F"
check "kvrewrite changes k43 and the stored hash" "$KVREWRITE" "$T/$F" 1 k43 evil --fix-hash
seen=$(wc -l <"$T/$F.log")
start_node "$F"
# (The leader's comparison may come within moments of the start; what matters is
# that the node's own scan at start finds nothing.)
check "nothing is found by the node's own scan at start" \
    eval "! tail -n +$((seen + 1)) '$T/$F.log' | grep -q 'found by the scan at start'"
writes 1701 1800 "$L"
check "the replicas' comparison raises the alarm on node $F" wait_until 10 alarmed "$F"
check "its log names the majority's hash" \
    grep -q "expected [0-9a-f]* (2 of the 3 replicas have" "$T/$F.log"
check "the leader's log names the odd node" \
    grep -q "node $F's content hash at index .* its copy is corrupt" "$T/$L.log"
check "raftkv_hash_checks_total{result=\"mismatch\"} counts it" test "$(checks "$F" mismatch)" -ge 1
out=$(local_get "$F" k43)
check "a local read through node $F is refused" grep -q "is corrupt" <<<"$out"
check "a healthy node serves it" eq "$(local_get "$O" k43 | jq -r .value)" v43
check "a linearizable read through node $F still works (the leader serves it)" \
    eq "$(r "$F" GET k43)" v43
check "the leader and the other follower raise no alarm" eval "no_alarm $L && no_alarm $O"
check "the alarm stays (only a restart with good data clears it)" eq "$(corrupt "$F")" true
finish
