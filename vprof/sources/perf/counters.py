"""One vCPU thread's counters: opened as one perf group, read with one read(2).

Cost: one file descriptor per counter per vCPU thread (`Plan.counters`, 44
on this kvm_pvm host, 60 on VMX with the default exit-reason bound).  A
per-thread counter follows its thread across CPUs; the alternative, per-CPU
counters with a `common_pid` filter, needs one fd per counter, CPU and
thread, which is CPUs times more.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass, field

from vprof.sources.perf.perfevent import PerfError, open_counter, read_group
from vprof.sources.perf.plan import Counter
from vprof.sources.perf.procstat import SchedFigures, read_sched


@dataclass
class ThreadCounters:
    """Counters and scheduler baselines of one vCPU thread."""

    pid: int
    tid: int
    counters: tuple[Counter, ...]  # in group order
    leader: int
    fds: list[int]
    opened_ns: int
    base: SchedFigures
    last: SchedFigures
    last_ns: int
    counts: list[int] = field(default_factory=list)
    alive: bool = True

    def read(self, proc_root: str) -> None:
        """Counts now; scheduler figures now, or as of the last snapshot at
        which the thread was alive (/proc forgets a thread when it exits)."""
        # Counts stay readable after the thread exits: its final figures.
        with contextlib.suppress(OSError):
            self.counts = read_group(self.leader, len(self.fds))
        now = time.monotonic_ns()
        sched = read_sched(proc_root, self.pid, self.tid) if self.alive else None
        if sched is None:
            self.alive = False
            return
        self.last, self.last_ns = sched, now

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def open_thread(
    pid: int, tid: int, counters: tuple[Counter, ...], proc_root: str, failed: dict[str, str]
) -> ThreadCounters | None:
    """Open every counter of `counters` in thread `tid`, as one group.

    A counter the kernel refuses (a filter it rejects, say) is left out and
    its tracepoint noted in `failed` with the reason; a thread that vanished
    meanwhile gives None."""
    base = read_sched(proc_root, pid, tid)
    if base is None:
        return None
    fds: list[int] = []
    kept: list[Counter] = []
    for c in counters:
        try:
            fds.append(open_counter(c.tp_id, tid, fds[0] if fds else -1, c.tp_filter))
        except PerfError as exc:
            if exc.errno == errno.ESRCH:  # the thread exited
                for fd in fds:
                    os.close(fd)
                return None
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise
            failed.setdefault(c.tracepoint, str(exc))
            continue
        kept.append(c)
    if not fds:
        return None
    now = time.monotonic_ns()
    return ThreadCounters(pid, tid, tuple(kept), fds[0], fds, now, base, base, now)
