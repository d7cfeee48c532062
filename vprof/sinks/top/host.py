"""The header of `vprof top`: host-wide rates, CPU shares, probes, backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vprof import sanitize
from vprof.model import OVERHEAD_BUCKETS, Bucket, Ledger, Snapshot, bucket_of
from vprof.sinks.top.view import NA, interval_seconds
from vprof.sources.absent import ABSENT_LEDGER_SPLIT


@dataclass(frozen=True)
class HostSummary:
    timestamp: float  # time.time() at the end of the interval
    backend: str
    exit_timing: bool
    interval_s: float | None
    vm_count: int
    events_per_s: Mapping[Bucket, float | None]
    # Share of the host's CPU capacity (host_cpus x interval) per bucket, in %.
    # Run-queue wait is waiting, not CPU use, so it is left out here.
    cpu_pct: Mapping[Bucket, float | str | None]  # NA without the ledger split
    guest_cpu_pct: float | str | None
    probes_on: tuple[str, ...]
    probes_off: tuple[tuple[str, str], ...]  # (family, why)
    events_lost: int
    decode_errors: int
    source: str = "bpf"

    def total_events_per_s(self) -> float | None:
        if self.interval_s is None:
            return None
        return sum(v or 0.0 for v in self.events_per_s.values())


def _cpu_ns(snap: Snapshot) -> tuple[float, dict[Bucket, float]]:
    """(guest ns, overhead ns by bucket) of every vCPU, within this interval.

    A vCPU first seen in this interval may carry ledger time from before it
    (since its tracking began); scaling it to the interval keeps host shares
    within the host's capacity.
    """
    guest = 0.0
    ns = dict.fromkeys(Bucket, 0.0)
    for vm in snap.vms:
        for v in vm.vcpus:
            scale = min(1.0, snap.interval_ns / v.wall_ns) if v.wall_ns > 0 else 1.0
            for cat in Ledger:
                value = v.ledger.get(cat, 0)
                bucket = bucket_of(cat)
                if cat in (Ledger.GUEST, Ledger.IN_KVM_RUN):
                    guest += value * scale
                # waiting is not CPU: run-queue waits, the VMM blocked
                elif bucket is not None and cat not in (Ledger.RUNQUEUE, Ledger.VMM_BLOCKED):
                    ns[bucket] += value * scale
    return guest, ns


def host_summary(snap: Snapshot, host_cpus: int) -> HostSummary:
    secs = interval_seconds(snap)
    counts = dict.fromkeys(Bucket, 0)
    for vm in snap.vms:
        for b, c in vm.events_by_bucket().items():
            counts[b] += c
    guest_ns, ns = _cpu_ns(snap)
    split = not snap.lacks(ABSENT_LEDGER_SPLIT)
    capacity = snap.interval_ns * max(1, host_cpus)
    return HostSummary(
        timestamp=snap.timestamp,
        backend=sanitize.display(snap.backend),
        exit_timing=snap.exit_timing,
        interval_s=secs,
        vm_count=len(snap.vms),
        events_per_s={b: (counts[b] / secs if secs else None) for b in Bucket},
        cpu_pct={b: _share(ns[b], capacity, split) for b in Bucket},
        guest_cpu_pct=_share(guest_ns, capacity, split),
        probes_on=tuple(p.family for p in snap.probes if p.attached),
        probes_off=tuple(
            (p.family, sanitize.display(p.reason, 60)) for p in snap.probes if not p.attached
        ),
        events_lost=snap.events_lost,
        decode_errors=snap.decode_errors,
        source=snap.source,
    )


def _share(ns: float, capacity: float, split: bool) -> float | str | None:
    if not split:
        return NA
    return 100.0 * ns / capacity if capacity > 0 else None


def host_fields(h: HostSummary) -> dict[str, object]:
    """The header as flat, stable fields for --json."""
    out: dict[str, object] = {
        "backend": h.backend,
        "exit_timing": h.exit_timing,
        "interval_s": h.interval_s,
        "vm_count": h.vm_count,
        "events_per_s": h.total_events_per_s(),
    }
    for b in (*OVERHEAD_BUCKETS, Bucket.UNCLASSIFIED):
        out[f"{b.value}_per_s"] = h.events_per_s[b]
        out[f"{b.value}_cpu_pct"] = h.cpu_pct[b]
    out["guest_cpu_pct"] = h.guest_cpu_pct
    out["probes_on"] = list(h.probes_on)
    out["probes_off"] = [{"family": f, "reason": r} for f, r in h.probes_off]
    out["source"] = h.source
    out["events_lost"] = h.events_lost
    out["decode_errors"] = h.decode_errors
    return out
