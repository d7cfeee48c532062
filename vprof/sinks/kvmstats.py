"""Prometheus families of the snapshot source and of KVM's binary statistics.

Both sources export these under the same names; what a source cannot
measure (Snapshot.absent) is simply not emitted by vprof/sinks/prometheus.py.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from vprof.model import Snapshot, VmStat
from vprof.sinks.catalogue import BY_NAME

# KVM's halt histograms (vprof/sources/kvmstats.py HALT_HISTS), as
# vprof_vm_kvm_halt_seconds{phase}: (histogram, the cumulative stat that is its sum).
HALT_PHASES: tuple[tuple[str, str, str], ...] = (
    ("poll_success", "halt_poll_success_hist", "halt_poll_success_ns"),
    ("poll_fail", "halt_poll_fail_hist", "halt_poll_fail_ns"),
    ("wait", "halt_wait_hist", "halt_wait_ns"),
)
# `le` bounds, 1 us .. ~1.07 s in steps of 4x: bucket i >= 1 of KVM's log2
# histogram counts [2**(i-1), 2**i) ns, so the count below 2**k is
# sum(hist[:k + 1]) exactly; KVM's 32 buckets end there (the last holds the
# rest).  12 series per VM and phase, whatever the vCPU count.
HALT_BOUNDS_LOG2: tuple[int, ...] = tuple(range(10, 31, 2))
_HALT_LE = tuple((floatToGoString(2**k / 1e9), k) for k in HALT_BOUNDS_LOG2)  # type: ignore[no-untyped-call]


def halt_buckets(hist: tuple[int, ...]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs of one KVM log2-ns histogram."""
    out = [(le, float(sum(hist[: k + 1]))) for le, k in _HALT_LE if k + 1 < len(hist)]
    return [*out, ("+Inf", float(sum(hist)))]


def _counter(name: str) -> CounterMetricFamily:
    m = BY_NAME[name]
    return CounterMetricFamily(m.family, m.help, labels=m.labels)


def _gauge(name: str) -> GaugeMetricFamily:
    m = BY_NAME[name]
    return GaugeMetricFamily(m.family, m.help, labels=m.labels)


def source_families(snap: Snapshot) -> Iterator[Metric]:
    m = BY_NAME["vprof_source_info"]
    info = InfoMetricFamily(m.family, m.help, labels=m.labels)
    info.add_metric([], {"source": snap.source})
    yield info
    if snap.source == "perf":
        over = _counter("vprof_perf_exits_over_bound_total")
        over.add_metric([], snap.exits_over_bound)
        yield over
        fds = _gauge("vprof_perf_counters")
        fds.add_metric([], snap.perf_counters)
        yield fds


def kvm_stat_families(vms: list[tuple[str, VmStat]]) -> Iterator[Metric]:
    total = _counter("vprof_vm_kvm_stat_total")
    gauges = _gauge("vprof_vm_kvm_stat_value")
    reachable = _gauge("vprof_vm_kvm_stats_reachable")
    for name, vm in vms:
        reachable.add_metric(
            [name, vm.kvm_stats_route or "none"], 1.0 if vm.kvm_stats_route else 0.0
        )
        for stat, value in sorted(vm.kvm_stats.items()):
            total.add_metric([name, stat], value)
        for stat, value in sorted(vm.kvm_gauges.items()):
            gauges.add_metric([name, stat], value)
    yield from (total, gauges, reachable)
    m = BY_NAME["vprof_vm_kvm_halt_seconds"]
    halt = HistogramMetricFamily(m.family, m.help, labels=m.labels, unit=m.unit)
    for name, vm in vms:
        for phase, stat, sum_stat in HALT_PHASES:
            hist = vm.kvm_hists.get(stat)
            if hist is not None:
                ns = vm.kvm_stats.get(sum_stat)  # no _sum (nor _count) without it
                halt.add_metric([name, phase], halt_buckets(hist), None if ns is None else ns / 1e9)
    yield halt
