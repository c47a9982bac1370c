#!/usr/bin/env bash
# deps.sh — the Debian packages this project needs, checked fast and installed on demand.
#
#   scripts/deps.sh check     exit 0 when everything is present (pkg-config and command -v only,
#                             well under a second); otherwise name what is missing and exit 1
#   scripts/deps.sh install   apt-get update + install (non-interactive, idempotent); as root, or
#                             through sudo when it works without a password; otherwise print the
#                             exact command to run and exit 1
#   scripts/deps.sh ensure    check, and install only when something is missing
#   scripts/deps.sh list      print the package list
#   scripts/deps.sh peers     install the systems `make bench` compares against (etcd-server,
#                             redis-server); never needed to build, run or test
#
# The Makefile's `deps` target runs `install`; `run` and `test` run `ensure`; `bench-peers`
# runs `peers`.
set -euo pipefail

# Debian 12 packages. Later features append to this list (nftables, redis-tools, ...).
PACKAGES=(
    build-essential pkg-config
    libuv1-dev libprotobuf-c-dev protobuf-c-compiler liblmdb-dev
    libhiredis-dev libxxhash-dev libjansson-dev libhttp-parser-dev libsodium-dev
    clang clang-format shellcheck libclang-rt-14-dev
    redis-tools curl jq
    nftables socat iproute2 util-linux iptables libnetfilter-queue-dev
)

# The dashboard's browser tests (tests/browser/dashboard.py): headless Chromium. `install`
# installs them with the rest; `ensure` installs them when it can, and where it cannot (not
# root, no sudo) goes on without them: those tests then skip and say why.
BROWSER=(chromium chromium-driver python3-selenium)

# Peers for the side-by-side benchmark (Debian's etcd-server is etcd 3.4, with the v3 JSON
# gateway; redis-server for the single fsyncing server line). Installing it does not start a system etcd where there is no init system; where
# there is one, Debian enables etcd.service on 127.0.0.1:2379, which the bench does not use.
PEERS=(etcd-server redis-server)

# What `check` looks at: pkg-config modules and commands that stand for the packages above.
PKG_MODULES=(libuv libprotobuf-c lmdb hiredis libxxhash jansson libnetfilter_queue libsodium)
COMMANDS=(cc make pkg-config protoc-c clang clang-format shellcheck redis-cli redis-benchmark curl jq nft socat ip unshare nsenter iptables)
# Headers without a pkg-config module.
HEADERS=(/usr/include/http_parser.h)
# What stands for BROWSER.
BROWSER_FILES=(/usr/bin/chromium /usr/bin/chromedriver /usr/lib/python3/dist-packages/selenium/__init__.py)

usage() {
    sed -n '2,16s/^# \{0,1\}//p' "$0"
}

missing() {
    local m c h
    command -v pkg-config >/dev/null 2>&1 || { echo "pkg-config"; return; }
    for m in "${PKG_MODULES[@]}"; do
        pkg-config --exists "$m" || echo "pkg-config module $m"
    done
    for c in "${COMMANDS[@]}"; do
        command -v "$c" >/dev/null 2>&1 || echo "command $c"
    done
    for h in "${HEADERS[@]}"; do
        [ -f "$h" ] || echo "header $h"
    done
}

check() {
    local what
    what=$(missing)
    if [ -n "$what" ]; then
        echo "deps: missing: $(echo "$what" | paste -sd, -)" >&2
        return 1
    fi
}

install() {
    local apt=(apt-get) pkgs=("$@")
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            apt=(sudo -n apt-get)
        else
            echo "deps: not root and no password-less sudo; run this, then try again:" >&2
            echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${pkgs[*]}" >&2
            return 1
        fi
    fi
    echo "deps: installing ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -q
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q "${pkgs[@]}" </dev/null
}

browser_missing() {
    local f
    for f in "${BROWSER_FILES[@]}"; do
        [ -e "$f" ] || return 0
    done
    return 1
}

# The browser packages when missing, if they can be installed here; never an error.
ensure_browser() {
    browser_missing || return 0
    if [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
        install "${BROWSER[@]}" || echo "deps: could not install ${BROWSER[*]}: the browser tests will fail" >&2
    else
        echo "deps: ${BROWSER[*]} missing and not installable here (not root, no sudo): the browser tests skip" >&2
    fi
}

case "${1:-}" in
    check) check ;;
    install) install "${PACKAGES[@]}" "${BROWSER[@]}" ;;
    ensure) { check 2>/dev/null || { install "${PACKAGES[@]}" && check; }; } && ensure_browser ;;
    peers) install "${PEERS[@]}" ;;
    list) echo "${PACKAGES[*]} ${BROWSER[*]}" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
