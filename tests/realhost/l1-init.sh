#!/bin/bash
# l1-init.sh - PID 1 of the realhost L1 guest, run from the host's tree (9p + tmpfs overlay).
# Mounts the pseudo filesystems, wires /lib/modules/<release>, the kernel headers and kbuild to
# the unpacked packages in the cache, loads kvm_amd (a failure ends the run with status 253),
# runs $RH_RUN/cmd with its output on ttyS1 (QEMU's stdio), writes "@@RHRC=<status>" on the
# console (ttyS0) and in $RH_RUN/rc, and exits QEMU through isa-debug-exit.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
REL=$(uname -r)
exec </dev/null >/dev/ttyS0 2>&1
log() { echo "l1-init: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
leave() {
  echo "@@RHRC=$1"
  [ -d "$RUN" ] && echo "$1" > "$RUN/rc"
  sync
  printf '\000' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
  echo o > /proc/sysrq-trigger
  sleep 30
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
RUN=$(arg rh.run) ROOT=$(arg rh.kroot) KMOD=$(arg rh.kmod)
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ln -sfn /proc/self/fd /dev/fd
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
hostname l1
ip link set lo up 2>/dev/null
log "switched root at $(up) s"

# The unpacked kernel: modules (with modules.dep, build and source links), headers, kbuild.
mkdir -p "/lib/modules/$REL"
mount --bind "$ROOT/lib/modules/$REL" "/lib/modules/$REL" || { log "no modules for $REL"; leave 254; }
for d in "$ROOT"/usr/src/linux-headers-* "$ROOT"/usr/lib/linux-kbuild-*; do
  [ -d "$d" ] || continue
  t=${d#"$ROOT"}
  mkdir -p "$t" && mount --bind "$d" "$t"
done
for t in modprobe insmod rmmod modinfo depmod lsmod; do
  ln -sfn "$KMOD/bin/kmod" "/usr/sbin/$t"
done
if ! modprobe kvm_amd; then
  log "FATAL: modprobe kvm_amd failed on $REL"
  dmesg | tail -20
  leave 253
fi
[ -c /dev/kvm ] || { log "FATAL: kvm_amd loaded but no /dev/kvm"; leave 253; }
log "kvm_amd loaded: npt=$(cat /sys/module/kvm_amd/parameters/npt) nested=$(cat /sys/module/kvm_amd/parameters/nested)"
dmesg | grep -iE 'svm|nested|npt' | sed 's/^/l1-dmesg: /'

export VPROF_IN_L1=1 VPROF_REQUIRE_LIVE=1 RH_RUN=$RUN
cd "$(cat "$RUN/cwd")" || leave 252
log "ready at $(up) s"
echo "@@RHREADY=$(up)"
stty -F /dev/ttyS1 raw -echo 115200 2>/dev/null
bash "$RUN/cmd" </dev/null >/dev/ttyS1 2>&1
rc=$?
log "command exited $rc at $(up) s"
leave $rc
