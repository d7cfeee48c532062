# ruff: noqa: E501  (rule texts and tables read better on one line each)
"""Context-switch rules: shared host CPUs, overcommit, halt-polling, pause-loop exiting."""

from __future__ import annotations

from vprof.advice.rule import ADVISE, BLOCKED, CONFIG, HARDWARE, Ctx, Finding, Rule, pct, rate
from vprof.advice.rules_cpu import (
    HALT_POLL_LOW_NS,
    HALT_POLL_NS,
    HALTED_SHARE,
    RUNQUEUE_SHARE,
    WAKEUP_RATE,
)
from vprof.model import Bucket, Ledger


def _cpus(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus)) or "none"


def _rq_evidence(ctx: Ctx) -> str:
    return (
        f"run-queue wait {pct(ctx.m.ledger(Ledger.RUNQUEUE))} of vCPU time "
        f"({ctx.m.runqueue_ms_per_s:.0f} ms/s over {ctx.vm.vcpu_count} vCPUs), "
        f"{rate(ctx.m.preemptions_per_s)} preemptions"
    )


def _sharers(ctx: Ctx) -> tuple[set[int], list[str]]:
    """Host CPUs this VM's vCPUs may run on that another vCPU may run on too, and whose."""
    mine = set().union(*ctx.vm.affinity.values()) if ctx.vm.affinity else set()
    shared: set[int] = set()
    names = []
    for other in ctx.others:
        theirs = set().union(*other.affinity.values()) if other.affinity else set()
        if mine & theirs:
            shared |= mine & theirs
            names.append(other.name)
    sets = list(ctx.vm.affinity.values())
    for i, a in enumerate(sets):  # this VM's own vCPUs stacked on one CPU
        for b in sets[i + 1 :]:
            shared |= set(a) & set(b)
    return shared, names


def pinning(ctx: Ctx, rule: Rule) -> Finding | None:
    if ctx.m.ledger(Ledger.RUNQUEUE) < RUNQUEUE_SHARE:
        return None
    shared, names = _sharers(ctx)
    if not shared:
        return None
    mine = set().union(*ctx.vm.affinity.values())
    evidence = f"{_rq_evidence(ctx)}; vCPU threads may run on host CPUs {_cpus(mine)}, shared ({_cpus(shared)})"
    if names:
        evidence += (
            " with " + ", ".join(sorted(names)[:5]) + (" and others" if len(names) > 5 else "")
        )
    figures: dict[str, float | int | str] = {
        "runqueue_pct": round(ctx.m.ledger(Ledger.RUNQUEUE), 2),
        "runqueue_ms_per_s": round(ctx.m.runqueue_ms_per_s, 1),
        "shared_cpus": _cpus(shared),
    }
    if ctx.total_vcpus > ctx.host_cpus:
        return rule.finding(
            ctx,
            BLOCKED,
            evidence,
            needs=f"a host CPU per vCPU: {ctx.total_vcpus} vCPUs on {ctx.host_cpus} host CPUs (see context-switch-overcommit)",
            score=ctx.m.ledger(Ledger.RUNQUEUE),
            figures=figures,
        )
    tids = " ".join(f"taskset -pc <cpu> {tid};" for tid in sorted(ctx.vm.affinity))
    return rule.finding(
        ctx,
        ADVISE,
        evidence,
        remedy=f"pin each vCPU thread to a host CPU no other vCPU uses: {tids} (libvirt: virsh vcpupin {ctx.vm.name} <vcpu> <cpu>)",
        score=ctx.m.ledger(Ledger.RUNQUEUE),
        figures=figures,
    )


def overcommit(ctx: Ctx, rule: Rule) -> Finding | None:
    if (
        ctx.m.ledger(Ledger.RUNQUEUE) < RUNQUEUE_SHARE
        or ctx.total_vcpus <= ctx.host_cpus
        or not ctx.host_cpus
    ):
        return None
    ratio = ctx.total_vcpus / ctx.host_cpus
    return rule.finding(
        ctx,
        ADVISE,
        f"{_rq_evidence(ctx)}; {ctx.total_vcpus} vCPUs of {len(ctx.others) + 1} VMs on {ctx.host_cpus} host CPUs ({ratio:.1f}x overcommit)",
        score=ctx.m.ledger(Ledger.RUNQUEUE),
        total_vcpus=ctx.total_vcpus,
        host_cpus=ctx.host_cpus,
    )


def halt_polling(ctx: Ctx, rule: Rule) -> Finding | None:
    hp = ctx.host.param_int("kvm", "halt_poll_ns")
    halted = ctx.m.ledger(Ledger.HALTED)
    if (
        hp is None
        or hp >= HALT_POLL_LOW_NS
        or halted < HALTED_SHARE
        or ctx.m.wakeups_per_s < WAKEUP_RATE
    ):
        return None
    evidence = f"halted {pct(halted)} of vCPU time with {rate(ctx.m.wakeups_per_s)} wake-ups; kvm halt_poll_ns={hp}"
    figures: dict[str, float | int | str] = {
        "halt_poll_ns": hp,
        "halted_pct": round(halted, 2),
        "wakeups_per_s": round(ctx.m.wakeups_per_s, 1),
    }
    if ctx.total_vcpus > ctx.host_cpus:
        return rule.finding(
            ctx,
            BLOCKED,
            evidence,
            needs=f"idle host CPU to poll on: {ctx.total_vcpus} vCPUs share {ctx.host_cpus} host CPUs, so polling would take CPU from runnable vCPUs",
            score=halted / 10,
            figures=figures,
        )
    return rule.finding(ctx, ADVISE, evidence, score=halted / 10, figures=figures)


def pause_loop(ctx: Ctx, rule: Rule) -> Finding | None:
    h = ctx.host
    module, param, default = {
        "vmx": ("kvm_intel", "ple_gap", 128),
        "svm": ("kvm_amd", "pause_filter_count", 3000),
    }.get(h.backend, ("", "", 0))
    if not module or h.param_int(module, param) != 0 or ctx.vm.vcpu_count < 2:
        return None
    if ctx.m.ledger(Ledger.RUNQUEUE) < RUNQUEUE_SHARE:
        return None
    return rule.finding(
        ctx,
        ADVISE,
        f"{_rq_evidence(ctx)}; pause-loop exiting is off: {module} {param}=0",
        remedy=f"with every VM stopped: modprobe -r {module} && modprobe {module} {param}={default}",
        score=ctx.m.ledger(Ledger.RUNQUEUE) / 2,
    )


RULES: tuple[Rule, ...] = (
    Rule(
        "context-switch-pinning",
        Bucket.CONTEXT_SWITCH,
        CONFIG,
        "vCPUs sharing host CPUs",
        f"run-queue wait >= {RUNQUEUE_SHARE:g}% of vCPU time and the VM's vCPU threads may run on a host CPU another vCPU (of this or another VM) may run on (Cpus_allowed_list)",
        "pin each vCPU thread to a host CPU of its own (taskset -pc CPU TID; libvirt virsh vcpupin / <cputune>), away from the VMM's I/O threads",
        "at least as many host CPUs as pinned vCPUs",
        "run-queue wait and preemptions per second fall",
        pinning,
        live="each vCPU thread's CPU affinity",
    ),
    Rule(
        "context-switch-overcommit",
        Bucket.CONTEXT_SWITCH,
        CONFIG,
        "More vCPUs than host CPUs",
        f"run-queue wait >= {RUNQUEUE_SHARE:g}% of vCPU time and the host's VMs have more vCPUs in all than the host has CPUs",
        "cut the overcommit: fewer vCPUs for VMs that do not use them, or move VMs to another host",
        "spare capacity elsewhere, or guests that tolerate fewer vCPUs",
        "run-queue wait falls",
        overcommit,
    ),
    Rule(
        "context-switch-halt-polling",
        Bucket.CONTEXT_SWITCH,
        CONFIG,
        "Halt-polling off or low",
        f"the VM is halted >= {HALTED_SHARE:g}% of vCPU time with >= {WAKEUP_RATE:g} wake-ups/s and kvm halt_poll_ns < {HALT_POLL_LOW_NS}",
        f"let KVM poll briefly before sleeping a halted vCPU: echo {HALT_POLL_NS} > /sys/module/kvm/parameters/halt_poll_ns (persist: options kvm halt_poll_ns={HALT_POLL_NS})",
        "idle host CPU: polling spends up to halt_poll_ns of host CPU per halt",
        "wake-up latency and context switches per second fall; host CPU use rises a little",
        halt_polling,
        live="kvm halt_poll_ns",
    ),
    Rule(
        "context-switch-ple",
        Bucket.CONTEXT_SWITCH,
        HARDWARE,
        "Pause-loop exiting off",
        f"a multi-vCPU VM waits >= {RUNQUEUE_SHARE:g}% in the run queue and pause-loop exiting is off (kvm_intel ple_gap=0 / kvm_amd pause_filter_count=0)",
        "turn pause-loop exiting on, so a vCPU spinning on a lock held by a preempted vCPU yields",
        "a CPU with PAUSE-loop exiting (VMX) or the pause filter (SVM)",
        "run-queue wait and spin time fall in lock-heavy guests",
        pause_loop,
        live="the KVM module parameters (ple_gap, pause_filter_count)",
    ),
)
