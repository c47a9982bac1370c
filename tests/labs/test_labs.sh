#!/usr/bin/env bash
# test_labs.sh — the labs' grader can tell (docs/labs.md).
#
# For every lab N: (a) the real code passes `labs/grade.sh N` -- the whole
# grade, the integration tests of labs 6 and 7 included; (b) the copy
# `labs/make-lab.sh N` writes compiles warning-free with the Makefile's
# flags, and FAILS `labs/grade.sh N` (the stubs are not an answer), with a
# failure report that says how to replay it. To stay fast, only the files
# the lab changed (in raft/core or kv/) are compiled from the copy (with the
# copy's own Makefile); they are linked with this tree's other objects: the
# core's into the simulator, kv/'s into kvd and the unit suites the kv labs
# are graded by (test_ring, test_rebalance). For labs 6 and 7 the proof that
# the stubs fail uses only the grade's unit tests (GRADE_UNIT_ONLY=1): the
# integration tests of a broken server would run until their checks time
# out, about a minute each, and the unit tests already fail in a second;
# `make grade` in a copy runs the whole grade. OBJ is the build folder (the
# Makefile sets it). Ends with "N passed, M failed".
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
OBJ=${OBJ:-build/cc}
case $OBJ in
/*) ;;
*) OBJ=$root/$OBJ ;;
esac
LABS=${LABS:-1 2 3 4 5 6 7}
# What the unit suites and kvd link besides their objects (the Makefile's
# PKGS_PROTO, PKGS_IO, PKGS_KV and LIBS_KV).
kv_libs() {
    pkg-config --libs libprotobuf-c lmdb libuv libsodium hiredis jansson libxxhash
    echo -lhttp_parser
}
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
    if RAFTSIM="$OBJ/raftsim" GRADE_BIN="$OBJ" labs/grade.sh "$lab" >"$tmp/real.log" 2>&1; then
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
    objs=()    # the core's objects, for the simulator
    kv_objs=() # the kv objects the lab changed
    built=true
    for f in "$copy"/raft/core/*.c "$copy"/kv/*.c; do
        rel=${f#"$copy"/}
        name=${rel%.c}
        if cmp -s "$f" "$rel"; then
            [[ $rel == raft/core/* ]] && objs+=("$OBJ/$name.o")
            continue
        fi
        if ! make --no-print-directory -C "$copy" "${san[@]}" OBJ="$tmp/obj-$lab" \
            "$tmp/obj-$lab/$name.o" >"$tmp/cc.log" 2>&1; then
            cat "$tmp/cc.log"
            built=false
        fi
        if [[ $rel == raft/core/* ]]; then
            objs+=("$tmp/obj-$lab/$name.o")
        else
            kv_objs+=("$tmp/obj-$lab/$name.o")
        fi
    done
    if ! $built || ! ${CC:-cc} "${ldflags[@]}" "$OBJ/raft/sim/raftsim.o" "$OBJ/libraftsim.a" \
        "$OBJ/liblincheck.a" "$OBJ/raft/io/tracejson.o" "$OBJ/gen/ui_files.o" "${objs[@]}" -o "$tmp/raftsim-$lab" \
        2>"$tmp/ld.log"; then
        cat "$tmp/ld.log" 2>/dev/null || true
        bad "lab $lab: the stubbed copy does not build"
        continue
    fi
    unit_only=()
    if [ ${#kv_objs[@]} -gt 0 ]; then
        # This tree's libkv.a with the copy's objects in place of its own (ar
        # names members by their file names), linked into kvd and the suites.
        bin=$tmp/bin-$lab
        mkdir -p "$bin/tests"
        cp "$OBJ/libkv.a" "$tmp/libkv-$lab.a"
        libs=("$tmp/libkv-$lab.a" "$OBJ/libraftio.a" "$OBJ/libraft.a" "$OBJ/libproto.a")
        read -r -a more <<<"$(kv_libs | tr '\n' ' ')"
        if ! ar rcs "$tmp/libkv-$lab.a" "${kv_objs[@]}" 2>"$tmp/ld.log" ||
            ! ${CC:-cc} "${ldflags[@]}" "$OBJ/kv/kvd.o" "${libs[@]}" "${more[@]}" \
                -o "$bin/kvd" 2>>"$tmp/ld.log"; then
            built=false
        fi
        for t in test_ring test_rebalance; do
            ${CC:-cc} "${ldflags[@]}" "$OBJ/tests/unit/$t.o" "$OBJ/tests/harness.o" \
                "$OBJ/libraftsim.a" "${libs[@]}" "${more[@]}" -o "$bin/tests/$t" \
                2>>"$tmp/ld.log" || built=false
        done
        if ! $built; then
            cat "$tmp/ld.log"
            bad "lab $lab: the stubbed copy's kvd or unit suites do not link"
            continue
        fi
        unit_only=(GRADE_UNIT_ONLY=1 GRADE_BIN="$bin")
    fi
    if (cd "$copy" && env RAFTSIM="$tmp/raftsim-$lab" GRADE_FAILFAST=1 ${unit_only[@]+"${unit_only[@]}"} \
        labs/grade.sh "$lab") >"$tmp/stub.log" 2>&1; then
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
    rm -rf "$copy" "$tmp/obj-$lab" "$tmp/bin-$lab" "$tmp/libkv-$lab.a"
done
echo "labs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
