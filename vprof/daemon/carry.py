"""Keep counters monotonic when the daemon replaces its Profiler (SIGHUP).

A reload that changes the probe families or thresholds needs a new Profiler,
whose cumulative counters start from zero.  Exported counters must not go
backwards, so the daemon remembers the old Profiler's last snapshot and adds
it to every snapshot of the new one: `carry(base, cur)` is the counter-wise
sum for VMs present in `cur` (matched by VmStat.key).  VMs only in `base` stay
out of the result, so a VM that exited during the reload still disappears.
"""

from __future__ import annotations

import operator
from dataclasses import replace

from vprof.model import ProgStat, Snapshot, walk_snapshot


def carry(base: Snapshot | None, cur: Snapshot) -> Snapshot:
    """`cur` with the counters of `base` added (None: `cur` unchanged)."""
    if base is None:
        return cur
    # Union: a vCPU, reason or address the new source has not seen yet keeps its old count.
    summed = walk_snapshot(cur, base, operator.add, union=True)
    return replace(summed, progs=_add_progs(base.progs, cur.progs))


def _add_progs(old: tuple[ProgStat, ...], new: tuple[ProgStat, ...]) -> tuple[ProgStat, ...]:
    # The kernel's run counters belong to the program, which a new Profiler reloads.
    before = {p.name: p for p in old}
    return tuple(
        replace(p, run_time_ns=p.run_time_ns + b.run_time_ns, run_cnt=p.run_cnt + b.run_cnt)
        if (b := before.get(p.name))
        else p
        for p in new
    )


def remember(base: Snapshot | None, last: Snapshot) -> Snapshot:
    """The base to carry after closing a source whose last carried snapshot was `last`.

    `last` already includes `base` for its VMs; VMs of `base` that `last` did
    not show yet are kept so a later reload does not drop them.
    """
    if base is None:
        return last
    shown = {vm.key for vm in last.vms}
    kept = tuple(vm for vm in base.vms if vm.key not in shown)
    return replace(last, vms=last.vms + kept)
