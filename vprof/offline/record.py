"""`vprof record`: the live pipeline -> a recording on disk.

The loop takes a cumulative Snapshot each interval, keeps its delta from
the previous one (vprof.model.diff) and hands it to the recorder sink.
SIGINT and SIGTERM end the loop after the current snapshot: the waiting
intervals are written as a last part and the command exits 0.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, TextIO

from vprof.model import Snapshot, diff
from vprof.sinks.recorder import Recorder
from vprof.sources import SnapshotSource


@dataclass(frozen=True)
class RecordOptions:
    interval: float = 5.0
    duration: float | None = None
    part_seconds: float = 60.0
    name_filter: str | None = None


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop stops at its next interval boundary."""

    def __init__(self) -> None:
        self.set = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.set = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _filtered(snap: Snapshot, pattern: re.Pattern[str] | None) -> Snapshot:
    if pattern is None:
        return snap
    return replace(snap, vms=tuple(v for v in snap.vms if pattern.search(v.name)))


class Progress:
    """One line on a terminal, rewritten in place; nothing when piped."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.on = stream.isatty()

    def show(self, text: str) -> None:
        if self.on:
            self.stream.write(f"\r\x1b[2K{text}")
            self.stream.flush()

    def done(self) -> None:
        if self.on:
            self.stream.write("\n")
            self.stream.flush()


def record_loop(
    source: SnapshotSource,
    recorder: Recorder,
    opts: RecordOptions,
    stop: StopFlag,
    progress: Progress | None = None,
) -> int:
    """Record until the duration is over or `stop` is set; intervals recorded."""
    pattern = re.compile(opts.name_filter, re.IGNORECASE) if opts.name_filter else None
    started = time.monotonic()
    prev: Snapshot | None = None
    n = 0
    snaps: Iterable[Snapshot] = source.snapshots(opts.interval)
    for snap in snaps:
        if prev is None:
            started = time.monotonic()  # the duration counts from the baseline
        else:  # the first snapshot is only the baseline
            recorder.add(_filtered(diff(prev, snap), pattern))
            n += 1
            if progress is not None:
                progress.show(
                    f"vprof record: {n} intervals, {recorder.parts} parts, "
                    f"{len(snap.vms)} VMs -> {recorder.path}"
                )
        prev = snap
        elapsed = time.monotonic() - started
        if stop.set or (opts.duration is not None and elapsed >= opts.duration):
            break
    recorder.close()
    if progress is not None:
        progress.done()
    return n


def part_intervals(opts: RecordOptions) -> int:
    return max(1, round(opts.part_seconds / opts.interval))
