"""A synthetic snapshot source: many VMs, no BPF (load tests and benchmarks).

Each VM has `vcpus` vCPU threads with a full ledger, ~16 exit reasons with
histograms and a dozen I/O addresses: more detail than a busy production VM
shows.  The k-th snapshot is cumulative and every vCPU's wall time in it is
exactly k seconds, so a reader can tell which snapshot a figure came from:
a scrape that mixed two snapshots would show two different wall times.

    source = SyntheticSource(vms=500, vcpus=8)
    for snap in source.snapshots(1.0): ...

`delta_snapshots(SyntheticHost(...), n)` gives interval deltas instead, for
recordings (tests/test_offline.py, bench/recording.py): deterministic for a
seed, with port I/O, MMIO, CPUID, MSR and halts at per-VM rates with
interval-to-interval jitter, and ledgers that add up to wall time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType

from vprof.model import (
    HIST_SLOTS,
    PROBE_FAMILIES,
    Bucket,
    IoStat,
    Ledger,
    ProbeStatus,
    ReasonStat,
    SlowExit,
    Snapshot,
    VcpuStat,
    VmStat,
    vm_key,
)

NS = 10**9
REASONS = [
    ("vmx", "EPT_VIOLATION", Bucket.MEMORY), ("vmx", "EPT_MISCONFIG", Bucket.IO),
    ("vmx", "IO_INSTRUCTION", Bucket.IO), ("vmx", "MSR_WRITE", Bucket.PRIVILEGED),
    ("vmx", "MSR_READ", Bucket.PRIVILEGED), ("vmx", "CPUID", Bucket.PRIVILEGED),
    ("vmx", "HLT", Bucket.CONTEXT_SWITCH), ("vmx", "EXTERNAL_INTERRUPT", Bucket.CONTEXT_SWITCH),
    ("vmx", "PAUSE_INSTRUCTION", Bucket.CONTEXT_SWITCH), ("vmx", "APIC_WRITE", Bucket.IO),
    ("vmx", "PREEMPTION_TIMER", Bucket.CONTEXT_SWITCH), ("vmx", "CR_ACCESS", Bucket.PRIVILEGED),
    ("vmx", "XSETBV", Bucket.PRIVILEGED), ("vmx", "unknown:vmx:99", Bucket.UNCLASSIFIED),
    ("event", "kvm_mmu_set_spte", Bucket.MEMORY), ("userspace", "KVM_EXIT_MMIO", Bucket.IO),
]  # fmt: skip


def synthetic_vm(i: int, vcpus: int, rng: random.Random, k: int = 1) -> VmStat:
    """VM number `i` as of snapshot `k` (counters grow with k)."""
    pid = 10_000 + i * 100
    threads = tuple(
        VcpuStat(
            tid=pid + 1 + c,
            index=c,
            wall_ns=k * NS,
            ledger={cat: k * rng.randrange(10**7) for cat in Ledger},
            events={b.value: k * rng.randrange(10**4) for b in Bucket},
            runqueue_wait_ns=k * rng.randrange(10**7),
            preemptions=k * rng.randrange(10**2),
            voluntary_switches=k * rng.randrange(10**3),
            wakeups=k * rng.randrange(10**3),
        )
        for c in range(vcpus)
    )
    reasons = tuple(
        ReasonStat(isa, name, bucket, k * rng.randrange(10**5), k * rng.randrange(10**9),
                   tuple(k * rng.randrange(10**3) for _ in range(HIST_SLOTS)))
        for isa, name, bucket in REASONS
    )  # fmt: skip
    io = tuple(
        IoStat(kind, d, addr, 4, k * rng.randrange(10**4))
        for kind, d, addr in [("pio", "out", 0x3F8 + n) for n in range(6)]
        + [("mmio", "write", 0xFEB00000 + 0x1000 * n) for n in range(6)]
    )
    name = f"tenant-{i:04d}-vm"
    uuid = f"00000000-0000-0000-0000-{i:012d}"
    return VmStat(
        vm_key(pid, 1), pid, name, name, "qemu", uuid, "qemu", vcpus, threads, reasons, io
    )


def synthetic_snapshot(vms: int, vcpus: int, exit_timing: bool, k: int = 1) -> Snapshot:
    rng = random.Random(42)  # the same VMs every time; k scales their counters
    probes = tuple(ProbeStatus(f, True, "") for f in PROBE_FAMILIES)
    return Snapshot(time.time(), time.monotonic_ns(), NS, "vmx", exit_timing,
                    tuple(synthetic_vm(i, vcpus, rng, k) for i in range(vms)), probes)  # fmt: skip


class SyntheticSource:
    """A SnapshotSource (and the daemon's on-demand source) of synthetic VMs."""

    def __init__(self, vms: int = 500, vcpus: int = 8, exit_timing: bool = True) -> None:
        self.vms, self.vcpus, self.exit_timing = vms, vcpus, exit_timing
        self.taken = 0

    def snapshot(self) -> Snapshot:
        self.taken += 1
        return synthetic_snapshot(self.vms, self.vcpus, self.exit_timing, self.taken)

    def snapshots(self, interval: float) -> Iterator[Snapshot]:
        deadline = time.monotonic()
        while True:
            deadline += interval
            time.sleep(max(0.0, deadline - time.monotonic()))
            yield self.snapshot()

    def status(self) -> tuple[ProbeStatus, ...]:
        return tuple(ProbeStatus(f, True, "") for f in PROBE_FAMILIES)

    def close(self) -> None:
        pass


# --- interval deltas for recordings -----------------------------------------

# (isa, reason, bucket, detail) of what each synthetic VM does.
_DELTA_REASONS: tuple[tuple[str, str, Bucket, str], ...] = (
    ("event", "kvm_pio", Bucket.IO, ""),
    ("event", "kvm_mmio", Bucket.IO, ""),
    ("userspace", "KVM_EXIT_IO", Bucket.IO, ""),
    ("userspace", "KVM_EXIT_MMIO", Bucket.IO, ""),
    ("event", "kvm_cpuid", Bucket.PRIVILEGED, "cpuid 0x40000000"),
    ("event", "kvm_msr", Bucket.PRIVILEGED, "msr 0x1a0 read"),
    ("event", "kvm_emulate_insn", Bucket.PRIVILEGED, "opcode 0xf4"),
    ("event", "kvm_vcpu_wakeup", Bucket.CONTEXT_SWITCH, "waited"),
    ("event", "kvm_mmu_set_spte", Bucket.MEMORY, "gpa 0x40000000+1G"),
)
_LEDGER_SHARE = {
    Ledger.IN_KVM_RUN: 0.55,
    Ledger.VMM_USERSPACE: 0.08,
    Ledger.RUNQUEUE: 0.04,
    Ledger.HALTED: 0.30,
    Ledger.UNATTRIBUTED: 0.03,
}


@dataclass(frozen=True)
class SyntheticHost:
    vms: int = 50
    vcpus: int = 2
    interval_s: float = 5.0
    seed: int = 1
    start: float = 1_780_000_000.0
    exit_timing: bool = False  # handling times, histograms and slow exits too


def _vm(i: int, host: SyntheticHost) -> VmStat:
    return VmStat(
        key=f"{1000 + i}:{424242 + i}",
        pid=1000 + i,
        name=f"vm-{i:03d}",
        name_raw=f"vm-{i:03d}",
        name_source="synthetic",
        uuid="",
        vmm="qemu",
        vcpu_count=host.vcpus,
    )


def _delta_vm(vm: VmStat, host: SyntheticHost, rng: random.Random) -> VmStat:
    wall = int(host.interval_s * 1e9)
    vcpus = []
    for k in range(host.vcpus):
        shares = {c: s * rng.uniform(0.8, 1.2) for c, s in _LEDGER_SHARE.items()}
        scale = sum(shares.values())
        ledger = {c: int(wall * s / scale) for c, s in shares.items()}
        vcpus.append(
            VcpuStat(
                tid=vm.pid * 100 + k,
                index=k,
                wall_ns=sum(ledger.values()),
                ledger=MappingProxyType(ledger),
                runqueue_wait_ns=ledger[Ledger.RUNQUEUE],
                preemptions=rng.randrange(5, 50),
                voluntary_switches=rng.randrange(100, 1000),
                wakeups=rng.randrange(100, 1000),
            )
        )
    reasons = []
    for isa, name, bucket, detail in _DELTA_REASONS:
        n = int(rng.uniform(0.7, 1.3) * 2000 * host.interval_s)
        details = MappingProxyType({detail: n} if detail else {})
        handling, hist = _timing(n, rng) if host.exit_timing else (None, None)
        reasons.append(ReasonStat(isa, name, bucket, n, handling, hist, details))
    pio = next(r.count for r in reasons if r.reason == "kvm_pio")
    mmio = next(r.count for r in reasons if r.reason == "kvm_mmio")
    io = (
        IoStat("pio", "out", 0x5650, 1, pio // 2),
        IoStat("pio", "in", 0x5650, 1, pio - pio // 2),
        IoStat("mmio", "write", 0xD0000000, 4, mmio),
    )
    slow = _slow(vcpus, reasons, host, rng) if host.exit_timing else ()
    fields = {"vcpus": tuple(vcpus), "reasons": tuple(reasons), "io": io, "slow_exits": slow}
    return VmStat(**{**vm.__dict__, **fields})


def _timing(n: int, rng: random.Random) -> tuple[int | None, tuple[int, ...] | None]:
    """n exits' handling: a histogram over slots 9..14 (0.5-32 us) and its total."""
    hist = [0] * HIST_SLOTS
    for _ in range(6):
        hist[rng.randrange(9, 15)] += n // 6
    hist[rng.randrange(9, 15)] += n - sum(hist)
    return sum(k * (3 << slot) // 2 for slot, k in enumerate(hist)), tuple(hist)


def _slow(
    vcpus: list[VcpuStat], reasons: list[ReasonStat], host: SyntheticHost, rng: random.Random
) -> tuple[SlowExit, ...]:
    """A few sampled exits over 100 us in the interval."""
    return tuple(
        SlowExit(v.tid, v.index, r.isa, r.reason, r.bucket, rng.randrange(10**5, 10**7),
                 rng.randrange(10**15))
        for v in vcpus
        for r in rng.sample(reasons, 2)
    )  # fmt: skip


def delta_snapshots(host: SyntheticHost, intervals: int) -> Iterator[Snapshot]:
    """`intervals` delta Snapshots of `host`'s VMs."""
    rng = random.Random(host.seed)
    vms = [_vm(i, host) for i in range(host.vms)]
    step = int(host.interval_s * 1e9)
    for n in range(intervals):
        yield Snapshot(
            timestamp=host.start + (n + 1) * host.interval_s,
            monotonic_ns=(n + 1) * step,
            interval_ns=step,
            backend="synthetic",
            exit_timing=host.exit_timing,
            vms=tuple(_delta_vm(vm, host, rng) for vm in vms),
            is_delta=True,
        )
