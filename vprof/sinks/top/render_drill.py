"""Text for the drill-down of one VM."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from rich.console import RenderableType

from vprof.model import SlowExit
from vprof.sinks.top.drill import VCPU_COLUMNS, Drill, IoRow, ReasonRow
from vprof.sinks.top.host import HostSummary
from vprof.sinks.top.render import header_lines, line, status_line, table, to_text
from vprof.sinks.top.state import UiState
from vprof.sinks.top.view import BUCKET_TITLE, Column, Value, fit_columns
from vprof.sources.absent import ABSENT_EXIT_TIMING, ABSENT_IO_ADDRESSES

REASON_COLUMNS: tuple[Column, ...] = (
    Column("reason", "REASON", 20, 0, "text", ""),
    Column("bucket", "BUCKET", 6, 2, "text", ""),
    Column("count", "COUNT", 8, 3, "int", ""),
    Column("per_s", "/s", 7, 1, "rate", ""),
    Column("avg_us", "AVG µs", 8, 4, "num", "mean handling time"),
    Column("p99_us", "P99≤µs", 8, 5, "num", "99th percentile, log2 slot bound"),
    Column("isa", "ISA", 9, 6, "text", ""),
)
IO_COLUMNS: tuple[Column, ...] = (
    Column("kind", "KIND", 4, 0, "text", ""),
    Column("direction", "DIR", 5, 1, "text", ""),
    Column("address", "ADDRESS", 12, 0, "text", ""),
    Column("size", "SIZE", 4, 3, "int", ""),
    Column("count", "COUNT", 8, 2, "int", ""),
    Column("per_s", "/s", 7, 1, "rate", ""),
)
SLOW_COLUMNS: tuple[Column, ...] = (
    Column("vcpu", "VCPU", 4, 1, "text", ""),
    Column("reason", "REASON", 20, 0, "text", ""),
    Column("bucket", "BUCKET", 6, 3, "text", ""),
    Column("ms", "MS", 9, 0, "num", ""),
    Column("when", "AT", 8, 2, "text", "wall clock of the exit"),
)

NOT_WITH_PERF = "not available with the perf source"


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def reason_values(r: ReasonRow) -> dict[str, Value]:
    return {
        "reason": r.reason,
        "bucket": BUCKET_TITLE[r.bucket],
        "count": r.count,
        "per_s": r.per_s,
        "avg_us": _us(r.avg_us),
        "p99_us": _us(r.p99_us),
        "isa": r.isa,
    }


def io_values(r: IoRow) -> dict[str, Value]:
    return {
        "kind": r.kind,
        "direction": r.direction,
        "address": f"0x{r.address:x}",
        "size": r.size,
        "count": r.count,
        "per_s": r.per_s,
    }


def slow_values(s: SlowExit, now_mono_ns: int, now_wall: float) -> dict[str, Value]:
    wall = now_wall - (now_mono_ns - s.timestamp_ns) / 1e9
    return {
        "vcpu": "?" if s.vcpu is None else str(s.vcpu),
        "reason": s.reason,
        "bucket": BUCKET_TITLE[s.bucket],
        "ms": f"{s.duration_ns / 1e6:.3f}",
        "when": time.strftime("%H:%M:%S", time.localtime(wall)),
    }


def _section(title: str, note: str = "") -> RenderableType:
    return line((title, "bold underline"), (note, "dim"))


def _reason_parts(d: Drill, width: int) -> list[RenderableType]:
    if not d.reasons:
        return [line(("  no events this interval", "dim"))]
    cols = fit_columns(REASON_COLUMNS, width, flex="reason", flex_max=32, flex2=None)
    parts: list[RenderableType] = [table(cols, map(reason_values, d.reasons))]
    if d.explanation:
        parts.append(line(("why: ", "bold"), f"{d.reasons[0].reason}: {d.explanation}"))
    if d.remedy:
        parts.append(line(("remedy: ", "bold"), d.remedy))
    return parts


def _table_or(
    cols: Sequence[tuple[Column, int]], rows: Iterable[Mapping[str, Value]], empty: str
) -> RenderableType:
    """The table of `rows`, or a dim line saying there is nothing to show."""
    listed = list(rows)
    return table(cols, listed) if listed else line((f"  {empty}", "dim"))


def drill_parts(
    d: Drill, width: int, now: tuple[int, float], exit_timing: bool
) -> list[RenderableType]:
    timing = "" if exit_timing else "  (no exit timing on this backend: no handling times)"
    if ABSENT_EXIT_TIMING in d.absent:
        timing = f"  (handling times {NOT_WITH_PERF})"
    parts: list[RenderableType] = [
        line(
            ("VM ", "bold"),
            (d.name, "bold cyan"),
            f"  pid {d.pid}  vmm {d.vmm}  vCPUs {d.vcpu_count}  name from {d.name_source}",
        ),
        _section("vCPUs"),
        table(fit_columns(VCPU_COLUMNS, width, flex=None, flex2=None), d.vcpus),
        _section("Top reasons", timing),
    ]
    parts += _reason_parts(d, width)
    if d.advice:  # the VM's top advice rule, even in an interval without events
        parts.append(line(("advice: ", "bold"), d.advice))
    parts.append(_section("Busiest I/O ports and MMIO addresses"))
    io_cols = fit_columns(IO_COLUMNS, width, flex=None, flex2=None)
    no_io = "no port or MMIO accesses this interval"
    if ABSENT_IO_ADDRESSES in d.absent:
        no_io = f"per-port and per-address counts: {NOT_WITH_PERF}"
    parts.append(_table_or(io_cols, map(io_values, d.io), no_io))
    parts.append(_section("Slowest exits sampled", " (since reset)"))
    slow_cols = fit_columns(SLOW_COLUMNS, width, flex="reason", flex_max=32, flex2=None)
    slow_rows = (slow_values(s, *now) for s in d.slow)
    no_slow = NOT_WITH_PERF if ABSENT_EXIT_TIMING in d.absent else "none over the threshold"
    parts.append(_table_or(slow_cols, slow_rows, no_slow))
    return parts


def render_drill(
    host: HostSummary | None,
    d: Drill | None,
    ui: UiState,
    width: int,
    height: int | None,
    color: bool = False,
    now: tuple[int, float] = (0, 0.0),
) -> str:
    """The drill-down screen; `now` is (CLOCK_MONOTONIC ns, time.time()) of the data."""
    parts: list[RenderableType] = list(header_lines(host)[:1])
    parts.append(status_line(ui))
    if d is None:
        parts.append(line((f"VM {ui.drill_name or ui.drill} is gone (Esc: back)", "bold yellow")))
    else:
        parts += drill_parts(d, width, now, host.exit_timing if host else False)
    return to_text(parts, width, height, color)
