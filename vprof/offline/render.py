"""Report and diff tables -> terminal text, JSON, CSV."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

_PCT = ("share", "overhead", "privileged", "memory", "io", "context_switch", "unclassified")


def _is_pct(col: str) -> bool:
    return col in _PCT or col.endswith("_share") or col.startswith("share_")


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.columns.name = None
    for col in out.columns:
        name = str(col)
        if out[col].dtype.kind != "f":
            continue
        if _is_pct(name) or name.startswith("d_share"):
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else f"{v * 100:.2f}%")
        elif name == "time":
            out[col] = pd.to_datetime(out[col], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
        else:
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else f"{v:,.1f}")
    return out


def text(title: str, meta_lines: list[str], tables: dict[str, pd.DataFrame]) -> str:
    """Plain tables, one section per table."""
    parts = [title, *meta_lines, ""]
    for name, df in tables.items():
        parts.append(f"== {name} ==")
        parts.append("(none)" if df.empty else _fmt(df).to_string(index=False))
        parts.append("")
    return "\n".join(parts)


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts; NaN becomes null."""
    out: list[dict[str, Any]] = json.loads(df.to_json(orient="records", double_precision=15))
    return out


def as_json(head: dict[str, Any], tables: dict[str, pd.DataFrame]) -> str:
    doc = {**head, "tables": {name: records(df) for name, df in tables.items()}}
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def as_csv(df: pd.DataFrame) -> str:
    text_out: str = df.to_csv(index=False)
    return text_out
