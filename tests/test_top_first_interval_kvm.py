"""`vprof top`'s first interval (issue 12): rates over the time each count covers.

The families attach one by one while bcc compiles them (seconds apart), and
their counters start at attach.  top once divided the counts since the first
attach by one interval: 451,855 events/s for guests doing ~10,000 exits/s.
The Profiler's first snapshot is now a baseline (interval 0) that top takes at
once, so the first rates cover one interval with every family attached.

Oracles: the clock (the first interval is as long as we waited for it, not
the compile before it) and the guest itself: the first interval's port I/O
rate must match the next interval's (same guest, same conditions, side by
side; the old bug made it 5x and more), and no interval counts more than the
guest's own total.  The guest's lifetime average is no oracle here: the
compile starves it (measured 3,054/s over its life, 7,656/s after).
"""

from __future__ import annotations

import os
import time

import pytest

from vprof.guest.workloads import PIO_PORT
from vprof.sinks.top.stream import PrimedSource, Stream
from vprof.sinks.top.view import interval_seconds

pytestmark = [pytest.mark.live, pytest.mark.kvm, pytest.mark.reliability]

INTERVAL = 1.0


def test_first_interval_rates_match_the_guest() -> None:
    from guestproc import start_guest

    from vprof.pipeline.profiler import Profiler, ProfilerConfig

    name = f"rel-top-{os.getpid()}"
    with start_guest(name, "pio", vcpus=1) as guest:
        with Profiler(ProfilerConfig()) as prof:
            started = time.monotonic()  # the baseline is taken in PrimedSource
            primed = PrimedSource(prof, INTERVAL)
            stream = Stream()
            snaps = primed.snapshots(INTERVAL)
            assert stream.push(next(snaps)) is None, "the first snapshot must be a baseline"
            delta = stream.push(next(snaps))
            waited = time.monotonic() - started
            second = stream.push(next(snaps))
        guest.stop()
        result = guest.wait(30)
    assert delta is not None
    secs = interval_seconds(delta)
    # The clock: the delta covers the interval we waited for, not the compile.
    assert secs is not None and 0.5 * INTERVAL <= secs <= waited + 0.05, (secs, waited)
    ops = result["vcpus"][0]["ops_by_kind"]
    total = ops["pio_out"] + ops["pio_in"]
    rates = []
    for d in (delta, second):
        assert d is not None
        vm = d.vm(name)
        assert vm is not None, [v.name for v in d.vms]
        pio = sum(s.count for s in vm.io if s.kind == "pio" and s.address == PIO_PORT)
        assert 0 < pio <= total
        rates.append(pio / (interval_seconds(d) or 1))
    ratio = rates[0] / rates[1]
    print(f"first interval {rates[0]:,.0f}/s, second {rates[1]:,.0f}/s: ratio {ratio:.2f}")
    assert 0.5 <= ratio <= 2.0, f"the first interval's rate is {ratio:.2f}x the next one's"
