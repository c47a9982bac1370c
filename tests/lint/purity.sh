#!/usr/bin/env bash
# purity.sh — the purity lint must pass on raft/core and must fail when a
# file there includes a header from outside the C standard library.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
check=$here/scripts/check-purity.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pass=0
fail=0
verdict() { # verdict NAME EXPECTED_STATUS ACTUAL_STATUS
    if [ "$2" = "$3" ]; then
        echo "  ok    $1"
        pass=$((pass + 1))
    else
        echo "  FAIL  $1 (exit $3, wanted $2)"
        fail=$((fail + 1))
    fi
}

status=0
"$check" "$here/raft/core" >/dev/null 2>&1 || status=$?
verdict "raft/core is pure" 0 "$status"

for header in '<uv.h>' '<lmdb.h>' '<protobuf-c/protobuf-c.h>' '<sys/socket.h>' '<pthread.h>' \
    '<time.h>' '"../../kv/kv.h"'; do
    rm -rf "$tmp/core"
    cp -r "$here/raft/core" "$tmp/core"
    printf '#include %s\n' "$header" >>"$tmp/core/log.c"
    status=0
    "$check" "$tmp/core" >/dev/null 2>&1 || status=$?
    verdict "including $header is refused" 1 "$status"
done

echo "purity: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
