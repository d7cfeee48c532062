"""A recording -> the tables of `vprof report`, with pandas.

Every table is a DataFrame keyed by VM name.  Shares are of vCPU wall time
(the sum over a VM's vCPU threads of the time their ledger covers), so VMs
with different vCPU counts and recordings of different lengths compare.
The tables are built from the recording's summary (vprof/sources/summary.py:
its rows summed per part, then over the parts), not from every row, so a
day of 50 VMs reports in seconds; the functions take any frame of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from vprof.model import HIST_SLOTS
from vprof.sources.replay import Recording
from vprof.sources.summary import BUCKETS, Summary, interval_shares, worst_of
from vprof.sources.summary import kind_rows as _kind

__all__ = ["BUCKETS", "Report", "_kind", "build_report", "interval_shares"]
TOP = 10


@dataclass
class Report:
    meta: dict[str, Any]
    seconds: float
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def wall_by_vm(frame: pd.DataFrame) -> pd.Series:
    return _kind(frame, "wall").groupby("vm")["value"].sum()


def vm_table(frame: pd.DataFrame, seconds: float) -> pd.DataFrame:
    """Per VM: vCPUs, vCPU-seconds, overhead share by bucket and in total."""
    wall = wall_by_vm(frame)
    led = _kind(frame, "ledger")
    ns = (
        led[led["bucket"].astype(str) != ""]
        .assign(bucket=lambda d: d["bucket"].astype(str))
        .pivot_table(index="vm", columns="bucket", values="value", aggfunc="sum")
        .reindex(index=wall.index, columns=list(BUCKETS))
        .fillna(0)
    )
    out = ns.div(wall.where(wall > 0), axis=0).fillna(0.0)
    out["overhead"] = out.sum(axis=1)
    vcpus = frame[frame["kind"] == "wall"].assign(vm=lambda d: d["vm_name"].astype(str))
    out.insert(0, "vcpus", vcpus.groupby("vm")["vcpu_count"].max())
    out.insert(1, "vcpu_seconds", wall / 1e9)
    events = _kind(frame, "event").groupby("vm")["value"].sum()
    out["events_per_vcpu_s"] = (events.reindex(out.index).fillna(0) / (wall / 1e9)).fillna(0.0)
    return out.reset_index().rename(columns={"index": "vm"})


def ledger_table(frame: pd.DataFrame) -> pd.DataFrame:
    led = _kind(frame, "ledger").assign(
        category=lambda d: d["reason"].astype(str), bucket=lambda d: d["bucket"].astype(str)
    )
    out = led.groupby(["vm", "category", "bucket"], as_index=False)["value"].sum()
    out = out.rename(columns={"value": "ns"})
    wall = out["vm"].map(wall_by_vm(frame).to_dict()).astype(float)
    out["share"] = out["ns"].astype(float) / wall
    return out.sort_values(["vm", "ns"], ascending=[True, False], ignore_index=True)


def _top(df: pd.DataFrame, by: str, n: int) -> pd.DataFrame:
    ranked = df.sort_values(["vm", by], ascending=[True, False])
    return ranked.groupby("vm", group_keys=False).head(n).reset_index(drop=True)


def reason_table(frame: pd.DataFrame, seconds: float, top: int = TOP) -> pd.DataFrame:
    """Top reasons per VM: count, rate per second, mean handling time where timed."""
    keys = ["vm", "isa", "reason", "bucket"]
    ev = _kind(frame, "event").astype({"isa": str, "reason": str, "bucket": str})
    out = ev.groupby(keys, as_index=False)["value"].sum().rename(columns={"value": "count"})
    hd = _kind(frame, "handling").astype({"isa": str, "reason": str, "bucket": str})
    handling = hd.groupby(keys)["value"].sum().rename("handling_ns")
    if handling.empty:  # hosts without kvm_exit/kvm_entry (pandas cannot join an empty index)
        out["handling_ns"] = float("nan")
    else:
        out = out.join(handling, on=keys)
    out["rate_per_s"] = out["count"] / seconds if seconds else 0.0
    out["mean_handling_ns"] = out["handling_ns"] / out["count"]
    return _top(out, "count", top)


def detail_table(frame: pd.DataFrame, seconds: float, top: int = TOP) -> pd.DataFrame:
    d = _kind(frame, "detail").astype({"reason": str, "detail": str})
    out = d.groupby(["vm", "reason", "detail"], as_index=False)["value"].sum()
    out = out.rename(columns={"value": "count"})
    out["rate_per_s"] = out["count"] / seconds if seconds else 0.0
    return _top(out, "count", top * 2)


def io_table(frame: pd.DataFrame, seconds: float, top: int = TOP) -> pd.DataFrame:
    """Busiest ports and guest-physical addresses per VM."""
    io = _kind(frame, "io").astype({"reason": str, "detail": str})
    out = io.groupby(["vm", "reason", "detail"], as_index=False)["value"].sum()
    split = out["reason"].str.split(" ", n=1, expand=True)
    where = out["detail"].str.split("/", n=1, expand=True)
    out = pd.DataFrame(
        {
            "vm": out["vm"],
            "kind": split[0] if len(out) else [],
            "direction": split[1] if len(out) else [],
            "address": where[0] if len(out) else [],
            "size": where[1].astype(int) if len(out) else [],
            "count": out["value"],
        }
    )
    out["rate_per_s"] = out["count"] / seconds if seconds else 0.0
    return _top(out, "count", top)


def runqueue_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per vCPU: time runnable but not running, and scheduler switches."""
    s = _kind(frame, "sched").astype({"reason": str})
    per = s.pivot_table(
        index=["vm", "vcpu", "tid"], columns="reason", values="value", aggfunc="sum"
    )
    per = per.reindex(
        columns=["runqueue_wait_ns", "preemptions", "voluntary_switches", "wakeups"]
    ).fillna(0)
    wall = _kind(frame, "wall").groupby(["vm", "vcpu", "tid"])["value"].sum()
    per = per.reindex(wall.index).fillna(0).astype("int64")
    per["runqueue_share"] = (per["runqueue_wait_ns"] / wall.where(wall > 0)).fillna(0.0)
    return per.reset_index()


def _slot_bound(cum: pd.DataFrame, total: pd.Series, q: float) -> pd.Series:
    """Upper bound (ns) of the log2 slot holding quantile q (as `vprof top`)."""
    slot = cum.ge(total * q, axis=0).idxmax(axis=1).astype("int64")
    return (2 ** (slot + 1)).astype("int64")


def handling_table(frame: pd.DataFrame, top: int = TOP) -> pd.DataFrame:
    """Per VM and timed reason: exits timed, mean, p50, p99 and the largest
    slot's bound, from the handling-time histograms (hosts that time exits)."""
    keys = ["vm", "isa", "reason", "bucket"]
    h = _kind(frame, "hist").astype({"isa": str, "reason": str, "bucket": str})
    if h.empty:
        return pd.DataFrame()
    h = h.assign(slot=h["detail"].astype(str).astype("int64"))
    counts = h.pivot_table(index=keys, columns="slot", values="value", aggfunc="sum")
    counts = counts.reindex(columns=range(HIST_SLOTS)).fillna(0).astype("int64")
    cum = counts.cumsum(axis=1)
    total = cum[HIST_SLOTS - 1]
    hd = _kind(frame, "handling").astype({"isa": str, "reason": str, "bucket": str})
    handling = hd.groupby(keys)["value"].sum().reindex(counts.index)
    out = pd.DataFrame(
        {
            "timed": total,
            "mean_ns": handling / total,
            "p50_ns": _slot_bound(cum, total, 0.5),
            "p99_ns": _slot_bound(cum, total, 0.99),
            "max_ns": _slot_bound(cum, total, 1.0),
        }
    ).reset_index()
    return _top(out, "timed", top)


def slow_table(frame: pd.DataFrame, top: int = TOP) -> pd.DataFrame:
    """Per VM, the slowest sampled exits: thread, reason and duration."""
    s = _kind(frame, "slow").astype({"isa": str, "reason": str, "bucket": str})
    if s.empty:
        return pd.DataFrame()
    out = pd.DataFrame(
        {
            "vm": s["vm"],
            "vcpu": s["vcpu"],
            "tid": s["tid"],
            "isa": s["isa"],
            "reason": s["reason"],
            "bucket": s["bucket"],
            "duration_ns": s["value"],
            "monotonic_ns": s["detail"].astype(str).astype("int64"),
        }
    )
    return _top(out, "duration_ns", top)


def worst_table(summary: Summary) -> pd.DataFrame:
    """Per VM, the interval with the largest overhead share, and its top bucket."""
    if summary.worst.empty:
        return pd.DataFrame(columns=["vm", "seq", "time", "overhead", "bucket", "bucket_share"])
    worst = worst_of(summary.worst)  # the first largest of the parts' largest
    out = worst.reset_index()
    out["bucket"] = worst[list(BUCKETS)].idxmax(axis=1).to_numpy()
    out["bucket_share"] = worst[list(BUCKETS)].max(axis=1).to_numpy()
    out["time"] = out["seq"].map(summary.times())
    return out[["vm", "seq", "time", "overhead", "bucket", "bucket_share"]]


def build_report(rec: Recording, top: int = TOP) -> Report:
    frame = rec.summary.totals
    seconds = rec.seconds()
    tables = {
        "vms": vm_table(frame, seconds),
        "ledger": ledger_table(frame),
        "reasons": reason_table(frame, seconds, top),
        "details": detail_table(frame, seconds, top),
        "io": io_table(frame, seconds, top),
        "runqueue": runqueue_table(frame),
        "worst": worst_table(rec.summary),
    }
    # Only where the recording times exits (format 2 on a host with kvm_exit):
    # a recording without them reports exactly as before.
    for name, table in (
        ("handling", handling_table(frame, top)),
        ("slow_exits", slow_table(frame, top)),
    ):
        if not table.empty:
            tables[name] = table
    return Report(dict(rec.meta), seconds, tables)
