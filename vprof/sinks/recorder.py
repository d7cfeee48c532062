"""The recorder sink: Snapshot deltas -> Parquet parts of a recording.

Memory stays bounded: rows wait in memory for one part (`part_intervals`
intervals) and are then written.  Each part goes to a temporary name, is
fsynced, renamed and its directory fsynced, so a reader never sees half a
part (vprof/sources/replay.py describes the format).  A full disk raises
RecordingFull after removing the half-written temporary file: every part
already renamed stays readable.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from vprof import __version__
from vprof.model import Snapshot, VmStat, bucket_of
from vprof.sources import summary
from vprof.sources.replay import (
    COLUMNS,
    DTYPES,
    FORMAT_VERSION,
    META_FILE,
    SCHED_FIELDS,
    STRING_COLUMNS,
    part_name,
)

Row = tuple[Any, ...]


class RecordingFull(OSError):
    """The disk filled up; the parts written before stay readable."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Any) -> None:
    """`write(tmp_path)`, fsync, rename to `path`, fsync the directory.

    ENOSPC/EDQUOT become RecordingFull; the temporary file is removed."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RecordingFull(e.errno, f"disk full writing {path}") from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _vm_rows(base: tuple[Any, ...], vm: VmStat, name: str) -> Iterator[Row]:
    """The rows of one VM; `base` holds host, seq, time and interval_s."""
    head = (*base, vm.key, name, vm.pid, vm.vmm, vm.vcpu_count)
    for v in vm.vcpus:
        idx = v.index if v.index is not None else -1
        cpu = (*head, idx, v.tid)
        yield (*cpu, "wall", "", "", "wall_ns", "", v.wall_ns)
        for cat, ns in v.ledger.items():
            if ns:
                b = bucket_of(cat)
                yield (*cpu, "ledger", "", b.value if b else "", str(cat), "", ns)
        for name in SCHED_FIELDS:
            n = getattr(v, name)
            if n:
                yield (*cpu, "sched", "", "", name, "", n)
    vmrow = (*head, -1, -1)
    for r in vm.reasons:
        if r.count:
            yield (*vmrow, "event", r.isa, r.bucket.value, r.reason, "", r.count)
        if r.handling_ns:
            yield (*vmrow, "handling", r.isa, r.bucket.value, r.reason, "", r.handling_ns)
        for detail, n in r.details.items():
            if n:
                yield (*vmrow, "detail", r.isa, r.bucket.value, r.reason, detail, n)
        for slot, n in enumerate(r.hist or ()):
            if n:
                yield (*vmrow, "hist", r.isa, r.bucket.value, r.reason, str(slot), n)
    for x in vm.slow_exits:
        cpu = (*head, x.vcpu if x.vcpu is not None else -1, x.tid)
        yield (*cpu, "slow", x.isa, x.bucket.value, x.reason, str(x.timestamp_ns), x.duration_ns)
    for s in vm.io:
        if s.count:
            where = f"{s.address:#x}/{s.size}"
            yield (*vmrow, "io", s.kind, "io", f"{s.kind} {s.direction}", where, s.count)


def snapshot_rows(
    delta: Snapshot, host: str, seq: int, names: Mapping[str, str] | None = None
) -> list[Row]:
    """The tidy rows of one interval's delta Snapshot (zero values left out);
    `names` gives a VM's recorded name by key (default: its own)."""
    names = names or {}
    base = (host, seq, delta.timestamp, delta.interval_ns / 1e9)
    # One row per interval even with no VM, so the time covered is known;
    # it carries the ring-buffer records lost in the interval.
    head = (*base, "", "", -1, "", 0, -1, -1, "interval", "", "", "events_lost", "")
    rows = (row for vm in delta.vms for row in _vm_rows(base, vm, names.get(vm.key, vm.name)))
    return [(*head, delta.events_lost), *rows]


def rows_frame(rows: Iterable[Row]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(list(rows), columns=list(COLUMNS))
    return frame.astype(DTYPES)


def write_part(path: Path, frame: pd.DataFrame) -> None:
    """One Parquet part, atomically; strings dictionary-encoded, zstd; the
    part's summary (vprof/sources/summary.py) in its footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame[list(COLUMNS)], preserve_index=False)
    footer = {b"vprof.format_version": str(FORMAT_VERSION).encode()}
    footer |= summary.encode(summary.part_summary(summary.as_categories(frame)))
    table = table.replace_schema_metadata(footer)
    atomic_write(
        path,
        lambda tmp: pq.write_table(
            table, tmp, compression="zstd", use_dictionary=list(STRING_COLUMNS)
        ),
    )


def base_meta(interval_s: float, families: Iterable[str], source: str) -> dict[str, Any]:
    """Metadata that lets a recording be read alone, away from its host."""
    return {
        "format_version": FORMAT_VERSION,
        "vprof_version": __version__,
        "host": socket.gethostname(),
        "kernel": os.uname().release,
        "backend": "unknown",
        "exit_timing": False,
        "interval_s": interval_s,
        "families": sorted(families),
        "source": source,  # "live" or "import:<dialect>"
    }


class Recorder:
    """Write delta Snapshots to a recording directory, one part at a time."""

    def __init__(self, path: str | Path, meta: dict[str, Any], part_intervals: int = 12) -> None:
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()):
            raise FileExistsError(f"{self.path}: exists and is not empty")
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta)
        self.part_intervals = max(1, part_intervals)
        self.parts = 0
        self.intervals = 0  # written in complete parts
        self._rows: list[Row] = []
        self._pending = 0  # intervals in _rows
        self._names: dict[str, str] = {}  # recorded name by VM key, while it lives
        self._write_meta()

    def _unique(self, delta: Snapshot) -> dict[str, str]:
        # The report groups by name: two VMs alive at once whose names are
        # equal once sanitised ("web\x1b[1m", "web\x1b[2m") must stay two, as
        # on /metrics ("web", "web~PID"), and keep their names while they
        # live.  A name is free again once its VM is gone, so a restarted VM
        # is recorded under its plain name.
        live = {vm.key for vm in delta.vms}
        self._names = {k: n for k, n in self._names.items() if k in live}
        taken = set(self._names.values())
        for vm in delta.vms:
            if vm.key not in self._names:
                name = vm.name
                while name in taken:  # as sanitize.unique_names
                    name = f"{name}~{vm.pid}"
                self._names[vm.key] = name
                taken.add(name)
        return self._names

    def _write_meta(self) -> None:
        text = json.dumps(self.meta, indent=2, sort_keys=True) + "\n"
        atomic_write(self.path / META_FILE, lambda tmp: Path(tmp).write_text(text))

    def add(self, delta: Snapshot) -> None:
        """One interval's deltas (the output of vprof.model.diff)."""
        if (delta.backend, delta.exit_timing) != (self.meta["backend"], self.meta["exit_timing"]):
            self.meta.update(backend=delta.backend, exit_timing=delta.exit_timing)
            self._write_meta()
        seq = self.intervals + self._pending
        self._rows.extend(snapshot_rows(delta, self.meta["host"], seq, self._unique(delta)))
        self._pending += 1
        if self._pending >= self.part_intervals:
            self.flush()

    def add_frame(self, frame: pd.DataFrame) -> None:
        """Rows already in the tidy form (vprof import), as one part."""
        self.flush()
        self._write(frame)
        self.intervals += int(frame["seq"].nunique())

    def flush(self) -> None:
        """Write the waiting intervals as one part (nothing if none wait)."""
        if not self._pending:
            return
        self._write(rows_frame(self._rows))
        self.intervals += self._pending
        self._rows, self._pending = [], 0

    def _write(self, frame: pd.DataFrame) -> None:
        write_part(self.path / part_name(self.parts + 1), frame)
        self.parts += 1

    def close(self) -> None:
        self.flush()
