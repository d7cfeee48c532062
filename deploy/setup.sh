#!/usr/bin/env bash
# Prepare this host for vprof, idempotently: Debian packages, kernel headers
# for bcc, tracefs/debugfs, and (with --venv DIR) a virtual environment with
# vprof installed.  A second run changes nothing and takes seconds.
#
#   deploy/setup.sh [--venv DIR] [--dev]
#
# Every step checks before it acts, so it is safe under configuration
# management and in CI.
set -euo pipefail

VENV=""
EXTRAS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV="$2"; shift 2 ;;
        --dev) EXTRAS="[test]"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "setup: unknown option $1" >&2; exit 2 ;;
    esac
done

say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "setup: must run as root (it installs packages and mounts tracefs)" >&2
    exit 1
fi

# 1. Debian packages.  python3-bpfcc is bcc; linux-headers-amd64 gives the
# headers bcc compiles against where the running kernel ships none;
# prometheus/promtool, tmux and qemu serve the e2e tests and comparisons;
# linux-perf gives `perf kvm stat record` for bench/overhead; gcc builds the
# exit injector; wrk loads /metrics and python3-bcrypt checks basic-auth
# hashes (--web.config.file) in the reliability tests; chromium (headless)
# checks the HTML report of `vprof report --html` in a real browser.
PACKAGES=(python3-bpfcc bpfcc-tools bpftool linux-headers-amd64 python3-venv
          prometheus tmux linux-perf qemu-system-x86 gcc wrk python3-bcrypt chromium)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The Debian prometheus package starts a server on :9090 that nothing of
    # ours wants; policy-rc.d keeps it (and any other service) from starting.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi

# 2. Kernel headers for bcc.  bcc looks in /lib/modules/$(uname -r)/build.
# Where the running kernel has no headers (custom and cloud kernels), point it
# at Debian's generic ones: tracepoint programs only need the common kernel
# types, and bcc reads each tracepoint's real layout from tracefs.
KREL=$(uname -r)
MOD=/lib/modules/$KREL
if [ ! -e "$MOD/build/include/linux/kconfig.h" ] && [ ! -e "$MOD/source/include/linux/kconfig.h" ]; then
    arch_dir=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
    common_dir=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$arch_dir" ] || [ -z "$common_dir" ]; then
        echo "setup: no kernel headers found under /usr/src (is linux-headers-amd64 installed?)" >&2
        exit 1
    fi
    say "using $arch_dir for kernel $KREL"
    mkdir -p "$MOD"
    ln -sfn "$arch_dir" "$MOD/build"
    ln -sfn "$common_dir" "$MOD/source"
fi

# 3. tracefs and debugfs.
mountpoint -q /sys/kernel/tracing || { say "mounting tracefs"; mount -t tracefs tracefs /sys/kernel/tracing; }
mountpoint -q /sys/kernel/debug || { say "mounting debugfs"; mount -t debugfs debugfs /sys/kernel/debug; }

# 4. The virtual environment: from Debian's python3, so that bcc imports.
if [ -n "$VENV" ]; then
    here=$(cd "$(dirname "$0")/.." && pwd)
    stamp="$VENV/.vprof-installed"
    want=$(cat "$here/pyproject.toml" | sha256sum | cut -d' ' -f1)"$EXTRAS"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        /usr/bin/python3 -m venv --system-site-packages "$VENV"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing vprof$EXTRAS into $VENV"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -e "$here$EXTRAS"
        echo "$want" > "$stamp"
    fi
fi
exit 0
