"""The offline commands: record, report, diff, import.  Wiring only.

Errors a user can fix (a missing file, a newer format, a corrupt part, an
unknown dialect) print one line and exit 2; a full disk exits 1 and what
was written stays readable.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from vprof.model import PROBE_FAMILIES
from vprof.sources.replay import Recording, RecordingError, read_recording
from vprof.sources.select import SOURCES

F = TypeVar("F", bound=Callable[..., Any])
CTX = {"help_option_names": ["-h", "--help"]}


def _fail(cmd: str, msg: str, code: int = 2) -> NoReturn:
    click.echo(f"vprof {cmd}: {msg}", err=True)
    raise SystemExit(code)


def _read(cmd: str, path: str) -> Recording:
    try:
        return read_recording(path)
    except RecordingError as e:
        _fail(cmd, str(e))
        raise AssertionError("unreachable") from None


def _output_options(f: F) -> F:
    for opt in reversed(
        [
            click.option("--json", "fmt", flag_value="json", help="JSON document on stdout."),
            click.option("--csv", "fmt", flag_value="csv", help="One table as CSV on stdout."),
            click.option("--table", metavar="NAME", help="The table --csv prints."),
            click.option("--html", "html", metavar="FILE", help="One self-contained HTML file."),
            click.option("--top", type=int, default=10, show_default=True, help="Rows per VM."),
        ]
    ):
        f = opt(f)
    return f


def _wrote_html(cmd: str, html: str | None, page: str | None) -> bool:
    """Write the --html page, if one was asked for; True if it was."""
    if not html or page is None:
        return False
    Path(html).write_text(page)
    click.echo(f"vprof {cmd}: wrote {html}", err=True)
    return True


def _emit(
    cmd: str,
    fmt: str | None,
    table: str | None,
    head: dict[str, Any],
    tables: Any,
    text: str,
    default_table: str,
) -> None:
    from vprof.offline import render

    if fmt == "json":
        sys.stdout.write(render.as_json(head, tables))
    elif fmt == "csv":
        name = table or default_table
        if name not in tables:
            _fail(cmd, f"no table {name!r}; tables: {', '.join(tables)}")
        sys.stdout.write(render.as_csv(tables[name]))
    else:
        sys.stdout.write(text)


RECORD_EPILOG = """\b
Examples:
  vprof record -o /var/tmp/before --duration 600      ten minutes, every 5 s
  vprof record -o rec -d 1 -f '^web'                  every second, VMs named web*
  vprof record -o rec --families io,vmm,sched         only these probe families
  vprof record -o rec --source perf                   no compiler: perf counters

\b
Stop it with Ctrl-C or SIGTERM: the current part is written and it exits 0.
A recording cut short (SIGKILL, power loss, a full disk) stays readable up
to its last completed part.  Overhead: the probes of `vprof daemon`, plus
about a few hundred bytes of Parquet per VM per interval.

\b
--source perf (or auto where bcc cannot compile) records what the perf
source counts; meta.json names the source and the figures it lacks
(exit handling time, the ledger split, ports and addresses), which are
then absent from the recording, not zero.
"""


@click.command(epilog=RECORD_EPILOG, context_settings=CTX)
@click.option("-o", "--output", required=True, metavar="DIR", help="New recording directory.")
@click.option("--duration", type=float, metavar="S", help="Stop after S seconds.")
@click.option(
    "-d",
    "--interval",
    type=float,
    default=5.0,
    show_default=True,
    metavar="S",
    help="Seconds per recorded interval.",
)
@click.option(
    "--part-seconds",
    type=float,
    default=60.0,
    show_default=True,
    metavar="S",
    help="Seconds of intervals per Parquet part (what a crash can lose).",
)
@click.option(
    "-f",
    "--filter",
    "name_filter",
    metavar="REGEX",
    help="Only VMs whose name matches (case-insensitive).",
)
@click.option("--families", metavar="LIST", help="Probe families to attach (comma-separated).")
@click.option(
    "--source",
    "source_kind",
    type=click.Choice(SOURCES),
    default="auto",
    show_default=True,
    help="bpf, perf (no compiler needed; records no timing or addresses), or auto.",
)
def record(
    output: str,
    duration: float | None,
    interval: float,
    part_seconds: float,
    name_filter: str | None,
    families: str | None,
    source_kind: str,
) -> None:
    """Record what the live pipeline sees to a Parquet recording.

    One tidy table of interval deltas (host, time, VM, vCPU, kind, bucket,
    reason, value) in part files written as it goes, plus meta.json.
    Read it with `vprof report`, compare two with `vprof diff`.  Needs root.
    """
    from vprof.offline.record import Progress, RecordOptions, StopFlag, part_intervals, record_loop
    from vprof.sinks.recorder import RecordingFull

    if interval <= 0 or part_seconds <= 0 or (duration is not None and duration <= 0):
        _fail("record", "--interval, --part-seconds and --duration must be positive")
    fams = _families(families)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        _fail("record", f"{output}: exists and is not empty")  # before the probes load
    opts = RecordOptions(interval, duration, part_seconds, name_filter)
    stop = StopFlag()
    stop.install()  # before the source, so it keeps our SIGTERM handler
    try:
        with _open_source(source_kind, fams) as src:
            recorder = _recorder(output, interval, fams, src, part_intervals(opts))
            n = record_loop(src, recorder, opts, stop, Progress(sys.stderr))
    except RecordingFull as e:
        _fail(
            "record",
            f"{e.strerror}: parts 1-{recorder.parts} in {output} are complete and readable",
            1,
        )
    except (RuntimeError, OSError, ValueError) as e:
        _fail(
            "record",
            f"cannot run the source: {e} (needs root and tracefs; bcc unless --source perf)",
            1,
        )
    finally:
        stop.restore()
    click.echo(f"vprof record: {n} intervals in {recorder.parts} parts -> {output}", err=True)


def _open_source(kind: str, fams: list[str]) -> Any:
    """The live source `--source` names, through the one chooser."""
    from vprof.sources.select import SourceError, SourceOptions, open_source

    try:
        src, _why = open_source(kind, SourceOptions(families=frozenset(fams)))
    except SourceError as e:
        _fail("record", str(e), 1)
    except Exception as e:  # bcc's import, compile and attach raise anything: one line
        first = (str(e).splitlines() or [""])[0]
        _fail("record", f"cannot start the {kind} source: {type(e).__name__}: {first}", 1)
    return src


def _recorder(output: str, interval: float, fams: list[str], src: Any, parts: int) -> Any:
    """The recorder, its meta.json naming the source and what it cannot give."""
    import os

    from vprof.sinks.recorder import Recorder, base_meta
    from vprof.sources.absent import PERF_ABSENT

    meta = base_meta(interval, fams, "live")
    meta["snapshot_source"] = src.kind  # "bpf" or "perf"
    meta["absent"] = sorted(PERF_ABSENT) if src.kind == "perf" else []
    meta["host_cpus"] = os.cpu_count() or 0
    try:
        return Recorder(output, meta, parts)
    except (FileExistsError, OSError) as e:
        _fail("record", str(e))


def _families(text: str | None) -> list[str]:
    if text is None:
        return list(PROBE_FAMILIES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(PROBE_FAMILIES))
    if unknown or not names:
        _fail("record", f"unknown probe families {unknown}; known: {', '.join(PROBE_FAMILIES)}")
    return names


REPORT_EPILOG = """\b
Examples:
  vprof report rec                         tables on the terminal
  vprof report rec --html report.html      one file, charts and remedies, works offline
  vprof report rec --json | jq '.tables.vms'
  vprof report rec --csv --table reasons   one table as CSV
\b
Tables: vms, ledger, reasons, details, io, runqueue, worst; where the host
timed exits also handling (p50/p99 from the histograms) and slow_exits.
"""


@click.command(epilog=REPORT_EPILOG, context_settings=CTX)
@click.argument("recording", metavar="REC")
@_output_options
def report(recording: str, fmt: str | None, table: str | None, html: str | None, top: int) -> None:
    """Per VM: overhead share by bucket, the ledger, top reasons, busiest
    ports and addresses, run-queue wait and the worst interval."""
    from vprof.offline import render
    from vprof.offline.report import build_report

    rec = _read("report", recording)
    try:  # a part's rows are read only now: one may be corrupt past its footer
        rep = build_report(rec, top)
        page = None
        if html:
            from vprof.offline.html import report_html

            page = report_html(rec, rep)
    except RecordingError as e:
        _fail("report", str(e))
    if _wrote_html("report", html, page) and fmt is None:
        return
    head = {
        "recording": str(rec.path),
        "meta": rep.meta,
        "seconds": rep.seconds,
        "parts": rec.parts,
    }
    meta = [
        f"{rec.path}: {rep.seconds:.0f} s on {rep.meta.get('host')} "
        f"({rep.meta.get('kernel')}, {rep.meta.get('backend')}), {rec.parts} parts"
    ]
    text = render.text("vprof report", meta, rep.tables)
    _emit("report", fmt, table, head, rep.tables, text, "vms")


DIFF_EPILOG = """\b
Examples:
  vprof diff before after                  what changed, per VM and bucket
  vprof diff before after --json
  vprof diff before after --html diff.html
\b
VMs are matched by name.  Shares are of vCPU time and rates are per second of
vCPU time, so recordings of different lengths compare.  within_noise is true
when a change is under two standard errors of the per-interval values.
"""


@click.command(epilog=DIFF_EPILOG, context_settings=CTX)
@click.argument("before", metavar="BEFORE")
@click.argument("after", metavar="AFTER")
@_output_options
def diff(
    before: str, after: str, fmt: str | None, table: str | None, html: str | None, top: int
) -> None:
    """Compare two recordings: overhead share, events per vCPU-second and
    ledger per VM and bucket; the reasons that moved most."""
    from vprof.offline import render
    from vprof.offline.diff import build_diff

    rb, ra = _read("diff", before), _read("diff", after)
    try:  # the parts' rows are read only now: one may be corrupt past its footer
        tables = build_diff(rb, ra, top)
        page = None
        if html:
            from vprof.offline.html import diff_html

            page = diff_html(rb, ra, tables)
    except RecordingError as e:
        _fail("diff", str(e))
    if _wrote_html("diff", html, page) and fmt is None:
        return
    head = {
        "before": str(rb.path),
        "after": str(ra.path),
        "seconds_before": rb.seconds(),
        "seconds_after": ra.seconds(),
    }
    meta = [f"before {rb.path}: {rb.seconds():.0f} s; after {ra.path}: {ra.seconds():.0f} s"]
    _emit("diff", fmt, table, head, tables, render.text("vprof diff", meta, tables), "buckets")


IMPORT_EPILOG = """\b
Examples:
  perf record -e 'kvm:*' -e 'sched:*' -a -- sleep 10 && perf script > dump.txt
  vprof import dump.txt -o rec && vprof report rec
  trace-cmd record -e kvm -e sched sleep 10 && trace-cmd report > tc.txt
  vprof import tc.txt -o rec --interval 1
  vprof import /sys/kernel/tracing/trace -o rec      raw ftrace text
\b
Dialects: perf script, trace-cmd report, ftrace `trace` text; kvm_exit in the
5.11+ print format, the older one and trace-cmd's kvm plugin names.
"""


@click.command("import", epilog=IMPORT_EPILOG, context_settings=CTX)
@click.argument("file", metavar="FILE")
@click.option("-o", "--output", required=True, metavar="DIR", help="New recording directory.")
@click.option(
    "-d",
    "--interval",
    type=float,
    default=1.0,
    show_default=True,
    metavar="S",
    help="Seconds per interval of the recording.",
)
@click.option(
    "--dialect",
    type=click.Choice(["auto", "perf", "trace-cmd", "ftrace"]),
    default="auto",
    show_default=True,
    help="The dump's format.",
)
def import_(file: str, output: str, interval: float, dialect: str) -> None:
    """Turn a text dump of kvm:* and sched events into a recording."""
    from vprof.offline.importer import DumpError, import_file

    if interval <= 0:
        _fail("import", "--interval must be positive")
    try:
        stats = import_file(Path(file), Path(output), interval, dialect)
    except DumpError as e:
        _fail("import", str(e))
    except FileExistsError as e:
        _fail("import", str(e))
    for line in stats.summary():
        click.echo(f"vprof import: {line}", err=True)
