"""The immutable Snapshot: the one data shape every sink consumes.

The aggregator (vprof/aggregate.py) builds a Snapshot each interval; the
Prometheus collector, `vprof top` and the recorder only read them.  Nothing
here imports bcc, touches /proc or needs root, so sinks are tested with
snapshots built in tests.

Counters in a Snapshot are cumulative since vprof started tracking that VM.
`diff(prev, cur)` turns two snapshots into one holding the interval's deltas,
which is what rate views (`vprof top`) show.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol, TypeVar


class Bucket(enum.StrEnum):
    """The four sources of virtualization overhead, plus unknown codes."""

    PRIVILEGED = "privileged"
    MEMORY = "memory"
    IO = "io"
    CONTEXT_SWITCH = "context_switch"
    UNCLASSIFIED = "unclassified"


# Probe families: each compiles and attaches on its own and is switched off on
# its own (vprof/bpf/).  Config files and `--families` use these names.
PROBE_FAMILIES: tuple[str, ...] = ("exits", "io", "vmm", "privileged", "memory", "sched")

OVERHEAD_BUCKETS: tuple[Bucket, ...] = (
    Bucket.PRIVILEGED,
    Bucket.MEMORY,
    Bucket.IO,
    Bucket.CONTEXT_SWITCH,
)


class Ledger(enum.StrEnum):
    """Where each nanosecond of a vCPU thread's wall time went.

    Exactly one category per nanosecond; a vCPU's categories sum to its wall
    time.  `bucket_of()` says which overhead bucket a category charges.
    """

    GUEST = "guest"  # guest code running (needs kvm_entry/kvm_exit)
    IN_KVM_RUN = "in_kvm_run"  # guest + in-kernel handling, not separable on this host
    KERNEL_PRIVILEGED = "kernel_privileged"  # exit handling in the host kernel, by bucket
    KERNEL_MEMORY = "kernel_memory"
    KERNEL_IO = "kernel_io"
    KERNEL_CONTEXT_SWITCH = "kernel_context_switch"
    KERNEL_UNCLASSIFIED = "kernel_unclassified"
    VMM_USERSPACE = "vmm_userspace"  # device emulation in the VMM process: I/O
    RUNQUEUE = "runqueue"  # runnable, not running: context switch
    HALTED = "halted"  # the guest's own idleness, not overhead
    UNATTRIBUTED = "unattributed"  # no event to split this time on


_LEDGER_BUCKET: Mapping[Ledger, Bucket | None] = MappingProxyType(
    {
        Ledger.GUEST: None,
        Ledger.IN_KVM_RUN: None,
        Ledger.KERNEL_PRIVILEGED: Bucket.PRIVILEGED,
        Ledger.KERNEL_MEMORY: Bucket.MEMORY,
        Ledger.KERNEL_IO: Bucket.IO,
        Ledger.KERNEL_CONTEXT_SWITCH: Bucket.CONTEXT_SWITCH,
        Ledger.KERNEL_UNCLASSIFIED: Bucket.UNCLASSIFIED,
        Ledger.VMM_USERSPACE: Bucket.IO,
        Ledger.RUNQUEUE: Bucket.CONTEXT_SWITCH,
        Ledger.HALTED: None,
        Ledger.UNATTRIBUTED: None,
    }
)


def bucket_of(category: Ledger) -> Bucket | None:
    """The overhead bucket a ledger category charges, or None if it is not overhead."""
    return _LEDGER_BUCKET[category]


def kernel_ledger(bucket: Bucket) -> Ledger:
    """The ledger category for in-kernel exit handling of `bucket`."""
    return Ledger(f"kernel_{bucket.value}")


# Histogram slot i counts durations d with 2**i <= d < 2**(i+1) nanoseconds
# (slot 0 also holds d == 0).  Mirrors the log2 slots of probes/vprof.h.
HIST_SLOTS = 40


def _frozen(m: Mapping[str, int] | None = None) -> Mapping[str, int]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True)
class ReasonStat:
    """One exit reason or KVM event, as named by the taxonomy."""

    isa: str  # "vmx", "svm", "arm64", "event" (non-exit KVM/sched event), "userspace"
    reason: str  # taxonomy name, e.g. "EPT_VIOLATION", "kvm_pio", "unknown:vmx:99"
    bucket: Bucket
    count: int
    handling_ns: int | None = None  # exit -> entry total; None where the host lacks timing
    hist: tuple[int, ...] | None = None  # log2 ns slots of handling time, HIST_SLOTS long
    # Counts by the event's argument, e.g. {"msr 0x175 read": 5, "cpuid 0x40000000": 9}
    details: Mapping[str, int] = field(default_factory=_frozen)


@dataclass(frozen=True)
class IoStat:
    """Accesses to one port or guest-physical address."""

    kind: str  # "pio", "mmio", "fast_mmio"
    direction: str  # pio: "in"/"out"; mmio: "read"/"write"/"unsatisfied_read"
    address: int  # port number or guest-physical address
    size: int  # bytes per access
    count: int


@dataclass(frozen=True)
class SlowExit:
    """One exit whose handling time was over the sampling threshold."""

    tid: int
    vcpu: int | None
    isa: str
    reason: str
    bucket: Bucket
    duration_ns: int
    timestamp_ns: int  # CLOCK_MONOTONIC of the exit


@dataclass(frozen=True)
class VcpuStat:
    tid: int
    index: int | None  # vCPU index; None for a thread not (yet) mapped
    wall_ns: int  # time covered by the ledger
    ledger: Mapping[str, int] = field(default_factory=_frozen)  # Ledger value -> ns
    events: Mapping[str, int] = field(default_factory=_frozen)  # Bucket value -> count
    runqueue_wait_ns: int = 0
    preemptions: int = 0  # involuntary switches out while runnable
    voluntary_switches: int = 0  # blocked (halt, ioctl wait, ...)
    wakeups: int = 0


@dataclass(frozen=True)
class VmStat:
    key: str  # stable identity: "<pid>:<start_time_ticks>", survives nothing but the process
    pid: int
    name: str  # sanitised for terminals, labels and file names
    name_raw: str  # as the VM owner gave it; only for export
    name_source: str  # how the name was found, e.g. "qemu -name", "fallback"
    uuid: str
    vmm: str  # "qemu", "firecracker", "cloud-hypervisor", "kubevirt", "vprof-guest", "unknown"
    vcpu_count: int
    vcpus: tuple[VcpuStat, ...] = ()
    reasons: tuple[ReasonStat, ...] = ()
    io: tuple[IoStat, ...] = ()
    slow_exits: tuple[SlowExit, ...] = ()

    def events_by_bucket(self) -> dict[Bucket, int]:
        out = {b: 0 for b in Bucket}
        for r in self.reasons:
            out[r.bucket] += r.count
        return out

    def ledger_total(self) -> dict[str, int]:
        out: dict[str, int] = {c.value: 0 for c in Ledger}
        for v in self.vcpus:
            for cat, ns in v.ledger.items():
                out[cat] = out.get(cat, 0) + ns
        return out

    def wall_ns(self) -> int:
        return sum(v.wall_ns for v in self.vcpus)


@dataclass(frozen=True)
class ProbeStatus:
    family: str  # "exits", "io", "privileged", "memory", "sched", ...
    attached: bool
    reason: str  # why it is off, or "" when on
    tracepoints: tuple[str, ...] = ()  # "kvm:kvm_pio", ...


@dataclass(frozen=True)
class ProgStat:
    """Kernel BPF statistics of one program (kernel.bpf_stats_enabled)."""

    name: str
    run_time_ns: int
    run_cnt: int


@dataclass(frozen=True)
class Snapshot:
    timestamp: float  # time.time() at the end of the interval
    monotonic_ns: int  # CLOCK_MONOTONIC at the end of the interval
    interval_ns: int  # length of the interval this snapshot closes
    backend: str  # e.g. "vmx", "svm", "kvm_pvm (no kvm_exit)"
    exit_timing: bool  # True where kvm_exit/kvm_entry give handling times
    vms: tuple[VmStat, ...] = ()
    probes: tuple[ProbeStatus, ...] = ()
    events_lost: int = 0  # ring-buffer records lost
    map_overflows: Mapping[str, int] = field(default_factory=_frozen)  # map name -> count
    decode_errors: int = 0
    progs: tuple[ProgStat, ...] = ()
    aggregation_seconds: float = 0.0  # Python time spent building this snapshot
    unreadable_proc_entries: int = 0
    is_delta: bool = False  # True for the output of diff()

    def vm(self, name_or_key: str) -> VmStat | None:
        for vm in self.vms:
            if name_or_key in (vm.name, vm.key, vm.name_raw):
                return vm
        return None


class SnapshotSource(Protocol):
    """What sinks consume: the live Profiler, a recording, or a test fake."""

    def snapshots(self, interval: float) -> Iterator[Snapshot]: ...


# --- deltas ---------------------------------------------------------------

_K = TypeVar("_K")


def _sub_map(cur: Mapping[str, int], prev: Mapping[str, int]) -> Mapping[str, int]:
    return _frozen({k: v - prev.get(k, 0) for k, v in cur.items()})


def _index(items: Iterable[_K], key: object) -> dict[object, _K]:
    return {key(i): i for i in items}  # type: ignore[operator]


def _reason_key(r: ReasonStat) -> tuple[str, str]:
    return (r.isa, r.reason)


def _io_key(s: IoStat) -> tuple[str, str, int, int]:
    return (s.kind, s.direction, s.address, s.size)


def _diff_reason(cur: ReasonStat, prev: ReasonStat | None) -> ReasonStat:
    if prev is None:
        return cur
    hist = cur.hist
    if cur.hist is not None and prev.hist is not None:
        hist = tuple(a - b for a, b in zip(cur.hist, prev.hist, strict=True))
    handling = cur.handling_ns
    if handling is not None and prev.handling_ns is not None:
        handling -= prev.handling_ns
    return replace(
        cur,
        count=cur.count - prev.count,
        handling_ns=handling,
        hist=hist,
        details=_sub_map(cur.details, prev.details),
    )


def _diff_vcpu(cur: VcpuStat, prev: VcpuStat | None) -> VcpuStat:
    if prev is None:
        return cur
    return replace(
        cur,
        wall_ns=cur.wall_ns - prev.wall_ns,
        ledger=_sub_map(cur.ledger, prev.ledger),
        events=_sub_map(cur.events, prev.events),
        runqueue_wait_ns=cur.runqueue_wait_ns - prev.runqueue_wait_ns,
        preemptions=cur.preemptions - prev.preemptions,
        voluntary_switches=cur.voluntary_switches - prev.voluntary_switches,
        wakeups=cur.wakeups - prev.wakeups,
    )


def _diff_vm(cur: VmStat, prev: VmStat | None) -> VmStat:
    if prev is None:
        return cur
    pv = _index(prev.vcpus, lambda v: v.tid)
    pr = _index(prev.reasons, _reason_key)
    pio = _index(prev.io, _io_key)
    seen = {s.timestamp_ns for s in prev.slow_exits}
    return replace(
        cur,
        vcpus=tuple(_diff_vcpu(v, pv.get(v.tid)) for v in cur.vcpus),
        reasons=tuple(_diff_reason(r, pr.get(_reason_key(r))) for r in cur.reasons),
        io=tuple(
            replace(s, count=s.count - p.count) if (p := pio.get(_io_key(s))) else s for s in cur.io
        ),
        slow_exits=tuple(s for s in cur.slow_exits if s.timestamp_ns not in seen),
    )


def diff(prev: Snapshot | None, cur: Snapshot) -> Snapshot:
    """The interval between two cumulative snapshots, as a Snapshot of deltas.

    VMs absent from `prev` contribute everything they have; VMs absent from
    `cur` are gone and do not appear.
    """
    if prev is None:
        return replace(cur, is_delta=True)
    pvms = _index(prev.vms, lambda v: v.key)
    return replace(
        cur,
        interval_ns=cur.monotonic_ns - prev.monotonic_ns,
        vms=tuple(_diff_vm(vm, pvms.get(vm.key)) for vm in cur.vms),
        events_lost=cur.events_lost - prev.events_lost,
        map_overflows=_sub_map(cur.map_overflows, prev.map_overflows),
        decode_errors=cur.decode_errors - prev.decode_errors,
        is_delta=True,
    )
