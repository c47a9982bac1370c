#!/usr/bin/env bash
# Failover without waiting: a write that a follower forwarded to the leader, when the
# leader then dies, goes to the new leader as soon as the follower learns of it (or as
# soon as its link to the old leader breaks) instead of after a fixed retry; the write
# is applied once. The counter raftkv_redirects_total says it went that way.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

faults() { timeout 5 curl -s -X "$2" "127.0.0.1:$(http_port "$1")/v1/admin/faults" ${3:+-d "$3"}; }

# Elections slower than lib.sh's, so the leader is still the leader when the write
# reaches it; the client's deadline far beyond them.
EXTRA=(--request-timeout 8000 --enable-fault-injection --election-timeout 1000)
start_cluster
check "a leader is elected" wait_until 10 has_leader
L=$(leader)
F=$((L % NODES + 1))
check "a write through a follower" eq "$(r "$F" SET before kill)" OK
check "the counter starts at zero" eq "$(metric "$F" raftkv_redirects_total)" 0
# The leader hears nothing: the forwarded write stays with it, unanswered.
faults "$L" PUT '{"rules":[{"direction":"in","drop":100}]}' >/dev/null
fwd0=$(metric "$F" raftkv_forwarded_total)
timeout 10 redis-cli -p "$(resp_port "$F")" INCR counter >"$T/incr.out" 2>&1 &
incr=$!
forwarded() { [ "$(metric "$F" raftkv_forwarded_total)" -gt "$fwd0" ]; }
check "the follower forwarded the write to the leader" wait_until 5 forwarded
kill -KILL "${PID[$L]}"
wait "${PID[$L]}" 2>/dev/null || true
unset "PID[$L]"
wait "$incr" || true
check "the write in flight at the kill is answered" eq "$(cat "$T/incr.out")" 1
check "it went to the new leader at once (raftkv_redirects_total)" \
    test "$(metric "$F" raftkv_redirects_total)" -ge 1
check "a new leader among the others" wait_until 10 has_leader
check "applied once" eq "$(r "$F" GET counter)" 1
finish
