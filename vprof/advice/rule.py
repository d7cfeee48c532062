"""What a rule is, what it returns, and the context it reads.

A rule is a small function over (host facts, VM facts, measured figures)
that returns a Finding or None (quiet).  A Finding's status says whether the
remedy can be taken now (ADVISE), needs a host change first (BLOCKED: a
precondition is missing, and the finding says which and how to get it), or
cannot apply on this host at all (NOT_POSSIBLE).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from vprof.advice.host import HostFacts
from vprof.advice.measure import Measures
from vprof.advice.vmfacts import VmFacts
from vprof.model import Bucket

HARDWARE = "hardware assist"
CONFIG = "hypervisor configuration"
PARAVIRT = "paravirtualisation"
TECHNOLOGIES = (HARDWARE, CONFIG, PARAVIRT)

ADVISE = "advise"
BLOCKED = "blocked"  # the remedy needs a host change first
NOT_POSSIBLE = "not possible"  # cannot apply on this host
STATUSES = (ADVISE, BLOCKED, NOT_POSSIBLE)

Figure = float | int | str


@dataclass(frozen=True)
class Ctx:
    host: HostFacts
    vm: VmFacts
    m: Measures
    others: tuple[VmFacts, ...] = ()  # the other VMs on this host
    total_vcpus: int = 0  # vCPUs of every VM on the host

    @property
    def host_cpus(self) -> int:
        return len(self.host.cpus)


@dataclass(frozen=True)
class Finding:
    rule: str
    bucket: Bucket
    technology: str
    status: str
    evidence: str
    remedy: str
    needs: str
    check: str
    score: float  # % of vCPU time the rule addresses (ranking)
    figures: Mapping[str, Figure] = field(default_factory=lambda: MappingProxyType({}))

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "bucket": self.bucket.value,
            "technology": self.technology,
            "status": self.status,
            "evidence": self.evidence,
            "remedy": self.remedy,
            "needs": self.needs,
            "check": self.check,
            "score": round(self.score, 2),
            "figures": dict(self.figures),
        }


@dataclass(frozen=True)
class Rule:
    id: str  # stable: scripts, alerts and the daemon's series key on it
    bucket: Bucket
    technology: str
    title: str
    fires_when: str  # for docs/advice.md
    remedy: str
    needs: str
    check: str  # what `vprof diff` should show once the remedy is in
    evaluate: Callable[[Ctx, Rule], Finding | None]
    # The live facts it reads that a recording does not hold ("" for none):
    # `vprof advise --recording` says it cannot check the rule instead.
    live: str = ""

    def finding(
        self,
        ctx: Ctx,
        status: str,
        evidence: str,
        *,
        remedy: str | None = None,
        needs: str | None = None,
        score: float = 0.0,
        figures: Mapping[str, Figure] | None = None,
        **more: Figure,
    ) -> Finding:
        return Finding(
            rule=self.id,
            bucket=self.bucket,
            technology=self.technology,
            status=status,
            evidence=evidence,
            remedy=remedy or self.remedy,
            needs=needs or self.needs,
            check=check_text(self, ctx.vm.name),
            score=score,
            figures=MappingProxyType({**(figures or {}), **more}),
        )


def check_text(rule: Rule, vm: str) -> str:
    return (
        f"vprof record --seconds 30 -o before (now), the same with -o after once changed, "
        f"then vprof diff before after --vm {vm}: {rule.check}"
    )


def pct(x: float) -> str:
    return f"{x:.1f}%"


def rate(x: float) -> str:
    if x >= 10_000:
        return f"{x / 1000:.0f}k/s"
    if x >= 1000:
        return f"{x / 1000:.1f}k/s"
    return f"{x:.0f}/s"
