"""A Prometheus collector that yields fresh metric families from the latest Snapshot.

Nothing is kept between scrapes: each `collect()` builds every family from the
state the daemon published last, so a VM that has gone from the snapshot has
no series in the next scrape (no stale series linger, unlike registered
Counter objects).  Every family comes from vprof/sinks/catalogue.py; asking
for a name that is not catalogued is a KeyError, so the docs cannot drift.

Cardinality: by default per VM and bucket.  Per-reason and per-address detail
is capped at the top K label values per VM with the rest summed into "other";
granularity "vcpu" adds per-vCPU families and "full" also removes the caps.
"""

from __future__ import annotations

import platform
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from vprof import __version__, sanitize
from vprof.model import Bucket, Ledger, Snapshot, VcpuStat, VmStat, bucket_of
from vprof.sinks.catalogue import BY_NAME, OTHER
from vprof.sinks.catalogue import Metric as CatalogueMetric
from vprof.sinks.kvmstats import kvm_stat_families, source_families
from vprof.sources.absent import (
    ABSENT_IO_ADDRESSES,
    ABSENT_LEDGER_SPLIT,
    ABSENT_WAKEUPS,
    PERF_LEDGER,
)

Granularity = Literal["vm", "vcpu", "full"]

NS_PER_S = 1e9
# Histogram `le` bounds: log2 ns slots merged 4x at a time, 1 µs .. ~1 s.
# Slot i counts 2**i <= d < 2**(i+1) ns, so the cumulative count below 2**k is
# sum(hist[:k]) exactly; fewer bounds keep 500 VMs x 5 buckets affordable.
HIST_BOUNDS_LOG2: tuple[int, ...] = tuple(range(10, 31, 2))
_BOUNDS: tuple[tuple[str, int], ...] = tuple(
    (floatToGoString(2**k / NS_PER_S), k)  # type: ignore[no-untyped-call]
    for k in HIST_BOUNDS_LOG2
)


@dataclass(frozen=True)
class ExportOptions:
    granularity: Granularity = "vm"
    top_k: int = 5  # label values kept per VM in capped families

    @property
    def per_vcpu(self) -> bool:
        return self.granularity in ("vcpu", "full")

    @property
    def cap(self) -> int | None:
        return None if self.granularity == "full" else self.top_k


@dataclass(frozen=True)
class ExportState:
    """What the daemon publishes for scrapes; replaced whole, never mutated."""

    snapshot: Snapshot | None = None
    options: ExportOptions = field(default_factory=ExportOptions)
    last_success: bool = False
    last_success_time: float = 0.0
    failures: int = 0
    reloads_ok: int = 0
    reloads_error: int = 0


def _entry(name: str, kind: str) -> CatalogueMetric:
    m = BY_NAME[name]  # KeyError: not in the catalogue
    if m.type != kind:
        raise TypeError(f"{name} is a {m.type} in the catalogue, not a {kind}")
    return m


def counter(name: str) -> CounterMetricFamily:
    m = _entry(name, "counter")
    return CounterMetricFamily(m.family, m.help, labels=m.labels, unit=m.unit)


def gauge(name: str) -> GaugeMetricFamily:
    m = _entry(name, "gauge")
    return GaugeMetricFamily(m.family, m.help, labels=m.labels, unit=m.unit)


def histogram(name: str) -> HistogramMetricFamily:
    m = _entry(name, "histogram")
    return HistogramMetricFamily(m.family, m.help, labels=m.labels, unit=m.unit)


def info(name: str) -> InfoMetricFamily:
    m = _entry(name, "info")
    return InfoMetricFamily(m.family, m.help, labels=m.labels)


class SnapshotCollector(Collector):
    """Yields every vprof family from `state()` at scrape time."""

    def __init__(self, state: Callable[[], ExportState]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        yield from daemon_families(state)
        if state.snapshot is not None:
            yield from snapshot_families(state.snapshot, state.options)


def snapshot_families(snap: Snapshot, options: ExportOptions) -> Iterator[Metric]:
    """The families that change only when the snapshot (or the options) do."""
    yield from _self_families(snap)
    yield from source_families(snap)
    names = sanitize.unique_names((vm.name, vm.pid) for vm in snap.vms)
    vms = list(zip(names, snap.vms, strict=True))
    yield from _vm_families(vms, snap, options)
    yield from kvm_stat_families(vms)
    if options.per_vcpu:
        yield from _vcpu_families(vms, snap)


def _measured(snap: Snapshot) -> Callable[[str], bool]:
    """Which ledger categories the source measures: the others get no series."""
    if snap.lacks(ABSENT_LEDGER_SPLIT):
        return lambda category: category in PERF_LEDGER
    return lambda category: True


def daemon_families(state: ExportState) -> Iterator[Metric]:
    """The daemon's own state, which changes between snapshots (reloads, failures)."""
    build = info("vprof_build_info")
    build.add_metric([], {"version": __version__, "python": platform.python_version()})
    yield build
    ok = gauge("vprof_last_snapshot_success")
    ok.add_metric([], 1.0 if state.last_success else 0.0)
    yield ok
    if state.last_success_time:
        when = gauge("vprof_last_snapshot_timestamp_seconds")
        when.add_metric([], state.last_success_time)
        yield when
    failures = counter("vprof_snapshot_failures_total")
    failures.add_metric([], state.failures)
    yield failures
    reloads = counter("vprof_config_reloads_total")
    reloads.add_metric(["ok"], state.reloads_ok)
    reloads.add_metric(["error"], state.reloads_error)
    yield reloads


def _scalar(name: str, value: float) -> Metric:
    f = counter(name) if BY_NAME[name].type == "counter" else gauge(name)
    f.add_metric([], value)
    return f


def _self_families(snap: Snapshot) -> Iterator[Metric]:
    host = info("vprof_host_info")
    host.add_metric([], {"backend": snap.backend, "exit_timing": str(snap.exit_timing).lower()})
    yield host
    probes = gauge("vprof_probe_attached")
    for p in snap.probes:
        probes.add_metric([p.family, "" if p.attached else p.reason], 1.0 if p.attached else 0.0)
    yield probes
    yield _scalar("vprof_events_lost_total", snap.events_lost)
    overflows = counter("vprof_map_overflows_total")
    for name, count in sorted(snap.map_overflows.items()):
        overflows.add_metric([name], count)
    yield overflows
    yield _scalar("vprof_decode_errors_total", snap.decode_errors)
    if snap.progs:
        run_time = counter("vprof_bpf_prog_run_seconds_total")
        runs = counter("vprof_bpf_prog_runs_total")
        for prog in snap.progs:
            run_time.add_metric([prog.name], prog.run_time_ns / NS_PER_S)
            runs.add_metric([prog.name], prog.run_cnt)
        yield run_time
        yield runs
    yield _scalar("vprof_interval_seconds", snap.interval_ns / NS_PER_S)
    yield _scalar("vprof_aggregation_seconds", snap.aggregation_seconds)
    yield _scalar("vprof_vms_tracked", len(snap.vms))
    yield _scalar("vprof_proc_unreadable_entries", snap.unreadable_proc_entries)


def _ledger_bucket(category: Ledger) -> str:
    bucket = bucket_of(category)
    return "none" if bucket is None else bucket.value


Key = tuple[str, ...]


def top_k(
    counts: Mapping[Key, int], cap: int | None, group: Callable[[Key], Key]
) -> list[tuple[Key, int]]:
    """The `cap` largest label tuples; the rest summed per `group(key)` into "other" rows.

    `group` maps a key to the labels kept on its "other" row (e.g. the bucket);
    the remaining label positions become "other".
    """
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if cap is None or len(ranked) <= cap:
        return ranked
    rest: dict[Key, int] = defaultdict(int)
    for key, count in ranked[cap:]:
        kept = group(key)
        rest[kept + (OTHER,) * (len(key) - len(kept))] += count
    return ranked[:cap] + sorted(rest.items())


def _vm_families(
    vms: list[tuple[str, VmStat]], snap: Snapshot, opts: ExportOptions
) -> Iterator[Metric]:
    measured = _measured(snap)
    vm_info = info("vprof_vm_info")
    advice = info("vprof_vm_advice_info")
    events = counter("vprof_vm_events_total")
    reasons = counter("vprof_vm_reason_events_total")
    ledger = counter("vprof_vm_time_seconds_total")
    wall = counter("vprof_vm_wall_seconds_total")
    for name, vm in vms:
        vm_info.add_metric(
            [],
            {
                "vm": name,
                "uuid": vm.uuid,
                "vmm": vm.vmm,
                "vcpus": str(vm.vcpu_count),
                "pid": str(vm.pid),
            },
        )
        for a in vm.advice:
            advice.add_metric([], {"vm": name, "rule": a.rule, "bucket": a.bucket.value})
        for bucket, count in vm.events_by_bucket().items():
            events.add_metric([name, bucket.value], count)
        by_reason: dict[Key, int] = {(r.bucket.value, r.isa, r.reason): r.count for r in vm.reasons}
        for (bucket_name, isa, reason), count in top_k(by_reason, opts.cap, lambda k: k[:1]):
            reasons.add_metric([name, bucket_name, isa, reason], count)
        for category, ns in vm.ledger_total().items():
            if measured(category):
                ledger.add_metric([name, category, _ledger_bucket(category)], ns / NS_PER_S)
        wall.add_metric([name], vm.wall_ns() / NS_PER_S)
    yield from (vm_info, advice, events, reasons, ledger, wall)
    if snap.exit_timing:
        yield _handling_histograms(vms)
    if snap.lacks(ABSENT_IO_ADDRESSES):
        yield _io_from_reasons(vms)
    else:
        yield from _io_families(vms, opts)
    yield from _sched_families(vms, not snap.lacks(ABSENT_WAKEUPS))


def _handling_histograms(vms: list[tuple[str, VmStat]]) -> Metric:
    hist = histogram("vprof_vm_exit_handling_seconds")
    for name, vm in vms:
        slots: dict[Bucket, list[int]] = {}
        sums: dict[Bucket, int] = defaultdict(int)
        for r in vm.reasons:
            if r.hist is None:
                continue
            acc = slots.setdefault(r.bucket, [0] * len(r.hist))
            for i, n in enumerate(r.hist):
                acc[i] += n
            sums[r.bucket] += r.handling_ns or 0
        for bucket, acc in slots.items():
            bounds = [(le, float(sum(acc[:k]))) for le, k in _BOUNDS]
            bounds.append(("+Inf", float(sum(acc))))
            hist.add_metric([name, bucket.value], bounds, sums[bucket] / NS_PER_S)
    return hist


def _io_families(vms: list[tuple[str, VmStat]], opts: ExportOptions) -> Iterator[Metric]:
    accesses = counter("vprof_vm_io_accesses_total")
    nbytes = counter("vprof_vm_io_bytes_total")
    addresses = counter("vprof_vm_io_address_accesses_total")
    for name, vm in vms:
        count: dict[tuple[str, str], int] = defaultdict(int)
        size: dict[tuple[str, str], int] = defaultdict(int)
        by_addr: dict[tuple[str, ...], int] = defaultdict(int)
        for s in vm.io:
            count[s.kind, s.direction] += s.count
            size[s.kind, s.direction] += s.count * s.size
            by_addr[s.kind, s.direction, f"{s.address:#x}"] += s.count
        for (kind, direction), n in sorted(count.items()):
            accesses.add_metric([name, kind, direction], n)
            nbytes.add_metric([name, kind, direction], size[kind, direction])
        for (kind, direction, addr), n in top_k(by_addr, opts.cap, lambda k: k[:2]):
            addresses.add_metric([name, kind, direction, addr], n)
    yield from (accesses, nbytes, addresses)


def _io_from_reasons(vms: list[tuple[str, VmStat]]) -> Metric:
    """Accesses by kind and direction from per-direction counters (the perf
    source): no sizes and no addresses, so no bytes or address series."""
    accesses = counter("vprof_vm_io_accesses_total")
    for name, vm in vms:
        for r in vm.reasons:
            if r.reason in ("kvm_pio", "kvm_mmio"):
                for direction, n in sorted(r.details.items()):
                    accesses.add_metric([name, r.reason.removeprefix("kvm_"), direction], n)
    return accesses


def _sched_families(vms: list[tuple[str, VmStat]], with_wakeups: bool) -> Iterator[Metric]:
    wait = counter("vprof_vm_runqueue_wait_seconds_total")
    preempt = counter("vprof_vm_preemptions_total")
    voluntary = counter("vprof_vm_voluntary_switches_total")
    wakeups = counter("vprof_vm_wakeups_total")
    for name, vm in vms:
        wait.add_metric([name], sum(v.runqueue_wait_ns for v in vm.vcpus) / NS_PER_S)
        preempt.add_metric([name], sum(v.preemptions for v in vm.vcpus))
        voluntary.add_metric([name], sum(v.voluntary_switches for v in vm.vcpus))
        wakeups.add_metric([name], sum(v.wakeups for v in vm.vcpus))
    yield from (wait, preempt, voluntary) + ((wakeups,) if with_wakeups else ())


def _vcpu_label(v: VcpuStat) -> str:
    return "unmapped" if v.index is None else str(v.index)


def _vcpu_families(vms: list[tuple[str, VmStat]], snap: Snapshot) -> Iterator[Metric]:
    measured = _measured(snap)
    ledger = counter("vprof_vcpu_time_seconds_total")
    events = counter("vprof_vcpu_events_total")
    wait = counter("vprof_vcpu_runqueue_wait_seconds_total")
    preempt = counter("vprof_vcpu_preemptions_total")
    for name, vm in vms:
        # Threads without an index (or a restarted vCPU thread) share a label: sum them.
        time: dict[tuple[str, Ledger], int] = defaultdict(int)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        waits: dict[str, int] = defaultdict(int)
        preempts: dict[str, int] = defaultdict(int)
        for v in vm.vcpus:
            label = _vcpu_label(v)
            for category, ns in v.ledger.items():
                if measured(category):
                    time[label, category] += ns
            for bucket in Bucket:
                counts[label, bucket.value] += v.events.get(bucket.value, 0)
            waits[label] += v.runqueue_wait_ns
            preempts[label] += v.preemptions
        for (label, category), ns in sorted(time.items()):
            ledger.add_metric([name, label, category, _ledger_bucket(category)], ns / NS_PER_S)
        for (label, bucket_name), n in sorted(counts.items()):
            events.add_metric([name, label, bucket_name], n)
        for label in sorted(waits):
            wait.add_metric([name, label], waits[label] / NS_PER_S)
            preempt.add_metric([name, label], preempts[label])
    yield from (ledger, events, wait, preempt)
