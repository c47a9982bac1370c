#!/usr/bin/env bash
# Client sessions expire (thesis §6.3), on the log's clock, the same way on every node: an
# expired session's next command is refused and not applied; a connection whose session
# expired gets a new one on its next write, transparently; the sweep empties the table.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

EXTRA=(--session-ttl 2 --request-timeout 800)
start_cluster
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
F=$((L % NODES + 1))

check "kvd refuses a TTL below twice the request timeout" \
    eq "$("$KVD" --id 1 --data "$T/x" --nodes 1 --session-ttl 1 --request-timeout 5000 2>&1 >/dev/null |
        grep -c 'less than twice --request-timeout')" 1

check "a session's first command" eq "$(r "$L" SESSION 500 1 INCR x)" 1
check "its next one, through a follower" eq "$(r "$F" SESSION 500 2 INCR x)" 2
check "a session that never started (seq 5) is refused" \
    eq "$(r "$L" SESSION 501 5 INCR x | cut -c1-19)" "ERR session expired"

# Long-lived connections, each one session: 3 and 5 to the leader, 4 to a follower (RESP),
# 6 to the leader (HTTP, keep-alive).
exec 3<>"/dev/tcp/127.0.0.1/$(resp_port "$L")"
exec 4<>"/dev/tcp/127.0.0.1/$(resp_port "$F")"
exec 5<>"/dev/tcp/127.0.0.1/$(resp_port "$L")"
exec 6<>"/dev/tcp/127.0.0.1/$(http_port "$L")"
# send FD COMMAND: an inline command, its one-line answer.
send() {
    local line
    printf '%s\r\n' "$2" >&"$1"
    IFS= read -r -t 5 line <&"$1" || true
    echo "${line%$'\r'}"
}
# hput FD KEY VALUE: PUT /v1/kv/KEY on the kept-alive connection FD; the status code.
hput() {
    local line h len=0
    printf 'PUT /v1/kv/%s HTTP/1.1\r\nHost: kvd\r\nContent-Length: %d\r\n\r\n%s' \
        "$2" "${#3}" "$3" >&"$1"
    IFS= read -r -t 5 line <&"$1" || true
    while IFS= read -r -t 5 h <&"$1"; do
        h=${h%$'\r'}
        [ -z "$h" ] && break
        case ${h,,} in content-length:*) len=${h#*: } ;; esac
    done
    if [ "$len" -gt 0 ]; then
        read -r -N "$len" -t 5 _ <&"$1" || true
    fi
    echo "$line" | cut -d' ' -f2
}
check "a connection's write (leader)" eq "$(send 3 'INCR y')" ":1"
check "an HTTP connection's write" eq "$(hput 6 h one)" 200
check "a connection's write (follower)" eq "$(send 4 'INCR z')" ":1"
# Thirty connections at once, from this one process (thirty redis-cli processes could take
# longer than the TTL to start on a loaded machine, and the first sessions would be swept
# already): each sends its write, then every answer is read.
fds=()
for i in $(seq 1 30); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$(resp_port "$L")"
    fds+=("$fd")
    printf 'SET burst%d v\r\n' "$i" >&"$fd"
done
for fd in "${fds[@]}"; do
    IFS= read -r -t 5 _ <&"$fd" || true
    exec {fd}>&-
done
status() { timeout 5 curl -s "127.0.0.1:$(http_port "$1")/v1/status"; }
sessions() { status "$1" | jq -r .sessions; }
check "thirty connections later, the table holds their sessions" \
    eq "$(sessions "$L" | awk '{print ($1 >= 33)}')" 1

# Time passes for the log only with writes: connection 5 writes while we wait for every
# session but its own to be swept (TTL 2 s; sweeps every 0.5 s of log time).
swept() {
    [ "$(send 5 'SET tick 1')" = "+OK" ] && [ "$(sessions "$L")" -le 1 ]
}
check "the idle sessions are swept (the table holds only the ticking one)" wait_until 15 swept
check "an expired session's command is refused" \
    eq "$(r "$L" SESSION 500 3 INCR x | cut -c1-19)" "ERR session expired"
check "and not applied" eq "$(r "$L" GET x)" 2
check "an idle connection's next write gets a new session (leader)" eq "$(send 3 'INCR y')" ":2"
check "an idle connection's next write gets a new session (follower)" eq "$(send 4 'INCR z')" ":2"
check "an idle HTTP connection's next write gets a new session" eq "$(hput 6 h two)" 200
check "and it was written" eq "$(r "$F" GET h)" two
check "the leader counts its two renewals" eq "$(metric "$L" raftkv_sessions_renewed_total)" 2
check "the follower counts its renewal" eq "$(metric "$F" raftkv_sessions_renewed_total)" 1

# Every replica expired the same sessions at the same entries.
same() {
    local i want="" got
    for i in $(seq 1 "$NODES"); do
        got=$(status "$i" | jq -r '"\(.applied) \(.sessions) \(.log_clock_ms)"')
        [ -n "$want" ] || want=$got
        [ "$got" = "$want" ] || return 1
    done
}
check "all nodes: same applied index, same sessions, same log clock" wait_until 5 same
check "and each counted the expiries" \
    eq "$(metric "$F" 'raftkv_sessions_expired_total\{group="1"\}' | awk '{print ($1 >= 33)}')" 1
exec 3>&- 4>&- 5>&- 6>&-
finish
