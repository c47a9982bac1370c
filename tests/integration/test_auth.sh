#!/usr/bin/env bash
# Peers prove they belong (raft/io/transport.c, the handshake): a cluster with a secret,
# and intruders that know its name and its members' ids -- which /v1/status tells anyone
# -- but not the secret. Before the handshake, an intruder saying Hello as a member with a
# higher term took over the cluster and committed its own entries.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

(umask 077 && head -c 32 /dev/urandom | base64 >"$T/secret")
(umask 077 && head -c 32 /dev/urandom | base64 >"$T/other")
EXTRA=(--cluster-secret "$T/secret" --request-timeout 1500)
start_cluster
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
check "a first write" eq "$(r "$L" SET k v)" OK
term_before=$(r "$L" INFO | tr -d '\r' | sed -n 's/^raft_term://p')

# intruder ID SECRET...: a kvd that claims to be node ID of this cluster (same name),
# listening on its own ports, with the given secret options, and very eager to campaign.
intruder() {
    local id=$1
    shift
    "$KVD" --id "$id" --data "$T/intruder$id" --election-timeout 60 --heartbeat 10 "$@" \
        --peers "$id=127.0.0.1:$(raft_port 9):$(resp_port 9):$(http_port 9),2=127.0.0.1:$(raft_port 2),3=127.0.0.1:$(raft_port 3)" \
        >>"$T/intruder.log" 2>&1 &
    PID[9]=$!
}
logged() { grep -q -- "$1" "$T/2.log" "$T/3.log"; }

# 1. Node 1's identity with another secret.
intruder 1 --cluster-secret "$T/other"
check "a member's id with the wrong secret is refused" \
    wait_until 5 logged "refusing node 1 from 127.0.0.1:[0-9]*: it left during the handshake"
sleep 1 # let it try: it campaigns every 60-120 ms
kill9 9
# 2. Node 1's identity and no secret at all (the attack before the handshake).
intruder 1
check "without a secret too" wait_until 5 grep -q "does not hold our cluster secret" "$T/intruder.log"
sleep 1
kill9 9
# 3. A node that is not a member, even with the right secret.
intruder 99 --cluster-secret "$T/secret"
check "a non-member is refused, with its address" \
    wait_until 5 logged "refusing node 99 from 127.0.0.1:[0-9]*: not a member"
sleep 1
kill9 9

check "a leader after the intruders" wait_until 10 has_leader
L=$(leader || echo 1)
term_after=$(r "$L" INFO | tr -d '\r' | sed -n 's/^raft_term://p')
check "the intruders changed nothing: same term" eq "$term_after" "$term_before"
check "the cluster still writes" eq "$(r "$L" SET k2 v2)" OK
check "and reads what it wrote" eq "$(r "$(( L % 3 + 1 ))" GET k)" v
check "refusals are counted: auth" test "$(metric 2 'raftkv_transport_refused_total\{why="auth"\}')" -ge 1
check "refusals are counted: member" test "$(metric 2 'raftkv_transport_refused_total\{why="member"\}')" -ge 1

# 4. A refusal is logged once per interval, not once per attempt: the intruders retried
# for three seconds with backoffs from 50 ms; a flood of bad handshakes adds nothing.
for _ in $(seq 1 200); do
    (exec 5<>"/dev/tcp/127.0.0.1/$(raft_port 2)" && printf '\0\0\0\3abc' >&5) 2>/dev/null || true
done
sleep 0.5
lines=$(grep -c "refusing" "$T/2.log" || true)
check "at most a few refusal lines for all of that ($lines)" test "$lines" -le 8

# 5. Protected mode: no secret, peers beyond loopback: refused at start, with what to do.
set +e
out=$("$KVD" --id 1 --data "$T/exposed" --peers "1=10.255.0.1,2=10.255.0.2,3=10.255.0.3" 2>&1)
rc=$?
set -e
check "no secret beyond loopback: refused at start" test "$rc" -ne 0
check "saying what to do" grep -q -- "--cluster-secret FILE" <<<"$out"

# 6. A secret others can read is refused.
cp "$T/secret" "$T/open"
chmod 644 "$T/open"
set +e
out=$("$KVD" --id 1 --data "$T/open-data" --peers "$(peers)" --cluster-secret "$T/open" 2>&1)
rc=$?
set -e
check "a secret readable by others is refused" test "$rc" -ne 0
check "with the reason" grep -q "can be read by others" <<<"$out"
finish
