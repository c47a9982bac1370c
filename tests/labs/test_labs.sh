#!/usr/bin/env bash
# test_labs.sh — the labs' grader can tell (docs/labs.md).
#
# For every lab N: (a) the real code passes `labs/grade.sh N`; (b) the copy
# `labs/make-lab.sh N` writes compiles warning-free with the Makefile's
# flags, and FAILS `labs/grade.sh N` (the stubs are not an answer), with a
# failure report that says how to replay it. To stay fast, only the core
# files the lab changed are compiled from the copy (with the copy's own
# Makefile); they are linked with this tree's other objects and the
# simulator, which no lab touches. OBJ is the build folder (the Makefile
# sets it). Ends with "N passed, M failed".
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
OBJ=${OBJ:-build/cc}
case $OBJ in
/*) ;;
*) OBJ=$root/$OBJ ;;
esac
LABS=${LABS:-1 2 3 4 5}
san=()
case $(basename "$OBJ") in
*-san) san=(SAN=1 "OPT=-O1 -g") ;;
esac
ldflags=()
[ ${#san[@]} -gt 0 ] && ldflags=("-fsanitize=address,undefined")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
ok() {
    echo "ok    $1"
    passed=$((passed + 1))
}
bad() {
    echo "FAIL  $1"
    failed=$((failed + 1))
}

cd "$root"
for lab in $LABS; do
    start=$SECONDS
    # (a) The reference solution passes its lab.
    if RAFTSIM="$OBJ/raftsim" labs/grade.sh "$lab" >"$tmp/real.log" 2>&1; then
        ok "lab $lab: the real code passes ($(tail -n 1 "$tmp/real.log"))"
    else
        cat "$tmp/real.log"
        bad "lab $lab: the real code fails its own grade"
        continue
    fi

    # (b) The stubbed copy compiles and fails.
    copy=$tmp/lab-$lab
    if ! labs/make-lab.sh "$lab" "$copy" >"$tmp/make-lab.log" 2>&1; then
        cat "$tmp/make-lab.log"
        bad "lab $lab: make-lab.sh failed"
        continue
    fi
    objs=()
    built=true
    for f in "$copy"/raft/core/*.c; do
        name=$(basename "$f" .c)
        if cmp -s "$f" "raft/core/$name.c"; then
            objs+=("$OBJ/raft/core/$name.o")
            continue
        fi
        if ! make --no-print-directory -C "$copy" "${san[@]}" OBJ="$tmp/obj-$lab" \
            "$tmp/obj-$lab/raft/core/$name.o" >"$tmp/cc.log" 2>&1; then
            cat "$tmp/cc.log"
            built=false
        fi
        objs+=("$tmp/obj-$lab/raft/core/$name.o")
    done
    if ! $built || ! ${CC:-cc} "${ldflags[@]}" "$OBJ/raft/sim/raftsim.o" "$OBJ/libraftsim.a" \
        "$OBJ/liblincheck.a" "$OBJ/raft/io/tracejson.o" "$OBJ/gen/ui_files.o" "${objs[@]}" -o "$tmp/raftsim-$lab" \
        2>"$tmp/ld.log"; then
        cat "$tmp/ld.log" 2>/dev/null || true
        bad "lab $lab: the stubbed copy does not build"
        continue
    fi
    if (cd "$copy" && RAFTSIM="$tmp/raftsim-$lab" GRADE_FAILFAST=1 labs/grade.sh "$lab") \
        >"$tmp/stub.log" 2>&1; then
        cat "$tmp/stub.log"
        bad "lab $lab: the stubbed copy PASSES its grade (the grader cannot tell)"
    elif ! grep -q '^== the first failure: ' "$tmp/stub.log" ||
        ! grep -q '^== replay' "$tmp/stub.log"; then
        cat "$tmp/stub.log"
        bad "lab $lab: the stubbed copy fails without a failure report and a replay line"
    else
        first=$(grep -m 1 ' FAIL ' "$tmp/stub.log" | awk '{ print $1 }')
        ok "lab $lab: the stubbed copy fails (first: $first; $((SECONDS - start)) s for the lab)"
    fi
    rm -rf "$copy" "$tmp/obj-$lab"
done
echo "labs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
