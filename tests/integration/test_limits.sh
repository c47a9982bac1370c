#!/usr/bin/env bash
# The front doors' limits (kv/tcp.c, kv/resp.c): a client count, a deadline for a partial
# request, and replies a client does not read. Before them, 20,400 idle connections took
# every descriptor, a request at one byte a second was served after 34 s, and pipelined
# GETs of an 8 MB value from a client that never read grew a node to 4 GB.
# shellcheck disable=SC2016 # wait_until evaluates its condition; RESP's $ is literal
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

# Elections at lib.sh's fast pace (300 ms, check-quorum): a 4 MB write below keeps the
# followers' disks busy, on a loaded machine, longer than that; heartbeats are answered at
# once all the same (a follower's answer claims only what its host reported durable), so the
# leader is not deposed.
EXTRA=(--max-clients 12 --client-timeout 1 --client-output-timeout 2)
start_cluster
check "a leader is elected" wait_until 5 has_leader
L=$(leader)
P=$(resp_port "$L")

rss_mb() { echo $(($(sed -n 's/^VmRSS:[^0-9]*\([0-9]*\).*/\1/p' "/proc/${PID[$1]}/status") / 1024)); }

# 1. --max-clients: twelve connections held open, the next is refused with Redis' words.
for fd in $(seq 20 31); do
    eval "exec $fd<>/dev/tcp/127.0.0.1/$P"
done
check "a client beyond --max-clients is refused" \
    eq "$(timeout 3 redis-cli -p "$P" PING 2>&1)" "ERR max number of clients reached"
for fd in $(seq 20 31); do
    eval "exec $fd>&-"
done
check "and served once others have left" wait_until 5 eval '[ "$(timeout 2 redis-cli -p "$P" PING)" = PONG ]'
check "refusals are counted" test "$(metric "$L" 'raftkv_clients_closed_total\{why="max_clients"\}')" -ge 1

# 2. --client-timeout: half a command, then silence: closed after about a second; an idle
# connection with nothing half-sent stays.
exec 40<>"/dev/tcp/127.0.0.1/$P"
printf '*1\r\n$4\r\nPI' >&40
exec 41<>"/dev/tcp/127.0.0.1/$P"
eof_on() { timeout 1 cat <&"$1" >/dev/null 2>&1; } # cat ends (0) at end of file
check "a partial request is closed after --client-timeout" wait_until 4 eof_on 40
check "an idle connection is not" eval '! eof_on 41'
printf 'PING\r\n' >&41
check "and still answers" eq "$(IFS= read -r -t 2 line <&41 && echo "${line%$'\r'}")" "+PONG"
# A RESP client idle after its answer holds no part of a request either (the reader had
# begun the next command, and such a client was closed as slow after the timeout).
exec 43<>"/dev/tcp/127.0.0.1/$P"
printf '*1\r\n$4\r\nPING\r\n' >&43
check "a RESP command is answered" eq "$(IFS= read -r -t 2 line <&43 && echo "${line%$'\r'}")" "+PONG"
sleep 1.5
check "and its client, idle past --client-timeout, is not closed" eval '! eof_on 43'
# An inline command right behind a RESP one, in the same packet, is answered as inline.
printf '*2\r\n$4\r\nECHO\r\n$1\r\na\r\nECHO b\r\n' >&43
check "an inline command behind a RESP one in one packet is answered" \
    eq "$(for _ in 1 2 3 4; do IFS= read -r -t 2 line <&43 && printf '%s ' "${line%$'\r'}"; done)" '$1 a $1 b '
exec 40>&- 41>&- 43>&-
check "timeouts are counted" test "$(metric "$L" 'raftkv_clients_closed_total\{why="timeout"\}')" -ge 1
# A client that keeps completing commands is not slow, even if every read ends in the
# middle of the next one (a long pipelined load): for 2.5 s, longer than the timeout.
exec 42<>"/dev/tcp/127.0.0.1/$P"
printf 'SET steady 0\r\nSE' >&42
for i in 1 2 3 4 5 6; do
    sleep 0.4
    printf 'T steady %d\r\nSE' "$i" >&42
done
printf 'T steady 7\r\n' >&42
check "a client that makes progress is not timed out" wait_until 5 eval '[ "$(r "$L" GET steady)" = 7 ]'
exec 42>&-

# 3. A client that pipelines GETs of a 4 MB value and never reads: the node stops working
# for it (its memory stays bounded), then closes it after --client-output-timeout.
head -c $((4 << 20)) /dev/zero | tr '\0' x >"$T/big"
check "a 4 MB value" eq "$(r "$L" -x SET big <"$T/big")" OK
before=$(rss_mb "$L")
exec 50<>"/dev/tcp/127.0.0.1/$P"
for _ in $(seq 1 200); do printf 'GET big\r\n'; done >&50 &
writer=$!
sleep 1
during=$(rss_mb "$L")
check "memory stays bounded while it does not read (${before} MB before, ${during} MB now)" \
    test "$during" -lt $((before + 100))
output_closed() { [ "$(metric "$L" 'raftkv_clients_closed_total\{why="output"\}')" -ge 1 ]; }
check "it is closed after --client-output-timeout" wait_until 15 output_closed
[ -n "${DEBUG:-}" ] && { curl -s "127.0.0.1:$(http_port "$L")/metrics" | grep -E "clients_closed|raftkv_clients " >&2; ss -tn | grep ":$P " >&2; }
kill "$writer" 2>/dev/null || true
wait "$writer" 2>/dev/null || true
exec 50>&-
# The same over HTTP: pipelined GETs of the big value, never read.
exec 51<>"/dev/tcp/127.0.0.1/$(http_port "$L")"
for _ in $(seq 1 100); do printf 'GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n'; done >&51 &
writer=$!
http_closed() { [ "$(metric "$L" 'raftkv_clients_closed_total\{why="output"\}')" -ge 2 ]; }
check "an HTTP client that does not read is closed too" wait_until 15 http_closed
kill "$writer" 2>/dev/null || true
wait "$writer" 2>/dev/null || true
exec 51>&-
check "the node still serves" eq "$(r "$L" GET k 2>&1)" ""
check "the 4 MB write and the unread replies did not depose the leader" eq "$(leader)" "$L"
finish
