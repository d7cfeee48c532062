"""Recordings on disk: the format, reading it back, and replaying it as Snapshots.

A recording is a directory:

    meta.json             format version, vprof version, host, kernel, backend,
                          interval, probe families: enough to read it alone
    part-000001.parquet   interval deltas, one tidy row per (interval, VM,
    part-000002.parquet   vCPU, kind, reason, detail) and value
    ...

Parquet writes its footer last, so one big file cut short is unreadable; each
part is written under a temporary name, fsynced and renamed, so a recording
cut short (SIGKILL, power loss, a full disk) is readable up to its last
completed part.  The recorder (vprof/sinks/recorder.py) writes, this module
reads; `vprof.offline` builds reports on `read_recording()`.

Format 2 adds the kinds `hist` and `slow` and, in each part's footer, the
part's summary (vprof/sources/summary.py) that reports are built from.
Format 1 recordings read the same; their summaries are computed on reading.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from vprof.model import HIST_SLOTS, Bucket, IoStat, ReasonStat, SlowExit, Snapshot, VcpuStat, VmStat
from vprof.sources import summary as S

FORMAT_VERSION = 2
META_FILE = "meta.json"
PART_GLOB = "part-*.parquet"
PART_RE = re.compile(r"^part-(\d{6})\.parquet$")

# The tidy table.  `kind` says what `value` is:
#   wall     ns of a vCPU thread's wall time covered by the ledger
#   ledger   ns in ledger category `reason` (bucket: the one it charges, or "")
#   sched    vCPU scheduler figure `reason` (runqueue_wait_ns, preemptions, ...)
#   event    count of exit reason / KVM event `reason` of `isa` in `bucket`
#   handling ns spent handling `reason` (exit -> entry), where the host times exits
#   detail   count of `reason` with argument `detail` ("cpuid 0x40000000", ...)
#   io       accesses: reason "pio out", detail "<address>/<size>"
#   hist     exits of `reason` whose handling time fell in log2 slot `detail`
#            (2**slot <= ns < 2**(slot+1); slot 0 also holds 0), format 2
#   slow     one exit slower than the sampling threshold: ns, vcpu and tid
#            its thread's, detail its CLOCK_MONOTONIC ns, format 2
#   interval one row per interval, VM columns empty: ring-buffer records lost
COLUMNS: tuple[str, ...] = (
    "host",
    "seq",
    "time",
    "interval_s",
    "vm_key",
    "vm_name",
    "vm_pid",
    "vmm",
    "vcpu_count",
    "vcpu",
    "tid",
    "kind",
    "isa",
    "bucket",
    "reason",
    "detail",
    "value",
)
STRING_COLUMNS: tuple[str, ...] = (
    "host",
    "vm_key",
    "vm_name",
    "vmm",
    "kind",
    "isa",
    "bucket",
    "reason",
    "detail",
)
DTYPES: dict[str, str] = {
    "seq": "int64",
    "time": "float64",
    "interval_s": "float64",
    "vm_pid": "int64",
    "vcpu_count": "int32",
    "vcpu": "int32",
    "tid": "int64",
    "value": "int64",
}
KINDS: tuple[str, ...] = (
    "interval",
    "wall",
    "ledger",
    "sched",
    "event",
    "handling",
    "detail",
    "io",
    "hist",
    "slow",
)
SLOW_KEPT = 32  # slow exits a replayed VM holds, as the live aggregator keeps
SCHED_FIELDS: tuple[str, ...] = ("runqueue_wait_ns", "preemptions", "voluntary_switches", "wakeups")


class RecordingError(Exception):
    """A recording that cannot be read: one line for the user."""


@dataclass(frozen=True)
class Recording:
    """A recording read back: its metadata, its complete parts and their
    summaries; every row (`frame`) is read only when asked for."""

    path: Path
    meta: dict[str, Any]
    files: tuple[Path, ...]
    footers: tuple[dict[bytes, bytes], ...]
    incomplete: int = 0  # temporary part files of a write that never finished

    @property
    def parts(self) -> int:
        return len(self.files)

    @property
    def interval_s(self) -> float:
        return float(self.meta.get("interval_s", 0.0))

    @cached_property
    def frame(self) -> pd.DataFrame:
        """Every row of every complete part (COLUMNS; strings categorical)."""
        frames = [_read_part(p) for p in self.files]
        if not frames:
            return empty_frame()
        frame = pd.concat(frames, ignore_index=True)
        for col in STRING_COLUMNS:  # categories differ per part; unify them
            frame[col] = frame[col].astype("category")
        return frame

    @cached_property
    def summary(self) -> S.Summary:
        """The parts' summaries combined: what the report tables are built from."""
        tables = []
        for part, footer in zip(self.files, self.footers, strict=True):
            found = S.decode(footer)
            if found is None:  # format 1: summarise the rows
                found = S.summary_tables(S.part_summary(_read_part(part, S.NEEDED)))
            tables.append(found)
        return S.combine(tables)

    def seconds(self) -> float:
        """Time covered: the sum of the recorded intervals' lengths."""
        return self.summary.seconds()


def part_name(number: int) -> str:
    return f"part-{number:06d}.parquet"


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RecordingError(f"{path}: no such file or directory")
    if not path.is_dir() or not (path / META_FILE).is_file():
        raise RecordingError(f"{path}: not a vprof recording (no {META_FILE})")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise RecordingError(f"{path / META_FILE}: unreadable ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("format_version"), int):
        raise RecordingError(f"{path / META_FILE}: no format_version")
    if meta["format_version"] > FORMAT_VERSION:
        raise RecordingError(
            f"{path}: recording format {meta['format_version']} is newer than this vprof "
            f"reads ({FORMAT_VERSION}); upgrade vprof to read it"
        )
    return meta


def _corrupt(part: Path, e: Exception) -> RecordingError:
    return RecordingError(f"{part}: truncated or corrupt Parquet part ({e})")


def _read_footer(part: Path) -> dict[bytes, bytes]:
    """A part's footer metadata, after checking it has the format's columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        md = pq.read_metadata(part)
        names = set(md.schema.names)
    except (OSError, pa.ArrowException) as e:
        raise _corrupt(part, e) from None
    missing = set(COLUMNS) - names
    if missing:
        raise RecordingError(f"{part}: not a vprof part (no {', '.join(sorted(missing))})")
    return dict(md.metadata or {})


def _read_part(part: Path, columns: tuple[str, ...] = COLUMNS) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    strings = [c for c in columns if c in STRING_COLUMNS]
    try:
        table = pq.ParquetFile(part, read_dictionary=strings).read(columns=list(columns))
    except (OSError, pa.ArrowException) as e:
        raise _corrupt(part, e) from None
    return table.to_pandas()


def read_recording(path: str | Path) -> Recording:
    """The recording at `path`: metadata and every complete part's footer.

    Raises RecordingError (one line) for a missing path, a directory that is
    not a recording, a newer format version or a corrupt part.
    """
    root = Path(path)
    meta = _read_meta(root)
    parts = tuple(sorted(p for p in root.glob(PART_GLOB) if PART_RE.match(p.name)))
    footers = tuple(_read_footer(p) for p in parts)
    incomplete = sum(1 for p in root.iterdir() if p.name.endswith(".tmp"))
    return Recording(root, meta, parts, footers, incomplete)


def empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=DTYPES.get(c, "object")) for c in COLUMNS})
    for col in STRING_COLUMNS:
        frame[col] = frame[col].astype("category")
    return frame


# --- replay ----------------------------------------------------------------


@dataclass
class _Acc:
    """Cumulative figures of one VM while replaying."""

    vm: VmStat
    vcpus: dict[int, dict[str, Any]] = field(default_factory=dict)
    reasons: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    io: dict[tuple[str, str, int, int], int] = field(default_factory=dict)
    slow: deque[SlowExit] = field(default_factory=lambda: deque(maxlen=SLOW_KEPT))


def _vm_of(row: Any) -> VmStat:
    return VmStat(
        key=str(row.vm_key),
        pid=int(row.vm_pid),
        name=str(row.vm_name),
        name_raw=str(row.vm_name),
        name_source="recording",
        uuid="",
        vmm=str(row.vmm),
        vcpu_count=int(row.vcpu_count),
    )


def _add_row(acc: _Acc, row: Any) -> None:
    kind, value = str(row.kind), int(row.value)
    if kind in ("wall", "ledger", "sched"):
        v = acc.vcpus.setdefault(
            int(row.tid), {"index": int(row.vcpu), "wall": 0, "ledger": {}, "sched": {}}
        )
        if kind == "wall":
            v["wall"] += value
        else:
            d = v[kind]
            d[str(row.reason)] = d.get(str(row.reason), 0) + value
        return
    if kind == "io":
        direction_kind = str(row.reason).split(" ", 1)
        address, size = str(row.detail).split("/")
        key = (direction_kind[0], direction_kind[1], int(address, 0), int(size))
        acc.io[key] = acc.io.get(key, 0) + value
        return
    if kind == "slow":
        vcpu = int(row.vcpu)
        acc.slow.append(
            SlowExit(
                int(row.tid), vcpu if vcpu >= 0 else None, str(row.isa), str(row.reason),
                Bucket(str(row.bucket)), value, int(str(row.detail)),
            )
        )  # fmt: skip
        return
    r = acc.reasons.setdefault(
        (str(row.isa), str(row.reason)),
        {"bucket": str(row.bucket), "count": 0, "handling": None, "hist": None, "details": {}},
    )
    if kind == "hist":
        r["hist"] = r["hist"] or [0] * HIST_SLOTS
        r["hist"][int(str(row.detail))] += value
    elif kind == "event":
        r["count"] += value
    elif kind == "handling":
        r["handling"] = (r["handling"] or 0) + value
    elif kind == "detail":
        r["details"][str(row.detail)] = r["details"].get(str(row.detail), 0) + value


def _vm_snapshot(acc: _Acc) -> VmStat:
    vcpus = tuple(
        VcpuStat(
            tid=tid,
            index=v["index"] if v["index"] >= 0 else None,
            wall_ns=v["wall"],
            ledger=MappingProxyType(dict(v["ledger"])),
            **{k: v["sched"].get(k, 0) for k in SCHED_FIELDS},
        )
        for tid, v in sorted(acc.vcpus.items())
    )
    reasons = tuple(
        ReasonStat(
            isa=isa,
            reason=name,
            bucket=Bucket(r["bucket"]),
            count=r["count"],
            handling_ns=r["handling"],
            hist=tuple(r["hist"]) if r["hist"] is not None else None,
            details=MappingProxyType(dict(r["details"])),
        )
        for (isa, name), r in sorted(acc.reasons.items(), key=lambda kv: -kv[1]["count"])
    )
    io = tuple(IoStat(k[0], k[1], k[2], k[3], n) for k, n in sorted(acc.io.items()))
    return replace(acc.vm, vcpus=vcpus, reasons=reasons, io=io, slow_exits=tuple(acc.slow))


class ReplaySource:
    """A recording as a SnapshotSource: one cumulative Snapshot per recorded
    interval, as the live Profiler gives them, so every sink reads it."""

    def __init__(self, path: str | Path) -> None:
        self.recording = read_recording(path)

    def snapshots(self, interval: float = 0.0) -> Iterator[Snapshot]:
        """Cumulative snapshots in recorded order; `interval` is ignored (a
        replay runs as fast as it is read)."""
        meta = self.recording.meta
        accs: dict[str, _Acc] = {}
        mono = 0
        frame = self.recording.frame
        for seq, rows in frame.groupby("seq", sort=True, observed=True):
            first = rows.iloc[0]
            for row in rows[rows["kind"] != "interval"].itertuples(index=False):
                acc = accs.setdefault(str(row.vm_key), _Acc(_vm_of(row)))
                _add_row(acc, row)
            interval_ns = int(float(first.interval_s) * 1e9)
            mono += interval_ns
            del seq
            yield Snapshot(
                timestamp=float(first.time),
                monotonic_ns=mono,
                interval_ns=interval_ns,
                backend=str(meta.get("backend", "unknown")),
                exit_timing=bool(meta.get("exit_timing", False)),
                vms=tuple(_vm_snapshot(a) for a in accs.values()),
                # recordings before `record --source` were all BPF
                source=str(meta.get("snapshot_source", "bpf")),
                absent=frozenset(str(a) for a in meta.get("absent", ())),
            )
