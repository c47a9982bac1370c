#!/usr/bin/env bash
# profile-write.sh — `make profile`: where a replicated SET's time and bytes go. Starts a
# 3-node kvd cluster on 127.0.0.1 (fsync on), and for SET at 1 and at 64 connections
# prints, for the leader and a follower and for each storage thread (the log's, whose
# commits acknowledgements wait for, and the apply thread's): transactions per second,
# entries and bytes written per transaction, and the time spent building one (log
# writes; applying) and in LMDB's commit (writing pages, syncing) -- from /metrics --
# and the CPU time the leader and the follower spent per request (/proc). Then, with strace, the system calls per request on the leader and a follower
# at 1 connection, and the thread hand-offs among them (futex wake-ups and libuv's
# eventfd writes). Figures are printed, never asserted.
#
#   scripts/profile-write.sh BINDIR [SECONDS]
#
# Everything lives in a temporary directory on ports 28xxx and is stopped (by PID) when
# the script exits.
set -euo pipefail
# shellcheck source=scripts/kvd-cluster.sh
. "$(dirname "$0")/kvd-cluster.sh"

BIN=${1:-}
SECS=${2:-5}
if [ -z "$BIN" ] || [ ! -x "$BIN/kvd" ] || [ ! -x "$BIN/kvbench" ]; then
    sed -n '2,13s/^# \{0,1\}//p' "$0" >&2
    exit 2
fi
DIR=$(mktemp -d /tmp/kvd-profile.XXXXXX)
PIDS=()
cleanup() {
    if [ ${#PIDS[@]} -gt 0 ]; then
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        wait "${PIDS[@]}" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

N=3
kvd_cluster profile "$BIN" "$DIR" 28000
follower=$((leader % N + 1))
LPID=${PIDS[$((leader - 1))]}
FPID=${PIDS[$((follower - 1))]}
echo "kvd: 3 nodes on 127.0.0.1, fsync on; leader node $leader, follower node $follower;" \
    "SET of 100-byte values over 10,000 keys"
# Fill the keys first, so the runs below update existing ones.
"$BIN/kvbench" --node "127.0.0.1:$((28100 + leader))" --op set --connections 16 --seconds 2 \
    >/dev/null

# snap NODE THREAD: a node's counters for one storage thread (log or apply), one line:
# txns entries bytes build commit.
snap() {
    curl -s --max-time 2 "127.0.0.1:$((28200 + $1))/metrics" | awk -v t="$2" '
        $0 ~ "^raftkv_storage_transactions_total\\{thread=\"" t "\"" { n = $2 }
        /^raftkv_entries_persisted_total / { e = $2 }
        /^raftkv_entries_applied_total / { a = $2 }
        $0 ~ "^raftkv_storage_bytes_written_total\\{thread=\"" t "\"" { b = $2 }
        $0 ~ "^raftkv_storage_seconds_total\\{thread=\"" t "\",phase=\"build\"" { bs = $2 }
        $0 ~ "^raftkv_storage_seconds_total\\{thread=\"" t "\",phase=\"commit\"" { cs = $2 }
        END { print n + 0, (t == "log" ? e : a) + 0, b + 0, bs + 0, cs + 0 }'
}

# report NAME BEFORE AFTER SECONDS
report() {
    awk -v name="$1" -v s="$4" -v a="$2" -v b="$3" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        t = y[1] - x[1]; e = y[2] - x[2]; by = y[3] - x[3]; bs = y[4] - x[4]; cs = y[5] - x[5]
        if (t <= 0) { printf "    %-16s no storage transactions\n", name; exit }
        printf "    %-16s %6.0f txn/s  %6.2f entries/txn  %7.1f KiB/txn  build %5.3f ms  commit %5.3f ms per txn\n",
            name, t / s, e / t, by / t / 1024, 1000 * bs / t, 1000 * cs / t
    }'
}

# cpu_ticks PID: the process's user and system time, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

for c in 1 64; do
    declare -A before=()
    lc0=$(cpu_ticks "$LPID")
    fc0=$(cpu_ticks "$FPID")
    for who in leader follower; do
        node=$leader
        [ $who = follower ] && node=$follower
        for t in log apply; do
            before[$who-$t]=$(snap "$node" $t)
        done
    done
    line=$("$BIN/kvbench" --node "127.0.0.1:$((28100 + leader))" --op set --connections "$c" \
        --seconds "$SECS")
    echo "  $line"
    awk -v rps="$(awk '{print $4}' <<<"$line")" -v s="$SECS" -v hz="$HZ" \
        -v l="$(($(cpu_ticks "$LPID") - lc0))" -v f="$(($(cpu_ticks "$FPID") - fc0))" 'BEGIN {
        n = rps * s
        if (n > 0)
            printf "    CPU per request: leader %.0f us, follower %.0f us\n", 1e6 * l / hz / n, 1e6 * f / hz / n
    }'
    for who in leader follower; do
        node=$leader
        [ $who = follower ] && node=$follower
        for t in log apply; do
            report "$who $t" "${before[$who-$t]}" "$(snap "$node" $t)" "$SECS"
        done
    done
done

if ! command -v strace >/dev/null 2>&1; then
    echo "strace is not installed: no system call counts"
    exit 0
fi
echo "system calls per request, SET at 1 connection (under strace, which slows everything):"
for who in leader follower; do
    pid=$LPID
    [ $who = follower ] && pid=$FPID
    strace -f -qq -o "$DIR/strace.$who" -p "$pid" &
    sp=$!
    sleep 0.5
    line=$("$BIN/kvbench" --node "127.0.0.1:$((28100 + leader))" --op set --connections 1 \
        --seconds 2)
    kill -INT "$sp" 2>/dev/null || true
    wait "$sp" 2>/dev/null || true
    reqs=$(awk '{print int($4 * 2)}' <<<"$line")
    [ "$reqs" -gt 0 ] || continue
    awk -v who="$who" -v n="$reqs" '
        { sub(/^[0-9]+ +/, "") }
        /^<\.\.\. / { next }
        { split($0, a, "("); all++ }
        /^futex\(.*FUTEX_WAKE/ { wake++ }
        /^write\([0-9]+, "\\1\\0\\0\\0\\0\\0\\0\\0", 8/ { efd++ }
        END {
            printf "    %-9s %5.1f syscalls/request; hand-offs %4.1f (futex wakes %4.1f, eventfd writes %4.1f)\n", who, all / n, (wake + efd) / n, wake / n, efd / n
        }' "$DIR/strace.$who"
    # The most frequent calls, per request.
    sed -E 's/^[0-9]+ +//; /^<\.\.\. /d; s/\(.*//' "$DIR/strace.$who" | sort | uniq -c |
        sort -rn | head -8 | awk -v n="$reqs" '{ printf " %s %.1f", $2, $1 / n } END { print "" }' |
        sed 's/^/             /'
done
