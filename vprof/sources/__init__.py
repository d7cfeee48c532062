"""Where Snapshots come from: the one interface every source implements.

The live BPF pipeline (vprof/pipeline/, the Profiler) is one source; sinks
(`vprof top`, the daemon) take any object with this shape: a test fake, a
degraded source without bcc, or a recording played back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from vprof.model import Snapshot


class SnapshotSource(Protocol):
    """What sinks consume: cumulative Snapshots, one per `interval` seconds."""

    def snapshots(self, interval: float) -> Iterator[Snapshot]: ...
