"""`vprof probes`: check that the BPF probes load here, or print their C."""

from __future__ import annotations

import os
import sys

import click

from vprof.model import PROBE_FAMILIES, UnknownFamilies, parse_families

_EPILOG = """\b
Examples:
  vprof probes --check                 # compile + attach every family, say what is off and why
  vprof probes --check --families io,sched
  vprof probes --dump                  # the final C of every family, as bcc compiles it
  vprof probes --dump --families exits

\b
Families (each compiles and attaches on its own; one failing leaves the rest):
  exits       kvm_exit/kvm_entry: exit counts and handling times (VMX, SVM hosts)
  io          kvm_pio, kvm_mmio, kvm_fast_mmio, kvm_userspace_exit
  vmm         KVM_RUN ioctl boundaries: time in the VMM's userspace
  privileged  kvm_cpuid, kvm_msr, kvm_cr, kvm_hypercall, kvm_emulate_insn
  memory      kvm_page_fault, kvmmmu SPTE and fault events, async page faults
  sched       sched_switch/sched_wakeup of vCPU threads, halt wake-ups, FPU, injection

\b
Exit status of --check: 0 when every family the kernel can attach is
attached (families whose tracepoints exist but never fire on this backend,
like exits on kvm_pvm, are reported, not failed), 1 when a family failed to
load, 2 for bad usage or missing privileges.
Overhead: compiling takes about a second per family; nothing stays attached.
"""


def _families(value: str | None) -> frozenset[str] | None:
    if not value:
        return None
    try:
        return frozenset(parse_families(value))
    except UnknownFamilies as e:
        raise click.UsageError(
            f"unknown families: {', '.join(sorted(e.unknown))} (known: {', '.join(PROBE_FAMILIES)})"
        ) from None


def _dump(families: frozenset[str] | None, slow_ns: int) -> None:
    from vprof.bpf.fields import tracefs_fields
    from vprof.bpf.loader import TRACEFS
    from vprof.bpf.source import CORE, render

    defines = {"VPROF_SLOW_NS": slow_ns}
    layouts = tracefs_fields(TRACEFS)  # unreadable: the newest layouts
    for fam in (CORE, *PROBE_FAMILIES):
        if families is None or fam in families or fam == CORE:
            click.echo(render(fam, defines if fam != CORE else None, fields=layouts).text)


def _check(families: frozenset[str] | None, slow_ns: int) -> int:
    if os.geteuid() != 0:
        raise click.UsageError("--check loads BPF programs: run it as root")
    from vprof.bpf.loader import LoadError
    from vprof.pipeline.profiler import Profiler, ProfilerConfig, detect_backend

    try:
        prof = Profiler(ProfilerConfig(families=families, slow_exit_threshold_ns=slow_ns))
    except LoadError as err:
        click.echo(f"vprof: {err}", err=True)
        click.echo(f"source: --source auto would use perf (BPF unavailable: {err})")
        return 1
    with prof:
        backend = detect_backend("/sys", set())
        failed = 0
        for st in prof.status():
            if st.attached:
                note = ""
                if st.family == "exits" and backend.startswith("kvm_pvm"):
                    note = "  (attached, but kvm_exit/kvm_entry never fire on kvm_pvm)"
                click.echo(f"  on   {st.family}{note}")
            else:
                failed += st.reason.startswith("failed")
                click.echo(f"  off  {st.family:<11}{st.reason}")
            if st.tracepoints:
                click.echo(f"       {', '.join(st.tracepoints)}")
            for what in st.unavailable:
                click.echo(f"       not available on this kernel: {what}")
        click.echo(f"backend: {backend}")
        # The rule of vprof/sources/select.py: BPF only when every family attached.
        off = [st.family for st in prof.status() if not st.attached]
        if off:
            click.echo(f"source: --source auto would use perf (families off: {', '.join(off)})")
        else:
            click.echo("source: --source auto uses bpf (every family attached)")
    return 1 if failed else 0


@click.command(epilog=_EPILOG)
@click.option("--check", is_flag=True, help="Compile and attach every family, report, detach.")
@click.option("--dump", is_flag=True, help="Print the final C of each family and exit.")
@click.option("--families", metavar="LIST", help="Comma-separated families (default: all).")
@click.option(
    "--slow-exit-ms",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="Exits slower than this go to the slow-exit ring buffer.",
)
def probes(check: bool, dump: bool, families: str | None, slow_exit_ms: float) -> None:
    """Check that vprof's BPF probes compile and attach on this host, or
    print the C they are compiled from.

    vprof attaches BPF programs (bcc) to KVM and scheduler tracepoints, in six
    families; counts are kept in the kernel, in bounded per-CPU hashes and,
    for the busiest small-range events, per-thread counter blocks.
    """
    if check == dump:
        raise click.UsageError("give exactly one of --check or --dump")
    fams = _families(families)
    slow_ns = int(slow_exit_ms * 1_000_000)
    if dump:
        _dump(fams, slow_ns)
        return
    sys.exit(_check(fams, slow_ns))
