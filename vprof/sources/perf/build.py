"""Perf counts and scheduler figures -> the Snapshot's VmStat (pure).

Names and buckets come from the same taxonomy as the BPF pipeline's, so a
reason reads the same under either source.  Exits beyond the per-reason
counters are the reason `over_bound` (unclassified); userspace exits of a
KVM_EXIT_* not counted one by one are `other`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from vprof.model import Bucket, Ledger, ReasonStat, VcpuStat
from vprof.pipeline.reasons import Named, name_event, name_exit
from vprof.sources.perf.counters import ThreadCounters
from vprof.sources.perf.plan import Counter

_ISA_CODES = {"vmx": 1, "svm": 2}
OVER_BOUND = "over_bound"


@dataclass
class _Acc:
    named: Named
    count: int = 0
    details: dict[str, int] | None = None


def _named(c: Counter, exit_isa: str | None) -> Named:
    if c.event == "kvm_exit" and c.code is not None and exit_isa in _ISA_CODES:
        return name_exit(_ISA_CODES[exit_isa], c.code)
    if c.event == "kvm_userspace_exit" and c.code is not None:
        return name_event("kvm_userspace_exit", c.code)
    return name_event(c.event, 0)


def thread_reasons(
    t: ThreadCounters, exit_isa: str | None
) -> tuple[dict[tuple[str, str], _Acc], int]:
    """Reasons of one thread, and its exits over the bound."""
    out: dict[tuple[str, str], _Acc] = {}
    totals: dict[str, int] = {}
    parts: dict[str, int] = defaultdict(int)
    for c, n in zip(t.counters, t.counts, strict=False):
        if c.total:
            totals[c.event] = n
            continue
        if c.code is not None:
            parts[c.event] += n
        named = _named(c, exit_isa)
        acc = out.setdefault((named.isa, named.reason), _Acc(named))
        acc.count += n
        if c.detail is not None:
            acc.details = acc.details or {}
            acc.details[c.detail] = acc.details.get(c.detail, 0) + n
    over = 0
    for event, total in totals.items():
        rest = total - parts.get(event, 0)
        if rest <= 0:
            continue
        if event == "kvm_exit":
            over += rest
            named = Named(
                exit_isa or "event", OVER_BOUND if parts else "kvm_exit", Bucket.UNCLASSIFIED
            )
            if not parts:
                named = name_event("kvm_exit", 0)
        else:
            named = Named("userspace", "other", Bucket.IO)
        acc = out.setdefault((named.isa, named.reason), _Acc(named))
        acc.count += rest
    return {k: a for k, a in out.items() if a.count}, over


def merge(accs: Iterable[Mapping[tuple[str, str], _Acc]]) -> tuple[ReasonStat, ...]:
    merged: dict[tuple[str, str], _Acc] = {}
    for acc in accs:
        for key, a in acc.items():
            m = merged.setdefault(key, _Acc(a.named))
            m.count += a.count
            for d, n in (a.details or {}).items():
                m.details = m.details or {}
                m.details[d] = m.details.get(d, 0) + n
    out = [
        ReasonStat(
            isa=a.named.isa,
            reason=a.named.reason,
            bucket=a.named.bucket,
            count=a.count,
            details=MappingProxyType(dict(a.details or {})),
        )
        for a in merged.values()
    ]
    return tuple(sorted(out, key=lambda r: (-r.count, r.isa, r.reason)))


def vcpu_stat(
    t: ThreadCounters, index: int | None, reasons: Mapping[tuple[str, str], _Acc]
) -> VcpuStat:
    """Wall time since the counters opened; run-queue wait from schedstat,
    the rest unattributed (the perf source cannot split it: ledger_split)."""
    wall = max(0, t.last_ns - t.opened_ns)
    runq = min(wall, max(0, t.last.runqueue_ns - t.base.runqueue_ns))
    events: dict[str, int] = defaultdict(int)
    for a in reasons.values():
        events[a.named.bucket.value] += a.count
    return VcpuStat(
        tid=t.tid,
        index=index,
        wall_ns=wall,
        ledger=MappingProxyType({Ledger.RUNQUEUE: runq, Ledger.UNATTRIBUTED: wall - runq}),
        events=MappingProxyType(dict(events)),
        runqueue_wait_ns=runq,
        preemptions=t.last.involuntary - t.base.involuntary,
        voluntary_switches=t.last.voluntary - t.base.voluntary,
    )
