"""One vCPU thread's time, event by event, split into ledger categories.

A small state machine over the thread's kvm and sched events (see
vprof/offline/importer.py): every nanosecond between its first and its last
event is charged to exactly one category, in the interval it fell in.
In-kernel handling waits for the next kvm_entry before it is charged: only
then is the exit's bucket known (a stage-2 fault followed by kvm_mmio is I/O).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Protocol

from vprof.model import Ledger, bucket_of, kernel_ledger
from vprof.taxonomy import resolve_bucket
from vprof.taxonomy.core import Classified

KERNEL = "kernel"  # handling an exit; the category waits for the bucket


class Counter(Protocol):
    interval_ns: int
    t0: int

    def seq(self, ts: int) -> int: ...

    def count(
        self,
        ts: int,
        vm: Any,
        kind: str,
        isa: str,
        bucket: str,
        reason: str,
        detail: str = "",
        n: int = 1,
    ) -> None: ...


class Timeline:
    def __init__(self, counter: Counter, ts: int) -> None:
        self.c = counter
        self.last = ts
        self.state: str = Ledger.IN_KVM_RUN.value
        self.saved: str = self.state
        self.is_vcpu = False
        self.has_fpu = False
        self.acc: dict[tuple[int, str, str, str], int] = defaultdict(int)
        self._exit: tuple[int, Classified, tuple[str, ...], Any] | None = None
        self._mmio = False
        self._pending: dict[int, int] = defaultdict(int)  # seq -> ns of this exit's handling
        self._runnable_since: int | None = None

    def _charge(self, ts: int) -> None:
        """Charge [last, ts) to the current state, split at interval edges."""
        start, step, t0 = self.last, self.c.interval_ns, self.c.t0
        while start < ts:
            seq = (start - t0) // step
            end = min(ts, t0 + (seq + 1) * step)
            self._add(seq, end - start)
            start = end
        self.last = max(self.last, ts)

    def _add(self, seq: int, ns: int) -> None:
        self.acc[(seq, "wall", "", "wall_ns")] += ns
        if self.state == KERNEL:
            self._pending[seq] += ns
            return
        b = bucket_of(Ledger(self.state))
        self.acc[(seq, "ledger", b.value if b else "", self.state)] += ns

    def _close_exit(self, entry_ts: int | None) -> None:
        if self._exit is None:
            return
        ts, c, flags, vm = self._exit
        resolved = resolve_bucket(c, self._mmio)
        name = c.name + "".join(f"+{f}" for f in flags) + ("+MMIO" if self._mmio else "")
        cat = kernel_ledger(resolved.bucket).value
        for seq, ns in self._pending.items():
            self.acc[(seq, "ledger", resolved.bucket.value, cat)] += ns
        b = resolved.bucket.value
        self.c.count(ts, vm, "event", c.isa, b, name)
        if entry_ts is not None:
            self.c.count(ts, vm, "handling", c.isa, b, name, n=entry_ts - ts)
        self._exit, self._mmio = None, False
        self._pending = defaultdict(int)

    def exit(self, ts: int, c: Classified, flags: tuple[str, ...], vm: Any) -> None:
        self.is_vcpu = True
        self._charge(ts)
        if self._exit is not None:  # an entry the dump lost: count, never time, it
            self._close_exit(None)
        self._exit = (ts, c, flags, vm)
        self.state = KERNEL

    def entry(self, ts: int) -> None:
        self.is_vcpu = True
        self._charge(ts)
        self._close_exit(ts)
        self.state = Ledger.GUEST.value

    def fpu(self, ts: int, load: bool) -> None:
        """kvm_fpu: KVM loads the guest FPU as KVM_RUN starts and puts it back
        as KVM_RUN returns to the VMM, so it marks the VMM's share exactly."""
        self.is_vcpu = self.has_fpu = True
        self._charge(ts)
        if load:
            self.state = KERNEL if self._exit is not None else Ledger.IN_KVM_RUN.value
        else:
            self.state = Ledger.VMM_USERSPACE.value

    def kvm_event(self, ts: int) -> None:
        """Any other KVM event on the thread: it is back in KVM_RUN (when no
        kvm_fpu marks the return exactly)."""
        if self.state == Ledger.VMM_USERSPACE.value and not self.has_fpu:
            self._charge(ts)
            self.state = KERNEL if self._exit is not None else Ledger.IN_KVM_RUN.value

    def userspace(self, ts: int) -> None:
        self.is_vcpu = True
        self._charge(ts)
        self.state = Ledger.VMM_USERSPACE.value

    def mmio(self) -> None:
        self._mmio = True

    def _sched(self, ts: int, name: str, n: int = 1) -> None:
        self.acc[(self.c.seq(ts), "sched", "", name)] += n

    def switch_out(self, ts: int, runnable: bool) -> None:
        self._charge(ts)
        if self.state not in (Ledger.RUNQUEUE.value, Ledger.HALTED.value):
            self.saved = self.state
        if runnable:
            self._sched(ts, "preemptions")
            self._runnable_since = ts
            self.state = Ledger.RUNQUEUE.value
        else:
            self._sched(ts, "voluntary_switches")
            self.state = Ledger.HALTED.value

    def wakeup(self, ts: int) -> None:
        self._sched(ts, "wakeups")
        if self.state == Ledger.HALTED.value:
            self._charge(ts)
            self.state = Ledger.RUNQUEUE.value
            self._runnable_since = ts

    def switch_in(self, ts: int) -> None:
        self._charge(ts)
        if self._runnable_since is not None:
            self._sched(self._runnable_since, "runqueue_wait_ns", ts - self._runnable_since)
            self._runnable_since = None
        if self.state in (Ledger.RUNQUEUE.value, Ledger.HALTED.value):
            self.state = self.saved

    def rows(self) -> dict[tuple[int, str, str, str], int]:
        """(seq, kind, bucket, reason) -> value; closes a pending exit."""
        if self._exit is not None:
            self._close_exit(None)
        return dict(self.acc)
