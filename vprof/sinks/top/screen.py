"""One frame of `vprof top` from a delta snapshot and the UI state (pure)."""

from __future__ import annotations

from vprof.model import Snapshot
from vprof.sinks.top.drill import drill
from vprof.sinks.top.host import host_summary
from vprof.sinks.top.render import render_help, render_main
from vprof.sinks.top.render_drill import render_drill
from vprof.sinks.top.state import UiState
from vprof.sinks.top.stream import Stream
from vprof.sinks.top.view import human, interval_seconds, select_rows, vm_rows

HEADER_LINES = 6  # header, status and table title lines above the first VM row
DRILL_ROOMY = 34  # from this height the drill-down lists 5 rows per section, else 3


def since_text(stream: Stream) -> str:
    since = stream.since_reset()
    if since is None:
        return ""
    secs, events = since
    return f"since reset {secs:.0f}s: {human(events)} events"


def compose(
    delta: Snapshot | None,
    stream: Stream,
    ui: UiState,
    width: int,
    height: int | None,
    host_cpus: int,
    color: bool = False,
) -> tuple[str, list[str]]:
    """The frame's text and the VM keys in table order (for cursor keys).

    The cursor follows its VM across re-sorts; it moves to the first row when
    its VM is filtered out or gone.
    """
    host = host_summary(delta, host_cpus) if delta is not None else None
    rows = []
    if delta is not None:
        rows = select_rows(vm_rows(delta), ui.sort_key, ui.descending, ui.name_filter)
    visible = [r.key for r in rows]
    if ui.selected not in visible:
        ui.selected = visible[0] if visible else None
    if height is not None:
        ui.page = max(1, height - HEADER_LINES - 1)
    if ui.help:
        return render_help(width, height, color), visible
    if ui.drill is not None:
        vm = delta.vm(ui.drill) if delta is not None else None
        d = None
        if vm is not None and delta is not None:
            limit = 5 if height is None or height >= DRILL_ROOMY else 3
            slow = stream.slow.get(vm.key, ())
            d = drill(vm, interval_seconds(delta), slow, limit, delta.absent)
            ui.drill_name = d.name
        now = (delta.monotonic_ns, delta.timestamp) if delta is not None else (0, 0.0)
        return render_drill(host, d, ui, width, height, color, now), visible
    return render_main(host, rows, ui, width, height, color, since_text(stream)), visible
