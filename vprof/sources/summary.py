"""Per-part summaries of a recording: what `vprof report` is built from.

A 60 s part of 50 VMs holds ~22,000 rows, a day of them ~32 million: too many
to decode for a report in seconds.  So each part (format 2) carries in its
Parquet footer (key-value metadata, written atomically with the part) its
partial aggregates, as Arrow IPC streams (zstd):

    totals  the part's rows summed over its intervals, per VM name, vCPU
            thread, kind, isa, bucket, reason and detail (value summed,
            vcpu_count its largest)
    seqs    one row per interval: seq, time, interval_s
    worst   per VM, the part's interval with the largest overhead share and
            its share per bucket (an interval never spans two parts)

Partials combine exactly: integer sums, and the first largest share of the
parts in order is the first largest of the whole.  A part without them
(format 1) is summarised from its rows as it is read.  String columns keep
the categories a reader of every row would see: a part's own dictionary
order when every part has the same set, else sorted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from vprof.model import OVERHEAD_BUCKETS, Bucket

BUCKETS: tuple[str, ...] = tuple(b.value for b in (*OVERHEAD_BUCKETS, Bucket.UNCLASSIFIED))
TOTAL_KEYS: tuple[str, ...] = (
    "vm_name",
    "vcpu",
    "tid",
    "kind",
    "isa",
    "bucket",
    "reason",
    "detail",
)
TOTAL_STRINGS: tuple[str, ...] = ("vm_name", "kind", "isa", "bucket", "reason", "detail")
# The columns a summary is computed from.
NEEDED: tuple[str, ...] = (*TOTAL_KEYS, "seq", "time", "interval_s", "vcpu_count", "value")
FOOTER_KEYS: dict[str, bytes] = {
    "totals": b"vprof.totals",
    "seqs": b"vprof.seqs",
    "worst": b"vprof.worst",
}


@dataclass(frozen=True)
class Summary:
    totals: pd.DataFrame  # TOTAL_KEYS, value, vcpu_count; string keys categorical
    seqs: pd.DataFrame  # seq, time, interval_s
    worst: pd.DataFrame  # index (vm, seq); BUCKETS and overhead: each part's worst per VM

    def seconds(self) -> float:
        """Time covered: the sum of the intervals' lengths."""
        if self.seqs.empty:
            return 0.0
        return float(self.seqs.groupby("seq")["interval_s"].first().sum())

    def times(self) -> pd.Series:
        return self.seqs.groupby("seq")["time"].first()


def kind_rows(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    sel = frame[frame["kind"] == kind]
    # Categorical, not str: millions of rows are not copied for each table.
    return sel.assign(vm=sel["vm_name"].cat.remove_unused_categories())


def interval_shares(frame: pd.DataFrame) -> pd.DataFrame:
    """Overhead share per (vm, seq) and bucket: ledger ns / wall ns of that interval."""
    led = kind_rows(frame, "ledger")
    led = led[led["bucket"].astype(str) != ""]
    wall = kind_rows(frame, "wall").groupby(["vm", "seq"])["value"].sum()
    ns = led.pivot_table(
        index=["vm", "seq"], columns="bucket", values="value", aggfunc="sum", observed=True
    )
    ns.columns = ns.columns.astype(str)
    ns = ns.reindex(index=wall.index, columns=list(BUCKETS)).fillna(0)
    shares = ns.div(wall.where(wall > 0), axis=0).fillna(0.0)
    shares["overhead"] = shares[list(BUCKETS)].sum(axis=1)
    return shares


def worst_of(shares: pd.DataFrame) -> pd.DataFrame:
    """Per VM, the (first) interval with the largest overhead share."""
    if shares.empty:
        return shares
    return shares.loc[shares.groupby(level="vm")["overhead"].idxmax()]


def as_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """String columns as categoricals in order of first appearance: the
    order of the dictionary Parquet writes for them."""
    return frame.assign(
        **{
            c: pd.Categorical(frame[c], categories=pd.unique(frame[c]))
            for c in TOTAL_STRINGS
            if not isinstance(frame[c].dtype, pd.CategoricalDtype)
        }
    )


def part_summary(frame: pd.DataFrame) -> Summary:
    """The summary of one part's rows (string columns categorical)."""
    totals = (
        frame.groupby(list(TOTAL_KEYS), observed=True, sort=False)
        .agg(value=("value", "sum"), vcpu_count=("vcpu_count", "max"))
        .reset_index()
    )
    seqs = frame.groupby("seq")[["time", "interval_s"]].first().reset_index()
    return Summary(totals, seqs, worst_of(interval_shares(frame)))


def _arrow(df: pd.DataFrame) -> Any:
    """A frame as an Arrow table whose schema is the same for every part."""
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = [
        pa.field(f.name, pa.dictionary(pa.int32(), pa.string()))
        if pa.types.is_dictionary(f.type)
        else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields)).replace_schema_metadata(None)


def _worst_frame(worst: pd.DataFrame) -> pd.DataFrame:
    cols = ["vm", "seq", *BUCKETS, "overhead"]
    if worst.empty:
        return pd.DataFrame(
            {
                "vm": pd.Categorical([], categories=[""]),
                "seq": pd.Series(dtype="int64"),
                **{c: pd.Series(dtype="float64") for c in (*BUCKETS, "overhead")},
            }
        )
    return worst.reset_index()[cols]


def summary_tables(s: Summary) -> dict[str, Any]:
    """The summary as Arrow tables (what the footer holds)."""
    return {
        "totals": _arrow(s.totals),
        "seqs": _arrow(s.seqs),
        "worst": _arrow(_worst_frame(s.worst)),
    }


def encode(s: Summary) -> dict[bytes, bytes]:
    """Footer metadata entries holding the summary: each an Arrow IPC stream,
    zstd-compressed whole (one codec call per table to read: per-buffer IPC
    compression cost 4x as much), after its length in 8 bytes."""
    import pyarrow as pa

    out = {}
    for name, table in summary_tables(s).items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        raw = sink.getvalue()
        packed = pa.compress(raw, "zstd", asbytes=True)
        out[FOOTER_KEYS[name]] = raw.size.to_bytes(8, "little") + packed
    return out


def decode(footer: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The summary tables a part's footer holds, or None (a format 1 part)."""
    import pyarrow as pa

    if not all(k in footer for k in FOOTER_KEYS.values()):
        return None
    out = {}
    for name, key in FOOTER_KEYS.items():
        value = footer[key]
        size = int.from_bytes(value[:8], "little")
        raw = pa.decompress(value[8:], decompressed_size=size, codec="zstd")
        out[name] = pa.ipc.open_stream(raw).read_all()
    return out


def _categorised(tables: list[Any]) -> tuple[Any, list[str]]:
    """Concatenated tables with one dictionary per column, and the columns
    whose parts' sets of values differ.  pandas, concatenating the parts'
    categoricals, keeps the first part's order where every part has the same
    categories (in any order) and sorts the values where they differ."""
    import pyarrow as pa

    table = pa.concat_tables(tables)
    differ = []
    for name in table.column_names:
        col = table[name]
        if not pa.types.is_dictionary(col.type) or col.num_chunks < 2:
            continue
        first = col.chunk(0).dictionary
        others = [ch.dictionary for ch in col.chunks[1:] if not ch.dictionary.equals(first)]
        values = set(first.to_pylist())
        if any(set(d.to_pylist()) != values for d in others):
            differ.append(name)
    return table.unify_dictionaries(), differ


def _sorted_categories(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for c in columns:
        df[c] = df[c].cat.reorder_categories(sorted(df[c].cat.categories))
    return df


def combine(parts: list[dict[str, Any]]) -> Summary:
    """The summary of a whole recording from its parts' summary tables."""
    import pyarrow as pa

    if not parts:
        return _empty()
    table, differ = _categorised([p["totals"] for p in parts])
    summed = table.group_by(list(TOTAL_KEYS)).aggregate([("value", "sum"), ("vcpu_count", "max")])
    totals = summed.rename_columns([*TOTAL_KEYS, "value", "vcpu_count"]).to_pandas()
    totals = _sorted_categories(totals, differ)
    seqs = pa.concat_tables([p["seqs"] for p in parts]).to_pandas()
    worst = pa.concat_tables([p["worst"] for p in parts]).to_pandas()
    vms = totals["vm_name"].cat.categories
    worst["vm"] = pd.Categorical(worst["vm"].astype(str), categories=vms)
    worst["vm"] = worst["vm"].cat.remove_unused_categories()
    return Summary(totals, seqs, worst.set_index(["vm", "seq"]))


def _empty() -> Summary:
    totals = pd.DataFrame({c: pd.Categorical([]) for c in TOTAL_STRINGS})
    totals = totals.assign(
        vcpu=pd.Series(dtype="int32"),
        tid=pd.Series(dtype="int64"),
        value=pd.Series(dtype="int64"),
        vcpu_count=pd.Series(dtype="int32"),
    )[[*TOTAL_KEYS, "value", "vcpu_count"]]
    seqs = pd.DataFrame(
        {"seq": pd.Series(dtype="int64"), "time": [], "interval_s": []}, dtype="float64"
    ).astype({"seq": "int64"})
    worst = _worst_frame(pd.DataFrame()).set_index(["vm", "seq"])
    return Summary(totals, seqs, worst)
