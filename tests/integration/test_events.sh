#!/usr/bin/env bash
# test_events.sh — kvd's trace as JSON lines: --trace-file (validated against
# docs/trace.schema.json, a request followed from propose to apply to answer, rotation
# bounded on disk), GET /v1/events as server-sent events, and its bound: a subscriber
# that never reads costs the node no more than its queue, loses records and is told
# how many; bad input is refused with a clear error.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

TRACECHECK=$(dirname "$KVD")/tracecheck
http() { echo "127.0.0.1:$(http_port "$1")"; }

start_node 1 --trace-file "$T/trace1.jsonl"
start_node 2
start_node 3 --trace-file "$T/trace3.jsonl" --trace-file-max-mb 1
check "a leader is elected" wait_until 10 has_leader
# The client's side of a request (propose, answer) is traced by the shard's leader: make
# it a node with a trace file.
if [ "$(leader)" = 2 ]; then
    r 2 RAFT.TRANSFER 1 >/dev/null
    led_by_1() { [ "$(leader)" = 1 ]; }
    wait_until 10 led_by_1 || true
fi
L=$(leader)

check "SET through node 1" eq "$(r 1 SET k1 v1)" OK
# A request followed end to end in node 1's file: the same id on propose, apply, answer.
followed() {
    local req
    req=$(grep -h '"kind":"propose"' "$T/trace1.jsonl" "$T/trace3.jsonl" | head -n 1 |
        sed 's/.*"req":"\([^"]*\)".*/\1/')
    [ -n "$req" ] || return 1
    cat "$T/trace1.jsonl" "$T/trace3.jsonl" | grep "\"req\":\"$req\"" >"$T/req.jsonl"
    grep -q '"kind":"propose"' "$T/req.jsonl" && grep -q '"kind":"answer"' "$T/req.jsonl" &&
        [ "$(grep -c '"kind":"apply"' "$T/req.jsonl")" -ge 2 ]
}
check "a request's id is on its propose, its answer and every apply" wait_until 5 followed

# The live stream: one second of it from a follower, every record valid.
F=$((L % 3 + 1))
timeout 1 curl -sN "$(http "$F")/v1/events" >"$T/sse.txt" || true
check "GET /v1/events streams server-sent events" grep -q '^data: {' "$T/sse.txt"
sed -n 's/^data: //p' "$T/sse.txt" >"$T/sse.jsonl"
check "the stream's records validate (state first)" \
    "$TRACECHECK" --rules docs/trace.md --expect-kinds state,net "$T/sse.jsonl"
check "?group= keeps one group's records" \
    bash -c "timeout 1 curl -sN '$(http "$F")/v1/events?group=1' | sed -n 's/^data: //p' |
        grep -v '\"kind\":\"net\"' | grep -v '\"group\":1,' | wc -l | grep -qx 0"

# Bad input.
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
check "/v1/events?group=x is refused (400)" eq "$(code "$(http 1)/v1/events?group=x")" 400
check "POST /v1/events is refused (405)" eq "$(code -XPOST "$(http 1)/v1/events")" 405
check "/v1/transfer?shard=x is refused (400)" eq "$(code -XPOST "$(http 1)/v1/transfer?shard=x")" 400
check "/v1/transfer?shard=7 of a 1-shard cluster is refused (400)" \
    eq "$(code -XPOST "$(http 1)/v1/transfer?shard=7")" 400
check "/v1/transfer?color=red is refused (400)" eq "$(code -XPOST "$(http 1)/v1/transfer?color=red")" 400
out=$("$KVD" --id 9 --data "$T/9" --peers "9=127.0.0.1:$((BASE + 35)):$((BASE + 36)):$((BASE + 37))" \
    --trace-file "$T/no/such/dir/t.jsonl" 2>&1 || true)
check "kvd refuses a trace file it cannot open, and says why" \
    bash -c "grep -q 'trace-file $T/no/such/dir/t.jsonl: No such file' <<<'$out'"
out=$("$KVD" --trace-file-max-mb 0 2>&1 || true)
check "--trace-file-max-mb 0 is refused" bash -c "grep -q 'trace-file-max-mb' <<<'$out'"

# The dashboard's files, and what browsers of other origins may do (CORS).
check "GET /ui/ is the dashboard's page" \
    bash -c "curl -s $(http 1)/ui/ | grep -q '<script src=\"app.js\">'"
check "GET /ui/nope.js is 404" eq "$(code "$(http 1)/ui/nope.js")" 404
hdr() { curl -s -o /dev/null -D - "$@" | tr -d '\r' | sed -n 's/^Access-Control-Allow-Origin: //p'; }
check "read-only endpoints answer pages of any origin" \
    eq "$(hdr -H 'Origin: http://elsewhere.example' "$(http 2)/v1/status")" '*'
check "the fault filter answers a page served by a member" \
    eq "$(hdr -XOPTIONS -H "Origin: http://127.0.0.1:$(http_port 1)" "$(http 2)/v1/admin/faults")" \
    "http://127.0.0.1:$(http_port 1)"
check "...and not a page of another origin" \
    eq "$(hdr -XOPTIONS -H 'Origin: http://elsewhere.example' "$(http 2)/v1/admin/faults")" ""

# The bound. A subscriber that never reads (it holds the socket open, nothing more),
# on the leader, while clients write: the kernel's buffers fill, then the node's queue
# for it (256 KiB), then its records are dropped and counted.
rss_anon() { awk '/^RssAnon:/ {print $2}' "/proc/${PID[$L]}/status"; }
load() { redis-benchmark -p "$(resp_port "$L")" -t set -n "$1" -c 16 -r 1000 -q >/dev/null 2>&1; }
load 3000 # warm up: the log, the sessions, the buffers a workload needs anyway
# A control: what the same load costs with no subscriber.
control_before=$(rss_anon)
load 10000
control=$(($(rss_anon) - control_before))
before=$(rss_anon)
records_before=$(metric "$L" raftkv_trace_records_total)
# It asks for a small receive buffer, so that the kernel holds little for it and the
# node's own bound is what is tested; it reads only once $T/read-now exists.
/usr/bin/python3 - "$(http_port "$L")" "$T/read-now" >"$T/slow.txt" <<'PY' &
import os, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
deadline = time.time() + 120
while not os.path.exists(sys.argv[2]) and time.time() < deadline:
    time.sleep(0.05)
s.settimeout(0.5)
until = time.time() + 3  # the backlog, and what follows it for a while
while time.time() < until:
    try:
        b = s.recv(65536)
    except socket.timeout:
        continue
    if not b:
        break
    sys.stdout.buffer.write(b)
PY
slow=$!
check "the silent subscriber is counted" wait_until 5 \
    bash -c "[ \"\$(curl -s $(http "$L")/metrics | awk '/^raftkv_trace_streams /{print \$2}')\" = 1 ]"
load 10000
after=$(rss_anon)
records=$(($(metric "$L" raftkv_trace_records_total) - records_before))
dropped=$(metric "$L" raftkv_trace_stream_dropped_total)
dropped_bytes=$(metric "$L" raftkv_trace_stream_dropped_bytes_total)
queued=$(metric "$L" raftkv_trace_stream_queued_bytes_max)
echo "    $records records made while it did not read, $dropped ($dropped_bytes bytes) dropped for it;" \
    "queued at most $queued bytes; RssAnon ${before} -> ${after} kB (without it: +$control kB)"
check "records were dropped for it, not buffered" test "${dropped:-0}" -gt 0
check "its queue stayed within its bound (256 KiB + a record)" test "${queued:-0}" -le $((256 * 1024 + 4096))
check "more than 2 MiB of records were dropped for it (the test means something)" \
    test "${dropped_bytes:-0}" -gt $((2 << 20))
check "the node's anonymous memory grew no more than without it, give or take half of that" \
    test $(((after - before - control) * 1024)) -lt $((dropped_bytes / 2))
check "the node still serves" eq "$(r "$L" GET k1)" v1
# Read now: once it has caught up, the first thing after the backlog says what it lost.
touch "$T/read-now"
wait "$slow" || true
check "the slow subscriber is told how many records it lost" \
    grep -q '"kind":"lost","node":[0-9]*,"group":0,"count":[1-9]' "$T/slow.txt"

# The file: rotated at its bound, every record valid; receipts match sends across nodes.
check "node 3's file rotated at 1 MiB (FILE and FILE.1, each within the bound)" \
    bash -c "[ -s '$T/trace3.jsonl.1' ] && [ \$(stat -c %s '$T/trace3.jsonl.1') -le 1048576 ] &&
        [ \$(stat -c %s '$T/trace3.jsonl') -le 1048576 ]"
# A node stops cleanly with a stream open (the stream's connection closes after the
# server has let go of it).
timeout 10 curl -sN "$(http 1)/v1/events" >/dev/null &
check "the stream is open" wait_until 5 \
    bash -c "[ \"\$(curl -s $(http 1)/metrics | awk '/^raftkv_trace_streams /{print \$2}')\" = 1 ]"
check "node 1 stops cleanly with a stream open" stop_node 1
stop_node 3
check "the trace files validate against docs/trace.schema.json" \
    "$TRACECHECK" --rules docs/trace.md \
    --expect-kinds rule,send,recv,propose,commit,apply,answer,state,net \
    "$T/trace1.jsonl" "$T/trace3.jsonl.1" "$T/trace3.jsonl"
finish
