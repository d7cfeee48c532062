"""The live loop of `vprof top`: snapshots from a thread, keys and frames here.

Snapshots come from any vprof.model.SnapshotSource, iterated in a daemon
thread (a source blocks for its interval) and handed over through a queue,
so keys are answered within a tenth of a second whatever the interval.
"""

from __future__ import annotations

import queue
import threading

from vprof.model import Snapshot, SnapshotSource
from vprof.sinks.top.screen import compose
from vprof.sinks.top.state import UiState, handle_key
from vprof.sinks.top.stream import Stream
from vprof.sinks.top.terminal import Terminal

KEY_POLL_S = 0.1


class SourceEnded(Exception):
    """The snapshot source stopped yielding."""


class Feeder(threading.Thread):
    """Iterates the source; restarts it when the interval changes."""

    def __init__(self, source: SnapshotSource, interval: float) -> None:
        super().__init__(name="vprof-top-feeder", daemon=True)
        self.source = source
        self.interval = interval
        self.items: queue.Queue[Snapshot | BaseException] = queue.Queue()
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
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
        except Exception as exc:  # handed to the main thread, which reports it
            if not self.stopping.is_set():
                self.items.put(exc)

    def drain(self) -> list[Snapshot | BaseException]:
        out: list[Snapshot | BaseException] = []
        while True:
            try:
                out.append(self.items.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=0.5)


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
            feeder.interval = ui.interval
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
