#!/usr/bin/env bash
# The data directory belongs to one kvd at a time: a second one on it is refused,
# naming the first; kill -9 leaves no stale lock. A truncated or garbled data file is
# named at start (exit code 1) instead of killing the node with SIGBUS. A node whose
# storage failed -- a full map, or a full disk where a user namespace can mount a
# small tmpfs -- reports the role "failed", not "leader", and says what to do.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

EXTRA=(--request-timeout 2000)
start_cluster --map-size 2
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
check "a first write" eq "$(r "$L" SET k v)" OK

# A second kvd on node 1's directory, on ports of its own.
set +e
out=$(timeout 10 "$KVD" --id 1 --data "$T/1" \
    --peers "1=127.0.0.1:$(raft_port 9):$(resp_port 9):$(http_port 9),2=127.0.0.1:$(raft_port 2),3=127.0.0.1:$(raft_port 3)" 2>&1)
rc=$?
set -e
echo "    ${out:0:200}"
check "a second kvd on a running node's data directory exits with 1" eq "$rc" 1
check "naming the directory and the pid that holds it" \
    grep -qF "data dir $T/1 is in use by process ${PID[1]} " <<<"$out"
check "the first one still serves" eq "$(r 1 PING)" PONG

kill9 2
check "after kill -9 a node restarts on its directory (no stale lock)" start_node 2 --map-size 2
check "and its lock file names the new process" eq "$(head -n 1 "$T/2/kvd.lock")" "${PID[2]}"

# Node 3's data file, cut in half: named at start, with an exit code, not a signal.
value=$(head -c 50000 /dev/zero | tr '\0' v)
for k in 1 2 3 4 5; do
    r "$L" SET "pre$k" "$value" >/dev/null
done
synced() { [ "$(r 3 EXISTS pre5)" = 1 ]; }
check "node 3 has the writes" wait_until 5 synced
kill9 3
cp "$T/3/data.mdb" "$T/3.copy"
size=$(stat -c %s "$T/3/data.mdb")
truncate -s $((size / 2)) "$T/3/data.mdb"
start_refused() {
    set +e
    out=$(timeout 10 "$KVD" --id 3 --data "$T/3" --peers "$(peers)" --map-size 2 2>&1)
    rc=$?
    set -e
    echo "    rc $rc: ${out:0:240}"
}
start_refused
check "a truncated data file: exit code 1, not a signal (SIGBUS was 135)" eq "$rc" 1
check "the message names the file and its size" grep -qF \
    "data file $T/3/data.mdb is truncated: $((size / 2)) bytes, LMDB needs at least" <<<"$out"
check "and says what to do" grep -qF "(restore it from a copy, or replace the node)" <<<"$out"

cp "$T/3.copy" "$T/3/data.mdb"
printf 'garbage!%.0s' $(seq 1 16) | dd of="$T/3/data.mdb" conv=notrunc status=none
start_refused
check "garbled meta pages: exit code 1" eq "$rc" 1
check "named as such" grep -qF "data file $T/3/data.mdb is unreadable: its meta page 0 is not an LMDB meta page" <<<"$out"

cp "$T/3.copy" "$T/3/data.mdb"

# A byte of the append-only log changed on disk, with good frames after it (the 50 KB writes
# above): not a torn write but damage, refused at start with the file and the byte.
segs=("$T/3/log/"*.seg)
seg=${segs[0]}
flip() { # flip one bit of byte $1 of $seg
    local b
    b=$(od -An -tu1 -j "$1" -N 1 "$seg" | tr -d ' ')
    printf '%b' "\\0$(printf '%03o' $((b ^ 16)))" | dd of="$seg" bs=1 seek="$1" conv=notrunc status=none
}
flip 20000
start_refused
check "a damaged log frame: exit code 1" eq "$rc" 1
check "named with its segment and byte" grep -qE "$(basename "$seg"): the frame at byte [0-9]+ is damaged and a good one follows" <<<"$out"
check "and says the node must not rejoin with it" grep -qF "must not rejoin with this log" <<<"$out"
flip 20000
check "the intact copy starts" start_node 3 --map-size 2

# A full map stops the leader: it must not go on calling itself leader.
check "a leader after the restarts" wait_until 15 has_leader
L=$(leader || echo 1)
value=$(head -c 100000 /dev/zero | tr '\0' v)
err=""
for k in $(seq 1 60); do
    out=$(r "$L" SET "big$k" "$value" || true)
    if [ "$out" != OK ]; then
        err=$out
        break
    fi
done
echo "    then: ${err:0:160}"
check "a write fails on the full map" grep -q "MDB_MAP_FULL" <<<"$err"
failed() { [ "$(info "$L" role)" = failed ]; }
check "the stopped leader's INFO says raft_role:failed" wait_until 5 failed
check "its /v1/status says role failed" \
    eq "$(timeout 5 curl -s "127.0.0.1:$(http_port "$L")/v1/status" | jq -r .role)" failed
check "its metrics: raftkv_failed 1" eq "$(metric "$L" raftkv_failed)" 1
check "and raftkv_is_leader 0" eq "$(metric "$L" 'raftkv_is_leader\{group="1"\}')" 0
check "its error has one 'storage:' prefix at most" \
    test -z "$(info "$L" error | grep -F 'storage: storage')"

# A full disk, where a user namespace may mount a small tmpfs (no root needed where
# unprivileged user namespaces are allowed): a single-node cluster in slot 7.
mkdir -p "$T/full"
# "$1" and "$@" are the inner shell's; unshare and sh exec, so PID[7] is kvd itself.
# shellcheck disable=SC2016
tmpfs_sh='mount -t tmpfs -o size=2m tmpfs "$1" && shift && exec "$@"'
if unshare -rm sh -c "$tmpfs_sh" sh "$T/full" true 2>/dev/null; then
    unshare -rm sh -c "$tmpfs_sh" sh "$T/full" \
        "$KVD" --id 1 --data "$T/full/d" --map-size 64 --election-timeout 300 --heartbeat 50 \
        --peers "1=127.0.0.1:$(raft_port 7):$(resp_port 7):$(http_port 7)" >"$T/7.log" 2>&1 &
    PID[7]=$!
    single_leader() { [ "$(info 7 role)" = leader ]; }
    check "disk full: the single node leads" wait_until 5 single_leader
    err=""
    for k in $(seq 1 40); do
        out=$(r 7 SET "big$k" "$value" || true)
        if [ "$out" != OK ]; then
            err=$out
            break
        fi
    done
    echo "    then: ${err:0:240}"
    check "a write fails saying no space left on device" grep -q "no space left on device" <<<"$err"
    check "and what to do" grep -q "then restart the node" <<<"$err"
    check "once, not 'storage: storage:'" test -z "$(grep -F 'storage: storage' <<<"$err")"
    check "INFO says raft_role:failed" eq "$(info 7 role)" failed
else
    echo "  skip  disk full: cannot mount a tmpfs in a user namespace here"
fi
finish
