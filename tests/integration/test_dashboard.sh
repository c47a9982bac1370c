#!/usr/bin/env bash
# test_dashboard.sh — the dashboard (/ui/, docs/dashboard.md) in headless Chromium, against
# a 3-node cluster started here: one leader whose term matches /v1/status, a request
# followed, a new leader after kill -9 of the old one, a partition made from the page with
# its cut drawn and a leader on the majority side, and the replay page of
# Figure8PaperUnsafe stopping at its violation (tests/browser/dashboard.py). Screenshots go
# to the build folder (BUILD/screenshots); UPDATE_SCREENSHOTS=1 copies them to docs/images/.
# Skips, saying so, only where Chromium and its driver cannot be installed (make deps does).
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

RAFTSIM=$(dirname "$KVD")/raftsim
missing=""
[ -x /usr/bin/chromium ] || missing+=" chromium"
[ -x /usr/bin/chromedriver ] || missing+=" chromium-driver"
/usr/bin/python3 -c 'import selenium' 2>/dev/null || missing+=" python3-selenium"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then
        echo "  FAIL  the browser tests need$missing; make deps installs them"
        echo "test_dashboard: 0 passed, 1 failed"
        exit 1
    fi
    echo "  skipped: Chromium cannot be installed here (missing:$missing; not root, no sudo)"
    echo "test_dashboard: 0 passed, 0 failed (skipped)"
    exit 0
fi

start_cluster --enable-fault-injection
# The browser test kills a node itself: bash need not report it (cleanup still has the pids).
disown -a
check "a leader is elected" wait_until 10 has_leader
check "raftsim writes the replay page of Figure8PaperUnsafe" \
    "$RAFTSIM" run --html "$T/figure8.html" tests/scenario/Figure8PaperUnsafe.txt
shots=$(cd "$(dirname "$KVD")/.." && pwd)/screenshots
docs=""
[ "${UPDATE_SCREENSHOTS:-0}" = 1 ] && docs=$(pwd)/docs/images
cat >"$T/config.json" <<JSON
{"nodes": {
  "1": {"http": $(http_port 1), "pid": ${PID[1]}, "log": "$T/1.log"},
  "2": {"http": $(http_port 2), "pid": ${PID[2]}, "log": "$T/2.log"},
  "3": {"http": $(http_port 3), "pid": ${PID[3]}, "log": "$T/3.log"}},
 "replay": "$T/figure8.html", "shots": "$shots", "docs": "$docs"}
JSON
out=$(timeout 150 /usr/bin/python3 tests/browser/dashboard.py "$T/config.json" 2>&1) || true
printf '%s\n' "$out" | grep -v '^dashboard: '
last=$(printf '%s\n' "$out" | tail -n 1)
if [[ $last =~ ^dashboard:\ ([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    PASS=$((PASS + BASH_REMATCH[1]))
    FAIL=$((FAIL + BASH_REMATCH[2]))
else
    check "the browser test ran to its end" false
fi
finish
