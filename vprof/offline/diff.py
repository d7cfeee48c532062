"""Two recordings side by side: what changed, per VM (matched by name).

Everything is normalised by vCPU time: shares are of vCPU wall time, rates
are events per second of vCPU time, so recordings of different lengths and
VMs with different vCPU counts compare.  A change is called noise when it
is within twice the standard error of the difference of the two means of
per-interval values (Welch): the recordings' own interval-to-interval
spread says how much a difference of that size means.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vprof.offline.report import BUCKETS, _kind, interval_shares, wall_by_vm
from vprof.sources.replay import Recording

NOISE_SIGMAS = 2.0


def _noise(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per (vm, column): 2 standard errors of the difference of interval means."""

    def se2(df: pd.DataFrame) -> pd.DataFrame:
        g = df.groupby(level="vm")
        return g.var(ddof=1).fillna(0.0) / g.count().clip(lower=1)

    return NOISE_SIGMAS * np.sqrt(se2(before).add(se2(after), fill_value=0.0))


def _rates(frame: pd.DataFrame, by: list[str]) -> pd.Series:
    """Events per second of vCPU time, per VM and `by`."""
    ev = _kind(frame, "event").astype({c: str for c in by})
    counts = ev.groupby(["vm", *by])["value"].sum()
    wall_s = wall_by_vm(frame) / 1e9
    return counts / wall_s.reindex(counts.index.get_level_values("vm")).to_numpy()


def _interval_rates(frame: pd.DataFrame) -> pd.DataFrame:
    ev = _kind(frame, "event").astype({"bucket": str})
    counts = ev.pivot_table(index=["vm", "seq"], columns="bucket", values="value", aggfunc="sum")
    wall_s = _kind(frame, "wall").groupby(["vm", "seq"])["value"].sum() / 1e9
    counts = counts.reindex(index=wall_s.index, columns=list(BUCKETS)).fillna(0)
    return counts.div(wall_s.where(wall_s > 0), axis=0).fillna(0.0)


def _long(table: pd.DataFrame, name: str, vms: list[str]) -> pd.Series:
    cols = [*BUCKETS, "overhead"]
    wide = table.reindex(index=vms, columns=cols).fillna(0.0)
    return wide.stack().rename(name)


def bucket_diff(before: Recording, after: Recording) -> pd.DataFrame:
    """Per VM and bucket: share and events/vCPU-s before, after, change, noise."""
    vb, va = _bucket_share(before), _bucket_share(after)
    vms = sorted(set(vb.index) & set(va.index))
    if not vms:
        return pd.DataFrame()
    rb = _rates(before.frame, ["bucket"]).unstack()
    ra = _rates(after.frame, ["bucket"]).unstack()
    rb["overhead"], ra["overhead"] = rb.sum(axis=1), ra.sum(axis=1)
    sb, sa = interval_shares(before.frame), interval_shares(after.frame)
    ib, ia = _interval_rates(before.frame), _interval_rates(after.frame)
    ib["overhead"], ia["overhead"] = ib.sum(axis=1), ia.sum(axis=1)
    out = pd.concat(
        [
            _long(vb, "share_before", vms),
            _long(va, "share_after", vms),
            _long(_noise(sb, sa), "share_noise", vms),
            _long(rb, "rate_before", vms),
            _long(ra, "rate_after", vms),
            _long(_noise(ib, ia), "rate_noise", vms),
        ],
        axis=1,
    )
    out.index.names = ["vm", "bucket"]
    out = out.reset_index()
    out["d_share"] = out["share_after"] - out["share_before"]
    out["d_rate"] = out["rate_after"] - out["rate_before"]
    out["within_noise"] = out["d_share"].abs() <= out["share_noise"]
    out["vcpu_s_before"] = out["vm"].map(vb["vcpu_seconds"])
    out["vcpu_s_after"] = out["vm"].map(va["vcpu_seconds"])
    order = ["vm", "bucket", "share_before", "share_after", "d_share", "share_noise"]
    order += ["within_noise", "rate_before", "rate_after", "d_rate", "rate_noise"]
    return out[[*order, "vcpu_s_before", "vcpu_s_after"]]


def _bucket_share(rec: Recording) -> pd.DataFrame:
    from vprof.offline.report import vm_table

    return vm_table(rec.frame, rec.seconds()).set_index("vm")


def _ledger_shares(frame: pd.DataFrame) -> pd.Series:
    led = _kind(frame, "ledger").astype({"reason": str})
    ns = led.groupby(["vm", "reason"])["value"].sum()
    wall = wall_by_vm(frame)
    return ns / wall.reindex(ns.index.get_level_values("vm")).to_numpy()


def _interval_ledger(frame: pd.DataFrame) -> pd.DataFrame:
    led = _kind(frame, "ledger").astype({"reason": str})
    ns = led.pivot_table(index=["vm", "seq"], columns="reason", values="value", aggfunc="sum")
    wall = _kind(frame, "wall").groupby(["vm", "seq"])["value"].sum()
    return ns.reindex(wall.index).fillna(0).div(wall.where(wall > 0), axis=0).fillna(0.0)


def ledger_diff(before: Recording, after: Recording) -> pd.DataFrame:
    """Per VM and ledger category: share of vCPU time before, after, change."""
    b, a = _ledger_shares(before.frame), _ledger_shares(after.frame)
    both = pd.concat({"share_before": b, "share_after": a}, axis=1).fillna(0.0)
    vms = set(b.index.get_level_values(0)) & set(a.index.get_level_values(0))
    both = both[both.index.get_level_values(0).isin(vms)]
    both["d_share"] = both["share_after"] - both["share_before"]
    noise = _noise(_interval_ledger(before.frame), _interval_ledger(after.frame)).stack()
    both["share_noise"] = noise.reindex(both.index).fillna(0.0)
    both["within_noise"] = both["d_share"].abs() <= both["share_noise"]
    both.index.names = ["vm", "category"]
    return both.reset_index()


def reason_diff(before: Recording, after: Recording, top: int = 10) -> pd.DataFrame:
    """The reasons whose events per vCPU-second moved most, per VM."""
    keys = ["isa", "reason", "bucket"]
    b, a = _rates(before.frame, keys), _rates(after.frame, keys)
    both = pd.concat({"rate_before": b, "rate_after": a}, axis=1).fillna(0.0)
    vms = set(b.index.get_level_values(0)) & set(a.index.get_level_values(0))
    both = both[both.index.get_level_values(0).isin(vms)].reset_index()
    both["d_rate"] = both["rate_after"] - both["rate_before"]
    both["magnitude"] = both["d_rate"].abs()
    ranked = both.sort_values(["vm", "magnitude"], ascending=[True, False])
    return ranked.groupby("vm").head(top).drop(columns="magnitude").reset_index(drop=True)


def unmatched(before: Recording, after: Recording) -> pd.DataFrame:
    b = set(wall_by_vm(before.frame).index)
    a = set(wall_by_vm(after.frame).index)
    rows = [{"vm": v, "only_in": "before"} for v in sorted(b - a)]
    rows += [{"vm": v, "only_in": "after"} for v in sorted(a - b)]
    return pd.DataFrame(rows, columns=["vm", "only_in"])


def build_diff(before: Recording, after: Recording, top: int = 10) -> dict[str, pd.DataFrame]:
    return {
        "buckets": bucket_diff(before, after),
        "ledger": ledger_diff(before, after),
        "reasons": reason_diff(before, after, top),
        "unmatched": unmatched(before, after),
    }
