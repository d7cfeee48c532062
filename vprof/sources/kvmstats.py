"""KVM's binary statistics (KVM_GET_STATS_FD) of VMs vprof does not own.

KVM answers VM and vCPU ioctls only in the VM's own process (a duplicated VM
fd gives EIO), so a stats fd cannot be made from outside.  Two routes work:
- `pidfd`: a stats fd the VMM holds open (`anon_inode:kvm-vm-stats`,
  `anon_inode:kvm-vcpu-stats:<n>` in /proc/PID/fd) is duplicated with
  pidfd_open + pidfd_getfd (Linux 5.6+, ptrace rights over the VMM) and read
  with pread like any file; it stays open here, one fd per VM and vCPU;
- `qmp`: QEMU 7.1+ answers `query-stats` on its monitor socket (qmp.py).
Each file is decoded from its own header and descriptors (vprof.guest.stats:
include/uapi/linux/kvm.h struct kvm_stats_header/kvm_stats_desc), never from
known offsets.  Cumulative counters and instant/peak values are kept apart,
so diff() subtracts only what accumulates.  Of the histograms, the halt ones
(HALT_HISTS: log2 buckets of nanoseconds) are kept, summed over the vCPUs;
the others are left out.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from vprof.guest.stats import StatDesc, parse_descriptors, read_blob
from vprof.model import Snapshot, VcpuStat, VmStat
from vprof.sources import qmp

VM_STATS_LINK = "anon_inode:kvm-vm-stats"
VCPU_STATS_PREFIX = "anon_inode:kvm-vcpu-stats:"
_NR_PIDFD_GETFD = 438  # the same on every architecture (asm-generic unistd)
# virt/kvm/kvm_main.c STATS_DESC_LOGHIST_TIME_NSEC(VCPU_GENERIC, ...), Linux 5.14+:
# bucket 0 counts 0 ns, bucket i >= 1 counts [2**(i-1), 2**i) ns (fls64 of the
# value, kvm_stats_log_hist_update), the last also everything above.
HALT_HISTS = ("halt_poll_success_hist", "halt_poll_fail_hist", "halt_wait_hist")
MAX_HIST_BUCKETS = 64  # what a histogram may hold before it is refused as garbage


@dataclass(frozen=True)
class StatsValues:
    cumulative: Mapping[str, int] = field(default_factory=dict)
    gauges: Mapping[str, int] = field(default_factory=dict)
    hists: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # HALT_HISTS


def _is_halt_hist(d: StatDesc) -> bool:
    """A halt histogram as vprof reads it: log2 buckets of nanoseconds."""
    return (
        d.name in HALT_HISTS
        and d.type == "log_hist"
        and d.unit == "seconds"
        and d.exponent == -9
        and 1 < d.size <= MAX_HIST_BUCKETS
    )


def decode(blob: bytes) -> StatsValues:
    """One stats file: scalar counters and gauges by the kernel's own names,
    and the halt histograms."""
    data_off = struct.unpack_from("<6I", blob, 0)[5]
    _, descs = parse_descriptors(blob)
    cum: dict[str, int] = {}
    gauges: dict[str, int] = {}
    hists: dict[str, tuple[int, ...]] = {}
    for d in descs:
        if d.size != 1:
            if _is_halt_hist(d):
                hists[d.name] = struct.unpack_from(f"<{d.size}Q", blob, data_off + d.offset)
            continue
        value = struct.unpack_from("<Q", blob, data_off + d.offset)[0]
        (cum if d.type == "cumulative" else gauges)[d.name] = value
    return StatsValues(cum, gauges, hists)


def pidfd_getfd(pid: int, target_fd: int) -> int:
    """Duplicate fd `target_fd` of process `pid` into this process."""
    pidfd = os.pidfd_open(pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.syscall(_NR_PIDFD_GETFD, pidfd, target_fd, 0))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd: {os.strerror(err)}")
        return fd
    finally:
        os.close(pidfd)


def held_stats_fds(proc_root: str, pid: int) -> tuple[int | None, dict[int, int]]:
    """The VMM's own VM stats fd and {vcpu id: fd} of its vCPU stats fds."""
    vm_fd: int | None = None
    vcpus: dict[int, int] = {}
    base = f"{proc_root}/{pid}/fd"
    for name in os.listdir(base):
        try:
            link = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if link == VM_STATS_LINK:
            vm_fd = int(name)
        elif link.startswith(VCPU_STATS_PREFIX):
            vcpus[int(link[len(VCPU_STATS_PREFIX) :])] = int(name)
    return vm_fd, vcpus


def _why_denied(exc: OSError) -> str:
    if exc.errno == errno.EPERM:
        scope = "?"
        try:
            with open("/proc/sys/kernel/yama/ptrace_scope") as f:
                scope = f.read().strip()
        except OSError:
            scope = "absent"
        return (
            f"pidfd_getfd refused (EPERM): needs ptrace rights over the VMM "
            f"(CAP_SYS_PTRACE; yama ptrace_scope={scope}; a non-dumpable VMM needs CAP_SYS_PTRACE)"
        )
    return str(exc)


@dataclass
class _Held:
    """Stats fds duplicated from one VMM: ours to read, closed when it goes."""

    vm: int | None
    vcpus: dict[int, int]  # vcpu id -> our fd

    def close(self) -> None:
        for fd in [self.vm, *self.vcpus.values()]:
            if fd is not None:
                os.close(fd)


@dataclass(frozen=True)
class VmStats:
    route: str  # "pidfd", "qmp" or ""
    why: str = ""  # when route is "": why no route reaches the VM
    vm: StatsValues = field(default_factory=StatsValues)
    vcpus: Mapping[int, StatsValues] = field(default_factory=dict)  # vcpu index -> values
    by_tid: Mapping[int, StatsValues] = field(default_factory=dict)  # QMP names threads


class KvmStatsReader:
    """Reads each VM's statistics by the first route its VMM allows."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self._held: dict[int, _Held] = {}

    def read(self, pid: int, cmdline: list[str] | None = None) -> VmStats:
        held = self._held.get(pid) or self._dup(pid)
        if isinstance(held, _Held):
            try:
                return self._read_held(held)
            except OSError as exc:
                self.forget(pid)
                held = f"reading the duplicated stats fds: {exc}"
        why = held
        sock = qmp.socket_of(cmdline or [])
        if sock is None:
            return VmStats("", f"{why}; no QMP socket on the VMM's command line")
        try:
            vm, vcpus = qmp.query_stats(sock)
        except (OSError, qmp.QmpError) as exc:
            return VmStats("", f"{why}; QMP {sock}: {exc}")
        return VmStats(
            "qmp",
            vm=StatsValues(*_split(vm)),
            by_tid={tid: StatsValues(*_split(v)) for tid, v in vcpus.items()},
        )

    def _dup(self, pid: int) -> _Held | str:
        try:
            vm_fd, vcpus = held_stats_fds(self.proc_root, pid)
        except OSError as exc:
            return f"/proc/{pid}/fd: {exc.strerror}"
        if vm_fd is None and not vcpus:
            return "the VMM holds no KVM stats fd (KVM serves them only to the VM's own process)"
        held = _Held(None, {})
        try:
            held.vm = pidfd_getfd(pid, vm_fd) if vm_fd is not None else None
            for idx, fd in vcpus.items():
                held.vcpus[idx] = pidfd_getfd(pid, fd)
        except OSError as exc:
            held.close()
            return _why_denied(exc)
        self._held[pid] = held
        return held

    @staticmethod
    def _read_held(held: _Held) -> VmStats:
        vm = decode(read_blob(held.vm)) if held.vm is not None else StatsValues()
        vcpus = {i: decode(read_blob(fd)) for i, fd in held.vcpus.items()}
        return VmStats("pidfd", vm=vm, vcpus=vcpus)

    def holds(self, pid: int) -> bool:
        return pid in self._held

    def keep_only(self, pids: set[int]) -> None:
        """Close the fds of VMs the source no longer reports."""
        for pid in set(self._held) - pids:
            self.forget(pid)

    def forget(self, pid: int) -> None:
        held = self._held.pop(pid, None)
        if held is not None:
            held.close()

    def close(self) -> None:
        for pid in list(self._held):
            self.forget(pid)


# QMP reports instant/peak values beside counters without their type in
# query-stats; these are the gauges among KVM's x86 and generic stats
# (virt/kvm/kvm_main.c, arch/x86/kvm/x86.c: STATS_DESC_ICOUNTER/PCOUNTER).
_QMP_GAUGES = frozenset(
    {
        "guest_mode",
        "pages_4k",
        "pages_2m",
        "pages_1g",
        "mmu_unsync",
        "max_mmu_page_hash_collisions",
        "max_mmu_rmap_size",
        "nx_lpage_splits",
        "blocking",
    }
)


def _split(
    values: Mapping[str, qmp.Value],
) -> tuple[dict[str, int], dict[str, int], dict[str, tuple[int, ...]]]:
    """Counters, gauges and the halt histograms (QMP gives histograms as lists
    in the kernel's own bucket order, without their type)."""
    scalars = {k: v for k, v in values.items() if isinstance(v, int)}
    cum = {k: v for k, v in scalars.items() if k not in _QMP_GAUGES}
    hists = {
        k: v
        for k, v in values.items()
        if isinstance(v, tuple) and k in HALT_HISTS and 1 < len(v) <= MAX_HIST_BUCKETS
    }
    return cum, {k: v for k, v in scalars.items() if k in _QMP_GAUGES}, hists


def _sum(parts: list[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


def _sum_hists(parts: list[Mapping[str, tuple[int, ...]]]) -> dict[str, tuple[int, ...]]:
    """Histograms of the same name added bucket by bucket (vCPUs of one VM
    share the kernel's layout; one of another length is left out)."""
    out: dict[str, tuple[int, ...]] = {}
    for p in parts:
        for k, h in p.items():
            have = out.get(k)
            if have is None:
                out[k] = tuple(h)
            elif len(have) == len(h):
                out[k] = tuple(a + b for a, b in zip(have, h, strict=True))
    return out


def enrich_vm(vm: VmStat, stats: VmStats, index_of: Mapping[int, int]) -> VmStat:
    """`vm` with its KVM statistics: per vCPU where the thread is known, and
    VM-wide (the VM fd's own plus the sum over every vCPU)."""
    if not stats.route:
        return replace(vm, kvm_stats_route="", kvm_stats_why=stats.why)
    per_tid = dict(stats.by_tid)
    for tid, idx in index_of.items():
        if idx in stats.vcpus:
            per_tid[tid] = stats.vcpus[idx]
    every = list(stats.vcpus.values()) if stats.vcpus else list(stats.by_tid.values())

    def with_stats(v: VcpuStat) -> VcpuStat:
        s = per_tid.get(v.tid)
        if s is None:
            return v
        return replace(
            v,
            kvm_stats=MappingProxyType(dict(s.cumulative)),
            kvm_gauges=MappingProxyType(dict(s.gauges)),
        )

    return replace(
        vm,
        vcpus=tuple(with_stats(v) for v in vm.vcpus),
        kvm_stats=MappingProxyType(_sum([stats.vm.cumulative, *(s.cumulative for s in every)])),
        kvm_gauges=MappingProxyType(_sum([stats.vm.gauges, *(s.gauges for s in every)])),
        kvm_hists=MappingProxyType(_sum_hists([s.hists for s in every])),
        kvm_stats_route=stats.route,
    )


def _cmdline(proc_root: str, pid: int) -> list[str]:
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as f:
            raw = f.read(1 << 20)
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def enrich(snap: Snapshot, reader: KvmStatsReader) -> Snapshot:
    """Every VM of `snap` with its KVM statistics, or why it has none."""
    vms = []
    for vm in snap.vms:
        # Duplicated stats fds stay readable after the VMM exits: its final figures.
        if not reader.holds(vm.pid) and not os.path.exists(f"{reader.proc_root}/{vm.pid}"):
            vms.append(replace(vm, kvm_stats_why="the VMM has exited"))
            continue
        stats = reader.read(vm.pid, _cmdline(reader.proc_root, vm.pid))
        index_of = {v.tid: v.index for v in vm.vcpus if v.index is not None}
        vms.append(enrich_vm(vm, stats, index_of))
    reader.keep_only({vm.pid for vm in snap.vms})
    return replace(snap, vms=tuple(vms))
