"""The `vprof advise` command: wiring of inventory, facts, profile and rules."""

from __future__ import annotations

from dataclasses import replace

import click

from vprof.advice.engine import Report
from vprof.model import Snapshot


class BadInput(click.ClickException):
    """One line "Error: ..." and exit 2, as the other commands do."""

    exit_code = 2


MAX_SECONDS = 3600.0

EPILOG = """\b
Examples:
  vprof advise                    profile every VM for 5 s, then advise
  vprof advise web-1 --seconds 20 one VM, a longer profile
  vprof advise --seconds 0        configuration-only advice (no root, no BPF)
  vprof advise --json             for scripts (rule ids are stable)
  vprof advise --source perf      no compiler on the host: perf counters
  vprof advise --recording rec    from a `vprof record` recording, not live

\b
Each finding names its rule id (docs/advice.md), the evidence with the
measured figures, the remedy and its technology, what it needs, and how to
check the effect with `vprof diff`.  BLOCKED: a precondition is missing (it
says which, with the command).  NOT POSSIBLE: the remedy cannot apply here.

\b
--source perf measures no time shares and no port addresses: the I/O rules
then cite the port and MMIO exits' counts, and the shares show n/a.
--recording DIR advises on the whole recording's figures (no --seconds);
the host's kernel and CPU count come from its metadata, and the rules that
need live facts (module parameters, command lines, affinity) are listed as
not checked.

\b
Overhead: the same probes as `vprof top`, for --seconds; the facts are
a few reads of /proc and /sys per VM.
"""


def _profile(seconds: float, kind: str, proc_root: str, sys_root: str) -> Snapshot:
    from vprof.advice.collect import profile
    from vprof.sources.select import SourceOptions, open_source

    try:
        src, _why = open_source(kind, SourceOptions(proc_root=proc_root, sys_root=sys_root))
    except Exception as exc:  # bcc, permissions, kernel: one line, and how to go on
        raise click.ClickException(
            f"cannot start the profiler: {exc} (needs root, and bcc and tracefs or, with "
            "--source perf, tracefs; `vprof doctor` says what is missing; --seconds 0 "
            "advises from configuration only)"
        ) from None
    with src:
        return profile(src, seconds)


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("vm_names", nargs=-1, metavar="[VM]...")
@click.option(
    "--seconds",
    type=float,
    default=5.0,
    show_default=True,
    help="How long to profile (0: configuration only).",
)
@click.option(
    "--source",
    "source_kind",
    type=click.Choice(("auto", "bpf", "perf")),
    default="auto",
    show_default=True,
    help="bpf, perf (no compiler needed; no time shares or addresses), or auto.",
)
@click.option(
    "--recording",
    metavar="DIR",
    help="Advise from this recording (vprof record) instead of profiling live.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option(
    "--proc-root", default="/proc", show_default=True, hidden=True, type=click.Path(file_okay=False)
)
@click.option(
    "--sys-root", default="/sys", show_default=True, hidden=True, type=click.Path(file_okay=False)
)
@click.pass_context
def advise(
    ctx: click.Context,
    vm_names: tuple[str, ...],
    seconds: float,
    source_kind: str,
    recording: str | None,
    as_json: bool,
    proc_root: str,
    sys_root: str,
) -> None:
    """What would cut each VM's virtualization overhead, and why.

    Profiles the VMs for a few seconds (or reads a recording), ranks each
    VM's overhead by bucket and matches it, with the host's and the VM's
    configuration, against the advice rules.
    """
    from vprof.advice import render

    if recording is not None:
        for opt, param in (("--source", "source_kind"), ("--seconds", "seconds")):
            if ctx.get_parameter_source(param) is not click.core.ParameterSource.DEFAULT:
                raise BadInput(
                    f"{opt} and --recording exclude each other: a recording is the profile"
                )
        report = _from_recording(recording, vm_names)
        unreadable = 0
    else:
        report, unreadable = _live(vm_names, seconds, source_kind, proc_root, sys_root)
    click.echo(render.as_json(report) if as_json else render.text(report), nl=False)
    if unreadable:
        click.echo(f"note: {unreadable} /proc entries were unreadable and skipped", err=True)


def _live(
    vm_names: tuple[str, ...], seconds: float, kind: str, proc_root: str, sys_root: str
) -> tuple[Report, int]:
    from vprof.advice import engine
    from vprof.advice.collect import UnknownVm, gather, merged, select
    from vprof.inventory.inventory import Inventory

    if not 0 <= seconds <= MAX_SECONDS:  # also refuses nan
        raise BadInput(f"--seconds must be between 0 and {MAX_SECONDS:g}, not {seconds}")
    try:
        view = Inventory(proc_root, sys_root).refresh()
    except OSError as exc:
        raise BadInput(f"cannot read {proc_root}: {exc.strerror or exc}") from None
    try:
        chosen = select(view, vm_names)
    except UnknownVm as exc:
        raise BadInput(str(exc)) from None
    delta = _profile(seconds, kind, proc_root, sys_root) if seconds > 0 and chosen else None
    if delta is not None:
        view = merged(view, Inventory(proc_root, sys_root).refresh())
    facts = gather(view, proc_root, sys_root)
    keys = {v.key for v in chosen}
    report = engine.advise(
        facts.host, facts.vms, delta, [f.key for f in facts.vms if f.key in keys]
    )
    return report, facts.unreadable


def _from_recording(path: str, vm_names: tuple[str, ...]) -> Report:
    from vprof.advice import engine, recorded
    from vprof.advice.collect import UnknownVm
    from vprof.sources.replay import RecordingError

    try:
        rec = recorded.read(path)
        keys = recorded.select(rec, vm_names)
    except (RecordingError, UnknownVm) as exc:
        raise BadInput(str(exc)) from None
    report = engine.advise(rec.host, rec.vms, rec.profile, keys)
    return replace(report, recording=path)
