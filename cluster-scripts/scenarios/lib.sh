#!/usr/bin/env bash
# lib.sh — what every scenario shares: narration, client operations recorded with
# their outcomes, and the checks every scenario ends with.
#
# A scenario uses the cluster already running in CLUSTER_DIR when it has the nodes it
# needs (`cluster up -n 5` first, as the README shows), and otherwise starts its own
# in a temporary directory and stops it at the end, however the script ends.
# KVD_OPTS adds kvd options to a cluster it starts (e.g. "--no-check-quorum
# --allow-unsafe --read-mode unsafe_local" to watch a weakened server get caught).
# Every client operation goes to ops.log in the cluster directory: time, node,
# operation, key, value, outcome. SCENARIO_TRACE=1 (on a cluster the scenario starts)
# also records every node's trace (kvd --trace-file) and writes, beside ops.log, all of
# it in one file (trace.jsonl) and the dashboard's replay of it (replay.html,
# docs/dashboard.md); the directory is then kept.
#
# The checks: no acknowledged write lost; replicas identical after the heal (same
# applied index and content hash everywhere); at most one leader per term (from the
# nodes' logs). A failed expectation prints FAIL and the scenario exits non-zero.
#
# Sharded clusters (cluster up --shards G; or SCENARIO_SHARDS=G [SCENARIO_REPLICAS=R]
# for a cluster the scenario starts): the checks hold per shard (a shard's replicas
# identical, at most one leader per term in each shard). For a scenario written for
# one group, "the leader" is the leader of shard SCENARIO_SHARD (default 0) and the
# keys it writes and reads by name are placed on that shard (x becomes the first of
# x, x~1, x~2, ... that the ring puts there), so its story is that shard's story
# while the other shards run beside it.
set -euo pipefail

SCEN_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER="$SCEN_HERE/../cluster"
NAME=$(basename "$0" .sh)
FAILS=0
OWN=false
ELECTION_MS=500
declare -A ACKED=()  # key -> value, every write that was acknowledged
declare -A REFUSED=() # key -> value, writes that got an error (must never appear, where noted)
declare -A PINNED=()  # key -> the key actually written: on a sharded cluster, one on shard $SHARD
SHARDS=1              # the cluster's shards (1: one Raft group on every node), set by need_cluster
REPLICAS=0            # the replicas of each shard (sharded clusters)
SHARD=${SCENARIO_SHARD:-0}
RING=""               # the cluster's /v1/ring (sharded clusters; changes only with the members:
                      # refresh_ring after cluster add-node / remove-node / wipe)

if [ -t 1 ]; then
    B=$'\033[1m' RED=$'\033[31m' GREEN=$'\033[32m' R=$'\033[0m'
else
    B="" RED="" GREEN="" R=""
fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$R"; }
note() { printf '   %s\n' "$*"; }
fail() {
    FAILS=$((FAILS + 1))
    printf '   %sFAIL%s %s\n' "$RED" "$R" "$*"
}
pass() { printf '   ok   %s\n' "$*"; }
expect() { # expect DESCRIPTION CMD...
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

cluster() { "$CLUSTER" "$@"; }

# need_cluster N [--shards G [--replicas R]]: use the running cluster if it has N nodes
# (and, when G is given here or in SCENARIO_SHARDS, G shards of R replicas), else start
# one.
need_cluster() {
    local n=$1 g=${SCENARIO_SHARDS:-} r=${SCENARIO_REPLICAS:-} dir=${CLUSTER_DIR:-$PWD/cluster-run}
    shift
    while [ $# -gt 0 ]; do
        case $1 in
        --shards) g=$2; shift 2 ;;
        --replicas) r=$2; shift 2 ;;
        *) echo "need_cluster: unknown option $1" >&2; exit 2 ;;
        esac
    done
    [ "${g:-1}" -gt 1 ] && r=${r:-3}
    if [ -z "${SCENARIO_OWN:-}" ] && [ "$(cat "$dir/n" 2>/dev/null || echo 0)" = "$n" ] &&
        { [ -z "$g" ] || [ "$(cat "$dir/shards" 2>/dev/null || echo 1)" = "$g" ]; } &&
        { [ -z "$r" ] || [ "$(cat "$dir/replicas" 2>/dev/null || echo 0)" = "$r" ]; } &&
        cluster leader >/dev/null 2>&1; then
        note "using the running $n-node cluster in $dir"
        cluster heal >/dev/null
    else
        OWN=true
        CLUSTER_DIR=$(mktemp -d /tmp/scenario-"$NAME".XXXXXX)
        export CLUSTER_DIR
        local placement=()
        if [ "${g:-1}" -gt 1 ]; then
            placement=(--shards "$g" --replicas "$r")
            note "starting a $n-node cluster of $g shards x $r replicas in $CLUSTER_DIR"
        else
            note "starting a $n-node cluster in $CLUSTER_DIR"
        fi
        local trace=()
        [ "${SCENARIO_TRACE:-0}" = 1 ] && trace=(--trace-file "$CLUSTER_DIR/trace-%n.jsonl")
        # shellcheck disable=SC2086 # KVD_OPTS is a list of options
        cluster up -n "$n" --quiet ${placement[@]+"${placement[@]}"} -- --election-timeout "$ELECTION_MS" \
            --heartbeat 50 --request-timeout 2000 ${trace[@]+"${trace[@]}"} ${KVD_OPTS:-} >/dev/null
    fi
    CDIR=${CLUSTER_DIR:-$PWD/cluster-run}
    OPS=$CDIR/ops.log
    N=$n
    : >>"$OPS"
    START_LINE=$(wc -l <"$OPS")
    SHARDS=$(cat "$CDIR/shards" 2>/dev/null || echo 1)
    if [ "$SHARDS" -gt 1 ]; then
        sharded_setup
    fi
}

# A sharded cluster: remember its map, wait until every shard has a leader and the
# leaders have been handed to their preferred nodes (kvd spreads them a few seconds
# after start), so that no transfer changes "the leader" in the middle of the story.
sharded_setup() {
    local i
    for i in $(seq 1 "$N"); do
        RING=$(timeout 2 curl -s "http://127.0.0.1:$(http_port "$i")/v1/ring" 2>/dev/null) && [ -n "$RING" ] && break
    done
    REPLICAS=$(jq -r .replicas <<<"$RING")
    BALANCED=$(jq -r '.ring[] | "\(.shard) \(.preferred_leader)"' <<<"$RING")
    wait_for 15 leaders_balanced || note "the shards' leaders are not all on their preferred nodes yet"
    note "$SHARDS shards x $REPLICAS replicas; leaders (shard:node): $(shard_leaders_line)"
}

# members: the ids of the cluster's nodes (cluster add-node adds the next id, remove-node
# marks one gone), one a line.
members() {
    local i
    for i in $(seq 1 "$(cat "$CDIR/n")"); do
        [ -e "$CDIR/$i.gone" ] || echo "$i"
    done
}

# refresh_ring: RING (and N, the highest node id) as they are now, after a change of
# members; the ring from the first member that answers.
refresh_ring() {
    local i r
    N=$(cat "$CDIR/n")
    for i in $(members); do
        r=$(timeout 2 curl -s "http://127.0.0.1:$(http_port "$i")/v1/ring" 2>/dev/null) && [ -n "$r" ] &&
            jq -e .ring >/dev/null 2>&1 <<<"$r" && { RING=$r; return 0; }
    done
    return 1
}

# leaders_balanced: every shard is led by its preferred leader (the ring's choice).
leaders_balanced() {
    cluster_shard_leaders >/dev/null
    [ "$LEADERS" = "$BALANCED" ]
}

# cluster_shard_leaders: "SHARD LEADER" per shard (0: none acknowledged by a majority
# of the shard's replicas); also kept in LEADERS when not called in a subshell.
LEADERS=""
cluster_shard_leaders() {
    LEADERS=$(cluster leaders | sed -n 's/^shard \([0-9]*\): node \([0-9]*\)$/\1 \2/p; s/^shard \([0-9]*\): no leader.*/\1 0/p')
    echo "$LEADERS"
}
# shard_leaders_line: the last LEADERS on one line (0:n1 1:n3 ...).
shard_leaders_line() { awk '{ printf "%s%s:%s", sep, $1, ($2 == 0 ? "none" : "n" $2); sep = " " }' <<<"$LEADERS"; }

# write_replay: with SCENARIO_TRACE=1, the nodes' traces merged in time order (stable:
# within a millisecond each node's own order holds) and the replay page, beside ops.log.
write_replay() {
    local files=("$CDIR"/trace-*.jsonl) raftsim
    [ "${SCENARIO_TRACE:-0}" = 1 ] && [ -e "${files[0]}" ] || return 0
    raftsim=${RAFTSIM:-$(dirname "${KVD:-$SCEN_HERE/../../build/cc/kvd}")/raftsim}
    cat "${files[@]}" | sort -s -t, -k1.6,1n >"$CDIR/trace.jsonl"
    if "$raftsim" html "$CDIR/replay.html" "$CDIR/trace.jsonl" >/dev/null; then
        echo "   trace: $CDIR/trace.jsonl; its replay: $CDIR/replay.html (docs/dashboard.md)"
    else
        echo "   (no replay page: $raftsim html failed)"
    fi
}

finish_cluster() {
    [ -z "$WRITER_PID" ] || kill "$WRITER_PID" 2>/dev/null || true
    CDIR=${CDIR:-${CLUSTER_DIR:-}}
    if $OWN; then
        cluster down >/dev/null 2>&1 || true
        write_replay
        # Kept for reading after a failure, unless told (SCENARIO_CLEAN: a control
        # expected to fail) or asked to keep it anyway (KEEP).
        if { [ "$FAILS" -eq 0 ] || [ -n "${SCENARIO_CLEAN:-}" ]; } && [ -z "${KEEP:-}" ] &&
            [ "${SCENARIO_TRACE:-0}" != 1 ]; then
            rm -rf "$CDIR"
        else
            echo "   (the cluster's logs and ops.log stay in $CDIR)"
        fi
    else
        cluster heal >/dev/null 2>&1 || true
    fi
}
trap finish_cluster EXIT
trap 'exit 130' INT TERM

port() { echo $((6380 + ${CLUSTER_PORTS:-0} + $1)); }
http_port() { echo $((8380 + ${CLUSTER_PORTS:-0} + $1)); }
record() { printf '%s node=%s %s\n' "$(date +%T.%3N)" "$1" "$2" >>"$OPS"; }
status_of() { timeout 2 curl -s "http://127.0.0.1:$(http_port "$1")/v1/status" 2>/dev/null || true; }

# locate KEY...: "KEY SHARD" per key, from the first node that answers (pipelined
# RAFT.LOCATE: one connection for all of them).
locate() {
    local i out
    for i in $(seq 1 "$N"); do
        out=$(printf 'RAFT.LOCATE %s\n' "$@" | timeout 5 redis-cli -p "$(port "$i")" 2>/dev/null |
            jq -r '.shard' 2>/dev/null) || continue
        [ "$(wc -l <<<"$out")" -eq $# ] || continue
        paste -d' ' <(printf '%s\n' "$@") - <<<"$out"
        return 0
    done
    return 1
}

# replicas_of SHARD: its replicas, comma-separated (from the ring).
replicas_of() { jq -r --argjson s "$1" '.ring[] | select(.shard == $s) | .replicas | map(tostring) | join(",")' <<<"$RING"; }

# pin KEY: sets PIN to the key written for KEY: KEY itself on a single group; on a
# sharded cluster the first of KEY, KEY~1, KEY~2, ... on shard $SHARD (remembered in
# PINNED when not called in a subshell).
PIN=""
PIN_KEYS=true # a sharded scenario that picks its keys by shard sets it to false
pin() {
    PIN=$1
    [ "$SHARDS" -gt 1 ] && $PIN_KEYS || return 0
    if [ -n "${PINNED[$1]:-}" ]; then
        PIN=${PINNED[$1]}
        return 0
    fi
    local cands=("$1") k
    for k in $(seq 1 127); do cands+=("$1~$k"); done
    PIN=$(locate "${cands[@]}" | awk -v s="$SHARD" '$2 == s { print $1; exit }')
    [ -n "$PIN" ] || PIN=$1
    PINNED[$1]=$PIN
}

# cli SECONDS NODE ARGS...: the first line of redis-cli's answer through NODE; "timeout"
# if none came within SECONDS, "error: WHAT" if the connection failed (redis-cli's own
# words, such as "Server closed the connection"): both are unknown outcomes for a write.
cli() {
    local secs=$1 node=$2 out rc=0
    shift 2
    out=$(timeout "$secs" redis-cli -p "$(port "$node")" "$@" 2>&1 | head -1) || rc=$?
    if [ "$rc" = 0 ]; then
        printf '%s\n' "$out"
    elif [ "$rc" = 124 ]; then
        echo timeout
    else
        echo "error: ${out:-redis-cli exited with status $rc}"
    fi
}

# write NODE KEY VALUE: SET through NODE; the outcome goes to LAST and ops.log.
# (Not in a subshell: it remembers what was acknowledged.)
LAST=""
write() {
    pin "$2"
    LAST=$(cli 5 "$1" SET "$PIN" "$3")
    record "$1" "SET $PIN $3 -> $LAST"
    if [ "$LAST" = OK ]; then
        ACKED[$2]=$3
    else
        REFUSED[$2]=$3
    fi
}
written() { write "$@"; [ "$LAST" = OK ]; }

# write_parallel NODE:KEY:VALUE...: the writes all at once (a refusal can take the
# server's 5 s wait for a leader: one at a time they would add up); each outcome goes
# to OUTCOME[KEY] and ops.log, and ACKED or REFUSED as with write.
declare -A OUTCOME=() OUTCOME_MS=() # for the scenarios: each answer, and how long it took
write_parallel() {
    local tmp w node key val pids=() i=0 out ms
    tmp=$(mktemp -d)
    for w in "$@"; do
        IFS=: read -r node key val <<<"$w"
        pin "$key"
        (
            t0=$(date +%s%3N)
            out=$(cli 10 "$node" SET "$PIN" "$val")
            printf '%s\n%s\n' "${out:-(empty answer)}" $(($(date +%s%3N) - t0)) >"$tmp/$i"
        ) &
        pids+=("$!")
        i=$((i + 1))
    done
    wait "${pids[@]}" 2>/dev/null || true
    i=0
    for w in "$@"; do
        IFS=: read -r node key val <<<"$w"
        pin "$key"
        { IFS= read -r out; IFS= read -r ms; } <"$tmp/$i" || { out="(no outcome recorded)" ms='?'; }
        record "$node" "SET $PIN $val -> $out (${ms} ms)"
        # shellcheck disable=SC2034 # read by the scenarios
        { OUTCOME[$key]=$out; OUTCOME_MS[$key]=$ms; }
        if [ "$out" = OK ]; then
            ACKED[$key]=$val
        else
            REFUSED[$key]=$val
        fi
        i=$((i + 1))
    done
    rm -rf "$tmp"
}

# keys_on_shards COUNT PREFIX: COUNT keys on each shard, named PREFIX1, PREFIX2, ...
# as the ring places them; a line "SHARD KEY KEY ..." per shard.
keys_on_shards() {
    local count=$1 prefix=$2 k cands=()
    for k in $(seq 1 $((SHARDS * count * 12 + 64))); do cands+=("$prefix$k"); done
    locate "${cands[@]}" | awk -v c="$count" -v g="$SHARDS" '
        n[$2] < c { keys[$2] = keys[$2] " " $1; n[$2]++ }
        END { for (s = 0; s < g; s++) print s keys[s] }'
}

# A client writing in the background: unique keys through the nodes in turn, each
# outcome with its time in writer.log. It stops by itself after WRITER_SECONDS
# (default 120).
WRITER_PID=""
start_writer() {
    (
        end=$((SECONDS + ${WRITER_SECONDS:-120})) k=0
        while [ $SECONDS -lt $end ]; do
            k=$((k + 1))
            n=$((k % N + 1))
            out=$(cli 3 "$n" SET "w$k" "$k")
            printf '%s w%s %s %s\n' "$(date +%s%3N)" "$k" "$k" "${out// /_}" >>"$CDIR/writer.log"
            record "$n" "SET w$k $k -> $out"
            sleep 0.02
        done
    ) &
    WRITER_PID=$!
}

# stop_writer: stop it, remember what it got acknowledged, and set WORST_GAP_MS to
# the longest stretch between two acknowledged writes.
WORST_GAP_MS=0
stop_writer() {
    [ -n "$WRITER_PID" ] || return 0
    kill "$WRITER_PID" 2>/dev/null || true
    wait "$WRITER_PID" 2>/dev/null || true
    WRITER_PID=""
    local t key val out prev=""
    while read -r t key val out; do
        [ "$out" = OK ] || continue
        ACKED[$key]=$val
        if [ -n "$prev" ] && [ $((t - prev)) -gt "$WORST_GAP_MS" ]; then
            WORST_GAP_MS=$((t - prev))
        fi
        prev=$t
    done <"$CDIR/writer.log"
}

# read NODE KEY: GET through NODE (linearizable unless the server was told otherwise).
read_key() {
    pin "$2"
    read_raw "$1" "$PIN"
}
read_raw() {
    local out
    out=$(cli 5 "$1" GET "$2")
    record "$1" "GET $2 -> ${out:-(nil)}"
    echo "$out"
}

# info NODE FIELD: role, term, leader, commit, applied, content_hash, ... of NODE's
# group (on a sharded cluster: of its replica of shard $SHARD; empty if it has none).
info() {
    if [ "$SHARDS" -gt 1 ]; then
        status_of "$1" | jq -r --argjson s "$SHARD" --arg f "$2" '.groups[]? | select(.shard == $s) | .[$f] // empty' 2>/dev/null
        return 0
    fi
    timeout 2 redis-cli -p "$(port "$1")" INFO 2>/dev/null | tr -d '\r' | sed -n "s/^raft_$2://p"
}

# leader: the leader's id (sharded: shard $SHARD's).
leader() {
    if [ "$SHARDS" -gt 1 ]; then
        cluster leader "$SHARD" 2>/dev/null
    else
        cluster leader 2>/dev/null
    fi
}

# wait_for SECONDS CMD...: poll until CMD succeeds. CMD is evaluated afresh each
# time (eval), so write conditions in single quotes:
#   wait_for 5 '[ "$(info "$OLD" role)" != leader ]'
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    while [ $SECONDS -lt "$deadline" ]; do
        eval "$*" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    eval "$*" >/dev/null 2>&1
}

# rejoined OLD NEW: the deposed leader OLD follows NEW — or, on a sharded cluster, has
# taken the shard back in a newer term: kvd hands each shard to its preferred leader
# (docs/sharding.md) once it has caught up, which OLD is when it led at the start.
rejoined() {
    local l
    l=$(info "$1" leader)
    [ "$l" = "$2" ] && return 0
    [ "$SHARDS" -gt 1 ] && [ "$l" = "$1" ] && [ "$(info "$1" role)" = leader ] &&
        [ "$(jq -r --argjson s "$SHARD" '.ring[] | select(.shard == $s) | .preferred_leader' <<<"$RING")" = "$1" ]
}
rejoined_how() { # rejoined_how OLD NEW: what rejoined saw, for the narration
    if [ "$(info "$1" leader)" = "$1" ]; then
        note "node $1 leads shard $SHARD again (term $(info "$1" term)): kvd's balancer handed it back to its preferred leader"
    fi
}

# A leader among NODES (comma list) acknowledged by them.
leader_among() {
    local l
    l=$(leader) || return 1
    [[ ",$1," == *",$l,"* ]] && echo "$l"
}

# ---------------------------------------------------------------------------
# The checks every scenario ends with.

converged() {
    [ "$SHARDS" -gt 1 ] && { converged_shards >/dev/null; return; }
    local i h a h1="" a1=""
    for i in $(seq 1 "$N"); do
        h=$(info "$i" content_hash)
        a=$(info "$i" applied)
        [ -n "$h" ] && [ -n "$a" ] || return 1
        if [ -z "$h1" ]; then
            h1=$h
            a1=$a
        fi
        [ "$h" = "$h1" ] && [ "$a" = "$a1" ] || return 1
    done
    [ "$a1" -ge "$(info "$(leader)" commit)" ]
}

# converged_shards: whether, in every shard, every replica answers with the same
# applied index and content hash, and has applied all the shard's commits; prints a
# line per shard that has not. The replicas are those the ring places (a node that a
# shard moved away from may report its old copy until it drops it).
converged_shards() {
    local i out
    [ -n "$RING" ] || { echo "no map of the shards (/v1/ring)"; return 1; }
    out=$(for i in $(seq 1 "$N"); do
        status_of "$i"
    done | jq -rs --argjson ring "$RING" '
        . as $all | $ring.ring[] | .shard as $s | .replicas as $reps |
        [$all[] | .id as $id | .groups[]? | select(.shard == $s) | . + {id: $id} |
            select(.id as $id | $reps | index($id))] as $rows |
        select(($rows | length) != ($reps | length) or
               ([$rows[] | "\(.applied) \(.content_hash)"] | unique | length) != 1 or
               $rows[0].applied < ([$rows[].commit] | max)) |
        "shard \($s) (replicas \($reps | map(tostring) | join(","))): " +
        ([$rows[] | "node \(.id) applied \(.applied) commit \(.commit) hash \(.content_hash)"] | join("; ")) +
        (if ($rows | length) < ($reps | length) then " (\($rows | length) of \($reps | length) replicas answer)" else "" end)') ||
        { echo "the nodes' status does not parse"; return 1; }
    [ -z "$out" ] || { echo "$out"; return 1; }
}

# read_many NODE KEY...: the values of the keys (an empty line for a missing one), in
# order, read through NODE by MGET of up to 64 keys at a time (each key's read is
# linearizable, as a GET); a batch that does not answer key by key is read by GET.
read_many() {
    local node=$1 out k
    shift
    while [ $# -gt 0 ]; do
        local batch=("${@:1:64}")
        shift "${#batch[@]}"
        if out=$(timeout 20 redis-cli -p "$(port "$node")" MGET "${batch[@]}" 2>&1) &&
            [ "$(wc -l <<<"$out")" -eq "${#batch[@]}" ] && ! grep -qE '^(ERR|NOQUORUM|TRYAGAIN|TIMEOUT)' <<<"$out"; then
            record "$node" "MGET ${#batch[@]} keys ${batch[0]}..${batch[-1]}"
            printf '%s\n' "$out"
        else
            for k in "${batch[@]}"; do
                read_raw "$node" "$k"
            done
        fi
    done
}

check_no_acked_write_lost() {
    local l k lost=0 i=0 v keys=() real=()
    l=$(leader) || { fail "no leader to read from"; return; }
    for k in "${!ACKED[@]}"; do
        keys+=("$k")
        real+=("${PINNED[$k]:-$k}")
    done
    if [ ${#keys[@]} -gt 0 ]; then
        while IFS= read -r v; do
            k=${keys[$i]}
            if [ "$v" != "${ACKED[$k]}" ]; then
                # One more look, key by key, before calling it lost.
                v=$(read_raw "$l" "${real[$i]}")
                if [ "$v" != "${ACKED[$k]}" ]; then
                    lost=$((lost + 1))
                    note "acknowledged ${real[$i]}=${ACKED[$k]} but read '${v}'"
                fi
            fi
            i=$((i + 1))
        done < <(read_many "$l" "${real[@]}")
    fi
    if [ "$i" -ne "${#keys[@]}" ]; then
        fail "read $i of the ${#keys[@]} acknowledged writes back"
    elif [ "$lost" -eq 0 ] && [ "$SHARDS" -gt 1 ]; then
        pass "no acknowledged write lost (${#ACKED[@]} checked through node $l, linearizable reads at each key's shard leader)"
    elif [ "$lost" -eq 0 ]; then
        pass "no acknowledged write lost (${#ACKED[@]} checked through the leader, linearizable reads)"
    else
        fail "$lost acknowledged writes lost"
    fi
}

# check_never_visible KEY...: writes that were refused must not have happened.
check_never_visible() {
    local l k v seen=0 i=0 keys=("$@") real=()
    l=$(leader) || return 0
    for k in "$@"; do
        pin "$k"
        real+=("$PIN")
    done
    while IFS= read -r v; do
        k=${keys[$i]}
        i=$((i + 1))
        if [ -n "$v" ]; then
            seen=$((seen + 1))
            note "the refused write $k=${REFUSED[$k]:-?} is visible: '$v'"
        fi
    done < <([ $# -eq 0 ] || read_many "$l" "${real[@]}")
    [ "$i" -eq $# ] || fail "read $i of the $# refused writes back"
    if [ "$seen" -eq 0 ]; then
        pass "none of the $# refused writes became visible"
    else
        fail "$seen refused writes became visible"
    fi
}

# check_one_leader_per_term: from every node's log, the lines
#   HH:MM:SS.mmm kvd N: leader in term T (leader N)                       one group
#   HH:MM:SS.mmm kvd N: shard S (group G): leader in term T (leader N)   sharded
#   HH:MM:SS.mmm kvd N: group 0 (members): leader in term T (leader N)  the members table
# at most one node per term (per shard and term). No such line at all would make
# the check vacuous, so that fails too.
check_one_leader_per_term() {
    local claims bad
    claims=$(cat "$CDIR"/*.log 2>/dev/null | sed -n \
        -e 's/^.*kvd \([0-9]*\): shard \([0-9]*\) (group [0-9]*): leader in term \([0-9]*\) .*/\2 \3 \1/p' \
        -e 's/^.*kvd \([0-9]*\): group 0 (members): leader in term \([0-9]*\) .*/members \2 \1/p' \
        -e 's/^.*kvd \([0-9]*\): leader in term \([0-9]*\) .*/- \2 \1/p' | sort -u)
    if [ -z "$claims" ]; then
        fail "no 'leader in term' line in the nodes' logs: nothing to check one leader per term against"
        return
    fi
    bad=$(awk '{ k = $1 " " $2; n[k]++; who[k] = who[k] " " $3 }
        END { for (k in n) if (n[k] > 1) { split(k, a, " ");
            print (a[1] == "-" ? "" : a[1] == "members" ? "group 0 " : "shard " a[1] " ") "term " a[2] ": nodes" who[k] } }' <<<"$claims")
    if [ -n "$bad" ]; then
        fail "two leaders in one term: $bad"
    elif [ "$SHARDS" -gt 1 ]; then
        pass "at most one leader per term in each shard ($(wc -l <<<"$claims") elections won over $SHARDS shards, from every node's log)"
    else
        pass "at most one leader per term ($(wc -l <<<"$claims") elections won, from every node's log)"
    fi
}

final_checks() {
    say "Checks"
    if [ "$SHARDS" -gt 1 ]; then
        refresh_ring || true
        if wait_for 15 converged; then
            pass "replicas identical per shard: in each of the $SHARDS shards its $REPLICAS replicas applied the same index and hold the same content hash"
        else
            fail "the replicas of some shards differ after the heal:"
            converged_shards | sed 's/^/     /' || true
        fi
    elif wait_for 15 converged; then
        pass "replicas identical: every node applied index $(info 1 applied), content hash $(info 1 content_hash)"
    else
        fail "replicas differ after the heal:"
        local i
        for i in $(seq 1 "$N"); do
            note "node $i: applied $(info "$i" applied) hash $(info "$i" content_hash)"
        done
    fi
    check_no_acked_write_lost
    check_one_leader_per_term
    local ops
    ops=$(($(wc -l <"$OPS") - START_LINE))
    note "$ops client operations recorded in $OPS"
    echo
    if [ "$FAILS" -eq 0 ]; then
        printf '%sPASS%s %s\n' "$GREEN" "$R" "$NAME"
    else
        printf '%sFAIL%s %s (%d expectation(s) failed)\n' "$RED" "$R" "$NAME" "$FAILS"
        exit 1
    fi
}
