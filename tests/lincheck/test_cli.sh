#!/usr/bin/env bash
# test_cli.sh — the lincheck command line: its exit statuses, its reports, its refusals.
#
# OBJ is the build folder (set by tests/run.sh). Prints "N passed, M failed".
set -euo pipefail

OBJ=${OBJ:-build/cc}
LINCHECK="$OBJ/lincheck"
tmp=$(mktemp -d)
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
pass=0
fail=0

# expect NAME STATUS CMD...: CMD must exit with STATUS.
expect() {
    local name=$1 want=$2 got=0
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err" || got=$?
    if [ "$got" -eq "$want" ]; then
        echo "  ok    $name"
        pass=$((pass + 1))
    else
        echo "  FAIL  $name (exit $got, wanted $want)"
        sed 's/^/        /' "$tmp/err" | head -5
        fail=$((fail + 1))
    fi
}

# grep_out NAME PATTERN FILE: FILE must contain PATTERN.
grep_out() {
    if grep -q -- "$2" "$3"; then
        echo "  ok    $1"
        pass=$((pass + 1))
    else
        echo "  FAIL  $1 (no \"$2\" in $3)"
        fail=$((fail + 1))
    fi
}

expect "a generated history is LINEARIZABLE (exit 0)" 0 \
    "$LINCHECK" --generate "$tmp/good.jsonl" --ops 5000 --seed 3 --check
grep_out "the report starts with the verdict" "^LINEARIZABLE: 5000 ops on 20 keys" "$tmp/out"
grep_out "the report counts the nemesis events" "nemesis events: 3" "$tmp/out"

expect "a stale read is a VIOLATION (exit 1)" 1 \
    "$LINCHECK" --generate "$tmp/bad.jsonl" --ops 5000 --seed 3 --mutate stale --check
expect "... found again from the file, with an HTML page" 1 \
    "$LINCHECK" "$tmp/bad.jsonl" --html "$tmp/bad.html"
grep_out "the report shows the failing window" "could have seen" "$tmp/out"
grep_out "the page has a timeline" "<svg" "$tmp/bad.html"
if grep -qiE "<script|src=|href=" "$tmp/bad.html"; then
    echo "  FAIL  the page loads nothing from elsewhere"
    fail=$((fail + 1))
else
    echo "  ok    the page loads nothing from elsewhere"
    pass=$((pass + 1))
fi

expect "--json prints JSON" 1 "$LINCHECK" "$tmp/bad.jsonl" --json
grep_out "... with the verdict" '"verdict": "VIOLATION"' "$tmp/out"

expect "a budget too small is UNKNOWN (exit 2)" 2 sh -c \
    "'$LINCHECK' --generate '$tmp/one.jsonl' --ops 5000 --keys 1 && '$LINCHECK' '$tmp/one.jsonl' --budget-seconds 0.000001"

printf '{"type":"invoke","process":1,"op":"get","key":"x","time":1}\nnot json\n' >"$tmp/broken.jsonl"
expect "a malformed history is refused (exit 3)" 3 "$LINCHECK" "$tmp/broken.jsonl"
grep_out "... naming the line" "broken.jsonl:2:" "$tmp/err"
expect "an unknown option is refused (exit 3)" 3 "$LINCHECK" --frobnicate

echo "lincheck cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
