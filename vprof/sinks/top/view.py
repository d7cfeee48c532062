"""The per-VM table of `vprof top` as plain data: rows, columns, sorting, fitting.

Everything here works on one *delta* Snapshot (the output of vprof.model.diff),
so counts are per interval and rates are count / interval.  Field names double
as the stable JSON/CSV field names documented in docs/top.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vprof import sanitize
from vprof.model import OVERHEAD_BUCKETS, Bucket, Ledger, Snapshot, VcpuStat, VmStat, charging
from vprof.sources.absent import ABSENT_LEDGER_SPLIT

Value = str | int | float | None
# What a figure the source does not measure shows (plain, CSV and JSON alike):
# never 0, which would claim a measurement (Snapshot.absent).
NA = "n/a"
# Shares the perf source measures without the ledger split.
MEASURED_WITHOUT_SPLIT = frozenset({"runqueue_pct"})

# Short bucket labels used in titles and field names.
BUCKET_TITLE: Mapping[Bucket, str] = {
    Bucket.PRIVILEGED: "PRIV",
    Bucket.MEMORY: "MEM",
    Bucket.IO: "IO",
    Bucket.CONTEXT_SWITCH: "CSW",
    Bucket.UNCLASSIFIED: "UNCL",
}


@dataclass(frozen=True)
class Column:
    key: str  # stable field name (JSON/CSV, --sort)
    title: str
    width: int  # cells, title plus a sort arrow fit in it
    priority: int  # lower survives longer when the terminal is narrow
    kind: str  # "text", "int", "rate", "pct"
    help: str


def _bucket_columns() -> list[Column]:
    cols: list[Column] = []
    rate_prio = {Bucket.IO: 11, Bucket.PRIVILEGED: 12, Bucket.MEMORY: 13, Bucket.CONTEXT_SWITCH: 14}
    for b in OVERHEAD_BUCKETS:
        t = BUCKET_TITLE[b]
        cols.append(Column(f"{b.value}_per_s", f"{t}/s", 7, rate_prio[b], "rate", f"{b} events/s"))
    return cols


def _share_columns() -> list[Column]:
    prio = {Bucket.IO: 4, Bucket.PRIVILEGED: 5, Bucket.MEMORY: 6, Bucket.CONTEXT_SWITCH: 7}
    cols = [Column("guest_pct", "GUEST%", 7, 2, "pct", "% of vCPU time in guest (or KVM_RUN)")]
    for b in OVERHEAD_BUCKETS:
        t = BUCKET_TITLE[b]
        cols.append(Column(f"{b.value}_pct", f"{t}%", 6, prio[b], "pct", f"% of vCPU time: {b}"))
    cols.append(Column("runqueue_pct", "RUNQ%", 6, 10, "pct", "% runnable but not running"))
    cols.append(Column("halted_pct", "HALT%", 6, 8, "pct", "% halted (guest idle)"))
    return cols


VM_COLUMNS: tuple[Column, ...] = (
    Column("vm", "VM", 12, 0, "text", "VM name (sanitised)"),
    Column("vcpus", "VCPU", 5, 9, "int", "vCPU count"),
    Column("events_per_s", "EV/s", 7, 1, "rate", "all events/s"),
    *_bucket_columns(),
    *_share_columns(),
    Column("top_reason", "TOP REASON", 11, 3, "text", "most frequent reason this interval"),
)
COLUMN_KEYS: tuple[str, ...] = tuple(c.key for c in VM_COLUMNS)
NAME_MAX = 24  # the name column grows into spare width up to this


def column(key: str) -> Column:
    for c in VM_COLUMNS:
        if c.key == key:
            return c
    raise KeyError(key)


# --- ledger shares ---------------------------------------------------------


def ledger_shares(
    ledger: Mapping[Ledger, int], wall_ns: int, absent: frozenset[str] = frozenset()
) -> dict[str, float | str | None]:
    """Percent of `wall_ns` per displayed share; None when there is no wall time,
    NA for the shares a source without the ledger split cannot measure.

    A bucket's share is every ledger category that charges it (vprof.model.charging),
    so CSW% includes run-queue wait, which RUNQ% shows on its own.
    """
    groups = {f"{b.value}_pct": charging(b) for b in OVERHEAD_BUCKETS}
    groups |= {
        "guest_pct": (Ledger.GUEST, Ledger.IN_KVM_RUN),
        "runqueue_pct": (Ledger.RUNQUEUE,),
        "halted_pct": (Ledger.HALTED,),
        "unclassified_pct": charging(Bucket.UNCLASSIFIED),
        "unattributed_pct": (Ledger.UNATTRIBUTED,),
    }
    out: dict[str, float | str | None] = dict.fromkeys(groups, None)
    shown = set(groups)
    if ABSENT_LEDGER_SPLIT in absent:
        out.update({k: NA for k in groups if k not in MEASURED_WITHOUT_SPLIT})
        shown = set(MEASURED_WITHOUT_SPLIT)
    if wall_ns <= 0:
        return out
    for k, cats in groups.items():
        if k in shown:
            out[k] = 100.0 * sum(ledger.get(c, 0) for c in cats) / wall_ns
    return out


def vcpu_events_by_bucket(v: VcpuStat) -> dict[Bucket, int]:
    out = dict.fromkeys(Bucket, 0)
    for name, count in v.events.items():
        try:
            out[Bucket(name)] += count
        except ValueError:
            out[Bucket.UNCLASSIFIED] += count
    return out


def rates(counts: Mapping[Bucket, int], seconds: float | None) -> dict[str, float | None]:
    total = sum(counts.values())
    out: dict[str, float | None] = {"events_per_s": total / seconds if seconds else None}
    for b in Bucket:
        out[f"{b.value}_per_s"] = counts.get(b, 0) / seconds if seconds else None
    return out


# --- rows ------------------------------------------------------------------


@dataclass(frozen=True)
class VmRow:
    key: str
    name: str  # sanitised, untruncated (bounded by sanitize.MAX_NAME)
    values: Mapping[str, Value]  # column key -> value; also counts for batch output

    def sort_value(self, key: str) -> tuple[int, Value]:
        v = self.values.get(key)
        if v is None or v == NA:
            return (0, 0)  # no data sorts below every number
        if isinstance(v, str):
            return (1, v.lower())
        return (1, v)


def interval_seconds(snap: Snapshot) -> float | None:
    return snap.interval_ns / 1e9 if snap.interval_ns > 0 else None


def vm_row(
    vm: VmStat, seconds: float | None, absent: frozenset[str] = frozenset(), name: str | None = None
) -> VmRow:
    """`name`: the shown name when it must differ from the VM's own (a duplicate)."""
    counts = vm.events_by_bucket()
    top = max((r for r in vm.reasons if r.count > 0), key=lambda r: r.count, default=None)
    values: dict[str, Value] = {
        "vm": name if name is not None else sanitize.display(vm.name),
        "key": vm.key,
        "pid": vm.pid,
        "vcpus": vm.vcpu_count,
        "events": sum(counts.values()),
        **{f"{b.value}_events": counts[b] for b in Bucket},
        **rates(counts, seconds),
        **ledger_shares(vm.ledger_total(), vm.wall_ns(), absent),
        "top_reason": sanitize.display(top.reason) if top else "",
        "top_reason_count": top.count if top else 0,
    }
    return VmRow(vm.key, str(values["vm"]), values)


def vm_rows(snap: Snapshot) -> list[VmRow]:
    secs = interval_seconds(snap)
    # Two VMs whose names sanitise alike get "~pid", as on /metrics.
    names = sanitize.unique_names((sanitize.display(vm.name), vm.pid) for vm in snap.vms)
    return [vm_row(vm, secs, snap.absent, name) for vm, name in zip(snap.vms, names, strict=True)]


def compile_filter(pattern: str) -> re.Pattern[str]:
    """The VM-name filter; re.error propagates so callers can say what is wrong."""
    return re.compile(pattern, re.IGNORECASE)


def select_rows(
    rows: Sequence[VmRow], sort_key: str, descending: bool, name_filter: re.Pattern[str] | None
) -> list[VmRow]:
    """Filter by name, then sort; ties break on the name so the order is stable."""
    kept = [r for r in rows if name_filter is None or name_filter.search(r.name)]
    kept.sort(key=lambda r: r.name)
    kept.sort(key=lambda r: r.sort_value(sort_key), reverse=descending)
    return kept


# --- fitting ---------------------------------------------------------------


def fit_columns(
    columns: Sequence[Column],
    width: int,
    flex: str | None = "vm",
    flex_max: int = NAME_MAX,
    flex2: str | None = "top_reason",
) -> list[tuple[Column, int]]:
    """The columns that fit in `width` cells, kept by priority, in display order.

    Columns are separated by one space.  The flexible column takes spare cells
    up to `flex_max`, then `flex2` takes up to `flex_max` too.  A column that does
    not fit is dropped whole, never wrapped.
    """
    chosen: set[str] = set()
    used = -1  # n columns need n-1 separators
    for col in sorted(columns, key=lambda c: c.priority):
        if chosen and used + 1 + col.width > width:
            break  # strictly by priority: a narrower, less important column never jumps ahead
        chosen.add(col.key)
        used += 1 + col.width
    spare = max(0, width - used)
    out: list[tuple[Column, int]] = []
    widths = {c.key: c.width for c in columns if c.key in chosen}
    for key in (flex, flex2):
        if key in widths and spare > 0:
            extra = min(spare, max(0, flex_max - widths[key]))
            widths[key] += extra
            spare -= extra
    for col in columns:
        if col.key in chosen:
            out.append((col, widths[col.key]))
    return out


def format_value(value: Value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct" and isinstance(value, int | float):
        return f"{value:.1f}"
    if kind == "rate" and isinstance(value, int | float):
        return human(value)
    return str(value)


def human(value: float) -> str:
    """Compact rate: 0, 7.5, 812, 12.3k, 4.1M."""
    if value == 0:
        return "0"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.1f}{suffix}"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
