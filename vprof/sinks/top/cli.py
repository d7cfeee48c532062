"""The `vprof top` command: wiring of options, snapshot source and outputs."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import click

from vprof.model import PROBE_FAMILIES, UnknownFamilies, parse_families
from vprof.sinks.top.state import UiState
from vprof.sinks.top.stream import PrimedSource
from vprof.sinks.top.view import COLUMN_KEYS, compile_filter
from vprof.sources import SnapshotSource


@dataclass(frozen=True)
class TopOptions:
    interval: float = 1.0
    count: int | None = None
    fmt: str = "plain"  # "plain", "json", "csv"
    vm: str | None = None
    name_filter: str | None = None
    sort: str = "events_per_s"
    color: bool = True


MAX_INTERVAL_S = 86_400.0


class BadInput(click.ClickException):
    """Bad input: click prints the one line "Error: ..." (no usage block) and exits 2."""

    exit_code = 2


def _fail(message: str) -> BadInput:
    return BadInput(message)


def make_ui(opts: TopOptions) -> UiState:
    """Validate options that need no snapshot; the UI state they start from."""
    if not 0 < opts.interval <= MAX_INTERVAL_S:  # also refuses nan
        raise _fail(f"the interval must be a positive number of seconds, not {opts.interval}")
    if opts.count is not None and opts.count < 1:
        raise _fail(f"the iteration count must be at least 1, not {opts.count}")
    ui = UiState(interval=opts.interval)
    ui.set_sort(opts.sort)
    if opts.name_filter:
        try:
            ui.name_filter = compile_filter(opts.name_filter)
        except re.error as exc:
            raise _fail(f"bad --filter regex {opts.name_filter!r}: {exc}") from None
        ui.filter_text = opts.name_filter
    return ui


def run_top(
    source: SnapshotSource, opts: TopOptions, out: TextIO, interactive: bool, host_cpus: int
) -> None:
    """Run `top` on any snapshot source (tests pass fakes)."""
    ui = make_ui(opts)
    primed = PrimedSource(source, opts.interval)
    if opts.vm is not None:
        vm = primed.first.vm(opts.vm)
        if vm is None:
            names = ", ".join(sorted(v.name for v in primed.first.vms)) or "none"
            raise _fail(f"no VM named {opts.vm!r} (VMs now: {names})")
        ui.drill, ui.drill_name = vm.key, vm.name
    if interactive:
        from vprof.sinks.top.app import run_live

        _progress("")
        from vprof.sinks.top.terminal import Terminal

        with Terminal(sys.stdin.fileno(), out.fileno()) as term:
            run_live(primed, ui, term, host_cpus, opts.color)
    else:
        from vprof.sinks.top.batch import run_batch

        ui.live = False
        run_batch(primed, ui, out, opts.fmt, opts.count, host_cpus)


def _progress(message: str) -> None:
    """A transient line on a terminal's stderr (empty: erase it)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[2K{message}")
        sys.stderr.flush()


def _families(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    try:
        names = frozenset(parse_families(text))
    except UnknownFamilies as e:
        unknown = sorted(e.unknown)
        raise _fail(
            f"unknown probe families {unknown}; known: {', '.join(PROBE_FAMILIES)}"
        ) from None
    if not names:  # as `vprof daemon --families` says: a view with no probes shows nothing
        raise _fail("--families must name at least one probe family")
    return names


@contextlib.contextmanager
def open_profiler(families: frozenset[str] | None, kind: str = "auto") -> Iterator[SnapshotSource]:
    from vprof.sources.select import SourceOptions, open_source

    try:
        profiler, _why = open_source(kind, SourceOptions(families=families))
    except Exception as exc:  # bcc, permissions, kernel: say it in one line
        raise click.ClickException(
            f"cannot start the profiler: {exc} (vprof top needs root, bcc and tracefs; "
            "`make setup` installs them)"
        ) from None
    # The root command may hand a wrapper (vprof/cli.py: advice for the drill-down),
    # since rooms above the sinks may not be imported from here.
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    wrap = root.get("wrap_source") if isinstance(root, dict) else None
    with profiler:
        yield wrap(profiler) if wrap is not None else profiler


EPILOG = """\b
Examples:
  vprof top                      live view, refreshed every second
  vprof top -d 2 -f '^web'       every 2 s, only VMs whose name starts with web
  vprof top -p web-1             open the drill-down of VM web-1
  vprof top -b -n 5              five plain tables, for a ticket
  vprof top -b -n 3 --json       machine-readable rows (JSON Lines)
  vprof top -n 10 --csv > o.csv  CSV rows, one per VM per interval

\b
Keys: h or ? lists them (sort s < > R, filter /, Enter/Esc, pause space,
interval d, reset r, quit q).

\b
Overhead: the same BPF probes as `vprof daemon` (aggregated in the kernel);
the view itself costs a few ms of CPU per interval.
"""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-d",
    "--interval",
    "interval",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between updates.",
)
@click.option("-b", "--batch", is_flag=True, help="Print tables instead of the live view.")
@click.option(
    "-n",
    "--iterations",
    "count",
    type=int,
    default=None,
    help="Stop after COUNT updates (batch mode; default: run until stopped).",
)
@click.option("--json", "fmt", flag_value="json", help="Batch output as JSON Lines.")
@click.option("--csv", "fmt", flag_value="csv", help="Batch output as CSV.")
@click.option("-p", "--vm", "vm", metavar="NAME", help="Drill down into this VM (name or key).")
@click.option(
    "-f",
    "--filter",
    "name_filter",
    metavar="REGEX",
    help="Only VMs whose name matches (case-insensitive).",
)
@click.option(
    "-s",
    "--sort",
    type=click.Choice(COLUMN_KEYS),
    default="events_per_s",
    show_default=True,
    help="Column to sort by (descending for numbers).",
)
@click.option("--families", metavar="LIST", help="Probe families to attach (comma-separated).")
@click.option(
    "--source",
    "source_kind",
    type=click.Choice(("auto", "bpf", "perf")),
    default="auto",
    show_default=True,
    help="bpf, perf (no compiler needed; shows n/a for what it lacks), or auto.",
)
@click.option("--no-color", is_flag=True, help="Plain monochrome output.")
def top(
    interval: float,
    batch: bool,
    count: int | None,
    fmt: str | None,
    vm: str | None,
    name_filter: str | None,
    sort: str,
    families: str | None,
    source_kind: str,
    no_color: bool,
) -> None:
    """Live per-VM view of virtualization overhead, like top.

    One row per VM: events per second by bucket (privileged, memory, I/O,
    context switch), where each vCPU's time went (guest, each bucket's
    overhead, run-queue wait, halted) and the top reason.  Enter on a VM
    (or -p NAME) shows its vCPUs, top reasons with a one-line explanation,
    busiest I/O ports and MMIO addresses, and the slowest exits.

    Batch mode (-b, --json, --csv, or whenever stdout is not a terminal)
    prints instead of drawing.  Needs root (BPF).
    """
    interactive = not batch and fmt is None and sys.stdout.isatty() and sys.stdin.isatty()
    opts = TopOptions(
        interval=interval,
        count=count,
        fmt=fmt or "plain",
        vm=vm,
        name_filter=name_filter,
        sort=sort,
        color=not no_color and "NO_COLOR" not in os.environ,
    )
    make_ui(opts)  # bad options fail before the probes are loaded
    _run_live(opts, _families(families), interactive, source_kind)


def _run_live(
    opts: TopOptions, families: frozenset[str] | None, interactive: bool, kind: str = "auto"
) -> None:
    """Attach the probes and run top on them; Ctrl-C and a closed pipe end it quietly."""
    if interactive:
        _progress("vprof top: loading the BPF probes and taking a first snapshot…")
    try:
        with open_profiler(families, kind) as source:
            run_top(source, opts, sys.stdout, interactive, os.cpu_count() or 1)
    except click.ClickException:
        _progress("")
        raise
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # Batch output piped into `head`: stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None
