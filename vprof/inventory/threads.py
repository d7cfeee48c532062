"""What each thread of a VM process does, from its name and the kernel.

Thread names (comm, at most 15 bytes) are set by the VMM:
- QEMU (with `-name ...,debug-threads=on`, which libvirt always sets):
  `CPU <n>/KVM` vCPUs, `IO <id>` iothreads, `worker` block thread pool.
- Cloud Hypervisor: `vcpu<n>`, `vmm` control loop, `_disk0_q0`-style device
  queue threads (virtio device ids start with '_').
- Firecracker: `fc_vcpu <n>`, `fc_vmm` device loop (older releases), `fc_api`.
- crosvm `crosvm_vcpu<n>`, kvmtool `kvm-vcpu-<n>`.
- The kernel: vhost workers `vhost-<owner pid>` (kernel threads before
  Linux 6.4, threads of the VMM process since), `kvm-pit/<pid>`, and
  `kvm-nx-lpage-re(covery)`.

When a name says nothing (QEMU without debug-threads, a plain KVM user), a
thread blocked in ioctl(vcpu_fd, KVM_RUN) shows its vCPU descriptor in
/proc/PID/task/TID/syscall; `ioctl_vcpu_fd` reads that.
"""

from __future__ import annotations

import platform
import re

_VCPU_NAMES = (
    re.compile(r"CPU (\d+)/KVM"),
    re.compile(r"vcpu ?(\d+)"),
    re.compile(r"fc_vcpu ?(\d+)"),
    re.compile(r"crosvm_vcpu ?(\d+)"),
    re.compile(r"kvm-vcpu-(\d+)"),
)
_VHOST = re.compile(r"vhost-(\d+)")
_KVM_KTHREAD = re.compile(r"kvm-pit/(\d+)")
_IO_NAMES = re.compile(r"IO .*|worker|fc_vmm|_.*|kvm-pit/\d+|vnc_worker|SPICE Worker|iou-.*")
_MAIN_NAMES = frozenset({"vmm"})

# Kernel-made threads (include/linux/sched.h): PF_IO_WORKER, PF_USER_WORKER
# (vhost and kvm-nx-lpage-recovery workers inside the VMM since 6.4/6.13),
# PF_KTHREAD.  A user worker is forked from the vCPU thread that started it
# and its syscall file shows that thread's ioctl(KVM_RUN) frozen, so it must
# never be taken for a vCPU.
PF_KERNEL_MADE = 0x00000010 | 0x00004000 | 0x00200000

# KVM_RUN is _IO(KVMIO, 0x80) with KVMIO 0xAE (include/uapi/linux/kvm.h).
KVM_RUN = 0xAE80
# ioctl's syscall number (arch/x86/entry/syscalls/syscall_64.tbl,
# include/uapi/asm-generic/unistd.h for arm64 and riscv).
_IOCTL_NR = {"x86_64": 16, "aarch64": 29, "riscv64": 29, "s390x": 54, "ppc64le": 54}


def vcpu_index_from_name(comm: str) -> int | None:
    for pattern in _VCPU_NAMES:
        m = pattern.fullmatch(comm)
        if m:
            return int(m.group(1))
    return None


def role_of(comm: str, tid: int, pid: int) -> str:
    """The role of a thread that runs no (known) vCPU."""
    if _VHOST.fullmatch(comm):
        return "vhost"
    if tid == pid or comm in _MAIN_NAMES:
        return "main"
    if _IO_NAMES.fullmatch(comm):
        return "io"
    return "other"


def kernel_worker_owner(comm: str) -> tuple[str, int] | None:
    """(role, owner pid) for a kernel thread that works for one VM process."""
    m = _VHOST.fullmatch(comm)
    if m:
        return "vhost", int(m.group(1))
    m = _KVM_KTHREAD.fullmatch(comm)
    if m:
        return "io", int(m.group(1))
    return None


def ioctl_vcpu_fd(syscall: str, machine: str | None = None) -> int | None:
    """The descriptor a thread is blocked on in ioctl(fd, KVM_RUN), from
    /proc/PID/task/TID/syscall ("<nr> <arg0> <arg1> ..."), or None."""
    fields = syscall.split()
    nr = _IOCTL_NR.get(machine or platform.machine())
    if nr is None or len(fields) < 3 or not fields[0].isdigit() or int(fields[0]) != nr:
        return None
    try:
        fd, request = int(fields[1], 16), int(fields[2], 16)
    except ValueError:
        return None
    return fd if request == KVM_RUN else None


def run_state(syscall: str, machine: str | None = None) -> tuple[bool, bool]:
    """(inside KVM_RUN, blocked) of a vCPU thread, from its syscall file.

    The kernel shows the syscall only of a thread that is not runnable;
    a runnable one (on a CPU or waiting for one) reads "running", and a vCPU
    thread that runs is inside KVM_RUN but for short device-emulation spells:
    taken as inside, which its next KVM_RUN boundary corrects if wrong.
    """
    if syscall.strip() == "running":
        return True, False
    return ioctl_vcpu_fd(syscall, machine) is not None, True
