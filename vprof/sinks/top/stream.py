"""Cumulative snapshots in, interval deltas out, plus what accumulates since reset.

`top` shows rates over the last interval (vprof.model.diff of consecutive
snapshots).  Two things outlive one interval: the slowest exits sampled,
and total events since the last reset (the `r` key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from vprof.model import SlowExit, Snapshot, diff
from vprof.sources import SnapshotSource

SLOW_KEEP = 20  # slow exits kept per VM since reset


@dataclass
class Stream:
    prev: Snapshot | None = None
    since: Snapshot | None = None  # baseline of the since-reset totals
    slow: dict[str, list[SlowExit]] = field(default_factory=dict)  # VM key -> slowest
    start_ns: int = 0  # CLOCK_MONOTONIC the first snapshot counts from

    def push(self, cur: Snapshot) -> Snapshot | None:
        """The delta ending at `cur`, or None if `cur` can only be a baseline.

        The first snapshot counts from when the source started tracking, so it
        is a delta of its own when it says how long that was (interval_ns > 0).
        """
        first = self.prev is None
        if first:
            self.start_ns = cur.monotonic_ns - max(0, cur.interval_ns)
        delta = diff(self.prev, cur)
        self.prev = cur
        if first and cur.interval_ns <= 0:
            self.since = cur
            return None
        for vm in delta.vms:
            if vm.slow_exits:
                kept = self.slow.get(vm.key, []) + list(vm.slow_exits)
                kept.sort(key=lambda s: s.duration_ns, reverse=True)
                self.slow[vm.key] = kept[:SLOW_KEEP]
        return delta

    def reset(self) -> None:
        self.slow.clear()
        self.since = self.prev

    def since_reset(self) -> tuple[float, int] | None:
        """(seconds, events) since the last reset, or None before any data."""
        if self.prev is None:
            return None
        base = self.since
        d = diff(base, self.prev)
        secs = (self.prev.monotonic_ns - (base.monotonic_ns if base else self.start_ns)) / 1e9
        return secs, sum(sum(vm.events_by_bucket().values()) for vm in d.vms)


class PrimedSource:
    """A source whose first snapshot was already taken (to check --vm before the UI).

    It replays that snapshot and the rest of its iterator; asking for another
    interval starts a fresh iterator from the wrapped source.  If the wrapped
    source can also take a snapshot on demand (the Profiler's `snapshot()`),
    `snapshot` is that, replaying the first one; otherwise it is None.
    """

    def __init__(self, source: SnapshotSource, interval: float) -> None:
        self._source = source
        self._interval = interval
        self._it: Iterator[Snapshot] | None = source.snapshots(interval)
        take = getattr(source, "snapshot", None)
        self._take: Callable[[], Snapshot] | None = take if callable(take) else None
        # A source that snapshots on demand gives its first one at once: the
        # Profiler's first is a baseline (interval 0), so the first rates come
        # one interval later, over a stretch every family was attached for.
        self.first: Snapshot = self._take() if self._take else next(self._it)
        self._replayed = False
        self.snapshot: Callable[[], Snapshot] | None = self._snapshot if self._take else None

    def _snapshot(self) -> Snapshot:
        if not self._replayed:
            self._replayed = True
            return self.first
        assert self._take is not None
        return self._take()

    def snapshots(self, interval: float) -> Iterator[Snapshot]:
        it, self._it = self._it, None
        if it is not None and interval == self._interval:
            if not self._replayed:
                self._replayed = True
                yield self.first
            yield from it
            return
        yield from self._source.snapshots(interval)
