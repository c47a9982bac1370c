#!/usr/bin/env bash
# make-lab.sh — write a student's copy of the tree for one lab (make lab LAB=N).
#
#   labs/make-lab.sh N [DIR]      (default DIR: labs/out/lab-N)
#
# The copy is the whole tree (the files git tracks, or, in a tree that is not
# a git checkout, every file but build folders) with the regions of lab N cut
# out of raft/core (labs 1-5: the Raft core) and kv/ (labs 6-7: placement,
# routing and rebalancing in kvd): each region marked `/* LAB N BEGIN: ... */`
# ... `/* LAB N END */` in the real source becomes a TODO(lab N) comment and a
# stub that compiles (labs/stub.awk). The regions of the other labs stay as
# they are, so each lab stands alone. The copy gets LAB.md (the lab's
# README, from labs/labN.md, with the list of TODOs) and labs/this-lab (so
# that `make grade` there grades lab N). Nothing is hand-maintained: the
# reference solution is the project's own code.
#
# DIR must not exist yet (a student's work is never overwritten), unless
# FORCE=1 and DIR is a lab copy made by this script.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
lab=${1:-}
if ! [[ $lab =~ ^[0-9]+$ ]] || [ ! -f "$root/labs/lab$lab.md" ]; then
    labs=$(for f in "$root"/labs/lab[0-9]*.md; do basename "$f" .md; done | sed 's/^lab//' | tr '\n' ' ')
    echo "usage: labs/make-lab.sh N [DIR]   (labs: $labs)" >&2
    exit 2
fi
dir=${2:-$root/labs/out/lab-$lab}
case $dir in
/*) ;;
*) dir=$PWD/$dir ;;
esac

if [ -e "$dir" ]; then
    if [ "${FORCE:-0}" = 1 ] && [ -f "$dir/labs/this-lab" ]; then
        rm -rf "$dir"
    else
        echo "make-lab: $dir exists; choose another LABDIR= (or FORCE=1 to replace a lab copy)" >&2
        exit 1
    fi
fi
mkdir -p "$dir"

# The tree: what git knows (tracked and new, not ignored), or everything but
# build output and other lab copies.
if git -C "$root" rev-parse --show-toplevel >/dev/null 2>&1 &&
    [ "$(git -C "$root" rev-parse --show-toplevel)" = "$root" ]; then
    (cd "$root" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -xf - -C "$dir"
else
    (cd "$root" && tar --exclude=./.git --exclude='./build' --exclude='./build-*' \
        --exclude=./labs/out --exclude=./run -cf - .) | tar -xf - -C "$dir"
fi

# Cut the lab's regions out of the sources that carry labs.
src_dirs=(raft/core kv)
total=0
changed=()
for f in "$dir"/raft/core/*.c "$dir"/raft/core/*.h "$dir"/kv/*.c "$dir"/kv/*.h; do
    [ -f "$f" ] || continue
    tmp=$f.lab
    if ! awk -v lab="$lab" -f "$root/labs/stub.awk" "$f" >"$tmp" 2>"$tmp.err"; then
        cat "$tmp.err" >&2
        rm -f "$tmp" "$tmp.err"
        exit 1
    fi
    n=$(sed -n 's/^regions: //p' "$tmp.err")
    rm -f "$tmp.err"
    if [ "${n:-0}" -gt 0 ]; then
        mv "$tmp" "$f"
        changed+=("$f")
        total=$((total + n))
    else
        rm -f "$tmp"
    fi
done
if [ "$total" -eq 0 ]; then
    echo "make-lab: no region of lab $lab is marked in ${src_dirs[*]}" >&2
    exit 1
fi
if command -v clang-format >/dev/null; then
    clang-format -i "${changed[@]}"
fi

echo "$lab" >"$dir/labs/this-lab"
{
    cat "$root/labs/lab$lab.md"
    echo
    echo "## Your TODOs"
    echo
    echo "Generated with this copy (\`grep -n 'TODO(lab $lab)' raft/core/*.c kv/*.c\` finds them again):"
    echo
    # A line per TODO: where, in which function, and its first sentence.
    (cd "$dir" && awk -v tag="TODO(lab $lab):" '
        FNR == 1 { fn = "" }
        /^[A-Za-z].*\(/ && !/;[ \t]*$/ { f = $0; sub(/\(.*/, "", f); sub(/.*[ *]/, "", f); fn = f }
        index($0, tag) {
            d = substr($0, index($0, tag) + length(tag) + 1)
            p = index(d, ". ")
            d = p ? substr(d, 1, p) : (d ~ /\.$/ ? d : d " ...")
            printf "- `%s:%d` in `%s()`: %s\n", FILENAME, FNR, fn, d
        }' raft/core/*.c kv/*.c)
} >"$dir/LAB.md"

echo "lab $lab: $total regions cut out of ${#changed[@]} files (${changed[*]#"$dir"/})"
echo "the copy: $dir"
echo "next: cd $dir && less LAB.md && make grade   (it fails until you write the TODOs)"
