#!/usr/bin/env bash
# test_trace_json.sh — every JSON record the simulator writes validates against
# docs/trace.schema.json (tracecheck), names a rule listed in docs/trace.md, and pairs
# each receipt with its send; and the checker rejects records that break the schema.
#
# OBJ is the build folder (default build/cc).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
OBJ=${OBJ:-build/cc}
RAFTSIM=$OBJ/raftsim
CHECK=$OBJ/tracecheck
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }

# Every scenario: the whole vocabulary of kinds must occur among them.
if "$RAFTSIM" run --json tests/scenario/*.txt >"$tmp/scenarios.jsonl" 2>"$tmp/scenarios.err"; then
    ok "raftsim run --json: every scenario ran ($(wc -l <"$tmp/scenarios.jsonl") records)"
else
    bad "raftsim run --json failed: $(tail -n 3 "$tmp/scenarios.err")"
fi
if "$CHECK" --pairs --rules docs/trace.md \
    --expect-kinds rule,send,recv,drop,propose,commit,apply,answer,state,net,note,script,violation,verdict \
    "$tmp/scenarios.jsonl"; then
    ok "scenario records validate, every kind occurs"
else
    bad "scenario records do not validate"
fi

# Random fault schedules (3 and 5 nodes, every fault): what no scenario thought of.
for seed in 1 2 3 4 5 6; do
    nodes=$((seed % 2 ? 5 : 3))
    "$RAFTSIM" --json --seed "$seed" --nodes "$nodes" >>"$tmp/random.jsonl" 2>>"$tmp/random.err" || true
done
if "$CHECK" --pairs --rules docs/trace.md --expect-kinds rule,send,recv,drop,state,verdict \
    "$tmp/random.jsonl"; then
    ok "random schedules' records validate"
else
    bad "random schedules' records do not validate"
fi

# The same options give the same bytes (the simulator is deterministic).
"$RAFTSIM" --json --seed 3 --nodes 3 >"$tmp/a.jsonl" 2>/dev/null
"$RAFTSIM" --json --seed 3 --nodes 3 >"$tmp/b.jsonl" 2>/dev/null
if cmp -s "$tmp/a.jsonl" "$tmp/b.jsonl" && [ -s "$tmp/a.jsonl" ]; then
    ok "raftsim --json is deterministic"
else
    bad "raftsim --json differs between two runs of one seed"
fi

# The checker must be able to fail: each line below breaks the schema one way.
rej() { # rej WHAT LINE
    printf '%s\n' "$2" >"$tmp/bad.jsonl"
    if "$CHECK" --pairs --rules docs/trace.md "$tmp/bad.jsonl" >/dev/null 2>&1; then
        bad "tracecheck accepted a record with $1"
    else
        ok "tracecheck rejects a record with $1"
    fi
}
rej "no kind" '{"t":1,"node":1,"group":0}'
rej "an unknown kind" '{"t":1,"kind":"bogus","node":1,"group":0}'
rej "an unknown member" '{"t":1,"kind":"note","node":0,"group":0,"text":"x","colour":"red"}'
rej "a string for a number" '{"t":"1","kind":"note","node":0,"group":0,"text":"x"}'
rej "a negative time" '{"t":-1,"kind":"note","node":0,"group":0,"text":"x"}'
rej "a rule without its role" '{"t":1,"kind":"rule","node":1,"group":0,"term":1,"rule":"§5.2 vote granted","cite":"§5.2","text":"vote granted"}'
rej "a rule that is not cite + text" '{"t":1,"kind":"rule","node":1,"group":0,"term":1,"role":"leader","rule":"§5.2 vote granted","cite":"§5.3","text":"vote granted"}'
rej "a rule docs/trace.md does not list" '{"t":1,"kind":"rule","node":1,"group":0,"term":1,"role":"leader","rule":"§5.2 made up","cite":"§5.2","text":"made up"}'
rej "a receipt without a send" '{"t":1,"kind":"recv","node":2,"group":0,"id":7,"from":1,"to":2,"type":"TimeoutNow","term":1,"msg":{}}'
rej "a log run of two numbers" '{"t":1,"kind":"state","node":1,"group":0,"up":true,"term":1,"role":"leader","vote":1,"leader":1,"commit":0,"applied":0,"last":1,"log_from":1,"log":[[1,1]]}'
rej "broken JSON" '{"t":1,"kind":"note",'
printf '%s\n' '{"t":1,"kind":"send","node":1,"group":0,"id":7,"from":1,"to":2,"type":"TimeoutNow","term":1,"msg":{}}' \
    '{"t":2,"kind":"recv","node":2,"group":0,"id":7,"from":1,"to":2,"type":"TimeoutNow","term":1,"msg":{}}' >"$tmp/good.jsonl"
if "$CHECK" --pairs "$tmp/good.jsonl" >/dev/null; then
    ok "tracecheck accepts a send and its receipt"
else
    bad "tracecheck rejected a valid send and its receipt"
fi

echo "trace json: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
