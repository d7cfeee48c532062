#!/bin/sh
# Container entrypoint: give bcc the running kernel's headers, then run the
# command (default: vprof daemon).  Strategies, in order (deploy/Containerfile
# explains each): host, kheaders, bundled.  VPROF_HEADERS forces one.
#
# Every path is overridable so tests can run this against a fake tree:
#   VPROF_KREL       kernel release            (default: uname -r)
#   VPROF_HOST_ROOT  where host dirs are mounted (default: /host)
#   VPROF_MODULES    bcc's /lib/modules        (default: /lib/modules, an emptyDir in k8s)
#   VPROF_BUNDLED    image headers under       (default: /usr/src)
#   VPROF_KHEADERS   in-kernel headers archive (default: /sys/kernel/kheaders.tar.xz)
set -eu

krel=${VPROF_KREL:-$(uname -r)}
host=${VPROF_HOST_ROOT:-/host}
modules=${VPROF_MODULES:-/lib/modules}
bundled=${VPROF_BUNDLED:-/usr/src}
kheaders=${VPROF_KHEADERS:-/sys/kernel/kheaders.tar.xz}
want=${VPROF_HEADERS:-auto}

log() { echo "vprof-entrypoint: $*" >&2; }

# A host symlink such as build -> /usr/src/linux-headers-X points into the
# host's file system; inside the container that tree lives under $host.
host_target() {
    link=$host/lib/modules/$krel/$1
    [ -L "$link" ] || [ -d "$link" ] || return 1
    if [ -L "$link" ]; then
        t=$(readlink "$link")
        case $t in /*) t=$host$t ;; *) t=$host/lib/modules/$krel/$t ;; esac
    else
        t=$link
    fi
    [ -d "$t" ] || return 1
    echo "$t"
}

has_kconfig() { [ -e "$1/include/linux/kconfig.h" ]; }

use_host() {
    b=$(host_target build) || return 1
    s=$(host_target source) || s=$b
    has_kconfig "$b" || has_kconfig "$s" || return 1
    link_headers "$b" "$s" host
}

use_bundled() {
    b=$(ls -d "$bundled"/linux-headers-*-amd64 2>/dev/null | sort | tail -n 1)
    s=$(ls -d "$bundled"/linux-headers-*-common 2>/dev/null | sort | tail -n 1)
    [ -n "$b" ] && [ -n "$s" ] || return 1
    link_headers "$b" "$s" "bundled (generic Debian headers)"
}

link_headers() {
    mkdir -p "$modules/$krel"
    ln -sfn "$1" "$modules/$krel/build"
    ln -sfn "$2" "$modules/$krel/source"
    log "kernel headers for $krel: $3: $1"
}

use_kheaders() {
    [ -e "$kheaders" ] || return 1
    # bcc falls back to this archive by itself when /lib/modules/$krel/build is absent.
    rm -f "$modules/$krel/build" "$modules/$krel/source"
    log "kernel headers for $krel: kheaders: $kheaders"
}

case $want in
    auto) use_host || use_kheaders || use_bundled || {
              log "no kernel headers found for $krel: mount the host's /lib/modules and /usr/src under $host, load kheaders, or use an image with linux-headers"
              exit 2
          } ;;
    host) use_host || { log "VPROF_HEADERS=host but no headers under $host/lib/modules/$krel"; exit 2; } ;;
    kheaders) use_kheaders || { log "VPROF_HEADERS=kheaders but $kheaders is absent (modprobe kheaders)"; exit 2; } ;;
    bundled) use_bundled || { log "VPROF_HEADERS=bundled but no headers under $bundled"; exit 2; } ;;
    *) log "VPROF_HEADERS must be auto, host, kheaders or bundled, not '$want'"; exit 2 ;;
esac

[ $# -gt 0 ] || set -- vprof daemon
exec "$@"
