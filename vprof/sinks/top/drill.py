"""The drill-down of one VM: per-vCPU ledger, top reasons, busiest I/O, slow exits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vprof import sanitize
from vprof.model import HIST_SLOTS, Bucket, ReasonStat, SlowExit, VmStat
from vprof.sinks.top import explain
from vprof.sinks.top.view import NA, Column, Value, ledger_shares, rates, vcpu_events_by_bucket
from vprof.sources.absent import ABSENT_WAKEUPS

VCPU_COLUMNS: tuple[Column, ...] = (
    Column("vcpu", "VCPU", 5, 0, "text", "vCPU index (? if not yet mapped)"),
    Column("tid", "TID", 8, 9, "int", "host thread id"),
    Column("guest_pct", "GUEST%", 7, 1, "pct", ""),
    Column("privileged_pct", "PRIV%", 6, 4, "pct", ""),
    Column("memory_pct", "MEM%", 6, 5, "pct", ""),
    Column("io_pct", "IO%", 6, 3, "pct", ""),
    Column("context_switch_pct", "CSW%", 6, 6, "pct", ""),
    Column("runqueue_pct", "RUNQ%", 6, 7, "pct", ""),
    Column("halted_pct", "HALT%", 6, 2, "pct", ""),
    Column("events_per_s", "EV/s", 7, 8, "rate", ""),
    Column("privileged_per_s", "PRIV/s", 7, 13, "rate", ""),
    Column("memory_per_s", "MEM/s", 7, 12, "rate", ""),
    Column("io_per_s", "IO/s", 7, 10, "rate", ""),
    Column("context_switch_per_s", "CSW/s", 7, 11, "rate", ""),
    Column("preemptions", "PREEMPT", 8, 14, "int", "involuntary switches"),
    Column("wakeups", "WAKEUPS", 8, 15, "int", ""),
)


@dataclass(frozen=True)
class ReasonRow:
    isa: str
    reason: str  # sanitised
    bucket: Bucket
    count: int
    per_s: float | None
    avg_us: float | None  # mean handling time, where the host times exits
    p99_us: float | None  # upper bound of the log2 slot holding the 99th percentile


@dataclass(frozen=True)
class IoRow:
    kind: str
    direction: str
    address: int
    size: int
    count: int
    per_s: float | None


@dataclass(frozen=True)
class Drill:
    key: str
    name: str
    pid: int
    vmm: str
    name_source: str
    vcpu_count: int
    vcpus: tuple[Mapping[str, Value], ...]
    reasons: tuple[ReasonRow, ...]
    io: tuple[IoRow, ...]
    slow: tuple[SlowExit, ...]  # slowest first
    explanation: str | None  # taxonomy's one line for the top reason
    remedy: str | None  # what reduces the top reason's bucket
    absent: frozenset[str] = frozenset()  # figures the source cannot give
    advice: str | None = None  # the VM's top advice rule and its remedy, when a source adds advice


def hist_percentile_ns(hist: Sequence[int], q: float) -> int | None:
    """Upper bound (ns) of the log2 slot holding quantile q, or None if empty."""
    total = sum(hist)
    if total <= 0:
        return None
    need = q * total
    seen = 0
    for slot, n in enumerate(hist[:HIST_SLOTS]):
        seen += n
        if seen >= need:
            return int(2 ** (slot + 1))
    return int(2**HIST_SLOTS)


def reason_row(r: ReasonStat, seconds: float | None) -> ReasonRow:
    avg = r.handling_ns / r.count / 1e3 if r.handling_ns is not None and r.count > 0 else None
    p99 = None
    if r.hist is not None:
        p99_ns = hist_percentile_ns(r.hist, 0.99)
        p99 = p99_ns / 1e3 if p99_ns is not None else None
    return ReasonRow(
        isa=r.isa,
        reason=sanitize.display(r.reason, 40),
        bucket=r.bucket,
        count=r.count,
        per_s=r.count / seconds if seconds else None,
        avg_us=avg,
        p99_us=p99,
    )


def vcpu_values(
    vm: VmStat, seconds: float | None, absent: frozenset[str] = frozenset()
) -> list[dict[str, Value]]:
    out: list[dict[str, Value]] = []
    for v in sorted(vm.vcpus, key=lambda v: (v.index is None, v.index or 0, v.tid)):
        counts = vcpu_events_by_bucket(v)
        row: dict[str, Value] = {
            "vcpu": "?" if v.index is None else str(v.index),
            "tid": v.tid,
            **ledger_shares(v.ledger, v.wall_ns, absent),
            **rates(counts, seconds),
            "preemptions": v.preemptions,
            "wakeups": NA if ABSENT_WAKEUPS in absent else v.wakeups,
        }
        out.append(row)
    return out


def slowest(exits: Iterable[SlowExit], limit: int) -> tuple[SlowExit, ...]:
    """The `limit` longest exits, each once (the same exit may come from two lists)."""
    unique = {(s.tid, s.timestamp_ns): s for s in exits}
    return tuple(sorted(unique.values(), key=lambda s: s.duration_ns, reverse=True)[:limit])


def drill(
    vm: VmStat,
    seconds: float | None,
    slow_since_reset: Iterable[SlowExit] = (),
    limit: int = 5,
    absent: frozenset[str] = frozenset(),
) -> Drill:
    """The drill-down of `vm` (a VM of a delta snapshot over `seconds`)."""
    reasons = sorted((r for r in vm.reasons if r.count > 0), key=lambda r: (-r.count, r.reason))
    io = sorted((s for s in vm.io if s.count > 0), key=lambda s: (-s.count, s.address))
    top = reasons[0] if reasons else None
    return Drill(
        key=vm.key,
        name=sanitize.display(vm.name),
        pid=vm.pid,
        vmm=sanitize.display(vm.vmm, 20),
        name_source=sanitize.display(vm.name_source, 30),
        vcpu_count=vm.vcpu_count,
        vcpus=tuple(vcpu_values(vm, seconds, absent)),
        reasons=tuple(reason_row(r, seconds) for r in reasons[:limit]),
        io=tuple(
            IoRow(
                s.kind,
                s.direction,
                s.address,
                s.size,
                s.count,
                s.count / seconds if seconds else None,
            )
            for s in io[:limit]
        ),
        slow=slowest((*vm.slow_exits, *slow_since_reset), limit),
        explanation=explain.reason_line(top.isa, top.reason) if top else None,
        remedy=explain.remedy_line(top.bucket) if top else None,
        absent=absent,
        advice=_advice_line(vm),
    )


def _advice_line(vm: VmStat) -> str | None:
    if not vm.advice:
        return None
    a = vm.advice[0]
    return sanitize.display(f"{a.rule} ({a.status}): {a.summary}", 160)
