"""Advice on a live source: each snapshot's VMs carry the rules that match them now.

Wraps any source with `snapshot()` (the daemon's) or `snapshots()` (the
SnapshotSource interface).  Rules run on the interval between the last two
snapshots; host and VM facts are re-read at most every FACTS_REFRESH_S,
since configuration changes rarely and reading it costs /proc and /sys
reads per VM.  At most MAX_PER_VM findings per VM, ADVISE and BLOCKED only
(NOT_POSSIBLE says what cannot be done: not a series to alert on), which
bounds vprof_vm_advice_info to three series per VM.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from vprof import sanitize
from vprof.advice import engine
from vprof.advice.collect import Facts, gather
from vprof.advice.rule import ADVISE, BLOCKED
from vprof.inventory.inventory import Inventory
from vprof.model import Advice, Snapshot, diff

FACTS_REFRESH_S = 30.0
MAX_PER_VM = 3


class Advisor:
    """Turns cumulative snapshots into the same snapshots with VmStat.advice filled."""

    def __init__(
        self,
        proc_root: str = "/proc",
        sys_root: str = "/sys",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inv = Inventory(proc_root, sys_root)
        self._roots = (proc_root, sys_root)
        self._clock = clock
        self._facts: Facts | None = None
        self._read_at = -FACTS_REFRESH_S
        self._prev: Snapshot | None = None

    def _current_facts(self) -> Facts:
        now = self._clock()
        if self._facts is None or now - self._read_at >= FACTS_REFRESH_S:
            self._facts = gather(self._inv.refresh(), *self._roots)
            self._read_at = now
        return self._facts

    def annotate(self, snap: Snapshot) -> Snapshot:
        prev, self._prev = self._prev, snap
        if prev is None:
            return snap
        facts = self._current_facts()
        report = engine.advise(facts.host, facts.vms, diff(prev, snap))
        by_key = {a.facts.key: a for a in report.vms}
        vms = []
        for vm in snap.vms:
            a = by_key.get(vm.key)
            tags = () if a is None else tags_of(a)
            vms.append(replace(vm, advice=tags) if tags else vm)
        return replace(snap, vms=tuple(vms))


def tags_of(a: engine.VmAdvice) -> tuple[Advice, ...]:
    kept = [f for f in a.findings if f.status in (ADVISE, BLOCKED)][:MAX_PER_VM]
    return tuple(Advice(f.rule, f.bucket, f.status, sanitize.display(f.remedy, 200)) for f in kept)


class AdvisingSource:
    """A source whose snapshots carry advice; everything else is the wrapped source's."""

    def __init__(self, source: Any, advisor: Advisor | None = None) -> None:
        self._source = source
        self._advisor = advisor or Advisor()

    def snapshot(self) -> Snapshot:
        snap: Snapshot = self._source.snapshot()
        return self._advisor.annotate(snap)

    def snapshots(self, interval: float) -> Iterator[Snapshot]:
        for snap in self._source.snapshots(interval):
            yield self._advisor.annotate(snap)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)  # status(), close(), wait_named(), ...
