"""The /metrics text: the snapshot rendered once per interval, daemon state per scrape.

Formatting ~20,000 series through prometheus_client costs ~100 ms of Python
at 500 VMs, but the snapshot only changes once per interval.  So the text of
the snapshot's families is rendered once per (snapshot, options) pair, right
after the daemon publishes it (and gzipped once), and every scrape appends it
to the few daemon-state families rendered fresh.  Two Prometheus replicas
scraping the same host cost one rendering.  The output is exactly what
generate_latest() gives for SnapshotCollector, in text format 0.0.4.  The daemon's
HTTP server (vprof/daemon/http.py) serves it.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from vprof.model import Snapshot
from vprof.sinks.prometheus import ExportOptions, ExportState, daemon_families, snapshot_families


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def render(families: Iterable[Metric]) -> bytes:
    return generate_latest(_Families(families))


class Exposition:
    """The cached text (and gzip) of the latest snapshot's families."""

    def __init__(self) -> None:
        # (snapshot, options, text, gzip), replaced whole: a scrape reads it
        # without a lock, so it never waits for the rendering of the next
        # snapshot (which held a lock once: scrapes stalled for a whole render).
        self._cached: tuple[Snapshot, ExportOptions, bytes, bytes] | None = None

    def prerender(self, state: ExportState) -> tuple[bytes, bytes]:
        """(text, gzip) of `state`'s snapshot families, rendered at most once each
        (the daemon prerenders before it publishes a state)."""
        if state.snapshot is None:
            return b"", b""
        cached = self._cached
        # Identity, not equality: comparing two 500-VM snapshots costs more than a render.
        if cached is not None and cached[0] is state.snapshot and cached[1] == state.options:
            return cached[2], cached[3]
        text = render(snapshot_families(state.snapshot, state.options))
        gz = gzip.compress(text, compresslevel=1)
        self._cached = (state.snapshot, state.options, text, gz)
        return text, gz

    def body(self, state: ExportState, use_gzip: bool) -> bytes:
        head = render(daemon_families(state))
        text, gz = self.prerender(state)
        if use_gzip:
            # A gzip stream of several members is one valid gzip body (RFC 1952).
            return gzip.compress(head, compresslevel=1) + gz
        return head + text
