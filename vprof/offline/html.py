"""`--html FILE`: one self-contained page, charts as inline SVG, works offline.

No external script, style sheet, font or image: hypervisor hosts and the
laptops reports travel to often have no internet.  A few lines of inline
script count the charts that drew and report any that did not to the
console, so a browser check (tests/test_offline_html.py) can rely on it.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

import pandas as pd

from vprof.model import Bucket
from vprof.offline import render
from vprof.offline.report import BUCKETS, Report, _kind, interval_shares
from vprof.offline.svg import grouped_bars, stacked_area
from vprof.sources.replay import Recording
from vprof.taxonomy.core import remedy
from vprof.taxonomy.lookup import lookup

STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:17px;border-bottom:1px solid #ccc;margin-top:32px}
h3{font-size:14px}table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.meta{color:#555;font-size:13px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.why{background:#f8f8f0;padding:8px 12px;
border-left:4px solid #ccb;font-size:13px;margin:8px 0}
"""

CHECK = """
(function(){
  var charts=document.querySelectorAll('svg.chart'), drawn=0;
  charts.forEach(function(svg){
    var ok=false;
    svg.querySelectorAll('path.series').forEach(function(p){
      var b=p.getBBox(); if(b.width>0&&b.height>0){ok=true;}
    });
    if(ok){drawn++;}else{console.error('chart did not draw: '+svg.dataset.chart);}
  });
  document.body.dataset.charts=String(charts.length);
  document.body.dataset.drawn=String(drawn);
})();
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"{body}<script>{CHECK}</script></body></html>\n"
    )


def _table(df: pd.DataFrame, name: str) -> str:
    if df.empty:
        return f'<p class="empty" data-table="{escape(name)}">(none)</p>'
    shown = render._fmt(df)
    html: str = shown.to_html(index=False, escape=True, border=0, classes=f"t-{name}")
    return html.replace("<table", f'<table data-table="{escape(name)}"', 1)


def _explain(vm_row: Any, reasons: pd.DataFrame) -> str:
    """The dominant bucket's explanation, its top reason and the remedy."""
    shares = {b: float(vm_row[b]) for b in BUCKETS}
    bucket = max(shares, key=lambda b: shares[b])
    if shares[bucket] <= 0:
        return '<div class="why">No overhead recorded for this VM.</div>'
    mine = reasons[(reasons["vm"] == vm_row["vm"]) & (reasons["bucket"] == bucket)]
    why = ""
    if not mine.empty:
        top = mine.iloc[0]
        found = lookup(str(top["reason"]))
        text = found[0].entry.reason if found else ""
        why = f"Top reason: <b>{escape(str(top['reason']))}</b>: {escape(text)}. "
    return (
        f'<div class="why"><b>Dominant bucket: {escape(bucket)}</b> '
        f"({shares[bucket] * 100:.2f}% of vCPU time). {why}"
        f"<br><b>What reduces it:</b> {escape(remedy(Bucket(bucket)))}</div>"
    )


def _vm_charts(frame: pd.DataFrame, vm: str) -> str:
    shares = interval_shares(frame)
    over = shares.xs(vm, level="vm")[list(BUCKETS)] if not shares.empty else pd.DataFrame()
    led = _kind(frame, "ledger")
    led = led[led["vm"] == vm].astype({"reason": str})
    ns = led.pivot_table(index="seq", columns="reason", values="value", aggfunc="sum").fillna(0)
    wall = _kind(frame, "wall")
    wall = wall[wall["vm"] == vm].groupby("seq")["value"].sum()
    ledger = ns.div(wall.where(wall > 0), axis=0).reindex(wall.index).fillna(0.0)
    return (
        '<div class="charts">'
        + stacked_area(over, f"{vm}: overhead share by bucket", f"{vm}:overhead")
        + stacked_area(ledger, f"{vm}: ledger (share of vCPU time)", f"{vm}:ledger")
        + "</div>"
    )


def _meta(meta: dict[str, Any], seconds: float, parts: int) -> str:
    keys = ("host", "kernel", "backend", "interval_s", "families", "vprof_version", "source")
    items = ", ".join(f"{k}: {escape(str(meta.get(k, '')))}" for k in keys)
    return f'<p class="meta">{items}; {seconds:.0f} s recorded in {parts} parts.</p>'


def report_html(rec: Recording, rep: Report) -> str:
    t = rep.tables
    body = [
        f"<h1>vprof report: {escape(str(rec.path))}</h1>",
        _meta(rep.meta, rep.seconds, rec.parts),
        "<h2>Overhead per VM</h2>",
        _table(t["vms"], "vms"),
    ]
    for _, row in t["vms"].iterrows():
        vm = str(row["vm"])
        body += [
            f"<h2>VM {escape(vm)}</h2>",
            _explain(row, t["reasons"]),
            _vm_charts(rec.frame, vm),
        ]
        timed = [n for n in ("handling", "slow_exits") if n in t]
        for name in ("reasons", "details", "io", "runqueue", "worst", *timed):
            df = t[name]
            body += [f"<h3>{escape(name)}</h3>", _table(df[df["vm"] == vm], name)]
    body += ["<h2>Ledger, all VMs</h2>", _table(t["ledger"], "ledger")]
    body.append(f'<p class="meta">Generated {time.strftime("%Y-%m-%d %H:%M:%S")}.</p>')
    return _page(f"vprof report {rec.path}", "".join(body))


def diff_html(before: Recording, after: Recording, tables: dict[str, pd.DataFrame]) -> str:
    body = [
        f"<h1>vprof diff: {escape(str(before.path))} &rarr; {escape(str(after.path))}</h1>",
        _meta(before.meta, before.seconds(), before.parts),
        _meta(after.meta, after.seconds(), after.parts),
    ]
    b = tables["buckets"]
    for vm in sorted(b["vm"].unique()) if not b.empty else []:
        mine = b[(b["vm"] == vm) & (b["bucket"] != "overhead")].set_index("bucket")
        wide = mine[["share_before", "share_after"]].rename(
            columns={"share_before": "before", "share_after": "after"}
        )
        body += [f"<h2>VM {escape(str(vm))}</h2>", '<div class="charts">']
        body += [grouped_bars(wide, f"{vm}: overhead share", f"{vm}:diff"), "</div>"]
    for name, df in tables.items():
        body += [f"<h2>{escape(name)}</h2>", _table(df, name)]
    return _page("vprof diff", "".join(body))
