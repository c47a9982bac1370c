#!/usr/bin/env bash
# kvctl against a real cluster: every command, text and JSON, and a write that
# moves on to the next node when the first one is down.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

KVCTL=${KVCTL:-$(dirname "$KVD")/kvctl}
start_cluster
check "a leader is elected" wait_until 5 has_leader
nodes=()
for i in $(seq 1 "$NODES"); do
    nodes+=(--node "127.0.0.1:$(resp_port "$i")")
done
k() { "$KVCTL" "${nodes[@]}" "$@"; }

check "put" eq "$(k put color blue)" OK
check "get" eq "$(k get color)" blue
check "get --json" eq "$(k --json get color)" '{"key":"color","value":"blue"}'
check "get of a missing key exits 1" eq "$(k get nothing 2>/dev/null; echo $?)" 1
check "incr" eq "$(k incr n 5)" 5
check "cas that matches" eq "$(k cas color blue green)" OK
check "cas that does not exits 1" eq "$(k cas color blue red >/dev/null; echo $?)" 1
check "del" eq "$(k del color n nothing)" 2
check "leader names the leader" eq "$(k leader | cut -d' ' -f1)" "$(leader)"
check "status shows a table with one leader" eq "$(k status | grep -c ' leader ')" 1
check "status --json lists every node" eq "$(k --json status | grep -o '"id":' | wc -l | awk '{print ($1 >= 3)}')" 1

# kvbench, the load generator of make bench, in both of its kvd protocols: a second of
# load each, no errors, and what it wrote is there (one key: key:0, 100 bytes of x).
KVBENCH=${KVBENCH:-$(dirname "$KVD")/kvbench}
bench() { "$KVBENCH" --seconds 1 --connections 4 --keys 1 "$@" 2>&1; }
ok_line() { grep -q 'req/s' <<<"$1" && ! grep -q errors <<<"$1"; }
L=$(leader)
check "kvbench SET over RESP" ok_line "$(bench --node "127.0.0.1:$(resp_port "$L")" --op set)"
check "kvbench's RESP SET wrote the value" eq "$(k get key:0)" "$(printf 'x%.0s' $(seq 100))"
check "kvbench GET over RESP" ok_line "$(bench --node "127.0.0.1:$(resp_port "$L")" --op get)"
k del key:0 >/dev/null
out=$(bench --node "127.0.0.1:$(resp_port "$L")" --op incr)
n=$(sed -n 's/.* \([0-9][0-9]*\) req\/s.*/\1/p' <<<"$out")
check "kvbench INCR over RESP" ok_line "$out"
check "every INCR it counted was applied (key:0 = $(k get key:0), about $n done)" \
    test "$(k get key:0)" -ge "$n"
k del key:0 >/dev/null
check "kvbench SET over HTTP" ok_line "$(bench --proto http --node "127.0.0.1:$(http_port "$L")" --op set)"
check "kvbench's HTTP SET wrote the value" eq "$(k get key:0)" "$(printf 'x%.0s' $(seq 100))"
check "kvbench GET over HTTP" ok_line "$(bench --proto http --node "127.0.0.1:$(http_port "$L")" --op get)"
check "kvbench refuses incr over HTTP" eq "$(bench --proto http --op incr >/dev/null; echo $?)" 2

# The first node given is down: kvctl moves on to the next.
L=$(leader)
D=$((L % NODES + 1))
kill9 "$D"
check "a write goes through when the first node is down" \
    eq "$("$KVCTL" --node "127.0.0.1:$(resp_port "$D")" --node "127.0.0.1:$(resp_port "$L")" put after down)" OK
check "status marks the dead node unreachable" eq "$(k status | grep -c unreachable)" 1
old=$L
check "transfer" eq "$(k transfer | cut -d' ' -f1)" transfer
moved() { [ "$(leader)" != "$old" ] && has_leader; }
check "leadership moved to the other live node" wait_until 5 moved
check "unknown commands are usage errors" eq "$(k frobnicate 2>/dev/null; echo $?)" 2
finish
