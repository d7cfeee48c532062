"""The perf and BPF sources open at once, on the same micro-guest runs.

Per VM and run, every event count the perf source gives must equal the BPF
source's count of the same event, and the exact ones the guest's own
operation counts (tests/test_perf_source_kvm.py's oracle).  This holds
because vprof's classic tracepoint programs return 1 (probes/vprof.h,
VPROF_PASS) and its raw tracepoint programs are not on perf's path, so the
BPF source hides nothing from the perf counters; the perf source reads that
from the programs' own code (vprof/sources/perf/hiders.py) and must keep
every family on while the shared Profiler is attached.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from guestproc import start_guest
from perf_fixtures import OPEN_WITHIN_S, no_hiders
from pipeline_fixtures import shared_profiler
from test_perf_source_kvm import COUNTS, NEEDED, _check_guest, _count_bpf

from vprof.model import VmStat
from vprof.pipeline.profiler import Profiler
from vprof.sources.select import KvmStatsSource, open_source

pytestmark = [pytest.mark.live, pytest.mark.kvm]


@pytest.fixture(scope="module")
def both() -> Iterator[tuple[Profiler, KvmStatsSource]]:
    prof = shared_profiler()  # every family, attached for the whole module
    src, why = open_source("perf")
    assert why == "--source perf"
    with src:
        yield prof, src


def _wait_opened(src: KvmStatsSource, pid: int, tids: set[int]) -> None:
    deadline = time.monotonic() + OPEN_WITHIN_S
    while True:
        vm = next((v for v in src.snapshot().vms if v.pid == pid), None)
        if vm is not None and {v.tid for v in vm.vcpus} >= tids and vm.kvm_stats_route:
            return
        assert time.monotonic() < deadline, f"perf source never opened guest {pid}: {vm}"
        time.sleep(0.05)


def run_both(
    prof: Profiler, src: KvmStatsSource, name: str, workload: str, vcpus: int
) -> tuple[dict[str, Any], VmStat, VmStat]:
    """One guest run counted by both sources: (result, perf's VM, BPF's VM)."""
    count = COUNTS[workload]
    with start_guest(
        name, workload, vcpus=vcpus, count=count, stats=True, hold=True, keep_stats_fds=True
    ) as g:
        _wait_opened(src, g.pid, {int(v["tid"]) for v in g.ready["vcpus"]})
        g.go()
        prof.wait_named(g.pid, 10)  # named at its first KVM_RUN, while it lives
        result = g.wait(60)
    g.proc.wait(10)  # its threads have exited: final counts on both sides
    by_perf = next((v for v in src.snapshot().vms if v.pid == g.pid), None)
    by_bpf = next((v for v in prof.snapshot().vms if v.pid == g.pid), None)
    assert by_perf is not None and by_bpf is not None, (by_perf, by_bpf)
    return result, by_perf, by_bpf


def perf_counts(vm: VmStat) -> dict[tuple[str, str | None], int]:
    """Every count the perf source gives: each reason's, and each detail's."""
    out: dict[tuple[str, str | None], int] = {}
    for r in vm.reasons:
        out[r.reason, None] = r.count
        out |= {(r.reason, d): n for d, n in r.details.items()}
    return out


@pytest.mark.parametrize("vcpus", [1, 2])
@pytest.mark.parametrize("workload", list(COUNTS))
def test_both_sources_count_the_same_run_alike(
    both: tuple[Profiler, KvmStatsSource], workload: str, vcpus: int
) -> None:
    prof, src = both
    no_hiders(src, NEEDED)  # vprof's own programs are not among them
    name = f"sr-{workload}-{vcpus}-{os.getpid()}"
    result, by_perf, by_bpf = run_both(prof, src, name, workload, vcpus)
    no_hiders(src, NEEDED)
    assert result["total_ops"] == COUNTS[workload] * vcpus
    assert (by_perf.name, by_bpf.name) == (name, name)
    _check_guest(by_perf, result)  # perf == the guest's own counts
    ours = perf_counts(by_perf)
    theirs = {k: _count_bpf(by_bpf, *k) for k in ours}
    assert theirs == ours, {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}


def test_perf_keeps_its_families_on_beside_the_bpf_source(
    both: tuple[Profiler, KvmStatsSource],
) -> None:
    prof, src = both
    assert all(s.attached for s in prof.status() if s.family in ("io", "privileged"))
    no_hiders(src, NEEDED)  # looks afresh: only other tools' programs could hide
    with start_guest(f"sr-status-{os.getpid()}", "pio", vcpus=1, count=10, hold=True) as g:
        _wait_opened_any(src, g.pid)
        status = {p.family: p for p in src.status()}
        g.go()
        g.wait(60)
    for fam in ("io", "privileged", "sched"):
        assert status[fam].attached, status[fam]


def _wait_opened_any(src: KvmStatsSource, pid: int) -> None:
    deadline = time.monotonic() + OPEN_WITHIN_S
    while not any(v.pid == pid and v.vcpus for v in src.snapshot().vms):
        assert time.monotonic() < deadline, f"perf source never opened guest {pid}"
        time.sleep(0.05)
