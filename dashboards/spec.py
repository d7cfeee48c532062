"""Panel specifications: what each dashboard panel shows, in plain data.

The dashboards are lists of PanelSpec; dashboards/grafana.py turns them into
Grafana JSON with grafana-foundation-sdk.  Keeping the panels as data lets the
tests check every title, unit, description and query without Grafana.

A description is two sentences put together here: what the panel shows, and
what to do when it is high (naming the technology that reduces that overhead;
the remedies themselves come from vprof.taxonomy.remedy_brief).
Panels that need a host with kvm_exit/kvm_entry timing say so in a fixed
phrase (EXIT_TIMING_NOTE) that the e2e test and docs/dashboards.md key on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

EXIT_TIMING_NOTE = (
    "Needs kvm_exit timing: empty on hosts without kvm_exit/kvm_entry (vprof_host_info "
    'exit_timing="false").'
)
VCPU_NOTE = 'Needs granularity "vcpu" or "full" in the daemon config.'
PERF_NOTE = (
    'Not available with the perf source (vprof_source_info source="perf"): its series are '
    "absent there, so the panel shows no data rather than 0."
)
# Series the perf source does not export (vprof/model.py PERF_ABSENT); the ledger
# keeps only its run-queue category there.
PERF_ABSENT_METRICS = (
    "vprof_vm_io_bytes_total",
    "vprof_vm_io_address_accesses_total",
    "vprof_vm_wakeups_total",
    "vprof_vm_exit_handling_seconds",
)
_LEDGER_METRICS = ("vprof_vm_time_seconds_total", "vprof_vcpu_time_seconds_total")


class Kind(enum.StrEnum):
    """Grafana visualisation of a panel."""

    TIMESERIES = "timeseries"
    STACKED = "stacked"  # timeseries, stacked areas
    BARGAUGE = "bargauge"  # instant values, one bar per series
    TABLE = "table"  # instant values
    HEATMAP = "heatmap"  # histogram buckets over time
    STAT = "stat"


class Needs(enum.StrEnum):
    """What a panel needs beyond the daemon's defaults to return data."""

    NOTHING = ""
    EXIT_TIMING = "exit_timing"
    VCPU = "vcpu"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class PanelSpec:
    title: str
    kind: Kind
    unit: str  # a Grafana unit id: percentunit, ops, s, Bps, short, ...
    shows: str  # one sentence: what the panel shows
    when_high: str  # one sentence: what to do when it is high
    queries: tuple[Query, ...]
    needs: Needs = Needs.NOTHING
    width: int = 12
    height: int = 8
    links_to_vm: bool = False  # clicking a series opens the VM dashboard for its vm label

    @property
    def lacks_with_perf(self) -> bool:
        """True when a query needs a series the perf source does not export."""
        for q in self.queries:
            if any(m in q.expr for m in PERF_ABSENT_METRICS):
                return True
            if any(m in q.expr for m in _LEDGER_METRICS) and 'category="runqueue"' not in q.expr:
                return True
        return False

    @property
    def description(self) -> str:
        text = f"{self.shows} When high: {self.when_high}"
        if self.needs is Needs.EXIT_TIMING:
            text += " " + EXIT_TIMING_NOTE
        elif self.needs is Needs.VCPU:
            text += " " + VCPU_NOTE
        if self.lacks_with_perf:
            text += " " + PERF_NOTE
        return text


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[PanelSpec, ...]


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[str, ...]  # "datasource" and names from grafana.VARIABLE_QUERIES, in order
    multi: tuple[str, ...]  # variables that allow several values (and "All")
    filename: str


# --- PromQL helpers ---------------------------------------------------------
# Selectors are written once here so every panel filters the same way.

INSTANCE = 'instance=~"$instance"'
VM = 'instance=~"$instance", vm=~"$vm"'
OVERHEAD = 'bucket=~"$bucket", bucket!="none"'
VM_BUCKET = f'{VM}, bucket=~"$bucket"'
EXIT_HIST = "vprof_vm_exit_handling_seconds_bucket"


def rate(metric: str, selector: str, window: str = "$__rate_interval") -> str:
    return f"rate({metric}{{{selector}}}[{window}])"


def sum_rate(by: str, metric: str, selector: str, window: str = "$__rate_interval") -> str:
    return f"sum by ({by}) ({rate(metric, selector, window)})"


def time_share(by: str, extra: str, per: str, window: str = "$__rate_interval") -> str:
    """Ledger time grouped `by`, as a share of the vCPU wall time of each `per` group."""
    time = sum_rate(by, "vprof_vm_time_seconds_total", f"{VM}, {extra}", window)
    return share(time, per, VM, window)


def share(numerator: str, by: str, selector: str, window: str = "$__rate_interval") -> str:
    """sum by (by) of `numerator` over the vCPU wall time of the same grouping.

    `by` may be empty for a whole selection; the denominator then matches every
    numerator series with `on() group_left`.
    """
    wall = f"sum by ({by}) ({rate('vprof_vm_wall_seconds_total', selector, window)})"
    if by:
        return f"{numerator} / on ({by}) group_left {wall}"
    return f"{numerator} / on () group_left {wall}"
