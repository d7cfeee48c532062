"""Every map the loader read, as records: the one entry point above the decoders.

The loader hands up raw bytes per map; `decode` turns them into the typed
records of events.py and hot.py, and `stale_keys` finds which raw keys belong
to dead VMs, so no code above this package slices a map's layout.  Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from vprof.records import events as ev
from vprof.records import hot
from vprof.records.hot import decode_hot


def decode(maps: Mapping[str, ev.RawMap]) -> ev.Decoded:
    """All maps the loader read, decoded; bad entries are counted, not fatal."""
    vcpus, e1 = ev.decode_all(maps.get("vcpus", ()), lambda k, v: ev.decode_vcpu(k, v[0]))
    events, e2 = ev.decode_all(maps.get("events", ()), ev.decode_event)
    exits, e3 = ev.decode_all(maps.get("exits", ()), ev.decode_exit)
    io, e4 = ev.decode_all(maps.get("io", ()), ev.decode_io)
    hot_events, e5 = decode_hot(maps.get("hot", ()))  # counted per thread (probes/count.h)
    return ev.Decoded(
        vcpus=vcpus,
        events=events + tuple(hot_events),
        exits=exits,
        io=io,
        overflows=ev.decode_overflow(maps.get("overflow", ())),
        errors=e1 + e2 + e3 + e4 + e5,
    )


def stale_keys(raw: Mapping[str, ev.RawMap], pids: set[int]) -> dict[str, list[bytes]]:
    """Keys of every map entry that belongs to one of `pids`."""
    out: dict[str, list[bytes]] = {}
    for name, entries in raw.items():
        if name == "overflow":
            continue
        keys = []
        for key, values in entries:
            # vcpus is keyed by tid with the pid first in the value; every
            # other map's key starts with the pid.
            owner = values[0][:4] if name == "vcpus" else key[:4]
            if name == "hot":  # an array slot: its owner's pid is in the value
                owner = hot.owner_bytes(values[0])
            if int.from_bytes(owner, "little") in pids:
                keys.append(key)
        out[name] = keys
    return out
