"""Every advice rule, in one table: ids are stable and unique."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from vprof.advice import rules_cpu, rules_io, rules_sched
from vprof.advice.rule import Rule

RULES: tuple[Rule, ...] = (*rules_io.RULES, *rules_cpu.RULES, *rules_sched.RULES)
BY_ID: Mapping[str, Rule] = MappingProxyType({r.id: r for r in RULES})
assert len(BY_ID) == len(RULES), "advice rule ids must be unique"
