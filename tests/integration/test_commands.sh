#!/usr/bin/env bash
# Commands that used to do something else than they said: MULTI queued nothing and the
# commands after it ran at once (not atomically) while EXEC was unknown; CLIENT answered
# +OK to anything; an MGET through a follower whose answer was over the 16 MiB frame limit
# never completed (the connection between the nodes was torn down on every retry).
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

start_cluster
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
F=$((L % 3 + 1))

check "MULTI is refused, saying why" grep -q "^ERR transactions (MULTI/EXEC/WATCH) are not supported" <<<"$(r "$L" MULTI)"
check "so is EXEC" grep -q "^ERR transactions" <<<"$(r "$L" EXEC)"
check "and WATCH" grep -q "^ERR transactions" <<<"$(r "$L" WATCH k)"
check "CLIENT SETNAME then GETNAME" eq "$(printf 'CLIENT SETNAME app\r\nCLIENT GETNAME\r\n' | r "$L" | tr '\n' ' ')" "OK app "
check "CLIENT ID is a small number" grep -qE '^[0-9]{1,9}$' <<<"$(r "$L" CLIENT ID)"
check "CLIENT INFO" grep -q "^id=[0-9]* name= " <<<"$(r "$L" CLIENT INFO)"
check "CLIENT with anything else is an error" grep -q "^ERR CLIENT:" <<<"$(r "$L" CLIENT KILL 1.2.3.4:5)"

# QUIT ends the connection even with commands pipelined after it (they are not run).
exec 7<>"/dev/tcp/127.0.0.1/$(resp_port "$L")"
printf 'PING\r\nQUIT\r\nSET afterquit 1\r\n' >&7
# (cat ends with 0 at end of file; 124 if the connection stays open.)
check "QUIT with commands pipelined after it closes the connection" \
    eq "$( (timeout 3 cat <&7; echo "rc=$?") | tr -d '\r' | tr '\n' ' ')" "+PONG +OK rc=0 "
exec 7>&-
check "and what came after QUIT did not run" eq "$(r "$L" GET afterquit)" ""

# Three values of 7 MB: their MGET through a follower is 21 MB, over the frame limit.
head -c $((7 << 20)) /dev/zero | tr '\0' y >"$T/v"
for k in a b c; do
    check "a 7 MB value $k" eq "$(r "$L" -x SET "big$k" <"$T/v")" OK
done
start=$SECONDS
out=$(r "$F" MGET biga bigb bigc | head -c 300)
check "an MGET too big to forward fails at once" test $((SECONDS - start)) -le 3
check "saying why and what to do" grep -q "over the 16 MiB one node can forward.*RAFT.LEADER" <<<"$out"
check "through the leader it works" eq "$(r "$L" MGET biga bigb bigc | wc -c)" $((3 * (7 << 20) + 3))
check "a smaller MGET through the follower still works" eq "$(r "$F" MGET nope biga | wc -c)" $(((7 << 20) + 2))
finish
