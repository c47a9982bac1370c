#!/usr/bin/env bash
# --max-request-bytes: the largest RESP command or HTTP body a node takes (Redis'
# proto-max-bulk-len, etcd's --max-request-bytes). One a byte over gets an error that
# names the limit (HTTP: 413), the connection closes, the key keeps its value, and the
# refusal is counted; one just under is served.
# shellcheck source=tests/integration/lib.sh
NODES=1
. "$(dirname "$0")/lib.sh"

EXTRA=(--max-request-bytes 65536)
start_cluster
check "the node leads" wait_until 5 has_leader
H="127.0.0.1:$(http_port 1)"
head -c 60000 /dev/zero | tr '\0' a >"$T/ok"
head -c 70000 /dev/zero | tr '\0' b >"$T/big"

check "a SET under the limit is served" eq "$(r 1 -x SET k <"$T/ok")" OK
out=$(r 1 -x SET k <"$T/big")
check "a SET over it is refused, naming the limit" \
    grep -q "^ERR command too large (over 65536 bytes, --max-request-bytes)" <<<"$out"
check "and the key keeps its value (the one under the limit)" eq "$(r 1 GET k | tr -d '\n')" "$(cat "$T/ok")"
code=$(timeout 5 curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary @"$T/big" "$H/v1/kv/h")
check "an HTTP PUT over the limit: 413" eq "$code" 413
code=$(timeout 5 curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary @"$T/ok" "$H/v1/kv/h")
check "one under it: 200" eq "$code" 200
check "the refusals are counted" \
    test "$(metric 1 'raftkv_clients_closed_total\{why="too_large"\}')" -ge 2
out=$("$KVD" --id 1 --data "$T/x" --nodes 1 --max-request-bytes 100 2>&1) || true
check "a limit under 1024 is refused at start" grep -q "at least 1024" <<<"$out"
finish
