"""Text for the screen: header, VM table, help; shared by live and batch modes.

Rendering goes through rich into a string of exactly the terminal's size (no
line longer than `width`, at most `height` lines), so a frame never wraps or
scrolls, and tests read the same text a user sees.  Strings from VMs enter as
rich Text, never as markup, after vprof.sanitize.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Mapping, Sequence

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from vprof.model import OVERHEAD_BUCKETS
from vprof.sinks.top.host import HostSummary
from vprof.sinks.top.state import KEY_HELP, UiState
from vprof.sinks.top.view import (
    BUCKET_TITLE,
    VM_COLUMNS,
    Column,
    Value,
    VmRow,
    column,
    fit_columns,
    format_value,
    human,
)

ARROW = {True: "▼", False: "▲"}


def to_text(parts: Iterable[RenderableType], width: int, height: int | None, color: bool) -> str:
    """Render to a string; lines cut to `height` (None: no limit)."""
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width,
        height=height or 10_000,
        force_terminal=color,
        color_system="standard" if color else None,
        no_color=not color,
        highlight=False,
        markup=False,
        emoji=False,
        legacy_windows=False,
        soft_wrap=False,
        force_jupyter=False,
        force_interactive=False,
    )
    for part in parts:
        console.print(part, no_wrap=True, overflow="ellipsis", crop=True)
    lines = [line.rstrip() if not color else line for line in buf.getvalue().split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines if height is None else lines[:height])


def line(*spans: tuple[str, str] | str) -> Text:
    """One header line from (text, style) spans; cut with an ellipsis, never wrapped."""
    t = Text(no_wrap=True, overflow="ellipsis")
    for span in spans:
        if isinstance(span, str):
            t.append(span)
        else:
            t.append(span[0], style=span[1])
    return t


def table(
    cols: Sequence[tuple[Column, int]],
    rows: Iterable[Mapping[str, Value]],
    sort: tuple[str, bool] | None = None,
    highlight: int | None = None,
) -> Table:
    t = Table(
        box=None,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
        header_style="bold reverse",
        expand=False,
    )
    for col, width in cols:
        title = col.title
        if sort is not None and sort[0] == col.key:
            title += ARROW[sort[1]]
        t.add_column(
            title,
            width=width,
            min_width=width,
            max_width=width,
            no_wrap=True,
            overflow="ellipsis",
            justify="left" if col.kind == "text" else "right",
        )
    for i, row in enumerate(rows):
        cells = [Text(format_value(row.get(col.key), col.kind)) for col, _ in cols]
        t.add_row(*cells, style="reverse" if i == highlight else None)
    return t


def header_lines(host: HostSummary | None, since: str = "") -> list[Text]:
    if host is None:
        return [line(("vprof top", "bold"), "  waiting for the first snapshot…")]
    clock = time.strftime("%H:%M:%S", time.localtime(host.timestamp))
    timing = "exit timing" if host.exit_timing else "no exit timing"
    every = f"{host.interval_s:.1f}s" if host.interval_s else "-"
    first = line(
        ("vprof top", "bold"),
        f" {clock}  every {every}  VMs {host.vm_count}  {host.backend}, {timing}",
        *([("  perf source: n/a = not measured", "yellow")] if host.source == "perf" else []),
    )
    ev: list[tuple[str, str] | str] = [("events/s", "bold"), f" {_num(host.total_events_per_s())}"]
    cpu: list[tuple[str, str] | str] = [("host CPU", "bold"), f" guest {_pct(host.guest_cpu_pct)}"]
    for b in OVERHEAD_BUCKETS:
        ev.append(f"  {BUCKET_TITLE[b]} {_num(host.events_per_s[b])}")
        cpu.append(f"  {BUCKET_TITLE[b]} {_pct(host.cpu_pct[b])}")
    if since:
        ev.append(f"  | {since}")
    if host.events_lost:
        cpu.append((f"  LOST {host.events_lost} events", "bold red"))
    probes: list[tuple[str, str] | str] = [("probes", "bold"), " on: "]
    probes.append(" ".join(host.probes_on) or "none")
    if host.probes_off:
        probes.append("  off: ")
        probes.append((", ".join(f"{f} ({why})" for f, why in host.probes_off), "yellow"))
    return [first, line(*ev), line(*cpu), line(*probes)]


def status_line(ui: UiState, shown: tuple[int, int] | None = None) -> Text:
    """Prompt, or sort/filter/pause state; `shown` is (VMs shown, VMs in all)."""
    if ui.prompt == "filter":
        return line(("filter VMs by name (regex, Enter applies, Esc cancels): ", "bold"), ui.buffer)
    if ui.prompt == "interval":
        return line(("interval in seconds (Enter applies, Esc cancels): ", "bold"), ui.buffer)
    parts: list[tuple[str, str] | str] = []
    if ui.drill is None:
        parts.append(f"sort {column(ui.sort_key).title}{ARROW[ui.descending]}")
        parts.append(f"  filter /{ui.filter_text}/" if ui.filter_text else "  no filter")
        if ui.filter_text and shown is not None:
            parts.append(f" ({shown[0]} of {shown[1]} VMs)")
    elif ui.live:
        parts.append("Esc: back to all VMs")
    if ui.paused:
        parts.append(("  PAUSED", "bold yellow"))
    if ui.message:
        parts.append(("  " + ui.message, "cyan"))
    if ui.live:
        parts.append("  h: help  q: quit")
    return line(*parts)


def render_table(
    rows: Sequence[VmRow],
    total_vms: int,
    ui: UiState,
    width: int,
    max_rows: int,
) -> list[RenderableType]:
    """The VM table scrolled so the cursor row shows, and a line if rows are cut."""
    cols = fit_columns(VM_COLUMNS, width)
    keys = [r.key for r in rows]
    cursor = keys.index(ui.selected) if ui.selected in keys else None
    room = max(1, max_rows - 1)  # header row
    start = 0
    if len(rows) > room:
        room -= 1  # the "more" line
        if cursor is not None and cursor >= room:
            start = cursor - room + 1
    shown = rows[start : start + room]
    hl = None if cursor is None else cursor - start
    parts: list[RenderableType] = [
        table(cols, (r.values for r in shown), (ui.sort_key, ui.descending), hl)
    ]
    if not rows:
        if total_vms == 0:
            parts.append(line(("  no VMs on this host (no KVM guest is running)", "dim")))
        else:
            parts.append(line((f"  no VM matches /{ui.filter_text}/ ({total_vms} hidden)", "dim")))
    elif len(rows) > len(shown):
        parts.append(line((f"  … {len(rows) - len(shown)} more (Up/Down to scroll)", "dim")))
    return parts


def render_help(width: int, height: int | None, color: bool = False) -> str:
    parts: list[RenderableType] = [line(("vprof top: keys", "bold")), line("")]
    for keys, what in KEY_HELP:
        parts.append(line((f"  {keys:<17}", "bold"), what))
    parts += [line(""), line("Columns (% of vCPU wall time; /s per second over the interval):")]
    for col in VM_COLUMNS:
        parts.append(line(f"  {col.title:<11}{col.help}"))
    return to_text(parts, width, height, color)


def _num(v: float | None) -> str:
    return "-" if v is None else human(v)


def _pct(v: float | str | None) -> str:
    if isinstance(v, str):
        return v  # NA: the source does not measure it
    return "-" if v is None else f"{v:.1f}%"


def render_main(
    host: HostSummary | None,
    rows: Sequence[VmRow],
    ui: UiState,
    width: int,
    height: int | None,
    color: bool = False,
    since: str = "",
) -> str:
    """The main screen: host header, status line, VM table."""
    parts: list[RenderableType] = list(header_lines(host, since))
    parts.append(status_line(ui, (len(rows), host.vm_count) if host else None))
    if host is not None:
        total = host.vm_count
        max_rows = (height - len(parts)) if height else len(rows) + 3
        parts += render_table(rows, total, ui, width, max_rows)
    return to_text(parts, width, height, color)
