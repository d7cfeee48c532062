"""The immutable Snapshot: the one data shape every sink consumes.

The aggregator (vprof/pipeline/aggregate.py) builds a Snapshot each interval;
every sink only reads them.  Nothing here imports bcc, touches /proc or needs
root, so sinks are tested with snapshots built in tests.

Counters in a Snapshot are cumulative since vprof started tracking that VM.
`diff(prev, cur)` turns two snapshots into one holding the interval's deltas,
which is what rate views (`vprof top`) show.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

from vprof.families import GRANULARITIES as GRANULARITIES
from vprof.families import PROBE_FAMILIES as PROBE_FAMILIES
from vprof.families import UnknownFamilies as UnknownFamilies
from vprof.families import parse_families as parse_families
from vprof.identity import VmIdentity as VmIdentity
from vprof.identity import vm_key as vm_key
from vprof.identity import vm_key_start as vm_key_start


class Bucket(enum.StrEnum):
    """The four sources of virtualization overhead, plus unknown codes."""

    PRIVILEGED = "privileged"
    MEMORY = "memory"
    IO = "io"
    CONTEXT_SWITCH = "context_switch"
    UNCLASSIFIED = "unclassified"


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
    VMM_USERSPACE = "vmm_userspace"  # device emulation in the VMM process, running: I/O
    VMM_BLOCKED = "vmm_blocked"  # the VMM's userspace blocked (waiting): I/O, not CPU
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
        Ledger.VMM_BLOCKED: Bucket.IO,
        Ledger.RUNQUEUE: Bucket.CONTEXT_SWITCH,
        Ledger.HALTED: None,
        Ledger.UNATTRIBUTED: None,
    }
)


def bucket_of(category: Ledger) -> Bucket | None:
    """The overhead bucket a ledger category charges, or None if it is not overhead."""
    return _LEDGER_BUCKET[category]


def charging(bucket: Bucket) -> tuple[Ledger, ...]:
    """Every ledger category that charges `bucket`."""
    return tuple(c for c, b in _LEDGER_BUCKET.items() if b is bucket)


def share(ledger: Mapping[Ledger, int], wall_ns: int, *categories: Ledger) -> float | None:
    """The fraction of `wall_ns` that `categories` took; None without wall time."""
    if wall_ns <= 0:
        return None
    return sum(ledger.get(c, 0) for c in categories) / wall_ns


def kernel_ledger(bucket: Bucket) -> Ledger:
    """The ledger category for in-kernel exit handling of `bucket`."""
    return Ledger(f"kernel_{bucket.value}")


# Histogram slot i counts durations d with 2**i <= d < 2**(i+1) nanoseconds
# (slot 0 also holds d == 0).  Mirrors the log2 slots of probes/vprof.h.
HIST_SLOTS = 40


_KM = TypeVar("_KM", str, Ledger)


def _frozen(m: Mapping[_KM, int] | None = None) -> Mapping[_KM, int]:
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
    ledger: Mapping[Ledger, int] = field(default_factory=_frozen)  # category -> ns
    events: Mapping[str, int] = field(default_factory=_frozen)  # Bucket value -> count
    runqueue_wait_ns: int = 0
    preemptions: int = 0  # involuntary switches out while runnable
    voluntary_switches: int = 0  # blocked (halt, ioctl wait, ...)
    wakeups: int = 0
    # KVM's binary stats where reachable (vprof/sources/kvmstats.py)
    kvm_stats: Mapping[str, int] = field(default_factory=_frozen)
    kvm_gauges: Mapping[str, int] = field(default_factory=_frozen)

    def share(self, *categories: Ledger) -> float | None:
        """The fraction of this vCPU's wall time that `categories` took."""
        return share(self.ledger, self.wall_ns, *categories)


@dataclass(frozen=True)
class Advice:
    """One advice finding attached to a VM (vprof.advice fills these in)."""

    rule: str  # stable rule id, e.g. "io-emulated-device" (docs/advice.md)
    bucket: Bucket
    status: str  # "advise" or "blocked"
    summary: str  # sanitised one-line remedy


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
    kvm_stats: Mapping[str, int] = field(default_factory=_frozen)  # VM fd's + vCPUs' sum
    kvm_gauges: Mapping[str, int] = field(default_factory=_frozen)  # VM-wide, instant/peak
    # KVM's halt_*_hist log2-ns histograms, summed over the vCPUs (kvmstats.py)
    kvm_hists: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))
    kvm_stats_route: str = ""  # "pidfd", "qmp", or "" (see kvm_stats_why)
    kvm_stats_why: str = ""  # why no route reaches this VM's statistics
    advice: tuple[Advice, ...] = ()  # best first; empty unless a source adds advice

    @classmethod
    def of(cls, ident: VmIdentity, vcpus: tuple[VcpuStat, ...] = (), **counters: Any) -> VmStat:
        """The VmStat of `ident` with these vCPUs and counters."""
        return cls(
            key=ident.key,
            pid=ident.pid,
            name=ident.name,
            name_raw=ident.name_raw,
            name_source=ident.name_source,
            uuid=ident.uuid,
            vmm=ident.vmm,
            vcpu_count=ident.vcpu_count or len(vcpus),
            vcpus=vcpus,
            **counters,
        )

    def events_by_bucket(self) -> dict[Bucket, int]:
        out = {b: 0 for b in Bucket}
        for r in self.reasons:
            out[r.bucket] += r.count
        return out

    def ledger_total(self) -> dict[Ledger, int]:
        """Every category's ns, summed over the vCPUs."""
        out = dict.fromkeys(Ledger, 0)
        for v in self.vcpus:
            for cat, ns in v.ledger.items():
                out[cat] = out.get(cat, 0) + ns
        return out

    def wall_ns(self) -> int:
        return sum(v.wall_ns for v in self.vcpus)

    def share(self, *categories: Ledger) -> float | None:
        """The fraction of the VM's vCPU wall time that `categories` took."""
        return share(self.ledger_total(), self.wall_ns(), *categories)


@dataclass(frozen=True)
class ProbeStatus:
    family: str  # "exits", "io", "privileged", "memory", "sched", ...
    attached: bool
    reason: str  # why it is off, or "" when on
    tracepoints: tuple[str, ...] = ()  # "kvm:kvm_pio", ...
    # figures this kernel's tracepoint layouts cannot give (vprof/bpf/fields.py)
    unavailable: tuple[str, ...] = ()


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
    source: str = "bpf"  # "bpf" or "perf": which SnapshotSource built it
    absent: frozenset[str] = frozenset()  # ABSENT_* figures this source cannot give
    exits_over_bound: int = 0  # perf: exits of reasons beyond the per-reason counters
    perf_counters: int = 0  # perf: perf_event fds open (one per counter per vCPU thread)

    def lacks(self, figure: str) -> bool:  # vprof/sources/absent.py names the figures
        return figure in self.absent

    def vm(self, name_or_key: str) -> VmStat | None:
        for vm in self.vms:
            if name_or_key in (vm.name, vm.key, vm.name_raw):
                return vm
        return None


# --- one walker: diff() and the daemon's carry ----------------------------
#
# Every counter of the tree is combined here, by the operation passed in:
# subtraction for diff(), addition for carry (vprof/daemon/carry.py).  A new
# counter is added once, below.  `cur` is the snapshot whose shape wins: its
# labels and non-counter fields, and what to do where `other` lacks a value.

Op = Callable[[int, int], int]
_K = TypeVar("_K")
_V = TypeVar("_V")


# How items of one kind are matched between two snapshots.
_reason_key = operator.attrgetter("isa", "reason")
_io_key = operator.attrgetter("kind", "direction", "address", "size")
_vcpu_key = operator.attrgetter("tid")


def _walk_items(
    cur: Iterable[_V],
    other: Iterable[_V],
    key: Callable[[_V], _K],
    one: Callable[[_V, _V], _V],
    union: bool,
) -> tuple[_V, ...]:
    """`cur`'s items combined with `other`'s of the same key.  With `union`,
    items only in `other` are kept too, `other`'s order first."""
    if not union:
        before = {key(i): i for i in other}
        return tuple(one(i, p) if (p := before.get(key(i))) is not None else i for i in cur)
    out = {key(i): i for i in other}
    for i in cur:
        k = key(i)
        out[k] = one(i, out[k]) if k in out else i
    return tuple(out.values())


def walk_map(
    cur: Mapping[_KM, int], other: Mapping[_KM, int], op: Op, union: bool = False
) -> Mapping[_KM, int]:
    """Counter maps combined key by key (see _walk_items for `union`)."""
    if not union:
        return _frozen({k: op(v, other.get(k, 0)) for k, v in cur.items()})
    out = dict(other)
    for k, v in cur.items():
        out[k] = op(v, out[k]) if k in out else v
    return _frozen(out)


def _opt(cur: int | None, other: int | None, op: Op) -> int | None:
    return op(cur, other) if cur is not None and other is not None else cur


def walk_reason(cur: ReasonStat, other: ReasonStat, op: Op, union: bool = False) -> ReasonStat:
    hist = cur.hist
    if cur.hist is not None and other.hist is not None:
        hist = tuple(op(a, b) for a, b in zip(cur.hist, other.hist, strict=True))
    return replace(
        cur,
        count=op(cur.count, other.count),
        handling_ns=_opt(cur.handling_ns, other.handling_ns, op),
        hist=hist,
        details=walk_map(cur.details, other.details, op, union),
    )


def walk_vcpu(cur: VcpuStat, other: VcpuStat, op: Op, union: bool = False) -> VcpuStat:
    return replace(
        cur,
        wall_ns=op(cur.wall_ns, other.wall_ns),
        ledger=walk_map(cur.ledger, other.ledger, op, union),
        events=walk_map(cur.events, other.events, op, union),
        runqueue_wait_ns=op(cur.runqueue_wait_ns, other.runqueue_wait_ns),
        preemptions=op(cur.preemptions, other.preemptions),
        voluntary_switches=op(cur.voluntary_switches, other.voluntary_switches),
        wakeups=op(cur.wakeups, other.wakeups),
        kvm_stats=walk_map(cur.kvm_stats, other.kvm_stats, op, union),
    )


def walk_vm(cur: VmStat, other: VmStat, op: Op, union: bool = False) -> VmStat:
    """One VM's counters combined with `other`'s: vCPUs by tid, reasons by
    (isa, reason), I/O by (kind, direction, address, size)."""

    def vcpu(a: VcpuStat, b: VcpuStat) -> VcpuStat:
        return walk_vcpu(a, b, op, union)

    def reason(a: ReasonStat, b: ReasonStat) -> ReasonStat:
        return walk_reason(a, b, op, union)

    def io(a: IoStat, b: IoStat) -> IoStat:
        return replace(a, count=op(a.count, b.count))

    return replace(
        cur,
        vcpus=_walk_items(cur.vcpus, other.vcpus, _vcpu_key, vcpu, union),
        reasons=_walk_items(cur.reasons, other.reasons, _reason_key, reason, union),
        io=_walk_items(cur.io, other.io, _io_key, io, union),
        kvm_stats=walk_map(cur.kvm_stats, other.kvm_stats, op, union),
        kvm_hists=walk_hists(cur.kvm_hists, other.kvm_hists, op, union),
    )


Hists = Mapping[str, tuple[int, ...]]


def walk_hists(cur: Hists, other: Hists, op: Op, union: bool = False) -> Hists:
    """Histograms slot by slot; one whose length changed is `cur`'s as it is."""
    out = {k: h for k, h in other.items() if k not in cur} if union else {}
    for k, h in cur.items():
        o = other.get(k, ())
        out[k] = tuple(map(op, h, o)) if len(o) == len(h) else h
    return MappingProxyType(out)


def walk_snapshot(cur: Snapshot, other: Snapshot, op: Op, union: bool = False) -> Snapshot:
    """The snapshot-wide counters and every VM `cur` shows, combined by key.
    VMs only in `other` never appear: they are gone."""
    before = {vm.key: vm for vm in other.vms}
    return replace(
        cur,
        vms=tuple(
            walk_vm(vm, p, op, union) if (p := before.get(vm.key)) is not None else vm
            for vm in cur.vms
        ),
        events_lost=op(cur.events_lost, other.events_lost),
        map_overflows=walk_map(cur.map_overflows, other.map_overflows, op, union),
        decode_errors=op(cur.decode_errors, other.decode_errors),
        exits_over_bound=op(cur.exits_over_bound, other.exits_over_bound),
    )


def diff(prev: Snapshot | None, cur: Snapshot) -> Snapshot:
    """The interval between two cumulative snapshots, as a Snapshot of deltas.

    VMs absent from `prev` contribute everything they have; VMs absent from
    `cur` are gone and do not appear.
    """
    if prev is None:
        return replace(cur, is_delta=True)
    walked = walk_snapshot(cur, prev, operator.sub)
    before = {vm.key: vm for vm in prev.vms}
    vms = []
    for vm in walked.vms:
        p = before.get(vm.key)
        if p is not None:  # slow exits are samples, not counters: only the new ones
            seen = {s.timestamp_ns for s in p.slow_exits}
            vm = replace(
                vm, slow_exits=tuple(s for s in vm.slow_exits if s.timestamp_ns not in seen)
            )
        vms.append(vm)
    return replace(
        walked,
        interval_ns=cur.monotonic_ns - prev.monotonic_ns,
        vms=tuple(vms),
        is_delta=True,
    )
