#!/usr/bin/env bash
# The transport's fault filter through the admin API: the leader cut off at the
# application level loses leadership to the others (check-quorum makes it step
# down), writes go on at the majority, and after the heal everyone agrees.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

faults() { timeout 5 curl -s -X "$2" "127.0.0.1:$(http_port "$1")/v1/admin/faults" ${3:+-d "$3"}; }

EXTRA=(--request-timeout 3000 --enable-fault-injection)
start_cluster
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
check "a write before the cut" eq "$(r "$L" SET before cut)" OK
check "a bad rule is refused with 400" eq "$(curl -s -o /dev/null -w '%{http_code}' -XPUT -d '{"rules":[{"drop":101}]}' "127.0.0.1:$(http_port "$L")/v1/admin/faults")" 400
for i in $(seq 1 "$NODES"); do
    if [ "$i" = "$L" ]; then
        faults "$i" PUT '{"rules":[{"direction":"both","drop":100}]}' >/dev/null
    else
        faults "$i" PUT "{\"rules\":[{\"peer\":$L,\"direction\":\"both\",\"drop\":100}]}" >/dev/null
    fi
done
check "the rules are in force" eq "$(faults "$L" GET | grep -o '"drop":100' | head -1)" '"drop":100'
others_lead() {
    local i
    for i in $(seq 1 "$NODES"); do
        [ "$i" != "$L" ] && [ "$(info "$i" role)" = leader ] && return 0
    done
    return 1
}
check "the others elect a new leader" wait_until 5 others_lead
old_steps_down() { [ "$(info "$L" role)" != leader ]; }
check "the old leader steps down (check-quorum)" wait_until 5 old_steps_down
O=$((L % NODES + 1))
check "writes go on at the majority" eq "$(r "$O" SET during cut)" OK
out=$(r "$L" SET lost write)
check "a write at the cut-off node fails with NOQUORUM" eq "${out%% *}" NOQUORUM
for i in $(seq 1 "$NODES"); do
    faults "$i" DELETE >/dev/null
done
rejoined() { [ "$(r "$L" GET during)" = cut ]; }
check "after the heal the old leader has the majority's writes" wait_until 5 rejoined
check "and the write it could not commit never became visible" eq "$(r "$L" GET lost)" ""
check "one leader" wait_until 5 has_leader
finish
