#!/usr/bin/env bash
# course.sh — the course (docs/course/) names only things that exist: every
# scenario, script, source file and doc a lesson names, and every relative link,
# so that a renamed scenario or doc breaks `make test`. The lessons are listed in
# docs/course/README.md (8 to 12 of them) and README.md links the course. And
# every `build/cc/raftsim run ...` command of a lesson's ```sh blocks still runs
# and exits 0 (with OBJ's raftsim, when it is built). The check must be able to
# fail: a name that does not exist is refused.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
course=docs/course
raftsim=${OBJ:-build/cc}/raftsim
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
    echo "  FAIL  $*"
    fail=$((fail + 1))
}

# names FILE: the repository paths FILE names (scenarios, scripts, sources, docs).
names() {
    grep -oE '(tests/scenario/[A-Za-z0-9_]+\.txt|cluster-scripts/[A-Za-z0-9_./-]*[A-Za-z0-9_]|(raft|kv|labs|scripts|proto)/[A-Za-z0-9_./-]+\.(c|h|sh|awk|md|proto)|docs/[A-Za-z0-9_/-]+\.md)' "$1" |
        sort -u
}
# links FILE: the targets of its relative markdown links, resolved from its folder.
links() {
    local dir
    dir=$(dirname "$1")
    grep -oE '\]\([^)#:]+(#[^)]*)?\)' "$1" | sed -E 's/^\]\(//; s/\)$//; s/#.*//' | grep -v '^$' |
        while read -r target; do realpath -m --relative-to=. "$dir/$target"; done | sort -u
}
# exists PATH: a file or folder of the tree.
exists() { [ -e "$1" ]; }

lessons=()
for f in "$course"/[0-9][0-9]-*.md; do
    [ -e "$f" ] && lessons+=("$f")
done
if [ "${#lessons[@]}" -ge 8 ] && [ "${#lessons[@]}" -le 12 ]; then ok; else bad "docs/course has ${#lessons[@]} lessons, not 8 to 12"; fi
for f in "${lessons[@]}"; do
    if grep -qF "($(basename "$f"))" "$course/README.md"; then ok; else bad "$course/README.md does not list $(basename "$f")"; fi
done
if grep -qF "docs/course/README.md" README.md; then ok; else bad "README.md does not link docs/course/README.md"; fi

for f in "$course/README.md" "${lessons[@]}"; do
    while read -r p; do
        [ -n "$p" ] || continue
        if exists "$p"; then ok; else bad "$f names $p, which does not exist"; fi
    done < <(names "$f")
    while read -r p; do
        [ -n "$p" ] || continue
        if exists "$p"; then ok; else bad "$f links to $p, which does not exist"; fi
    done < <(links "$f")
done

# The check must be able to fail: a lesson that names a missing scenario or doc.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'run tests/scenario/NoSuchScenario.txt, see [x](../no-such-doc.md)\n' >"$tmp/99-fake.md"
missing=0
while read -r p; do exists "$p" || missing=$((missing + 1)); done < <(names "$tmp/99-fake.md")
while read -r p; do exists "$p" || missing=$((missing + 1)); done < <(links "$tmp/99-fake.md")
if [ "$missing" = 2 ]; then ok; else bad "the check did not notice a missing scenario and a missing doc ($missing of 2)"; fi

# The simulator commands the lessons print: `build/cc/raftsim run ...` lines of
# ```sh blocks (up to a comment), run from the top of the tree with OBJ's raftsim.
if [ -x "$raftsim" ]; then
    while IFS=: read -r f cmd; do
        cmd=${cmd%%#*}
        read -r -a argv <<<"$cmd"
        if "$raftsim" "${argv[@]:1}" >/dev/null 2>&1; then ok; else bad "$f: '$cmd' did not exit 0"; fi
    done < <(for f in "${lessons[@]}"; do
        awk -v f="$f" '/^```sh/{on=1; next} /^```/{on=0} on && /^build\/cc\/raftsim run /{print f ":" $0}' "$f"
    done)
else
    echo "  (skipped running the lessons' raftsim commands: $raftsim is not built)"
fi

echo "course: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
