"""The `vprof doctor` command."""

from __future__ import annotations

import json
import os

import click

from vprof.advice import doctor, doctor_kvmstats, doctor_tp
from vprof.advice.doctor import EXIT, Check, Env

_MARK = {doctor.OK: "ok", doctor.DEGRADED: "DEGRADED", doctor.UNUSABLE: "UNUSABLE"}


def run(env: Env) -> list[Check]:
    checks = [
        doctor.check_kernel(env),
        doctor.check_lockdown(env),
        privileges := doctor.check_privileges(env),
        bcc := doctor.check_bcc(env),
        doctor.check_source(bcc, privileges),
        doctor.check_tracefs(env),
        doctor.check_debugfs(env),
        backend := doctor.check_backend(env),
    ]
    tps = doctor_tp.wanted()
    tp_check, counts = doctor_tp.check_tracepoints(env, tps)
    checks += [tp_check, doctor_tp.check_exit_timing(counts, str(backend.data.get("backend", "")))]
    checks.append(doctor_tp.check_other_programs(tps, os.getpid(), env.proc_root))
    checks.append(doctor_kvmstats.check_kvm_stats(env))
    return checks


def status(checks: list[Check]) -> int:
    return max((EXIT[c.level] for c in checks), default=0)


def text(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{_MARK[c.level]:9} {c.name:15} {c.detail}")
        if c.fix:
            lines.append(f"{'':25} fix: {c.fix}")
    verdict = {
        0: "all good",
        1: "degraded: profiling works with what is listed missing",
        2: "unusable: fix the UNUSABLE lines first",
    }
    lines.append(f"\nvprof doctor: {verdict[status(checks)]} (exit {status(checks)})")
    return "\n".join(lines) + "\n"


EPILOG = """\b
Examples:
  vprof doctor             every check, with the command that fixes each finding
  vprof doctor --json      for fleet automation
  vprof doctor --seconds 5 count tracepoint hits for longer (start a VM first)

\b
Exit status: 0 all good, 1 degraded (listed), 2 unusable.
Overhead: one BPF program on each tracepoint for --seconds (it returns 1,
so it hides no event from other tools), then nothing.
"""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option(
    "--seconds",
    type=click.FloatRange(0.1, 60),
    default=1.0,
    show_default=True,
    help="How long to count tracepoint hits.",
)
@click.option("--proc-root", default="/proc", hidden=True, type=click.Path(file_okay=False))
@click.option("--sys-root", default="/sys", hidden=True, type=click.Path(file_okay=False))
@click.option(
    "--modules-root", default="/lib/modules", hidden=True, type=click.Path(file_okay=False)
)
@click.option("--no-count", is_flag=True, help="Do not attach BPF to count tracepoint hits.")
def doctor_cmd(
    as_json: bool, seconds: float, proc_root: str, sys_root: str, modules_root: str, no_count: bool
) -> None:
    """Check whether this host can be profiled, and how well.

    Kernel and BPF support, lockdown, tracefs and debugfs, which KVM and
    scheduler tracepoints exist and fire, the KVM backend, bcc and headers,
    privileges, other BPF programs on the same tracepoints, exit timing,
    and per VM the route to KVM's binary statistics (pidfd_getfd of a stats
    fd the VMM holds, QMP query-stats, or none and why).
    """
    env = Env(proc_root=proc_root, sys_root=sys_root, modules_root=modules_root, seconds=seconds)
    if not no_count and env.bcc and (env.euid == 0) and doctor.tracefs_dir(env) is not None:
        from vprof.bpf.tpcount import count

        env = Env(
            proc_root=proc_root,
            sys_root=sys_root,
            modules_root=modules_root,
            seconds=seconds,
            counter=_safe(count),
        )
    checks = run(env)
    if as_json:
        click.echo(
            json.dumps(
                {"status": status(checks), "checks": [c.as_dict() for c in checks]}, indent=2
            )
        )
    else:
        click.echo(text(checks), nl=False)
    raise SystemExit(status(checks))


def _safe(count: doctor.Counter) -> doctor.Counter:
    def counted(tps: object, seconds: float) -> dict[str, int | None]:
        try:
            return dict(count(tps, seconds))  # type: ignore[arg-type,unused-ignore]
        except Exception as exc:  # bcc compile/attach: say it, do not die
            click.echo(f"note: could not count tracepoint hits: {exc}", err=True)
            return {}

    return counted  # type: ignore[return-value,unused-ignore]
