#!/usr/bin/env bash
# trace-vocabulary.sh — every rule text the core can emit is documented in
# docs/trace.md (and the check itself can fail on an unknown rule).
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
doc=$here/docs/trace.md
pass=0
fail=0

# The rule texts: string literals in raft/core that start with a citation.
mapfile -t rules < <(grep -ho '"\(§\|thesis §\|UNSAFE §\)[^"]*"' "$here"/raft/core/*.c | tr -d '"' | sort -u)
if [ "${#rules[@]}" -lt 20 ]; then
    echo "  FAIL  found only ${#rules[@]} rule texts in raft/core (the extraction is broken)"
    fail=$((fail + 1))
fi
for rule in "${rules[@]}"; do
    # A rule split over two C string literals is documented by its first part.
    if grep -qF -- "$rule" "$doc"; then
        pass=$((pass + 1))
    else
        echo "  FAIL  not in docs/trace.md: $rule"
        fail=$((fail + 1))
    fi
done
# The check must be able to fail.
if grep -qF -- "§9.9 a rule nobody wrote" "$doc"; then
    fail=$((fail + 1))
else
    pass=$((pass + 1))
fi
echo "trace vocabulary: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
