"""Shared helpers for the pipeline's live and kvm tests.

One Profiler (all families) serves every kvm test of the session: bcc
compiles each family in about a second, so compiling once keeps the tests
fast.  Tests key on their own guest's PID: other guests may run meanwhile,
and the cumulative counters of each PID are its own.
"""

from __future__ import annotations

import atexit
from typing import Any

from guestproc import start_guest

from vprof.model import VmStat
from vprof.pipeline.profiler import Profiler, ProfilerConfig

_PROFILER: list[Profiler] = []


def shared_profiler() -> Profiler:
    """The session's Profiler with every family, created on first use."""
    if not _PROFILER:
        prof = Profiler(ProfilerConfig())
        atexit.register(prof.close)
        _PROFILER.append(prof)
    return _PROFILER[0]


def run_guest(
    prof: Profiler,
    name: str,
    workload: str,
    *,
    vcpus: int = 1,
    count: int,
    mode: str = "user",
    stats: bool = True,
) -> tuple[dict[str, Any], VmStat]:
    """Run the micro-guest to completion; its result and vprof's view of it."""
    with start_guest(name, workload, vcpus=vcpus, count=count, mode=mode, stats=stats) as g:
        # Named at its first KVM_RUN (the namer thread), while it is alive.
        prof.wait_named(g.pid, 10)
        result = g.wait(60)
    g.proc.wait(10)  # its threads have exited: their ledgers are closed
    snap = prof.snapshot()
    vm = next((v for v in snap.vms if v.pid == g.pid), None)
    assert vm is not None, f"vprof saw nothing of guest pid {g.pid}"
    return result, vm


def ops(result: dict[str, Any], kind: str) -> int:
    """The guest's own count of one operation kind, over all its vCPUs."""
    return sum(v["ops_by_kind"].get(kind, 0) for v in result["vcpus"])


def kvm_stat(result: dict[str, Any], name: str) -> int:
    return sum(v[name] for v in result["kvm_stats"]["vcpus"])
