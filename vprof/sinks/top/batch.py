"""Batch output of `vprof top` (`-b`, or whenever stdout is not a terminal).

plain: the same tables as the live view, one frame per interval.
json:  one JSON object per interval (JSON Lines): host fields and a list of
       VM rows; field names are stable and listed in docs/top.md.
csv:   one row per VM per interval, with a header row first.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any, TextIO

from vprof.model import Bucket, Snapshot, VmStat
from vprof.sinks.top.drill import vcpu_values
from vprof.sinks.top.host import host_fields, host_summary
from vprof.sinks.top.screen import compose
from vprof.sinks.top.state import UiState
from vprof.sinks.top.stream import Stream
from vprof.sinks.top.view import NA, interval_seconds, select_rows, vm_row
from vprof.sources import SnapshotSource
from vprof.sources.absent import ABSENT_IO_ADDRESSES

PLAIN_WIDTH = 160  # wide enough for every column, so scripts see them all

# The VM fields of --csv and of each --json row, in order.  Append only.
VM_FIELDS: tuple[str, ...] = (
    "vm",
    "key",
    "pid",
    "vcpus",
    "events",
    *(f"{b.value}_events" for b in Bucket),
    "events_per_s",
    *(f"{b.value}_per_s" for b in Bucket),
    "guest_pct",
    "privileged_pct",
    "memory_pct",
    "io_pct",
    "context_switch_pct",
    "runqueue_pct",
    "halted_pct",
    "unclassified_pct",
    "unattributed_pct",
    "top_reason",
    "top_reason_count",
)
CSV_FIELDS: tuple[str, ...] = ("timestamp", "interval_s", *VM_FIELDS)


def deltas(
    source: SnapshotSource, interval: float, count: int | None, stream: Stream
) -> Iterator[Snapshot]:
    """`count` interval deltas (None: forever) from a cumulative source."""
    emitted = 0
    for snap in source.snapshots(interval):
        if count is not None and emitted >= count:
            return
        delta = stream.push(snap)
        if delta is not None:
            emitted += 1
            yield delta
            if count is not None and emitted >= count:
                return


def _selected(delta: Snapshot, ui: UiState) -> list[VmStat]:
    secs = interval_seconds(delta)
    by_key = {vm.key: vm for vm in delta.vms}
    if ui.drill is not None:
        vm = delta.vm(ui.drill)
        return [vm] if vm is not None else []
    rows = select_rows(
        [vm_row(vm, secs, delta.absent) for vm in delta.vms],
        ui.sort_key,
        ui.descending,
        ui.name_filter,
    )
    return [by_key[r.key] for r in rows]


def json_record(delta: Snapshot, ui: UiState, host_cpus: int) -> dict[str, Any]:
    secs = interval_seconds(delta)
    vms: list[dict[str, Any]] = []
    for vm in _selected(delta, ui):
        values = vm_row(vm, secs, delta.absent).values
        row: dict[str, Any] = {f: values.get(f) for f in VM_FIELDS}
        row["reasons"] = [
            {
                "isa": r.isa,
                "reason": r.reason,
                "bucket": r.bucket.value,
                "count": r.count,
                "handling_ns": r.handling_ns,
            }
            for r in sorted(vm.reasons, key=lambda r: -r.count)
            if r.count > 0
        ]
        row["io"] = (
            NA
            if delta.lacks(ABSENT_IO_ADDRESSES)
            else [
                {
                    "kind": s.kind,
                    "direction": s.direction,
                    "address": s.address,
                    "size": s.size,
                    "count": s.count,
                }
                for s in sorted(vm.io, key=lambda s: -s.count)
                if s.count > 0
            ]
        )
        if ui.drill is not None:
            row["vcpu_stats"] = vcpu_values(vm, secs, delta.absent)
        vms.append(row)
    return {
        "timestamp": delta.timestamp,
        "host": {
            **host_fields(host_summary(delta, host_cpus)),
            "not_available": sorted(delta.absent),
        },
        "vms": vms,
    }


def run_batch(
    source: SnapshotSource,
    ui: UiState,
    out: TextIO,
    fmt: str,
    count: int | None,
    host_cpus: int,
) -> None:
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_FIELDS)
    stream = Stream()
    for n, delta in enumerate(deltas(source, ui.interval, count, stream)):
        if fmt == "json":
            out.write(json.dumps(json_record(delta, ui, host_cpus)) + "\n")
        elif writer is not None:
            secs = interval_seconds(delta)
            for vm in _selected(delta, ui):
                values = vm_row(vm, secs, delta.absent).values
                writer.writerow([delta.timestamp, secs, *(_csv(values.get(f)) for f in VM_FIELDS)])
        else:
            if n:
                out.write("\n")
            frame, _ = compose(delta, stream, ui, PLAIN_WIDTH, None, host_cpus)
            out.write(frame + "\n")
        out.flush()


def _csv(value: object) -> object:
    return "" if value is None else value
