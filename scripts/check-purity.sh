#!/usr/bin/env bash
# check-purity.sh DIR — fail when a C file in DIR includes anything but the C
# standard library's headers or the project's own quoted headers.
#
# raft/core must stay pure (docs/architecture.md): no I/O, no clock, no threads, so it
# may not include libuv, LMDB, protobuf-c, POSIX or system headers.
set -euo pipefail

dir=${1:?usage: check-purity.sh DIR}

# C11's standard headers (7.1.2), nothing else.
allowed=" assert.h complex.h ctype.h errno.h fenv.h float.h inttypes.h iso646.h limits.h
 locale.h math.h setjmp.h signal.h stdalign.h stdarg.h stdatomic.h stdbool.h stddef.h stdint.h
 stdio.h stdlib.h stdnoreturn.h string.h tgmath.h threads.h time.h uchar.h wchar.h wctype.h "
# ...minus those that reach outside the process or the clock.
forbidden=" signal.h threads.h time.h locale.h "

status=0
while IFS= read -r line; do
    file=${line%%:*}
    rest=${line#*:}
    lineno=${rest%%:*}
    inc=${rest#*:}
    if [[ $inc =~ \#[[:space:]]*include[[:space:]]*\<([^>]+)\> ]]; then
        h=${BASH_REMATCH[1]}
        if [[ $allowed != *" $h "* || $forbidden == *" $h "* ]]; then
            echo "$file:$lineno: raft/core must use only the C standard library: <$h>" >&2
            status=1
        fi
    elif [[ $inc =~ \#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]]; then
        h=${BASH_REMATCH[1]}
        case $h in
            */*) if [[ $h != ../include/raft.h ]]; then
                     echo "$file:$lineno: raft/core may include only its own headers and raft.h: \"$h\"" >&2
                     status=1
                 fi ;;
        esac
    else
        echo "$file:$lineno: unrecognised include: $inc" >&2
        status=1
    fi
done < <(grep -nE '^[[:space:]]*#[[:space:]]*include' "$dir"/*.[ch] /dev/null | sed 's/^\([^:]*\):\([0-9]*\):/\1:\2:/')

if [ $status -ne 0 ]; then
    echo "check-purity: $dir is not pure (see docs/architecture.md, 'The pure core')" >&2
fi
exit $status
