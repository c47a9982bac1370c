#!/usr/bin/env bash
# netns-sandbox.sh — the inside of a netns-mode cluster; `cluster up --net netns` runs it as
# PID 1 of a sandbox made by
#   unshare --net --mount --pid --fork --mount-proc --kill-child --propagation private
# so that every namespace and process of the cluster dies with the sandbox, whatever
# happens to the scripts around it, and nothing touches the host's network.
#
#   netns-sandbox.sh N DIR
#   netns-sandbox.sh add-node I     (run inside a running sandbox: the namespace of a node
#                                   added later, `cluster add-node`)
#
# Inside: a private /run (for `ip netns`), a bridge br0 (10.77.0.254/24) in the sandbox's own
# network namespace, and one namespace hI per node with a veth on the bridge and the address
# 10.77.0.I. Partitions are nft rules in `table bridge netfault` of the sandbox namespace (the
# cluster script writes them); traffic to and from 10.77.0.254 (the relays that let the host
# reach the nodes) is not forwarded, so no partition cuts clients off. Writes DIR/sandbox.ready
# when done, then waits, reaping: killing this process ends the sandbox.
set -euo pipefail

# node_namespace I: namespace hI, a veth on the bridge, the address 10.77.0.I.
node_namespace() {
    local i=$1
    ip netns add "h$i"
    ip link add eth0 netns "h$i" type veth peer name "vh$i"
    ip -n "h$i" link set lo up
    ip -n "h$i" addr add "10.77.0.$i/24" dev eth0
    ip -n "h$i" link set eth0 up
    ip link set "vh$i" master br0
    ip link set "vh$i" up
}

if [ "${1:-}" = add-node ]; then
    node_namespace "${2:?usage: netns-sandbox.sh add-node I}"
    exit 0
fi

N=${1:?usage: netns-sandbox.sh N DIR}
DIR=${2:?usage: netns-sandbox.sh N DIR}

mount -t tmpfs tmpfs /run
mkdir -p /run/netns
ip link set lo up
# Bridged packets through iptables (for the NFQUEUE delay rules); the default, said anyway.
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
ip link add br0 type bridge
ip addr add 10.77.0.254/24 dev br0
ip link set br0 up
for i in $(seq 1 "$N"); do
    node_namespace "$i"
done
echo "$$" >"$DIR/sandbox.ready"
# As PID 1 of the sandbox, this shell inherits every orphan (each kvd started here) and
# must reap them, or a stopped node would linger as a zombie that still "exists".
while true; do
    sleep 3600 &
    wait $! || true
done
