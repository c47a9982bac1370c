#!/usr/bin/env bash
# Clients authenticate (kv/auth.c): with --requirepass nothing but AUTH, HELLO and QUIT is
# served before AUTH; control commands need the admin token; a node that would serve
# clients beyond loopback without a password refuses to start.
# shellcheck disable=SC2016 # wait_until evaluates its condition, written in single quotes
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

(umask 077 && echo "client-password-$RANDOM$RANDOM" >"$T/pass" && echo "admin-token-$RANDOM$RANDOM" >"$T/admin")
PASSWORD=$(head -1 "$T/pass")
ADMIN=$(head -1 "$T/admin")
EXTRA=(--requirepass "$T/pass" --admin-token "$T/admin")
start_cluster
RCLI_AUTH=(--no-auth-warning -a "$PASSWORD")
check "a leader is elected" wait_until 5 has_leader
L=$(leader)

# raw I ARGS...: redis-cli without authenticating.
raw() {
    local i=$1
    shift
    timeout 8 redis-cli -p "$(resp_port "$i")" "$@" 2>&1
}
check "no command before AUTH" eq "$(raw "$L" SET k v)" "NOAUTH Authentication required."
check "not even INFO" eq "$(raw "$L" INFO | head -1)" "NOAUTH Authentication required."
check "a wrong password is refused" eq "$(raw "$L" AUTH nope)" "WRONGPASS invalid username-password pair"
check "the password opens the data path" eq "$(r "$L" SET k v)" OK
check "on every node (followers forward)" eq "$(r $((L % 3 + 1)) GET k)" v
check "AUTH default PASSWORD (Redis 6 form)" \
    eq "$(printf 'AUTH default %s\nGET k\n' "$PASSWORD" | raw "$L" | tr '\n' ' ')" "OK v "
check "HELLO 2 AUTH default PASSWORD" \
    grep -qx "server" <<<"$(raw "$L" HELLO 2 AUTH default "$PASSWORD" | tr -d "\r")"
check "HELLO 3 is refused (RESP2 only)" grep -q "^NOPROTO" <<<"$(raw "$L" HELLO 3)"
check "the password does not open control commands" \
    grep -q "^NOPERM" <<<"$(r "$L" RAFT.TRANSFER)"
check "the admin token does" \
    grep -q "transfer started" <<<"$(printf 'AUTH admin %s\nRAFT.TRANSFER\n' "$ADMIN" | raw "$L")"
check "a new leader after the transfer" wait_until 5 eval '[ "$(leader)" != "" ] && [ "$(leader)" != "$L" ]'
check "the admin token is not the password" eq "$(raw "$L" AUTH "$ADMIN" >/dev/null; raw "$L" AUTH default "$ADMIN")" "WRONGPASS invalid username-password pair"

# The same over HTTP: Authorization: Bearer.
H=127.0.0.1:$(http_port "$L")
code() { timeout 5 curl -s -o "$T/body" -w '%{http_code}' "$@"; }
check "HTTP without a password: 401" eq "$(code "$H/v1/kv/k")" 401
check "with a WWW-Authenticate header" \
    grep -qi "^WWW-Authenticate: Bearer" <<<"$(timeout 5 curl -s -D - -o /dev/null "$H/v1/kv/k")"
check "a wrong password: 401" eq "$(code -H "Authorization: Bearer nope" "$H/v1/kv/k")" 401
check "the password: 200" eq "$(code -H "Authorization: Bearer $PASSWORD" "$H/v1/kv/k")" 200
check "a control operation with the password: 403" \
    eq "$(code -X POST -H "Authorization: Bearer $PASSWORD" "$H/v1/transfer")" 403
L2=$(leader)
check "with the admin token it runs" \
    eq "$(code -X POST -H "Authorization: Bearer $ADMIN" "127.0.0.1:$(http_port "$L2")/v1/transfer")" 200
check "the fault filter is off without --enable-fault-injection" \
    eq "$(code -H "Authorization: Bearer $ADMIN" "$H/v1/admin/faults")" 404
check "saying how to turn it on" grep -q "enable-fault-injection" "$T/body"
CURL_AUTH=(-H "Authorization: Bearer $PASSWORD")
check "metrics with the password" test -n "$(metric "$L" raftkv_clients_max)"

# kvctl authenticates with --auth FILE (or KVCTL_AUTH) and --admin-token FILE.
KVCTL=$(dirname "$KVD")/kvctl
L=$(leader || echo 1)
NODE=(--node "127.0.0.1:$(resp_port "$L")")
check "kvctl --auth writes" "$KVCTL" "${NODE[@]}" --auth "$T/pass" put kk vv
check "and reads" eq "$("$KVCTL" "${NODE[@]}" --auth "$T/pass" get kk)" vv
check "KVCTL_AUTH works too" eq "$(KVCTL_AUTH=$PASSWORD "$KVCTL" "${NODE[@]}" get kk)" vv
echo wrong >"$T/wrong" && chmod 600 "$T/wrong"
set +e
out=$("$KVCTL" "${NODE[@]}" --auth "$T/wrong" get kk 2>&1)
rc=$?
set -e
check "a wrong password: exit 3, saying so" eq "$rc:$(grep -c 'refused the password' <<<"$out")" "3:1"
check "kvctl transfer with the admin token" "$KVCTL" "${NODE[@]}" --admin-token "$T/admin" transfer

# kvbench too (--auth FILE), over RESP and HTTP.
KVBENCH=$(dirname "$KVD")/kvbench
out=$("$KVBENCH" --node "127.0.0.1:$(resp_port "$L")" --auth "$T/pass" --seconds 1 --connections 2)
check "kvbench --auth over RESP: no errors" eval '! grep -q errors <<<"$out"'
echo wrong >"$T/wrongpass"
out=$("$KVBENCH" --node "127.0.0.1:$(resp_port "$L")" --auth "$T/wrongpass" --seconds 1 \
    --connections 2 2>&1 || true)
check "kvbench with a wrong password over RESP: the refusal is its error" \
    eval 'grep -q "errors 2 (first: .*pass" <<<"$out"'
out=$("$KVBENCH" --proto http --node "127.0.0.1:$(http_port "$L")" --auth "$T/pass" --seconds 1 \
    --connections 2)
check "and over HTTP" eval '! grep -q errors <<<"$out"'

# Protected mode for clients.
echo "node 1 127.0.0.1 raft=$(raft_port 8) resp=$(resp_port 8) http=$(http_port 8) clients=0.0.0.0" >"$T/open.conf"
set +e
out=$("$KVD" --id 1 --data "$T/exposed2" --cluster "$T/open.conf" 2>&1)
rc=$?
set -e
check "clients beyond loopback without a password: refused at start" test "$rc" -ne 0
check "saying what to do" grep -q -- "--requirepass FILE" <<<"$out"
finish
