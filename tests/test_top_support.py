"""Snapshot builders and a fake snapshot source for the `vprof top` tests (no tests here)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from vprof.model import (
    HIST_SLOTS,
    Bucket,
    IoStat,
    ProbeStatus,
    ReasonStat,
    SlowExit,
    Snapshot,
    VcpuStat,
    VmStat,
)

SEC = 1_000_000_000
PROBES = (
    ProbeStatus("exits", False, "kvm_exit never fires on this host"),
    ProbeStatus("io", True, ""),
    ProbeStatus("sched", True, ""),
)


@dataclass(frozen=True)
class Load:
    """Per-second behaviour of a fake VM: event counts and where vCPU time goes."""

    pio: int = 0
    mmio: int = 0
    cpuid: int = 0
    wakeups: int = 0
    halted: float = 0.0  # share of vCPU time halted
    vmm: float = 0.0  # share in the VMM's userspace (I/O)
    runq: float = 0.0
    vcpus: int = 1
    slow_ns: int = 0  # one slow exit per second of this length (0: none)
    extra: dict[str, int] = field(default_factory=dict)


def _vcpus(pid: int, load: Load, seconds: float) -> tuple[VcpuStat, ...]:
    wall = int(seconds * SEC)
    busy = 1.0 - load.halted - load.vmm - load.runq
    per = load.vcpus
    return tuple(
        VcpuStat(
            tid=pid * 10 + i,
            index=i,
            wall_ns=wall,
            ledger={
                "in_kvm_run": int(wall * busy),
                "vmm_userspace": int(wall * load.vmm),
                "runqueue": int(wall * load.runq),
                "halted": int(wall * load.halted),
            },
            events={
                "io": int((load.pio + load.mmio) * seconds) // per,
                "privileged": int(load.cpuid * seconds) // per,
                "context_switch": int(load.wakeups * seconds) // per,
            },
            preemptions=int(3 * seconds),
            wakeups=int(load.wakeups * seconds) // per,
        )
        for i in range(per)
    )


def _reasons(load: Load, seconds: float) -> tuple[list[ReasonStat], list[IoStat]]:
    def n(rate: int) -> int:
        return int(rate * seconds)

    reasons: list[ReasonStat] = []
    io: list[IoStat] = []
    if load.pio:
        reasons.append(ReasonStat("event", "kvm_pio", Bucket.IO, n(load.pio)))
        io.append(IoStat("pio", "out", 0x3F8, 1, n(load.pio)))
    if load.mmio:
        reasons.append(ReasonStat("event", "kvm_mmio", Bucket.IO, n(load.mmio)))
        io.append(IoStat("mmio", "write", 0xD000_0000, 4, n(load.mmio)))
    if load.cpuid:
        # 95% of CPUID exits take 1-2 us (log2 slot 10), 5% take 16-32 us (slot 14).
        hist = [0] * HIST_SLOTS
        hist[10], hist[14] = n(load.cpuid) - n(load.cpuid) // 20, n(load.cpuid) // 20
        handling = n(load.cpuid) * 1500
        reasons.append(
            ReasonStat("vmx", "CPUID", Bucket.PRIVILEGED, n(load.cpuid), handling, tuple(hist))
        )
    if load.wakeups:
        reasons.append(
            ReasonStat("event", "kvm_vcpu_wakeup", Bucket.CONTEXT_SWITCH, n(load.wakeups))
        )
    for reason, rate in load.extra.items():
        reasons.append(ReasonStat("event", reason, Bucket.UNCLASSIFIED, n(rate)))
    return reasons, io


def vm(name: str, key: str, load: Load, seconds: float = 1.0, pid: int | None = None) -> VmStat:
    """A VM's cumulative stats after `seconds` of `load`."""
    pid = pid if pid is not None else int(key.split(":")[0])
    reasons, io = _reasons(load, seconds)
    slow = tuple(
        SlowExit(pid * 10, 0, "vmx", "EPT_VIOLATION", Bucket.MEMORY, load.slow_ns + k, k * SEC)
        for k in range(int(seconds))
        if load.slow_ns
    )
    return VmStat(
        key=key,
        pid=pid,
        name=name,
        name_raw=name,
        name_source="qemu -name",
        uuid="",
        vmm="qemu",
        vcpu_count=load.vcpus,
        vcpus=_vcpus(pid, load, seconds),
        reasons=tuple(reasons),
        io=tuple(io),
        slow_exits=slow,
    )


def snap(
    *vms: VmStat, seconds: float = 1.0, interval: float = 1.0, exit_timing: bool = False
) -> Snapshot:
    return Snapshot(
        timestamp=1_764_130_000.0 + seconds,
        monotonic_ns=int(seconds * SEC),
        interval_ns=int(interval * SEC),
        backend="kvm_pvm (no kvm_exit)",
        exit_timing=exit_timing,
        vms=vms,
        probes=PROBES,
    )


def delta(*vms: tuple[str, str, Load]) -> Snapshot:
    """A one-second delta snapshot, as top shows it."""
    return snap(*(vm(name, key, load) for name, key, load in vms))


class FakeSource:
    """Cumulative snapshots of fixed loads; `sleep` makes it pace like a real source."""

    def __init__(
        self, vms: list[tuple[str, str, Load]], sleep: bool = False, limit: int | None = None
    ):
        self.vms = vms
        self.sleep = sleep
        self.limit = limit
        self.intervals: list[float] = []
        self.t = 0.0  # survives restarts, as a real source's counters do

    def snapshots(self, interval: float) -> Iterator[Snapshot]:
        self.intervals.append(interval)
        i = 0
        while self.limit is None or i < self.limit:
            if self.sleep and i:
                time.sleep(interval)
            self.t += interval
            i += 1
            t = self.t
            yield snap(*(vm(n, k, ld, t) for n, k, ld in self.vms), seconds=t, interval=interval)
