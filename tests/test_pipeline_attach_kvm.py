"""Attaching while VMs already run: their vCPU threads are inside KVM_RUN.

A thread that stays in KVM_RUN and whose events all take the counting-only
path (cpuid here) never passed through a probe that registers it in the
kernel's vCPU map.  The Profiler seeds that map from the inventory at start
and at every refresh, so such a thread gets a ledger and run-queue figures
from the moment vprof attached (`vprof daemon` restarting on a busy host).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from guestproc import start_guest

from vprof.guest import workloads as W
from vprof.model import Ledger, Snapshot, VcpuStat, VmStat
from vprof.pipeline.profiler import Profiler, ProfilerConfig

pytestmark = [pytest.mark.live, pytest.mark.kvm]

SETTLE_S = 1.0  # after the ready line: the vCPU threads are inside KVM_RUN
INTERVAL_S = 1.5


def _involuntary(pid: int, tid: int) -> int:
    for line in Path(f"/proc/{pid}/task/{tid}/sched").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "nr_involuntary_switches":
            return int(value)
    raise AssertionError("no nr_involuntary_switches")


def _vm(snap: Snapshot, pid: int) -> VmStat:
    vm = next((v for v in snap.vms if v.pid == pid), None)
    assert vm is not None, f"vprof saw nothing of guest pid {pid}"
    return vm


def _cpuid(vm: VmStat) -> int:
    detail = f"cpuid {W.CPUID_LEAF:#x}"
    return sum(r.details.get(detail, 0) for r in vm.reasons if r.reason == "kvm_cpuid")


def _attach_late(workload: str) -> tuple[dict[str, Any], str, VmStat, VmStat, int, dict[int, int]]:
    """Start a 2-vCPU guest, attach a Profiler once it runs, snapshot twice."""
    name = f"pa-{workload}-{os.getpid()}"
    with start_guest(name, workload, vcpus=2, duration=60) as g:
        time.sleep(SETTLE_S)
        tids = [v["tid"] for v in g.ready["vcpus"]]
        with Profiler(ProfilerConfig()) as prof:
            before = {t: _involuntary(g.pid, t) for t in tids}
            first = prof.snapshot()
            time.sleep(INTERVAL_S)
            second = prof.snapshot()
            switched = {t: _involuntary(g.pid, t) - before[t] for t in tids}
        interval = second.monotonic_ns - first.monotonic_ns
        return g.ready, name, _vm(first, g.pid), _vm(second, g.pid), interval, switched


def _delta(a: VcpuStat, b: VcpuStat) -> dict[str, int]:
    return {k: ns - a.ledger.get(k, 0) for k, ns in b.ledger.items()}


def _check_vcpus(
    ready: dict[str, Any], first: VmStat, second: VmStat, interval: int, largest: Ledger
) -> dict[int, dict[str, int]]:
    index = {v["tid"]: v["index"] for v in ready["vcpus"]}
    seen = {v.tid: v for v in second.vcpus}
    assert set(index) <= set(seen), f"vCPU threads {set(index) - set(seen)} have no ledger"
    assert {t: seen[t].index for t in index} == index
    was = {v.tid: v for v in first.vcpus}
    out = {}
    for tid in index:
        # Registered before the first snapshot: the interval is all covered.
        assert tid in was, f"vCPU thread {tid} not registered at the first snapshot"
        d = out[tid] = _delta(was[tid], seen[tid])
        assert abs(sum(d.values()) - interval) <= interval / 100, (d, interval)
        # The run queue is left out: on a 2-core host under other load a
        # spinning vCPU may wait longer than it runs (measured: 54 %).
        rest = {k: ns for k, ns in d.items() if k != Ledger.RUNQUEUE.value}
        assert d[largest.value] == max(rest.values()), d
        # 0.8, not 0.9: on kvm_pvm each halt of the hlt guest (1000/s) is a #GP into
        # its CPL0 handler, emulated instruction by instruction, charged in_kvm_run:
        # 10.7 % of the interval in a clean-clone CI run, with halted at 86.4 %.
        assert d[largest.value] + d[Ledger.RUNQUEUE.value] > interval * 0.8, d
    return out


def test_attach_to_running_cpuid_guest() -> None:
    ready, name, first, second, interval, switched = _attach_late("cpuid")
    assert second.name == name
    assert second.vcpu_count == 2
    _check_vcpus(ready, first, second, interval, Ledger.IN_KVM_RUN)
    assert _cpuid(second) - _cpuid(first) > 0
    by_tid = {v.tid: v for v in second.vcpus}
    for tid, n in switched.items():
        if n > 0:  # the kernel preempted it while vprof watched: vprof saw it
            assert by_tid[tid].preemptions > 0, (tid, n)


def test_attach_to_running_hlt_guest() -> None:
    ready, name, first, second, interval, _ = _attach_late("hlt")
    assert second.name == name
    shares = _check_vcpus(ready, first, second, interval, Ledger.HALTED)
    for d in shares.values():
        assert d[Ledger.HALTED.value] > interval / 2, d


def test_seeded_from_the_inventory_alone() -> None:
    """With only the vmm family, no probe fires for a cpuid guest that stays
    in KVM_RUN: its vCPU threads are registered by the seed, or not at all."""
    name = f"pa-seed-{os.getpid()}"
    with start_guest(name, "cpuid", vcpus=2, duration=60) as g:
        time.sleep(SETTLE_S)
        with Profiler(ProfilerConfig(families=frozenset({"vmm"}))) as prof:
            seeded = prof.seeded_vcpus
            first = prof.snapshot()
            time.sleep(INTERVAL_S)
            second = prof.snapshot()
    assert seeded == 2
    interval = second.monotonic_ns - first.monotonic_ns
    _check_vcpus(g.ready, _vm(first, g.pid), _vm(second, g.pid), interval, Ledger.IN_KVM_RUN)
    assert _vm(second, g.pid).name == name
