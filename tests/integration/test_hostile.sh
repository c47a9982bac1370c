#!/usr/bin/env bash
# What a node must refuse or survive: a node of another cluster, a data directory
# made for another node, an oversized frame, random bytes on every port, bad
# flags; and a command that cannot reach a quorum gets an explicit error in time.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

EXTRA=(--request-timeout 1500)
start_cluster
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
check "a first write" eq "$(r "$L" SET k v)" OK

# A node of another cluster, on node 1's identity but other ports, talks to the others.
"$KVD" --id 1 --data "$T/intruder" --cluster-id intruder \
    --peers "1=127.0.0.1:$(raft_port 9):$(resp_port 9):$(http_port 9),2=127.0.0.1:$(raft_port 2),3=127.0.0.1:$(raft_port 3)" \
    >"$T/intruder.log" 2>&1 &
PID[9]=$!
refused() { grep -q "refusing node 1 from 127.0.0.1:[0-9]*: it belongs to cluster" "$T/2.log" "$T/3.log"; }
check "a node of another cluster is refused, with a log line saying so" wait_until 5 refused
kill9 9
check "the refusal is counted" test "$(metric 2 'raftkv_transport_refused_total\{why="hello"\}')$(metric 3 'raftkv_transport_refused_total\{why="hello"\}')" != 00

# A data directory belongs to one node of one cluster.
set +e
out=$("$KVD" --id 2 --data "$T/1" --peers "$(peers)" 2>&1)
rc=$?
set -e
check "another node's data directory is refused" test "$rc" -ne 0
check "with a message saying what to do" grep -q "node 1" <<<"$out"

# An oversized frame: the connection is closed before anything is allocated.
exec 5<>"/dev/tcp/127.0.0.1/$(raft_port 2)"
printf '\x7f\xff\xff\xff' >&5
exec 5>&-
oversized() { [ "$(metric 2 'raftkv_transport_refused_total\{why="oversized"\}')" -ge 1 ]; }
check "an oversized frame is refused" wait_until 5 oversized

# Random bytes on every port of node 3; it keeps serving.
for port in $(raft_port 3) $(resp_port 3) $(http_port 3); do
    for _ in 1 2 3; do
        head -c 65536 /dev/urandom | timeout 5 bash -c "cat > /dev/tcp/127.0.0.1/$port" 2>/dev/null || true
    done
done
check "node 3 still runs after random bytes on its ports" alive 3
check "and answers PING" eq "$(r 3 PING)" PONG
check "and serves writes" eq "$(r 3 SET after noise)" OK
check "the cluster still has one leader" wait_until 5 has_leader

# Bad requests get errors, not crashes.
check "an unknown command" eq "$(r 3 FLUSHALL | cut -c1-19)" "ERR unknown command"
check "a key over 511 bytes" eq "$(r 3 SET "$(head -c 600 /dev/zero | tr '\0' k)" v | cut -c1-15)" "ERR bad request"
check "HTTP: a missing key is 404" eq "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$(http_port 3)/v1/kv/nope")" 404
check "HTTP: a bad CAS body is 400" eq "$(curl -s -o /dev/null -w '%{http_code}' -XPOST -d '{' "127.0.0.1:$(http_port 3)/v1/cas/k")" 400
check "HTTP: PUT then GET" eq "$(curl -s -XPUT --data-binary 'a b' "127.0.0.1:$(http_port 3)/v1/kv/sp%20ace" >/dev/null; curl -s "127.0.0.1:$(http_port 3)/v1/kv/sp%20ace")" '{"key":"sp ace","value":"a b"}'

# Bad flags.
set +e
"$KVD" --id 1 --data "$T/x" >/dev/null 2>&1
rc1=$?
"$KVD" --id 1 --data "$T/x" --nodes 3 --no-check-quorum >/dev/null 2>&1
rc2=$?
"$KVD" --help >/dev/null 2>&1
rc3=$?
set -e
check "no membership given: usage error" eq "$rc1" 2
check "an unsafe knob without --allow-unsafe: usage error" eq "$rc2" 2
check "--help succeeds" eq "$rc3" 0

# No quorum: two nodes gone, a write fails with NOQUORUM within its deadline.
for i in $(seq 1 "$NODES"); do
    [ "$i" = 3 ] || kill9 "$i"
done
start=$SECONDS
out=$(r 3 SET lonely write)
check "a write without a quorum gets an explicit error" eq "${out%%:*}" "NOQUORUM no quorum"
check "within the request timeout" test $((SECONDS - start)) -le 4
finish
