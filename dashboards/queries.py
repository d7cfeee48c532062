"""Read the queries back out of dashboard JSON, as Grafana would run them.

Used by the tests (every query is run against a real Prometheus) and by the
build, which refuses a dashboard that names a metric the catalogue lacks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dashboards.spec import EXIT_TIMING_NOTE, VCPU_NOTE

# Grafana's built-in interval variables, as the e2e test fixes them.
BUILTINS = ("__rate_interval", "__interval", "__range")

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_METRIC = re.compile(r"\b(vprof_[a-z0-9_]+)\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Target:
    dashboard: str  # dashboard uid
    panel: str  # panel title
    description: str
    expr: str
    instant: bool

    @property
    def needs_exit_timing(self) -> bool:
        return EXIT_TIMING_NOTE in self.description

    @property
    def needs_vcpu(self) -> bool:
        return VCPU_NOTE in self.description


def panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every non-row panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def targets(dashboard: Mapping[str, Any]) -> Iterator[Target]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield Target(
                dashboard=dashboard["uid"],
                panel=panel.get("title", ""),
                description=panel.get("description", ""),
                expr=target["expr"],
                instant=bool(target.get("instant")),
            )


def variables_in(expr: str) -> set[str]:
    """Names of the template variables an expression uses ($x, ${x}, [[x]])."""
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(expr)}


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with every template variable replaced; KeyError names a missing one."""

    def one(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        if name not in values:
            raise KeyError(f"no value for template variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def unknown_metrics(expr: str, known: Mapping[str, str]) -> set[str]:
    """Metric names in `expr` that are not in `known` (name -> type).

    Histograms are known by their series names: <name>_bucket, _sum, _count.
    """
    out = set()
    for name in metric_names(expr):
        if name in known and known[name] != "histogram":
            continue
        base = next((name.removesuffix(s) for s in _HISTOGRAM_SUFFIXES if name.endswith(s)), "")
        if known.get(base) == "histogram":
            continue
        out.add(name)
    return out


def catalogue_types() -> dict[str, str]:
    """Metric name -> type, from the daemon's catalogue (the single source of names)."""
    from vprof.sinks.catalogue import METRICS

    return {m.name: m.type for m in METRICS}
