"""Run the micro-guest under the perf source, counters open before it starts.

The guest is started with `hold` (its vCPUs wait for SIGUSR2): the perf
source counts a thread from the moment it opens its counters, so they must
be open before the first operation for the counts to be exact.
"""

from __future__ import annotations

import time
from typing import Any

from conftest import unavailable
from guestproc import start_guest

from vprof.model import VmStat
from vprof.sources.select import KvmStatsSource

OPEN_WITHIN_S = 10.0


def foreign_hiders(tracepoints: tuple[str, ...]) -> dict[str, list[int]]:
    """Classic tracepoint BPF programs on `tracepoints`, of any process."""
    from vprof.sources.perf.hiders import hiding_programs

    names = {tp.split(":")[1] for tp in tracepoints}
    return hiding_programs("/proc", names)


def no_hiders(src: KvmStatsSource, tracepoints: tuple[str, ...]) -> None:
    """Another process's classic tracepoint BPF program would hide events
    from our counters (see vprof/sources/perf/hiders.py): say so, never
    report a wrong count as a failure of the perf source."""
    hidden = {tp: pids for tp, pids in src.find_hiders().items() if tp in tracepoints}
    if hidden:
        unavailable(f"BPF programs of other processes hide events from perf: {hidden}")


def run_perf_guest(
    src: KvmStatsSource, name: str, workload: str, *, vcpus: int = 1, count: int
) -> tuple[dict[str, Any], VmStat]:
    """Run the guest to completion with every vCPU counted from its first
    operation and its KVM stats fds duplicated while it lives."""
    with start_guest(
        name, workload, vcpus=vcpus, count=count, stats=True, hold=True, keep_stats_fds=True
    ) as g:
        tids = {int(v["tid"]) for v in g.ready["vcpus"]}
        deadline = time.monotonic() + OPEN_WITHIN_S
        while True:
            snap = src.snapshot()  # refreshes the inventory, opens counters, dups stats fds
            vm = next((v for v in snap.vms if v.pid == g.pid), None)
            if vm is not None and {v.tid for v in vm.vcpus} >= tids and vm.kvm_stats_route:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"perf source never opened guest {g.pid}: {vm}")
            time.sleep(0.05)
        g.go()
        result = g.wait(60)
    g.proc.wait(10)
    snap = src.snapshot()
    vm = next((v for v in snap.vms if v.pid == g.pid), None)
    assert vm is not None, f"the perf source lost guest pid {g.pid}"
    return result, vm
