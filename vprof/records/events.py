"""Decoded, typed records of the probes' maps: ctypes mirrors of probes/vprof.h.

The loader hands over raw bytes (key, per-CPU values); this module turns them
into records and sums the per-CPU values.  Pure: unit tests decode recorded
map contents from tests/fixtures/pipeline/.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from vprof.model import HIST_SLOTS

RawMap = Sequence[tuple[bytes, Sequence[bytes]]]

# enum vprof_ledger in probes/vprof.h, in order.
LEDGER_STATES: tuple[str, ...] = (
    "guest",
    "in_kvm_run",
    "kernel",
    "vmm_userspace",
    "runqueue",
    "halted",
    "unattributed",
    "dead",
    "vmm_blocked",  # its time is in ns[7], the slot dead threads never use
)
L_NCAT = 8  # ns[] slots, named by NS_SLOTS
NS_SLOTS = (*LEDGER_STATES[:7], "vmm_blocked")
F_EXITS_SEEN, F_BLOCKED, F_IOCTL_SEEN = 1, 2, 4

# enum vprof_overflow: overflow[] slot -> the map (or ring buffer) that was full.
OVERFLOW_SLOTS: tuple[str, ...] = (
    "vcpus",
    "events",
    "exits",
    "io",
    "slow_exits_ringbuf",
    "new_vcpus_ringbuf",
)

# enum vprof_event: id -> tracepoint name (the taxonomy's classify_event key).
EVENT_NAMES: Mapping[int, str] = {
    1: "kvm_userspace_exit",
    2: "kvm_cpuid",
    3: "kvm_msr",
    4: "kvm_cr",
    5: "kvm_hypercall",
    6: "kvm_emulate_insn",
    7: "kvm_page_fault",
    8: "kvm_mmu_set_spte",
    9: "kvm_mmu_spte_requested",
    10: "fast_page_fault",
    11: "handle_mmio_page_fault",
    12: "mark_mmio_spte",
    13: "kvm_mmu_pagetable_walk",
    14: "kvm_async_pf_not_present",
    15: "kvm_async_pf_ready",
    16: "kvm_async_pf_completed",
    17: "kvm_vcpu_wakeup",
    18: "kvm_halt_poll_ns",
    19: "kvm_fpu",
    20: "kvm_inj_virq",
    21: "kvm_inj_exception",
}

IO_KINDS: Mapping[int, str] = {1: "pio", 2: "mmio", 3: "fast_mmio"}
# kvm_pio rw (include/trace/events/kvm.h: 0 in, 1 out); kvm_mmio type
# KVM_TRACE_MMIO_READ_UNSATISFIED 0, READ 1, WRITE 2 (same header).
IO_DIRECTIONS: Mapping[str, Mapping[int, str]] = {
    "pio": {0: "in", 1: "out"},
    "mmio": {0: "unsatisfied_read", 1: "read", 2: "write"},
    "fast_mmio": {2: "write"},
}

_u32, _u64 = ctypes.c_uint32, ctypes.c_uint64


class CVcpuState(ctypes.Structure):
    _fields_ = (
        ("pid", _u32),
        ("vcpu_id", _u32),
        ("state", _u32),
        ("resume", _u32),
        ("in_run", _u32),
        ("flags", _u32),
        ("since_ns", _u64),
        ("first_ns", _u64),
        ("ns", _u64 * L_NCAT),
        ("runq_wait_ns", _u64),
        ("preemptions", _u64),
        ("voluntary", _u64),
        ("wakeups", _u64),
        ("exit_ns", _u64),
        ("exit_isa", _u32),
        ("exit_reason", _u32),
        ("exit_kernel_ns", _u64),
    )


class CEventKey(ctypes.Structure):
    _fields_ = (("pid", _u32), ("tid", _u32), ("id", _u32), ("pad", _u32), ("detail", _u64))


class CEventVal(ctypes.Structure):
    _fields_ = (("count", _u64), ("sum", _u64))


class CExitKey(ctypes.Structure):
    _fields_ = (("pid", _u32), ("tid", _u32), ("isa", _u32), ("reason", _u32))


class CExitVal(ctypes.Structure):
    _fields_ = (
        ("count", _u64),
        ("timed", _u64),
        ("total_ns", _u64),
        ("kernel_ns", _u64),
        ("hist", _u64 * HIST_SLOTS),
    )


class CIoKey(ctypes.Structure):
    _fields_ = (
        ("pid", _u32),
        ("tid", _u32),
        ("kind", _u32),
        ("dir", _u32),
        ("size", _u32),
        ("pad", _u32),
        ("addr", _u64),
    )


class CSlowExit(ctypes.Structure):
    _fields_ = (
        ("pid", _u32),
        ("tid", _u32),
        ("isa", _u32),
        ("reason", _u32),
        ("vcpu_id", _u32),
        ("pad", _u32),
        ("exit_ns", _u64),
        ("duration_ns", _u64),
    )


class CNewVcpu(ctypes.Structure):
    _fields_ = (("pid", _u32), ("tid", _u32), ("first_ns", _u64))


@dataclass(frozen=True)
class VcpuRecord:
    tid: int
    pid: int
    vcpu_id: int | None
    state: str
    resume: str
    in_run: bool
    flags: int
    since_ns: int
    first_ns: int
    ns: Mapping[str, int]  # LEDGER_STATES name -> ns closed so far
    runq_wait_ns: int
    preemptions: int
    voluntary: int
    wakeups: int


@dataclass(frozen=True)
class EventRecord:
    pid: int
    tid: int
    name: str
    detail: int
    count: int
    sum: int


@dataclass(frozen=True)
class ExitRecord:
    pid: int
    tid: int
    isa: int
    reason: int
    count: int
    timed: int
    total_ns: int  # exit -> entry
    kernel_ns: int  # of which on CPU in the kernel
    hist: tuple[int, ...]


@dataclass(frozen=True)
class IoRecord:
    pid: int
    tid: int
    kind: str
    direction: str
    size: int
    address: int
    count: int


@dataclass(frozen=True)
class SlowExitRecord:
    pid: int
    tid: int
    isa: int
    reason: int
    vcpu_id: int | None
    exit_ns: int
    duration_ns: int


@dataclass(frozen=True)
class Decoded:
    vcpus: tuple[VcpuRecord, ...] = ()
    events: tuple[EventRecord, ...] = ()
    exits: tuple[ExitRecord, ...] = ()
    io: tuple[IoRecord, ...] = ()
    overflows: Mapping[str, int] = field(default_factory=dict)
    errors: int = 0  # entries that did not decode (size mismatch, unknown ids)


_S = TypeVar("_S", bound=ctypes.Structure)


def _cast(kind: type[_S], raw: bytes) -> _S:
    if len(raw) != ctypes.sizeof(kind):
        raise ValueError(f"{kind.__name__}: {len(raw)} bytes, want {ctypes.sizeof(kind)}")
    return kind.from_buffer_copy(raw)


def _uint(raw: bytes, size: int) -> int:
    if len(raw) != size:
        raise ValueError(f"integer of {len(raw)} bytes, want {size}")
    return int.from_bytes(raw, "little")  # x86_64 and arm64 hosts: little-endian


def _vcpu_id(v: int) -> int | None:
    return None if v == 0xFFFFFFFF else v


def _state(v: int) -> str:
    return LEDGER_STATES[v] if v < len(LEDGER_STATES) else "unattributed"


def decode_vcpu(key: bytes, value: bytes) -> VcpuRecord:
    tid = _uint(key, 4)
    s = _cast(CVcpuState, value)
    return VcpuRecord(
        tid=tid,
        pid=s.pid,
        vcpu_id=_vcpu_id(s.vcpu_id),
        state=_state(s.state),
        resume=_state(s.resume),
        in_run=bool(s.in_run),
        flags=s.flags,
        since_ns=s.since_ns,
        first_ns=s.first_ns,
        ns=dict(zip(NS_SLOTS, s.ns, strict=True)),
        runq_wait_ns=s.runq_wait_ns,
        preemptions=s.preemptions,
        voluntary=s.voluntary,
        wakeups=s.wakeups,
    )


def decode_event(key: bytes, values: Sequence[bytes]) -> EventRecord:
    k = _cast(CEventKey, key)
    vals = [_cast(CEventVal, v) for v in values]
    if k.id not in EVENT_NAMES:
        raise ValueError(f"unknown event id {k.id}")
    return EventRecord(
        k.pid,
        k.tid,
        EVENT_NAMES[k.id],
        k.detail,
        sum(v.count for v in vals),
        sum(v.sum for v in vals),
    )


def decode_exit(key: bytes, values: Sequence[bytes]) -> ExitRecord:
    k = _cast(CExitKey, key)
    vals = [_cast(CExitVal, v) for v in values]
    hist = tuple(sum(v.hist[i] for v in vals) for i in range(HIST_SLOTS))
    return ExitRecord(
        k.pid,
        k.tid,
        k.isa,
        k.reason,
        sum(v.count for v in vals),
        sum(v.timed for v in vals),
        sum(v.total_ns for v in vals),
        sum(v.kernel_ns for v in vals),
        hist,
    )


def decode_io(key: bytes, values: Sequence[bytes]) -> IoRecord:
    k = _cast(CIoKey, key)
    kind = IO_KINDS.get(k.kind)
    if kind is None:
        raise ValueError(f"unknown io kind {k.kind}")
    direction = IO_DIRECTIONS[kind].get(k.dir, f"dir{k.dir}")
    count = sum(_uint(v, 8) for v in values)
    return IoRecord(k.pid, k.tid, kind, direction, k.size, k.addr, count)


def encode_vcpu_seed(pid: int, in_run: bool, blocked: bool, now_ns: int) -> bytes:
    """A fresh vcpu_state for a thread userspace found inside (or outside)
    KVM_RUN before any probe registered it (vprof/pipeline/seed.py).  As the probes
    would have it: blocked inside KVM_RUN is halted (probes/sched.bpf.c), and
    `resume` is where the thread goes when it is switched back in."""
    s = CVcpuState()
    run = LEDGER_STATES.index("in_kvm_run" if in_run else "vmm_userspace")
    s.pid = pid
    s.vcpu_id = 0xFFFFFFFF  # unknown until a kvm_exit/kvm_entry says
    blocked_in = "halted" if in_run else "vmm_blocked"
    s.state = LEDGER_STATES.index(blocked_in) if blocked else run
    s.resume = run
    s.in_run = int(in_run)
    s.flags = F_BLOCKED if blocked else 0
    s.since_ns = s.first_ns = now_ns  # CLOCK_MONOTONIC, as bpf_ktime_get_ns
    return ctypes.string_at(ctypes.addressof(s), ctypes.sizeof(s))


def decode_slow_exit(raw: bytes) -> SlowExitRecord:
    r = _cast(CSlowExit, raw)
    return SlowExitRecord(
        r.pid, r.tid, r.isa, r.reason, _vcpu_id(r.vcpu_id), r.exit_ns, r.duration_ns
    )


def decode_new_vcpu(raw: bytes) -> tuple[int, int]:
    """(pid, tid) of a new vCPU thread's ring-buffer record."""
    r = _cast(CNewVcpu, raw)
    return r.pid, r.tid


def decode_overflow(raw: RawMap) -> dict[str, int]:
    out = {name: 0 for name in OVERFLOW_SLOTS}
    for key, values in raw:
        slot = _uint(key, 4)
        if slot < len(OVERFLOW_SLOTS):
            out[OVERFLOW_SLOTS[slot]] += sum(_uint(v, 8) for v in values)
    return out


_R = TypeVar("_R")


def decode_all(
    raw: RawMap, one: Callable[[bytes, Sequence[bytes]], _R]
) -> tuple[tuple[_R, ...], int]:
    out: list[_R] = []
    errors = 0
    for key, values in raw:
        try:
            out.append(one(key, values))
        except ValueError:
            errors += 1
    return tuple(out), errors


def maps_to_json(maps: Mapping[str, RawMap]) -> dict[str, list[list[object]]]:
    """Raw map contents as JSON-able hex, for recorded test fixtures."""
    return {
        name: [[key.hex(), [v.hex() for v in values]] for key, values in entries]
        for name, entries in maps.items()
    }


def maps_from_json(doc: Mapping[str, Sequence[Sequence[object]]]) -> dict[str, RawMap]:
    """The inverse of maps_to_json."""
    out: dict[str, RawMap] = {}
    for name, entries in doc.items():
        rows: list[tuple[bytes, Sequence[bytes]]] = []
        for key, values in entries:
            assert isinstance(key, str) and isinstance(values, list)
            rows.append((bytes.fromhex(key), [bytes.fromhex(str(v)) for v in values]))
        out[name] = rows
    return out
