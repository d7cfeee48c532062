"""The perf source (`--source perf`) against the micro-guest: exact counts.

Each run's counts per VM must equal the guest's own operation counts, and
KVM's binary statistics read from outside (pidfd_getfd of the stats fds the
guest keeps open) must equal what the guest read inside its own process.
The BPF source's counts of the same runs are compared in
tests/test_perf_bpf_same_run_kvm.py, both sources open at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from perf_fixtures import no_hiders, run_perf_guest
from pipeline_fixtures import ops

from vprof.model import VmStat
from vprof.sources.absent import PERF_ABSENT
from vprof.sources.select import KvmStatsSource, open_source

pytestmark = [pytest.mark.live, pytest.mark.kvm]

COUNTS = {"pio": 2000, "mmio": 1500, "cpuid": 2000, "msr": 1500, "hlt": 300}
NEEDED = (
    "kvm:kvm_pio",
    "kvm:kvm_mmio",
    "kvm:kvm_cpuid",
    "kvm:kvm_msr",
    "kvm:kvm_userspace_exit",
)


@pytest.fixture(scope="module")
def perf() -> Iterator[KvmStatsSource]:
    src, why = open_source("perf")
    assert why == "--source perf"
    with src:
        yield src


def _reason(vm: VmStat, reason: str) -> Any:
    return next((r for r in vm.reasons if r.reason == reason), None)


def _count(vm: VmStat, reason: str, detail: str | None = None) -> int:
    r = _reason(vm, reason)
    if r is None:
        return 0
    return r.count if detail is None else r.details.get(detail, 0)


def _check_guest(vm: VmStat, result: dict[str, Any]) -> None:
    n = {k: ops(result, k) for k in ("pio_out", "pio_in", "mmio_write", "mmio_read")}
    n |= {k: ops(result, k) for k in ("cpuid", "msr_read", "msr_write", "hlt")}
    done_ports = len(result["vcpus"])  # each vCPU's final DONE write is one more pio out
    assert _count(vm, "kvm_pio", "in") == n["pio_in"]
    assert _count(vm, "kvm_pio", "out") == n["pio_out"] + done_ports
    assert _count(vm, "KVM_EXIT_IO") == n["pio_in"] + n["pio_out"] + done_ports
    # Without addresses, the timer handler's EOI (an in-kernel APIC MMIO write,
    # one per timer interrupt the guest counted) adds to the guest's own writes.
    irqs = sum(v.get("timer_irqs", 0) for v in result["vcpus"])
    assert _count(vm, "kvm_mmio", "write") == n["mmio_write"] + irqs
    assert _count(vm, "kvm_mmio", "read") == n["mmio_read"]
    assert _count(vm, "kvm_mmio", "unsatisfied_read") == n["mmio_read"]
    assert _count(vm, "KVM_EXIT_MMIO") == n["mmio_write"] + n["mmio_read"]
    assert _count(vm, "kvm_cpuid") == n["cpuid"]
    assert _count(vm, "kvm_msr", "read") == n["msr_read"]
    assert _count(vm, "kvm_msr", "write") == n["msr_write"]
    # KVM's statistics, duplicated from the guest's own stats fds, equal what
    # the guest read inside its own process at its end, vCPU by vCPU.
    assert vm.kvm_stats_route == "pidfd"
    inside = {
        v["tid"]: kvm for v, kvm in zip(result["vcpus"], result["kvm_stats"]["vcpus"], strict=True)
    }
    for v in vm.vcpus:
        for stat in ("halt_exits", "mmio_exits", "io_exits", "exits"):
            assert v.kvm_stats[stat] == inside[v.tid][stat], (stat, v.tid)
    for stat in ("halt_exits", "mmio_exits"):
        assert vm.kvm_stats[stat] == sum(k[stat] for k in inside.values())
    assert vm.kvm_stats["halt_exits"] == n["hlt"]
    assert vm.kvm_stats["mmio_exits"] == n["mmio_write"] + n["mmio_read"]


@pytest.mark.parametrize("vcpus", [1, 2])
@pytest.mark.parametrize("workload", list(COUNTS))
def test_perf_counts_equal_the_guests(perf: KvmStatsSource, workload: str, vcpus: int) -> None:
    no_hiders(perf, NEEDED)
    name = f"ps-{workload}-{vcpus}-{os.getpid()}"
    t0 = time.monotonic_ns()
    result, vm = run_perf_guest(perf, name, workload, vcpus=vcpus, count=COUNTS[workload])
    elapsed = time.monotonic_ns() - t0
    no_hiders(perf, NEEDED)  # none attached while it ran, as far as two looks can tell
    assert result["total_ops"] == COUNTS[workload] * vcpus
    assert (vm.name, vm.vcpu_count) == (name, vcpus)
    assert {v.index for v in vm.vcpus} == set(range(vcpus))
    _check_guest(vm, result)
    # Wall time runs from the counters' opening to the last /proc read of the live thread:
    # both inside the test's own monotonic bracket around the guest's whole run.
    assert all(0 < v.wall_ns <= elapsed for v in vm.vcpus), (elapsed, vm.vcpus)


def test_snapshot_says_what_perf_lacks(perf: KvmStatsSource) -> None:
    snap = perf.snapshot()
    assert snap.source == "perf" and snap.absent == PERF_ABSENT
    assert not snap.exit_timing
    status = {p.family: p for p in snap.probes}
    assert not status["vmm"].attached and "perf source" in status["vmm"].reason
    assert snap.perf_counters == perf.inner.fds


def _count_bpf(vm: VmStat, reason: str, detail: str | None) -> int:
    """The BPF source keeps I/O directions in IoStat and MSR/CPUID details
    by index; sum them to the perf source's granularity."""
    if reason in ("kvm_pio", "kvm_mmio") and detail is not None:
        kind = reason.removeprefix("kvm_")
        return sum(s.count for s in vm.io if (s.kind, s.direction) == (kind, detail))
    r = _reason(vm, reason)
    if r is None:
        return 0
    if detail is None:
        return int(r.count)
    return sum(n for d, n in r.details.items() if d == detail or d.endswith(f" {detail}"))
