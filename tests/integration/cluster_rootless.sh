#!/usr/bin/env bash
# cluster_rootless.sh — netns mode without root: run as root, it becomes `nobody` and
# drives a 3-node cluster through the cluster script (a sandbox with a user namespace):
# up, a partition that elects a new leader, a delay, heal, kill and restart, down.
# Prints "cluster rootless: N passed, M failed"; skips (0 failed) when it cannot run:
# not root, no runuser, no user namespaces, or a tree `nobody` cannot read.
set -euo pipefail

KVD=${KVD:-build/cc/kvd}
KVD=$(cd "$(dirname "$KVD")" && pwd)/$(basename "$KVD")
SCRIPT=$(cd "$(dirname "$0")/../../cluster-scripts" && pwd)/cluster
DIR=$(mktemp -d /tmp/cluster-rootless.XXXXXX)
OFF=14000
PASS=0
FAIL=0
skip() {
    echo "skipped: $*"
    echo "cluster rootless: 0 passed, 0 failed"
    rm -rf "$DIR"
    exit 0
}
as_nobody() { runuser -u nobody -- env CLUSTER_DIR="$DIR/c" CLUSTER_PORTS="$OFF" KVD="$KVD" "$@"; }
c() { as_nobody "$SCRIPT" "$@" 2>&1; }
[ "$(id -u)" = 0 ] || skip "not root (nothing to drop)"
command -v runuser >/dev/null || skip "no runuser"
chown nobody "$DIR"
as_nobody test -x "$KVD" -a -r "$SCRIPT" || skip "nobody cannot run $KVD"
as_nobody unshare --user --map-root-user --net true 2>/dev/null || skip "no unprivileged user namespaces"
trap 'c down >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT

check() {
    local what=$1
    shift
    if "$@"; then
        PASS=$((PASS + 1))
        echo "  ok    $what"
    else
        FAIL=$((FAIL + 1))
        echo "  FAIL  $what"
    fi
}
has() { grep -q -- "$1" <<<"$2"; }

check "up as nobody, in netns mode" has "mode: netns" "$(c up -n 3 -- --election-timeout 500 --heartbeat 50)"
L=$(c leader || echo 1)
check "a write through a relay" has OK "$(redis-cli -p $((6380 + OFF + L)) set k v 2>&1)"
rest=$(seq 1 3 | grep -vx "$L" | paste -sd,)
check "partition: nft rules in the sandbox" has "nft rules" "$(c partition "$L" "$rest")"
new_leader=false
for _ in $(seq 1 50); do
    l=$(c leader || true)
    if [ -n "$l" ] && [ "$l" != "$L" ]; then
        new_leader=true
        break
    fi
    sleep 0.1
done
check "the majority elects a new leader" "$new_leader"
check "delay: NFQUEUE in the sandbox" has NFQUEUE "$(c delay 10)"
c heal >/dev/null
c kill 2 >/dev/null
check "kill and restart" has restarted "$(c restart 2)"
check "down" has stopped "$(c down)"
echo "cluster rootless: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
