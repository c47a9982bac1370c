#!/usr/bin/env bash
# Five nodes, eight shards of three replicas (docs/sharding.md): every shard
# elects a leader among its replicas only; every key is readable through every
# node; multi-key commands split over shards and gathered; leaders spread over
# the nodes; kill -9 of a node leading several shards loses no acknowledged
# write; a shard that lost the majority of its replicas refuses writes with a
# clear error while the others serve; a restart keeps the data; a start with
# another --shards is refused, on its data dir and by its peers.
# shellcheck source=tests/integration/lib.sh
NODES=5
. "$(dirname "$0")/lib.sh"

SHARDS=8
start_cluster --shards "$SHARDS" --replicas 3

status() { timeout 5 curl -s "127.0.0.1:$(http_port "$1")/v1/status"; }
ring() { timeout 5 curl -s "127.0.0.1:$(http_port "$1")/v1/ring"; }

# Shards with a leader, counted from the nodes that host them.
led_shards() {
    local i
    for i in $(seq 1 "$NODES"); do
        alive "$i" || continue
        status "$i" | jq -r '.groups[] | select(.role == "leader") | .shard'
    done | sort -u | wc -l
}
all_led() { [ "$(led_shards)" -eq "$SHARDS" ]; }
check "every one of the $SHARDS shards elects a leader within 10 s" wait_until 10 all_led

# Placement: every node reports the same map; each shard's group runs on its
# three replicas and nowhere else.
fp1=$(ring 1 | jq -r .fingerprint)
same_map=yes
for i in $(seq 2 "$NODES"); do
    [ "$(ring "$i" | jq -r .fingerprint)" = "$fp1" ] || same_map=no
done
check "every node derives the same placement (fingerprint $fp1)" eq "$same_map" yes
hosted_ok=yes
for i in $(seq 1 "$NODES"); do
    want=$(ring "$i" | jq -c "[.ring[] | select(.replicas | index($i)) | .shard]")
    got=$(status "$i" | jq -c '[.groups[].shard]')
    [ "$want" = "$got" ] || {
        hosted_ok=no
        echo "    node $i hosts $got, the ring places $want on it"
    }
done
check "each node hosts exactly the shards the ring places on it" eq "$hosted_ok" yes
groups_per_node=$(for i in $(seq 1 "$NODES"); do status "$i" | jq '.groups | length'; done | paste -sd+ | bc)
check "8 shards x 3 replicas = 24 groups over the nodes" eq "$groups_per_node" 24

# A write through each node, which sends it to the leader of its key's shard.
write_each() {
    local i
    for i in $(seq 1 "$NODES"); do
        [ "$(r "$i" SET "first$i" "v$i")" = OK ] || {
            echo "    node $i: SET first$i = '$(r "$i" SET "first$i" "v$i")'"
            return 1
        }
    done
}
check "a write through each node is acknowledged (routed to its shard's leader)" write_each

# Every key readable through every node.
for k in $(seq 1 60); do
    r $((k % NODES + 1)) SET "key$k" "value$k" >/dev/null
done
all_read=yes
for i in $(seq 1 "$NODES"); do
    for k in 1 7 13 22 38 51 60; do
        [ "$(r "$i" GET "key$k")" = "value$k" ] || {
            all_read=no
            echo "    node $i: GET key$k = '$(r "$i" GET "key$k")'"
        }
    done
done
check "keys written through any node are readable through every node" eq "$all_read" yes
spread=$(for i in $(seq 1 "$NODES"); do status "$i" | jq -r '.groups[] | select(.role=="leader") | "\(.shard) \(.keys)"'; done |
    awk '$2 > 0' | wc -l)
check "the 60 keys landed on several shards ($spread with keys)" test "$spread" -ge 5

# Multi-key commands over several shards.
check "MGET over shards, in key order" eq "$(r 3 MGET key1 key2 nope key3 | tr '\n' ' ')" "value1 value2  value3 "
check "EXISTS over shards counts" eq "$(r 2 EXISTS key1 key2 key3 nope)" 3
check "DEL over shards counts" eq "$(r 4 DEL key1 key2 nope)" 2
check "and the keys are gone" eq "$(r 5 MGET key1 key2 key3 | tr '\n' ' ')" "  value3 "
check "the split commands are counted" test "$(metric 3 raftkv_split_commands_total)" -ge 1
check "INCR through a non-replica" eq "$(r 1 INCR counter)" 1
check "CAS through any node" eq "$(r 2 CAS counter 1 2)" 1
check "a connection's writes to several shards, each shard numbering its own session" \
    eq "$(printf 'SET s1 a\nSET s2 b\nSET s3 c\nSET s4 d\nINCR s5\nINCR s5\nMGET s1 s2 s3 s4 s5\n' |
        timeout 8 redis-cli -p "$(resp_port 2)" | tr '\n' ' ')" "OK OK OK OK 1 2 a b c d 2 "

check "INFO has a line per group the node hosts" \
    eq "$(r 1 INFO | tr -d '\r' | grep -c '^raft_group_[0-9]*:shard=[0-9]*,role=')" \
    "$(status 1 | jq '.groups | length')"

# Locate: the shard, its replicas and its leader.
loc=$(timeout 5 curl -s "127.0.0.1:$(http_port 1)/v1/locate/key5")
check "/v1/locate names the key's shard and three replicas" \
    eq "$(echo "$loc" | jq '.replicas | length')" 3
KVCTL=$(dirname "$KVD")/kvctl
shard5=$(echo "$loc" | jq .shard)
outsider=$(ring 1 | jq -r --argjson s "$shard5" '[.nodes[] as $n | select(.ring[$s].replicas | index($n) | not) | $n][0]')
want=$(ring 1 | jq -r --argjson s "$shard5" '.ring[$s].replicas[]' | while read -r i; do
    status "$i" | jq -r --argjson s "$shard5" '.groups[] | select(.shard == $s and .role == "leader") | .leader'
done | head -1)
check "kvctl leader KEY, asked of a node without a replica (node $outsider), names the shard's leader" \
    eq "$("$KVCTL" --node "127.0.0.1:$(resp_port "$outsider")" leader key5 | cut -d' ' -f1)" "$want"

# Leaders spread: no node leads more than its share for long.
balanced() {
    local i n
    for i in $(seq 1 "$NODES"); do
        n=$(status "$i" | jq .leading)
        [ "$n" -le 2 ] || return 1
    done
}
check "shard leaders spread over the nodes (none leads more than 2 of 8) within 15 s" wait_until 15 balanced

# A transfer an operator asks for stays, unless it overloads its new leader: give a
# node that leads fewer than its share (2) a shard it holds but does not lead.
moved=""
for i in $(seq 1 "$NODES"); do
    [ "$(status "$i" | jq .leading)" -lt 2 ] || continue
    sh=$(status "$i" | jq -r '[.groups[] | select(.role != "leader") | .shard][0] // empty')
    [ -n "$sh" ] || continue
    from=$(ring 1 | jq -r ".ring[$sh].leader")
    ans=$(timeout 5 redis-cli -p "$(resp_port "$from")" RAFT.TRANSFER "$i" "$sh")
    moved="$i $sh $ans"
    break
done
if [ -n "$moved" ]; then
    read -r to sh _ <<<"$moved"
    leads_it() { [ "$(status "$to" | jq -r ".groups[] | select(.shard == $sh) | .role")" = leader ]; }
    check "RAFT.TRANSFER node shard hands shard $sh to node $to" wait_until 5 leads_it
    sleep 3 # three rounds of the balance
    check "and the balance leaves it there (node $to is within its share)" leads_it
fi

# kill -9 of the node leading the most shards: every acknowledged write stays.
most=1 most_n=0
for i in $(seq 1 "$NODES"); do
    n=$(status "$i" | jq .leading)
    if [ "$n" -gt "$most_n" ]; then most=$i most_n=$n; fi
done
acked=()
for k in $(seq 1 80); do
    [ "$(r $((most % NODES + 1)) SET "ack$k" "v$k")" = OK ] && acked+=("$k")
done
check "80 writes acknowledged before the crash" eq "${#acked[@]}" 80
kill9 "$most"
check "every shard has a leader again within 10 s of kill -9 of node $most (led $most_n)" \
    wait_until 10 all_led
other=$((most % NODES + 1))
missing=0
for k in "${acked[@]}"; do
    [ "$(r "$other" GET "ack$k")" = "v$k" ] || missing=$((missing + 1))
done
check "no acknowledged write lost" eq "$missing" 0
start_node "$most" --shards "$SHARDS" --replicas 3
check "the node restarts on its data" wait_until 10 all_led

# A shard that lost two of its three replicas refuses writes; the others serve.
# Stop two nodes: shards with two replicas among them have no majority.
dead_shards=$(ring 1 | jq -r '.ring[] | select((.replicas | index(4)) and (.replicas | index(5))) | .shard')
live_shards=$(ring 1 | jq -r '.ring[] | select(((.replicas | index(4)) and (.replicas | index(5))) | not) | .shard')
# Keys of each kind, found through /v1/locate.
dead_key="" live_key=""
for k in $(seq 1 400); do
    s=$(timeout 5 curl -s "127.0.0.1:$(http_port 1)/v1/locate/probe$k" | jq -r .shard)
    if [ -z "$dead_key" ] && grep -qx "$s" <<<"$dead_shards"; then dead_key=probe$k dead_shard=$s; fi
    if [ -z "$live_key" ] && grep -qx "$s" <<<"$live_shards"; then live_key=probe$k; fi
    [ -n "$live_key" ] && { [ -z "$dead_shards" ] || [ -n "$dead_key" ]; } && break
done
if [ -n "$dead_key" ]; then
    r 1 SET "$dead_key" before >/dev/null
    # Acknowledged once two of the three replicas have it: the third, which survives the
    # kills below, may not have applied it yet. The stale reads below need it to have.
    third=$(ring 1 | jq -r --argjson s "$dead_shard" '.ring[$s].replicas[] | select(. != 4 and . != 5)')
    third_has() {
        [ "$(printf 'READONLY\nGET %s\n' "$dead_key" | timeout 5 redis-cli -p "$(resp_port "$third")" |
            tr '\n' ' ')" = "OK before " ]
    }
    check "the shard's third replica (node $third) has applied the write too" wait_until 10 third_has
fi
kill9 4
kill9 5
live_write() { [ "$(r 1 SET "$live_key" ok)" = OK ]; }
check "a shard that keeps a majority of its replicas serves writes ($live_key)" wait_until 10 live_write
if [ -n "$dead_shards" ]; then
    out=$(timeout 15 redis-cli -p "$(resp_port 1)" SET "$dead_key" x 2>&1)
    check "a shard without a majority refuses a write with a clear error ($dead_key): $out" \
        grep -q "NOQUORUM" <<<"$out"
    out=$(timeout 15 redis-cli -p "$(resp_port 1)" GET "$dead_key" 2>&1)
    check "and a linearizable read ($out)" grep -q "NOQUORUM" <<<"$out"
    check "a read that allows staleness is served by its surviving replica (HTTP consistency=local)" \
        eq "$(timeout 5 curl -s "127.0.0.1:$(http_port 1)/v1/kv/$dead_key?consistency=local" | jq -r .value)" before
    check "and over RESP after READONLY" \
        eq "$(printf 'READONLY\nGET %s\n' "$dead_key" | timeout 8 redis-cli -p "$(resp_port 2)" | tr '\n' ' ')" "OK before "
else
    echo "  (no shard has both 4 and 5 among its replicas: nothing to refuse)"
fi
check "consistency= takes only linearizable, lease or local" \
    grep -q "takes linearizable, lease or local" <<<"$(timeout 5 curl -s "127.0.0.1:$(http_port 1)/v1/kv/$live_key?consistency=eventual")"
check "consistency=lease needs the nodes to run lease reads" \
    grep -q "read-mode lease" <<<"$(timeout 5 curl -s "127.0.0.1:$(http_port 1)/v1/kv/$live_key?consistency=lease")"
check "consistency=linearizable is the default's" \
    eq "$(timeout 5 curl -s "127.0.0.1:$(http_port 1)/v1/kv/$live_key?consistency=linearizable" | jq -r .value)" ok
start_node 4 --shards "$SHARDS"
start_node 5 --shards "$SHARDS"
check "after the restart every shard leads again" wait_until 15 all_led

# A restart keeps the data.
for i in $(seq 1 "$NODES"); do stop_node "$i"; done
start_cluster
check "a restarted cluster elects every shard again (placement read from the data dir)" \
    wait_until 10 all_led
check "and still has the data" eq "$(r 3 GET ack17)" v17

# Another --shards on the same data is refused, with a message.
stop_node 2
out=$("$KVD" --id 2 --data "$T/2" --peers "$(peers)" --shards 4 2>&1) && rc=0 || rc=$?
check "a start with another --shards exits non-zero" test "$rc" -ne 0
check "and says why" grep -q "was created with --shards 8" <<<"$out"

# A node with a fresh data dir and another --shards: its peers refuse it at the
# handshake (one group must not get two sets of voters).
"$KVD" --id 2 --data "$T/2-other" --peers "$(peers)" --shards 4 --election-timeout 300 \
    --heartbeat 50 >>"$T/2-other.log" 2>&1 &
PID[2]=$!
refused() { grep -q "refusing node 2 from .*another map" "$T/1.log"; }
check "a node started with another --shards is refused by its peers, saying why" wait_until 10 refused
kill9 2

finish
