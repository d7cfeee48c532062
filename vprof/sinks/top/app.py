"""The live loop of `vprof top`: snapshots from a thread, keys and frames here.

Snapshots come from any vprof.sources.SnapshotSource, iterated in a daemon
thread (a source blocks for its interval) and handed over through a queue,
so keys are answered within a tenth of a second whatever the interval.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from vprof.model import Snapshot
from vprof.sinks.top.screen import compose
from vprof.sinks.top.state import UiState, handle_key
from vprof.sinks.top.stream import Stream
from vprof.sinks.top.terminal import Terminal
from vprof.sources import SnapshotSource

KEY_POLL_S = 0.1


class SourceEnded(Exception):
    """The snapshot source stopped yielding."""


class Feeder(threading.Thread):
    """Takes snapshots in the background and queues them for the main thread.

    A source with `snapshot()` (the Profiler, through PrimedSource) is polled
    on an interruptible timer, so stop() never leaves a snapshot being read
    while the caller closes the source, and a new interval applies at once.
    Other sources are iterated, restarting when the interval changes.
    """

    def __init__(self, source: SnapshotSource, interval: float) -> None:
        super().__init__(name="vprof-top-feeder", daemon=True)
        self.source = source
        self.interval = interval
        self.items: queue.Queue[Snapshot | BaseException] = queue.Queue()
        self.stopping = threading.Event()
        self.wake = threading.Event()

    def set_interval(self, interval: float) -> None:
        if interval != self.interval:
            self.interval = interval
            self.wake.set()

    def run(self) -> None:
        take = getattr(self.source, "snapshot", None)
        try:
            if callable(take):
                self._poll(take)
            else:
                self._iterate()
        except Exception as exc:  # handed to the main thread, which reports it
            if not self.stopping.is_set():
                self.items.put(exc)

    def _poll(self, take: Callable[[], Snapshot]) -> None:
        due = time.monotonic()
        while not self.stopping.is_set():
            self.items.put(take())
            due += self.interval
            while (left := due - time.monotonic()) > 0:
                self.wake.wait(left)  # set by stop() and by a new interval
                if self.stopping.is_set():
                    return
                if self.wake.is_set():
                    self.wake.clear()
                    due = time.monotonic() + self.interval

    def _iterate(self) -> None:
        while not self.stopping.is_set():
            interval = self.interval
            for snap in self.source.snapshots(interval):
                if self.stopping.is_set():
                    return
                self.items.put(snap)
                if self.interval != interval:
                    break
            else:
                self.items.put(SourceEnded("the snapshot source ended"))
                return

    def drain(self) -> list[Snapshot | BaseException]:
        out: list[Snapshot | BaseException] = []
        while True:
            try:
                out.append(self.items.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        # A snapshot being taken finishes before the caller closes the source.
        self.join(timeout=5.0)


def run_live(
    source: SnapshotSource,
    ui: UiState,
    term: Terminal,
    host_cpus: int,
    color: bool = True,
) -> None:
    """Run until q (or input closes); exceptions propagate after `term` restores."""
    stream = Stream()
    shown: Snapshot | None = None
    feeder = Feeder(source, ui.interval)
    feeder.start()
    visible: list[str] = []
    dirty, size = True, term.size()
    try:
        while not ui.quit:
            for key in term.read_keys(KEY_POLL_S):
                handle_key(ui, key, visible)
                dirty = True
            feeder.set_interval(ui.interval)
            if ui.reset_requested:
                ui.reset_requested = False
                stream.reset()
            for item in feeder.drain():
                if isinstance(item, SourceEnded):
                    ui.message, dirty = "the snapshot source ended", True
                    continue
                if isinstance(item, BaseException):
                    raise item
                delta = stream.push(item)
                if delta is not None and not ui.paused:
                    shown, dirty = delta, True
            if term.size() != size:
                size, dirty = term.size(), True
            if dirty and not ui.quit:
                frame, visible = compose(shown, stream, ui, size[0], size[1], host_cpus, color)
                term.draw(frame)
                dirty = False
    finally:
        feeder.stop()
