#!/bin/bash
# boot.sh VMLINUZ INITRAMFS RUNDIR APPEND - boot one L1 under QEMU TCG with an AMD CPU that
# has SVM + NPT, the host's / shared read-only over 9p and RUNDIR read-write at its own path.
# Prints the command's output (ttyS1 = QEMU's stdio); the kernel console goes to
# RUNDIR/console.log. Exits with QEMU's status (124 on timeout); the caller reads the command's.
#
# thread=single is required: multi-threaded TCG with NPT corrupts L1 memory once two nested
# VMs run (measured in the lab; QEMU 7.2 and 10.0). Knobs: RH_SMP (2), RH_MEM (4G),
# RH_TIMEOUT (1800 s), RH_QEMU (extra options).
set -u
[ $# -eq 4 ] || { echo "usage: boot.sh VMLINUZ INITRAMFS RUNDIR APPEND" >&2; exit 2; }
kernel=$1 initrd=$2 run=$3 append=$4
# shellcheck disable=SC2086
exec timeout --foreground "${RH_TIMEOUT:-1800}" qemu-system-x86_64 \
  -accel tcg,thread=single,tb-size=512 -M pc -cpu max \
  -smp "${RH_SMP:-2}" -m "${RH_MEM:-4G}" \
  -nodefaults -no-user-config -display none -vga none -no-reboot -net none \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0,115200 panic=-1 mitigations=off tsc=reliable nmi_watchdog=0 $append" \
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
  -fsdev "local,id=hostrw,path=$run,security_model=none,multidevs=remap" \
  -device virtio-9p-pci,fsdev=hostrw,mount_tag=hostrw \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -serial "file:$run/console.log" \
  -chardev stdio,id=out,signal=on -serial chardev:out \
  ${RH_QEMU:-} </dev/null
