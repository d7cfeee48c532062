"""Decoded map contents -> immutable vprof.model.Snapshot.

Pure: no bcc, no /proc, no root.  The Profiler feeds it what the loader read
(decoded by vprof/records/events.py), the VM identities the inventory found and the
clock; unit tests feed it recorded maps.  Work grows with the number of
series (pid, tid, reason), never with the number of events.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from vprof.model import (
    HIST_SLOTS,
    Bucket,
    IoStat,
    ProbeStatus,
    ProgStat,
    ReasonStat,
    SlowExit,
    Snapshot,
    VcpuStat,
    VmIdentity,
    VmStat,
    vm_key,
)
from vprof.pipeline.ledger import vcpu_ledger
from vprof.pipeline.reasons import Named, name_event, name_exit
from vprof.records import events as ev

TOP_IO = 64  # busiest ports/addresses kept per VM
SLOW_EXITS_KEPT = 32  # most recent slow exits kept per VM


def fallback_identity(pid: int) -> VmIdentity:
    """A process the kernel counts but the inventory cannot name (yet)."""
    name = f"pid-{pid}"
    return VmIdentity(vm_key(pid, 0), pid, name, name, "fallback")


@dataclass
class _ReasonAcc:
    named: Named
    count: int = 0
    handling_ns: int | None = None
    hist: list[int] | None = None
    details: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class _VmAcc:
    """Everything of one VM process, accumulated from records."""

    def __init__(self) -> None:
        self.reasons: dict[tuple[str, str], _ReasonAcc] = {}
        self.tid_buckets: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.tid_kernel: dict[int, dict[Bucket, int]] = defaultdict(lambda: defaultdict(int))
        self.io: dict[tuple[str, str, int, int], int] = defaultdict(int)

    def add(self, tid: int, named: Named, count: int, detail: str | None = None) -> _ReasonAcc:
        acc = self.reasons.get((named.isa, named.reason))
        if acc is None:
            acc = self.reasons[(named.isa, named.reason)] = _ReasonAcc(named)
        acc.count += count
        if detail is not None:
            acc.details[detail] += count
        self.tid_buckets[tid][named.bucket.value] += count
        return acc

    def add_exit(self, rec: ev.ExitRecord) -> None:
        named = name_exit(rec.isa, rec.reason)
        acc = self.add(rec.tid, named, rec.count)
        acc.handling_ns = (acc.handling_ns or 0) + rec.total_ns
        acc.hist = acc.hist or [0] * HIST_SLOTS
        for i, n in enumerate(rec.hist):
            acc.hist[i] += n
        self.tid_kernel[rec.tid][named.bucket] += rec.kernel_ns

    def reason_stats(self) -> tuple[ReasonStat, ...]:
        out = [
            ReasonStat(
                isa=a.named.isa,
                reason=a.named.reason,
                bucket=a.named.bucket,
                count=a.count,
                handling_ns=a.handling_ns,
                hist=tuple(a.hist) if a.hist is not None else None,
                details=MappingProxyType(dict(a.details)),
            )
            for a in self.reasons.values()
        ]
        return tuple(sorted(out, key=lambda r: (-r.count, r.isa, r.reason)))

    def io_stats(self) -> tuple[IoStat, ...]:
        ranked = sorted(self.io.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_IO]
        return tuple(IoStat(k[0], k[1], k[2], k[3], n) for k, n in ranked)


_REGION_EVENTS = ("kvm_page_fault", "kvm_mmu_set_spte", "kvm_mmu_spte_requested")


def _event_detail(rec: ev.EventRecord) -> str | None:
    d = rec.detail
    if rec.name == "kvm_msr":
        return f"msr {d & 0xFFFFFFFF:#x} {'write' if d >> 32 else 'read'}"
    if rec.name == "kvm_cpuid":
        return f"cpuid {d:#x}"
    if rec.name == "kvm_cr":
        return f"cr{d & 0xFFFFFFFF} {'write' if d >> 32 else 'read'}"
    if rec.name == "kvm_hypercall":
        return f"nr {d}"
    if rec.name in ("kvm_inj_virq", "kvm_inj_exception"):
        return f"vector {d:#x}"
    if rec.name in _REGION_EVENTS:
        return f"gpa {d << 30:#x}+1G"
    if rec.name == "kvm_emulate_insn":
        op = d & 0xFFFF
        shown = f"0x0f 0x{op & 0xFF:02x}" if op >> 8 == 0x0F else f"0x{op:02x}"
        return f"opcode {shown}{' failed' if d >> 16 else ''}"
    if rec.name == "kvm_vcpu_wakeup":
        return "waited" if d else "polled"
    return None


class Aggregator:
    """Builds Snapshots; keeps what must outlive one read (slow exits)."""

    def __init__(self) -> None:
        self._slow: dict[int, deque[SlowExit]] = defaultdict(lambda: deque(maxlen=SLOW_EXITS_KEPT))
        self.decode_errors = 0

    def add_slow_exits(self, records: Iterable[ev.SlowExitRecord]) -> None:
        for r in records:
            named = name_exit(r.isa, r.reason)
            self._slow[r.pid].append(
                SlowExit(
                    r.tid,
                    r.vcpu_id,
                    named.isa,
                    named.reason,
                    named.bucket,
                    r.duration_ns,
                    r.exit_ns,
                )
            )

    def forget(self, pids: Iterable[int]) -> None:
        for pid in pids:
            self._slow.pop(pid, None)

    def snapshot(
        self,
        decoded: ev.Decoded,
        identities: Mapping[int, VmIdentity],
        *,
        now_ns: int,
        interval_ns: int,
        backend: str,
        probes: Sequence[ProbeStatus] = (),
        progs: Sequence[ProgStat] = (),
        unreadable: int = 0,
        started: float | None = None,
    ) -> Snapshot:
        t0 = started if started is not None else time.process_time()
        self.decode_errors += decoded.errors
        vms = _accumulate(decoded)
        exit_timing = any(r.timed for r in decoded.exits)
        stats = []
        for pid in sorted(set(vms) | {v.pid for v in decoded.vcpus}):
            ident = identities.get(pid) or fallback_identity(pid)
            records = [v for v in decoded.vcpus if v.pid == pid]
            stats.append(self._vm(ident, vms.get(pid) or _VmAcc(), records, now_ns))
        overflows = dict(decoded.overflows)
        lost = overflows.pop("slow_exits_ringbuf", 0)
        return Snapshot(
            timestamp=time.time(),
            monotonic_ns=now_ns,
            interval_ns=interval_ns,
            backend=backend,
            exit_timing=exit_timing,
            vms=tuple(stats),
            probes=tuple(probes),
            events_lost=lost,
            map_overflows=MappingProxyType(overflows),
            decode_errors=self.decode_errors,
            progs=tuple(progs),
            aggregation_seconds=time.process_time() - t0,
            unreadable_proc_entries=unreadable,
        )

    def _vm(
        self, ident: VmIdentity, acc: _VmAcc, records: Sequence[ev.VcpuRecord], now_ns: int
    ) -> VmStat:
        vcpus = []
        for rec in sorted(records, key=lambda r: r.tid):
            index = ident.vcpu_index.get(rec.tid, rec.vcpu_id)
            ledger = vcpu_ledger(rec, acc.tid_kernel.get(rec.tid, {}), now_ns)
            vcpus.append(
                VcpuStat(
                    tid=rec.tid,
                    index=index,
                    wall_ns=sum(ledger.values()),
                    ledger=MappingProxyType(ledger),
                    events=MappingProxyType(dict(acc.tid_buckets.get(rec.tid, {}))),
                    runqueue_wait_ns=rec.runq_wait_ns,
                    preemptions=rec.preemptions,
                    voluntary_switches=rec.voluntary,
                    wakeups=rec.wakeups,
                )
            )
        return VmStat.of(
            ident,
            tuple(vcpus),
            reasons=acc.reason_stats(),
            io=acc.io_stats(),
            slow_exits=tuple(self._slow.get(ident.pid, ())),
        )


def _accumulate(decoded: ev.Decoded) -> dict[int, _VmAcc]:
    vms: dict[int, _VmAcc] = defaultdict(_VmAcc)
    for x in decoded.exits:
        vms[x.pid].add_exit(x)
    for e in decoded.events:
        vms[e.pid].add(e.tid, name_event(e.name, e.detail), e.count, _event_detail(e))
    for io in decoded.io:
        acc = vms[io.pid]
        acc.add(io.tid, name_event(f"kvm_{io.kind}", 0), io.count)
        acc.io[(io.kind, io.direction, io.address, io.size)] += io.count
    return vms
