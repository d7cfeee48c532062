# ruff: noqa: E501  (findings and fixes are sentences: one line each reads better)
"""Doctor checks of the tracepoints: which exist, which fire, who else is attached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping

from vprof.advice.doctor import DEGRADED, EXIT_TPS, EXTRA_TPS, OK, UNUSABLE, Check, Env, tracefs_dir

FIRE_REQUIRED = ("sched:sched_switch",)  # without it there is no ledger at all


def wanted() -> tuple[str, ...]:
    """Every tracepoint vprof's probe families attach to, plus EXTRA_TPS."""
    from vprof.bpf.source import render
    from vprof.model import PROBE_FAMILIES

    tps: dict[str, None] = {}
    for family in PROBE_FAMILIES:
        tps.update(dict.fromkeys(render(family).tracepoints))
    tps.update(dict.fromkeys(EXTRA_TPS))
    return tuple(tps)


def existing(env: Env, tps: tuple[str, ...]) -> tuple[list[str], list[str]]:
    base = tracefs_dir(env)
    if base is None:
        return [], list(tps)
    have = [tp for tp in tps if os.path.isdir(os.path.join(base, "events", *tp.split(":")))]
    return have, [tp for tp in tps if tp not in have]


def check_tracepoints(env: Env, tps: tuple[str, ...]) -> tuple[Check, Mapping[str, int | None]]:
    have, missing = existing(env, tps)
    if not have:
        return Check(
            "tracepoints",
            DEGRADED,
            "no tracepoint can be listed without tracefs",
            "mount -t tracefs nodev /sys/kernel/tracing",
        ), {}
    counts: Mapping[str, int | None] = {}
    if env.counter is not None:
        counts = env.counter(have, env.seconds)
    fired = sorted(tp for tp in have if (counts.get(tp) or 0) > 0)
    silent = sorted(tp for tp in have if counts and counts.get(tp) == 0)
    data = {
        "exist": have,
        "missing": missing,
        "fired": {tp: counts[tp] for tp in fired},
        "silent": silent,
        "seconds": env.seconds,
    }
    parts = [f"{len(have)} of {len(tps)} exist"]
    if missing:
        parts.append(f"missing: {', '.join(missing)}")
    if counts:
        # The silent ones first: they are what limits vprof on this host.
        parts.append(f"exist but never fired in {env.seconds:g} s: {', '.join(silent) or 'none'}")
        parts.append(f"fired: {', '.join(f'{tp} {counts[tp]}' for tp in fired) or 'none'}")
    else:
        parts.append("not counted (needs root and bcc)")
    level = OK
    fix = ""
    if counts and any(tp in silent for tp in FIRE_REQUIRED):
        level, fix = (
            UNUSABLE,
            "the scheduler tracepoints are silent: is another tool's BPF program returning 0 on them? (see other-programs)",
        )
    elif counts and not any(tp.startswith("kvm") for tp in fired):
        level = DEGRADED
        fix = "no KVM tracepoint fired (was a VM running?): start one and run `vprof doctor` again"
    elif missing:
        level, fix = DEGRADED, "a kernel with these tracepoints (CONFIG_KVM, CONFIG_TRACEPOINTS)"
    return Check("tracepoints", level, "; ".join(parts), fix, data=data), counts


def check_exit_timing(counts: Mapping[str, int | None], backend: str) -> Check:
    fired = {tp: counts.get(tp) or 0 for tp in EXIT_TPS}
    if counts and all(fired.values()):
        return Check(
            "exit-timing",
            OK,
            "kvm_exit and kvm_entry fire: per-exit handling times available",
            data=fired,
        )
    why = (
        "kvm_exit/kvm_entry never fire on the kvm_pvm backend"
        if backend == "kvm_pvm"
        else "kvm_exit/kvm_entry did not fire while counting"
    )
    if not counts:
        why = "not counted (needs root and bcc)"
    return Check(
        "exit-timing",
        DEGRADED,
        f"no exit timing: {why}; vprof charges time by events and the ledger instead",
        "a VMX or SVM host (kvm_intel/kvm_amd) gives per-exit timing"
        if backend == "kvm_pvm"
        else "run a VM while `vprof doctor` counts",
        data={str(k): v for k, v in fired.items()},
    )


def _bpftool_perf() -> list[dict[str, object]] | None:
    tool = shutil.which("bpftool")
    if tool is None:
        return None
    try:
        out = subprocess.run(
            [tool, "-j", "perf", "list"], capture_output=True, text=True, timeout=10, check=False
        )
        data = json.loads(out.stdout or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else None


def check_other_programs(tps: tuple[str, ...], own_pid: int, proc_root: str = "/proc") -> Check:
    """BPF programs of other processes on the same tracepoints (bpftool perf list)."""
    rows = _bpftool_perf()
    if rows is None:
        return Check(
            "other-programs",
            DEGRADED,
            "bpftool is missing: other tools' BPF programs on these tracepoints are not listed",
            "apt-get install bpftool",
        )
    names = {tp.split(":")[1] for tp in tps}
    by_pid: dict[int, set[str]] = {}
    for r in rows:
        tp = str(r.get("tracepoint", ""))
        pid = r.get("pid")
        if tp in names and isinstance(pid, int) and pid != own_pid:
            by_pid.setdefault(pid, set()).add(tp)
    if not by_pid:
        return Check(
            "other-programs", OK, "no other process has BPF programs on vprof's tracepoints"
        )
    listing = "; ".join(
        f"pid {pid} ({_comm(proc_root, pid)}) on {len(t)}: {', '.join(sorted(t)[:4])}{', ...' if len(t) > 4 else ''}"
        for pid, t in sorted(by_pid.items())
    )
    return Check(
        "other-programs",
        DEGRADED,
        f"other BPF programs on vprof's tracepoints ({listing}): a classic tracepoint program that returns 0 hides each event from perf users, and every program adds per-event cost",
        "bpftool perf list   # then stop the tools you do not need",
        data={str(pid): sorted(t) for pid, t in by_pid.items()},
    )


def _comm(proc_root: str, pid: int) -> str:
    from vprof import sanitize
    from vprof.inventory.procfs import ProcFS

    return sanitize.display(ProcFS(proc_root).comm(pid) or "?", 20)
