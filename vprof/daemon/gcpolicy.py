"""Keep CPython's cyclic GC from walking the published snapshots in a scrape.

A 500-VM x 8-vCPU snapshot is some 10^5 tracked objects, built afresh every
interval.  Each one pushes the collector past its full-collection threshold
(long-lived pending > 25 % of long-lived), so about once per interval a
collection walks every snapshot still alive while holding the GIL: the p99
of /metrics under load (tests/test_reliability_load.py) was that pause.
Snapshots are immutable trees freed by reference counting; nothing needs the
cyclic collector to free them.  So the collector is off while a snapshot is
built (its young objects would be walked several times over), and then
everything alive is moved to the permanent generation (gc.freeze(), O(1)):
automatic collections, on again, only walk what scrapes allocate since.
Every FULL_EVERY snapshots one real collection (gc.unfreeze(); gc.collect()) frees cycles
made meanwhile (bcc's ctypes objects, tracebacks), so they cannot pile up:
one pause per FULL_EVERY intervals instead of one per interval.
bench/scrape_tail.py measures the p99 with and without it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

FULL_EVERY = 60


class GcPolicy:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.published = 0

    @contextmanager
    def building(self) -> Iterator[None]:
        """Around the building and publishing of one snapshot."""
        if not self.enabled:
            yield
            return
        was = gc.isenabled()
        gc.disable()  # the new snapshot's 10^5 objects: no collection walks them
        try:
            yield
        finally:
            self.published += 1
            if self.published % FULL_EVERY == 0:
                gc.unfreeze()
                gc.collect()
            gc.freeze()
            if was:
                gc.enable()
