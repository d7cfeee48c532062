"""Keep counters monotonic when the daemon replaces its Profiler (SIGHUP).

A reload that changes the probe families or thresholds needs a new Profiler,
whose cumulative counters start from zero.  Exported counters must not go
backwards, so the daemon remembers the old Profiler's last snapshot and adds
it to every snapshot of the new one: `carry(base, cur)` is the counter-wise
sum for VMs present in `cur` (matched by VmStat.key).  VMs only in `base` stay
out of the result, so a VM that exited during the reload still disappears.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from vprof.model import IoStat, ProgStat, ReasonStat, Snapshot, VcpuStat, VmStat


def _add_map(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _add_reason(old: ReasonStat, new: ReasonStat) -> ReasonStat:
    hist = new.hist
    if old.hist is not None and new.hist is not None:
        hist = tuple(a + b for a, b in zip(old.hist, new.hist, strict=True))
    handling = new.handling_ns
    if old.handling_ns is not None and handling is not None:
        handling += old.handling_ns
    details = _add_map(old.details, new.details)
    return replace(
        new, count=old.count + new.count, handling_ns=handling, hist=hist, details=details
    )


def _add_vcpu(old: VcpuStat, new: VcpuStat) -> VcpuStat:
    return replace(
        new,
        wall_ns=old.wall_ns + new.wall_ns,
        ledger=_add_map(old.ledger, new.ledger),
        events=_add_map(old.events, new.events),
        runqueue_wait_ns=old.runqueue_wait_ns + new.runqueue_wait_ns,
        preemptions=old.preemptions + new.preemptions,
        voluntary_switches=old.voluntary_switches + new.voluntary_switches,
        wakeups=old.wakeups + new.wakeups,
    )


def _merge_vm(old: VmStat, new: VmStat) -> VmStat:
    vcpus = {v.tid: v for v in old.vcpus}
    for v in new.vcpus:
        vcpus[v.tid] = _add_vcpu(vcpus[v.tid], v) if v.tid in vcpus else v
    reasons = {(r.isa, r.reason): r for r in old.reasons}
    for r in new.reasons:
        key = (r.isa, r.reason)
        reasons[key] = _add_reason(reasons[key], r) if key in reasons else r
    io: dict[tuple[str, str, int, int], IoStat] = {
        (s.kind, s.direction, s.address, s.size): s for s in old.io
    }
    for s in new.io:
        io_key = (s.kind, s.direction, s.address, s.size)
        io[io_key] = replace(s, count=io[io_key].count + s.count) if io_key in io else s
    return replace(
        new, vcpus=tuple(vcpus.values()), reasons=tuple(reasons.values()), io=tuple(io.values())
    )


def carry(base: Snapshot | None, cur: Snapshot) -> Snapshot:
    """`cur` with the counters of `base` added (None: `cur` unchanged)."""
    if base is None:
        return cur
    old = {vm.key: vm for vm in base.vms}
    return replace(
        cur,
        vms=tuple(_merge_vm(old[vm.key], vm) if vm.key in old else vm for vm in cur.vms),
        events_lost=base.events_lost + cur.events_lost,
        map_overflows=_add_map(base.map_overflows, cur.map_overflows),
        decode_errors=base.decode_errors + cur.decode_errors,
        progs=_add_progs(base.progs, cur.progs),
    )


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
