#!/usr/bin/env bash
# What the HTTP door must refuse without being fooled: a body over 16 MiB (by Content-Length
# or by chunks) is refused with 413 and never stored, and the bytes of a refused body are
# never parsed as requests; after a request that cannot be parsed, or one that says
# Connection: close, nothing more on that connection is answered; limits get the status
# codes that name them (414, 431); and a value has one JSON shape on every node.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

start_cluster
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
F=$((L % NODES + 1)) # a follower
HL=$(http_port "$L")
HF=$(http_port "$F")
MIB17=$((17 << 20))

# send PORT FILE: FILE's bytes on a new connection, then read until the server closes it.
# Prints what came back; exits 0 when the server closed the connection cleanly, 124 when it
# kept it open for 5 s.
send() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && cat "$2" >&3 && cat <&3' _ "$1" "$2" \
        2>/dev/null
}

# responses FILE: how many HTTP responses FILE holds.
responses() { grep -c '^HTTP/1.1 ' "$1" || true; }
status() { head -n 1 "$1" | tr -d '\r'; }

# http_get PORT KEY: the JSON a GET answers.
http_get() { timeout 5 curl -s "127.0.0.1:$1/v1/kv/$2"; }

# (a) A PUT of 17 MiB: refused, and the key keeps its value.
check "SET k old" eq "$(r "$L" SET k old)" OK
{
    printf 'PUT /v1/kv/k HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n' "$MIB17"
    head -c "$MIB17" /dev/zero | tr '\0' a
} >"$T/put17"
rc=0
send "$HL" "$T/put17" >"$T/a.out" || rc=$?
check "a 17 MiB PUT gets 413" eq "$(status "$T/a.out")" "HTTP/1.1 413 Payload Too Large"
check "and only that answer" eq "$(responses "$T/a.out")" 1
check "and the connection is closed after it" eq "$rc" 0
check "k still reads old (RESP)" eq "$(r "$L" GET k)" old
check "k still reads old (HTTP, on a follower)" eq "$(http_get "$HF" k)" '{"key":"k","value":"old"}'

# The same by chunks: no length up front, refused as it grows past 16 MiB.
{
    printf 'PUT /v1/kv/k HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n'
    for _ in $(seq 1 17); do
        printf '100000\r\n'
        head -c $((1 << 20)) /dev/zero | tr '\0' a
        printf '\r\n'
    done
    printf '0\r\n\r\n'
} >"$T/chunked17"
rc=0
send "$HF" "$T/chunked17" >"$T/a2.out" || rc=$?
check "a chunked PUT growing past 16 MiB gets 413" eq "$(status "$T/a2.out")" \
    "HTTP/1.1 413 Payload Too Large"
check "and the connection is closed after it" eq "$rc" 0
check "k still reads old" eq "$(r "$L" GET k)" old

# (b) A request smuggled at the start of an oversized body never runs.
check "SET k2 v2" eq "$(r "$L" SET k2 v2)" OK
smuggled=$'DELETE /v1/kv/k2 HTTP/1.1\r\nHost: t\r\n\r\n'
{
    printf 'PUT /v1/kv/k3 HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n' "$MIB17"
    printf '%s' "$smuggled"
    head -c $((MIB17 - ${#smuggled})) /dev/zero | tr '\0' a
} >"$T/smuggle"
rc=0
send "$HF" "$T/smuggle" >"$T/b.out" || rc=$?
check "the oversized PUT carrying a DELETE gets 413" eq "$(status "$T/b.out")" \
    "HTTP/1.1 413 Payload Too Large"
check "and only that answer" eq "$(responses "$T/b.out")" 1
check "the smuggled DELETE did not run: k2 still exists" eq "$(r "$L" GET k2)" v2
check "the refused PUT stored nothing: k3 does not exist" eq "$(r "$L" EXISTS k3)" 0

# (c) A malformed request (a header line without a colon), then more requests behind it,
# enough that they arrive in several reads: one 400, and the connection closes.
{
    printf 'GET /v1/kv/k HTTP/1.1\r\nNo colon here\r\n\r\n'
    for _ in $(seq 1 20000); do
        printf 'GET /v1/kv/k HTTP/1.1\r\nHost: t\r\n\r\n'
    done
} >"$T/malformed"
rc=0
send "$HL" "$T/malformed" >"$T/c.out" || rc=$?
check "a malformed request gets 400" eq "$(status "$T/c.out")" "HTTP/1.1 400 Bad Request"
check "and nothing after it is answered" eq "$(responses "$T/c.out")" 1
check "and the connection is closed" eq "$rc" 0

# (d) Connection: close gets exactly one answer, whatever follows it.
check "SET k4 v4" eq "$(r "$L" SET k4 v4)" OK
{
    printf 'GET /v1/kv/k4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'
    printf 'DELETE /v1/kv/k4 HTTP/1.1\r\nHost: t\r\n\r\n'
} >"$T/close"
rc=0
send "$HF" "$T/close" >"$T/d.out" || rc=$?
check "Connection: close is answered" eq "$(status "$T/d.out")" "HTTP/1.1 200 OK"
check "exactly once" eq "$(responses "$T/d.out")" 1
check "and the connection is closed" eq "$rc" 0
check "the request behind it did not run" eq "$(r "$L" GET k4)" v4
# An Upgrade: what follows is another protocol, never HTTP requests to run.
{
    printf 'GET /v1/kv/k4 HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n'
    printf 'DELETE /v1/kv/k4 HTTP/1.1\r\nHost: t\r\n\r\n'
} >"$T/upgrade"
rc=0
send "$HF" "$T/upgrade" >"$T/d2.out" || rc=$?
check "an Upgrade request gets one answer" eq "$(responses "$T/d2.out")" 1
check "and the connection is closed" eq "$rc" 0
check "the bytes behind it did not run as a request" eq "$(r "$L" GET k4)" v4

# (e) Limits get the status codes that name them.
long=$(head -c $((9 << 10)) /dev/zero | tr '\0' u)
code() { timeout 5 curl -s -o /dev/null -w '%{http_code}' "$@"; }
check "a 9 KiB URL gets 414" eq "$(code "127.0.0.1:$HL/v1/kv/$long")" 414
check "a 9 KiB header gets 431" eq "$(code -H "X-Big: $long" "127.0.0.1:$HL/v1/kv/k")" 431
check "a 9 KiB header name gets 431" eq "$(code -H "X-$long: 1" "127.0.0.1:$HL/v1/kv/k")" 431
# Behind a request that waits for the cluster, a 100 KiB URL is parsed from one buffer:
# still 414, not the parser's own header limit.
{
    printf 'GET /v1/kv/k HTTP/1.1\r\nHost: t\r\n\r\n'
    printf 'GET /v1/kv/'
    head -c $((100 << 10)) /dev/zero | tr '\0' u
    printf ' HTTP/1.1\r\nHost: t\r\n\r\n'
} >"$T/longurl"
rc=0
send "$HF" "$T/longurl" >"$T/e.out" || rc=$?
check "a 100 KiB URL behind a request gets 414" eq \
    "$(grep '^HTTP/1.1 ' "$T/e.out" | tr -d '\r' | tail -n 1)" "HTTP/1.1 414 URI Too Long"
check "and the connection is closed" eq "$rc" 0

# (f) An empty value has one JSON shape on every node (and so has a CAS's current value).
check "SET empty ''" eq "$(r "$L" SET empty '')" OK
check "an empty value through the leader" eq "$(http_get "$HL" empty)" \
    '{"key":"empty","value":""}'
check "an empty value through a follower" eq "$(http_get "$HF" empty)" \
    '{"key":"empty","value":""}'
check "a CAS mismatch on an empty value, through a follower" eq \
    "$(timeout 5 curl -s -XPOST -d '{"expected":"x","value":"y"}' "127.0.0.1:$HF/v1/cas/empty")" \
    '{"key":"empty","ok":false,"current":""}'
finish
