"""The one table of bench/overhead.py: every figure, its goal, side by side.

Rows are figures, columns the subjects measured in the same run: this
checkout's vprof, the --against checkout's, perf kvm stat record and bcc's
kvmexit.  The last column says whether this checkout meets the goal of
issue 17 (a missed goal says by how much).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from daemon_cost import DaemonCost
from spread import diff_cell, ratio_cell, spread

PERF, KVMEXIT = "perf kvm stat record", "kvmexit (bcc)"
FLOOR = "trivial programs (floor)"
HOT_RUNS = 1000  # runs in a trial that make a program's ns/event its warm cost


@dataclass
class VprofCost:
    prog_ns: dict[str, int] = field(default_factory=dict)
    prog_events: dict[str, int] = field(default_factory=dict)


@dataclass
class Config:
    workload: str
    vcpus: int
    ratios: dict[str, list[float]] = field(default_factory=dict)
    untraced: list[float] = field(default_factory=list)
    perf_samples: list[int] = field(default_factory=list)
    perf_iterations: list[int] = field(default_factory=list)
    kvmexit_exits: list[int] = field(default_factory=list)  # what kvmexit's table counted
    agg_pct: dict[str, list[float]] = field(default_factory=dict)  # per tree, per trial

    @property
    def label(self) -> str:
        return f"{self.workload} x{self.vcpus}"


@dataclass
class Row:
    figure: str
    goal: str
    cells: dict[str, str]
    verdict: str = ""


def _md(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _range(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "-"
    s = spread(values)
    return f"{s.median:{fmt}} [{s.low:{fmt}}-{s.high:{fmt}}]"


def _verdict(ok: bool, miss: str) -> str:
    return "met" if ok else f"MISSED ({miss})"


def per_program(c: VprofCost) -> dict[str, float]:
    return {n: ns / c.prog_events[n] for n, ns in c.prog_ns.items() if c.prog_events[n]}


def programs_per_event(c: VprofCost) -> int:
    """The most vprof programs that ran on one tracepoint ("family:prog")."""
    seen: dict[str, int] = {}
    for name in c.prog_events:
        # tracepoint__<system>__<event> or raw_tracepoint__<event>: the event
        prog = name.split(":", 1)[-1].split("__")[-1]
        seen[prog] = seen.get(prog, 0) + 1
    return max(seen.values(), default=0)


def _ratio_rows(cfg: Config, labels: list[str], off: dict[str, str]) -> list[Row]:
    cells = {m: ratio_cell(cfg.ratios[m]) for m in labels if cfg.ratios.get(m)}
    perf = cfg.ratios.get(PERF)
    if perf:
        its = sum(cfg.perf_iterations)
        cells[PERF] = (
            f"{ratio_cell(perf)}; {sum(cfg.perf_samples):,} samples, "
            f"{sum(cfg.perf_samples) / max(its, 1):.1f}/iteration"
        )
    for m in (PERF, KVMEXIT):
        if m in off:
            cells[m] = f"did not run: {off[m]}"
        elif m == KVMEXIT and cfg.ratios.get(m):
            cells[m] = f"{ratio_cell(cfg.ratios[m])}; {sum(cfg.kvmexit_exits):,} exits counted"
    me = statistics.median(cfg.ratios[labels[0]])
    rows = [Row(f"guest ratio {cfg.label}", ">= 0.98", cells, _verdict(me >= 0.98, f"{me:.3f}"))]
    if perf and sum(cfg.perf_samples):
        diffs = {m: diff_cell(cfg.ratios[m], perf) for m in labels}
        d = statistics.median(a - b for a, b in zip(cfg.ratios[labels[0]], perf, strict=True))
        rows.append(Row(f"vprof - perf {cfg.label}", "> 0", diffs, _verdict(d > 0, f"{d:+.3f}")))
    elif perf:
        rows.append(Row(f"vprof - perf {cfg.label}", "> 0", {},
                        "not comparable: perf recorded 0 samples (events hidden)"))  # fmt: skip
    return rows


def _bpf_rows(costs: dict[str, VprofCost]) -> list[Row]:
    med = {m: statistics.median(per_program(c).values() or [0.0]) for m, c in costs.items()}
    wtd = {
        m: sum(c.prog_ns.values()) / max(sum(c.prog_events.values()), 1) for m, c in costs.items()
    }
    ppe = {m: programs_per_event(c) for m, c in costs.items()}
    # Programs that ran a handful of times (sched_process_exit, the MMU's
    # first faults) ran cold: their figure is cache misses, not per-event cost.
    hot = {
        m: statistics.median(
            [v for n, v in per_program(c).items() if c.prog_events[n] >= HOT_RUNS] or [0.0]
        )
        for m, c in costs.items()
    }
    m0 = next(iter(costs))
    return [
        Row("BPF ns/event, median over programs", "< 100",
            {m: f"{v:.0f}" for m, v in med.items()}, _verdict(med[m0] < 100, f"{med[m0]:.0f}")),
        Row(f"BPF ns/event, median over programs run >= {HOT_RUNS:,} times", "",
            {m: f"{v:.0f}" for m, v in hot.items()}),
        Row("BPF ns/event, event-weighted", "< 60",
            {m: f"{v:.0f}" for m, v in wtd.items()}, _verdict(wtd[m0] < 60, f"{wtd[m0]:.0f}")),
        Row("programs run per event (most on one tracepoint)", "1",
            {m: str(v) for m, v in ppe.items()}, _verdict(ppe[m0] <= 1, str(ppe[m0]))),
    ]  # fmt: skip


def _floor_rows(floor: VprofCost, bpf: list[Row]) -> list[Row]:
    """What a program that does nothing costs here (bench/_floor_child.py).

    Kernel BPF statistics time each run with two clock reads, and the figure
    includes the dispatch; under nested virtualization those are most of
    it.  A goal below the empty program's figure cannot be met on this host
    by any program: the BPF rows' verdicts say so."""
    # A program that ran a few times (kvm_pio under the mmio workload: the
    # done port) says nothing: its first runs are cold.
    per = {n: v for n, v in per_program(floor).items() if floor.prog_events[n] >= HOT_RUNS}
    if not per:
        return []
    empty = min((v for n, v in per.items() if n.startswith("empty")), default=0.0)
    for row in bpf:
        goal = float(row.goal.lstrip("< ")) if row.goal.startswith("<") else 0.0
        if empty and empty >= goal > 0:
            row.verdict += f"; below this host's floor: an empty program costs {empty:.0f}"
    return [Row(f"BPF ns/event, {n}", "", {FLOOR: f"{v:.0f}"}) for n, v in per.items()]


def _agg_row(configs: list[Config], labels: list[str]) -> Row:
    worst = {
        m: max((statistics.median(c.agg_pct[m]) for c in configs if c.agg_pct.get(m)), default=0.0)
        for m in labels
    }
    v = worst[labels[0]]
    cells = {m: f"{w:.2f}" for m, w in worst.items()}
    return Row(
        "aggregator CPU, % of a core (busiest config)", "< 1", cells, _verdict(v < 1, f"{v:.2f}")
    )


def _daemon_rows(d: dict[str, DaemonCost]) -> list[Row]:
    first = d[next(iter(d))]

    def row(fig: str, goal: str, get: Callable[[DaemonCost], list[float]], fmt: str,
            limit: float | None) -> Row:  # fmt: skip
        cells = {m: _range(get(c), fmt) for m, c in d.items()}
        vals = get(first)
        if limit is None or not vals:
            return Row(fig, goal, cells, "" if vals or limit is None else "not measured")
        med = statistics.median(vals)
        return Row(fig, goal, cells, _verdict(med < limit, f"{med:{fmt}}"))

    scrape = {m: f"{c.scrape_ms:.1f}" if c.scrape_ms is not None else "-" for m, c in d.items()}
    s = first.scrape_ms
    return [
        row("start-up to /healthz 200, s", "< 3", lambda c: c.startup_s, ".2f", 3.0),
        row("SIGTERM during start-up to exit, s", "< 1", lambda c: c.sigterm_s, ".2f", 1.0),
        row("RSS once every family loaded, MB", "", lambda c: c.rss_mb, ".0f", None),
        row("PSS once every family loaded, MB", "", lambda c: c.pss_mb, ".0f", None),
        row("RSS after VM churn (steady), MB", "", lambda c: c.steady_rss_mb, ".0f", None),
        row("PSS after VM churn (steady), MB", "< 100", lambda c: c.steady_pss_mb, ".0f", 100.0),
        Row("scrape 500 VMs x 8 vCPUs, ms", "< 50", scrape,
            _verdict(s is not None and s < 50, f"{s}")),
    ]  # fmt: skip


def report(configs: list[Config], costs: dict[str, VprofCost], daemons: dict[str, DaemonCost],
           off: dict[str, str], floor: VprofCost | None = None) -> list[str]:  # fmt: skip
    """The table's lines (markdown), then the notes that qualify it."""
    labels = list(costs)
    bpf = _bpf_rows(costs)
    floor_rows = _floor_rows(floor, bpf) if floor else []
    cols = [*labels, PERF, KVMEXIT, *([FLOOR] if floor_rows else [])]
    rows = [r for c in configs for r in _ratio_rows(c, labels, off)]
    rows += [*bpf, *floor_rows, _agg_row(configs, labels), *_daemon_rows(daemons)]
    out = [_md(["figure", "goal", *cols, f"{labels[0]}: goal"]), _md(["---"] * (len(cols) + 3))]
    out += [_md([r.figure, r.goal, *[r.cells.get(c, "") for c in cols], r.verdict]) for r in rows]
    rounds = max((len(c.untraced) for c in configs), default=0)
    out.append("")
    out.append(
        f"Ratios: median [interquartile range] of {rounds} rounds; (!) = the spread is wider "
        "than the effect the median claims: not significant at this many rounds."
    )
    for c in configs:
        out.append(f"untraced {c.label}: {_range(c.untraced, ',.0f')} iterations/s")
    for m, d in daemons.items():
        says = "; ".join(sorted(d.source)) or "never healthy"
        out.append(f"{m}: daemon with its default source; /healthz once healthy: {says}")
        out += [f"{m}: {e}" for e in d.errors]
    return out
