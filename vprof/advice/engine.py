"""Run every rule on every VM: facts + one delta Snapshot -> a ranked report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vprof.advice.host import HostFacts
from vprof.advice.measure import Measures, measure
from vprof.advice.rule import ADVISE, BLOCKED, Ctx, Finding, Rule
from vprof.advice.rules import RULES
from vprof.advice.vmfacts import VmFacts
from vprof.model import Snapshot

_STATUS_ORDER = {ADVISE: 0, BLOCKED: 1}


@dataclass(frozen=True)
class VmAdvice:
    facts: VmFacts
    measures: Measures
    measured: bool  # the profile saw this VM
    findings: tuple[Finding, ...]  # ADVISE first, then BLOCKED, then NOT_POSSIBLE; by score
    unchecked: tuple[tuple[str, str], ...] = ()  # (rule, the live facts it needs) from a recording

    @property
    def top(self) -> Finding | None:
        return self.findings[0] if self.findings else None


@dataclass(frozen=True)
class Report:
    host: HostFacts
    backend: str  # as the profile saw it ("" without a profile)
    exit_timing: bool
    seconds: float
    vms: tuple[VmAdvice, ...]
    source: str = ""  # the snapshot source of the profile: "bpf", "perf" ("" without one)
    recording: str = ""  # the recording advised from ("" when profiled live)


def rank(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=lambda f: (_STATUS_ORDER.get(f.status, 2), -f.score, f.rule)))


def advise_vm(
    host: HostFacts, vm: VmFacts, everyone: Sequence[VmFacts], m: Measures
) -> tuple[Finding, ...]:
    ctx = Ctx(
        host=host,
        vm=vm,
        m=m,
        others=tuple(o for o in everyone if o.key != vm.key),
        total_vcpus=sum(o.vcpu_count for o in everyone),
    )
    found = [f for rule in checkable(host) if (f := rule.evaluate(ctx, rule)) is not None]
    return rank(found)


def checkable(host: HostFacts) -> tuple[Rule, ...]:
    """The rules the facts at hand can decide: from a recording, not those
    that read live facts it does not hold."""
    return tuple(r for r in RULES if not (host.recorded and r.live))


def unchecked(host: HostFacts) -> tuple[tuple[str, str], ...]:
    return tuple((r.id, r.live) for r in RULES if host.recorded and r.live)


def advise(
    host: HostFacts,
    everyone: Sequence[VmFacts],
    delta: Snapshot | None,
    selected: Sequence[str] | None = None,
) -> Report:
    """Advice for the VMs whose keys are in `selected` (all when None).

    `everyone` is every VM on the host: sharing and overcommit need them all.
    `delta` is the profile's interval (vprof.model.diff), or None for advice
    from configuration alone.
    """
    seconds = delta.interval_ns / 1e9 if delta is not None else 0.0
    stats = {v.key: v for v in delta.vms} if delta is not None else {}
    out = []
    for vm in everyone:
        if selected is not None and vm.key not in selected:
            continue
        m = measure(stats.get(vm.key), seconds, delta.absent if delta is not None else frozenset())
        findings = advise_vm(host, vm, everyone, m)
        out.append(VmAdvice(vm, m, vm.key in stats, findings, unchecked(host)))
    return Report(
        host=host,
        backend=delta.backend if delta is not None else "",
        exit_timing=delta.exit_timing if delta is not None else False,
        seconds=seconds,
        vms=tuple(out),
        source=delta.source if delta is not None else "",
    )
