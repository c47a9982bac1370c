#!/usr/bin/env bash
# Commands that used to do something else than they said: MULTI queued nothing and the
# commands after it ran at once (not atomically) while EXEC was unknown; CLIENT answered
# +OK to anything; an MGET through a follower whose answer was over the 16 MiB frame limit
# never completed (the connection between the nodes was torn down on every retry). And the
# command table (kv/commands.c): arity errors, COMMAND COUNT and INFO, the HTTP routes.
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

# One command table (kv/commands.c) for dispatch, arity and access: a wrong argument count
# gets Redis' error, named as the client typed it; kvd's own syntaxes say their usage.
check "GET without a key: Redis' arity error" \
    eq "$(r "$L" get)" "ERR wrong number of arguments for 'get' command"
check "SET with a key alone" eq "$(r "$L" SET k)" "ERR wrong number of arguments for 'SET' command"
check "ECHO without a message (it used to be an unknown command)" \
    eq "$(r "$L" ECHO)" "ERR wrong number of arguments for 'ECHO' command"
check "CAS with a missing value" eq "$(r "$L" CAS k old)" "ERR wrong number of arguments for 'CAS' command"
check "an unknown command" eq "$(r "$L" FLUSHALL)" "ERR unknown command 'FLUSHALL'"
check "AUTH without a password: its usage" eq "$(r "$L" AUTH)" "ERR usage: AUTH [username] password"
check "RAFT.TRANSFER with three ids: its usage" \
    eq "$(r "$L" RAFT.TRANSFER 1 2 3)" "ERR usage: RAFT.TRANSFER [node-id [shard]]"
check "SESSION without a command: its usage" \
    eq "$(r "$L" SESSION 7 1)" "ERR usage: SESSION client-id seq command [args...]"
check "SESSION runs key-value commands only" eq "$(r "$L" SESSION 7 1 PING)" "ERR unknown command 'PING'"
check "and checks their arguments" \
    eq "$(r "$L" SESSION 7 1 incr)" "ERR wrong number of arguments for 'incr' command"
check "SESSION with a command and its arguments runs it" eq "$(r "$L" SESSION 7 1 INCR sessk)" 1
mapfile -t keys < <(seq 1 65)
check "MGET of 65 keys is refused" eq "$(r "$L" MGET "${keys[@]}")" "ERR MGET takes at most 64 keys"
check "MGET of 64 keys is served" eq "$(r "$L" MGET "${keys[@]:1}" | wc -l)" 64
r "$L" SET 5 five >/dev/null
check "DEL of 64 keys counts those that were there" eq "$(r "$L" DEL "${keys[@]:1}")" 1
check "DEL of 65 keys is refused (split by shard, at most 64)" \
    eq "$(r "$L" DEL "${keys[@]}")" "ERR DEL takes at most 64 keys"
check "MULTI with arguments is still refused as a transaction" \
    grep -q "^ERR transactions" <<<"$(r "$L" MULTI now)"
check "COMMAND COUNT: every command of the table" test "$(r "$L" COMMAND COUNT)" -ge 32
check "COMMAND INFO from the table: name, arity, flags, keys" \
    eq "$(r "$L" COMMAND INFO get mget | sed '/^$/d' | tr '\n' ' ')" "get 2 readonly 1 1 1 mget -2 readonly 1 -1 1 "
check "COMMAND INFO of SET: a write, any case" \
    eq "$(r "$L" command info Set | head -3 | tr '\n' ' ')" "set -3 write "
check "COMMAND INFO of an unknown command: nil" eq "$(r "$L" COMMAND INFO nosuch)" ""
check "COMMAND DOCS (what redis-cli asks on connecting): empty" eq "$(r "$L" COMMAND DOCS)" ""

# The HTTP door's key-value routes are GET, SET, DEL and CAS of the same table.
H=127.0.0.1:$(http_port "$L")
hcode() { timeout 5 curl -s -o "$T/hbody" -w '%{http_code}' "$@"; }
check "HTTP PUT is a SET" eq "$(hcode -X PUT --data-binary hv "$H/v1/kv/hk")" 200
check "answered ok, with its index" grep -q '"ok":true,"index":[1-9]' "$T/hbody"
check "HTTP GET is a GET" eq "$(timeout 5 curl -s "$H/v1/kv/hk")" '{"key":"hk","value":"hv"}'
check "and RESP sees the same key" eq "$(r "$L" GET hk)" hv
check "HTTP CAS" eq "$(hcode -X POST -d '{"expected":"hv","value":"hw"}' "$H/v1/cas/hk")" 200
check "HTTP CAS on a stale value: 409" \
    eq "$(hcode -X POST -d '{"expected":"hv","value":"hx"}' "$H/v1/cas/hk")" 409
check "with the current value" grep -q '"current":"hw"' "$T/hbody"
check "HTTP DELETE is a DEL" eq "$(timeout 5 curl -s -X DELETE "$H/v1/kv/hk")" '{"key":"hk","deleted":1}'
check "then GET: 404" eq "$(hcode "$H/v1/kv/hk")" 404
check "POST on /v1/kv/: 405" eq "$(hcode -X POST -d x "$H/v1/kv/hk")" 405

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
