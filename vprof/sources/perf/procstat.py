"""Scheduler figures of one thread from /proc, as the perf source needs them.

/proc/<pid>/task/<tid>/schedstat (Documentation/scheduler/sched-stats.rst):
time on CPU (ns), time waiting on a run queue (ns), timeslices run.
/proc/<pid>/task/<tid>/status: voluntary_ctxt_switches and
nonvoluntary_ctxt_switches (a preemption of a runnable thread).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedFigures:
    on_cpu_ns: int
    runqueue_ns: int
    voluntary: int
    involuntary: int


def read_sched(proc_root: str, pid: int, tid: int) -> SchedFigures | None:
    """The thread's figures now, or None once it has gone (or is unreadable)."""
    base = f"{proc_root}/{pid}/task/{tid}"
    try:
        with open(f"{base}/schedstat") as f:
            parts = f.read().split()
        with open(f"{base}/status") as f:
            status = f.read()
    except OSError:
        return None
    switches = {"voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in switches:
            switches[key] = int(value)
    if len(parts) < 2:
        return None
    return SchedFigures(
        on_cpu_ns=int(parts[0]),
        runqueue_ns=int(parts[1]),
        voluntary=switches["voluntary_ctxt_switches"],
        involuntary=switches["nonvoluntary_ctxt_switches"],
    )
