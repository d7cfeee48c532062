"""Handling-time histograms and slow exits in recordings (format 2), and
format 1 recordings read as before.

On this kvm_pvm host kvm_exit never fires, so the source is synthetic with
exit timing on: the oracle is what the test handed to the recorder (each
interval's histograms and slow exits), summed and ranked by the test itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from vprof.model import HIST_SLOTS, Snapshot
from vprof.sinks.recorder import Recorder, base_meta
from vprof.sources.replay import FORMAT_VERSION, ReplaySource
from vprof.sources.synthetic import SyntheticHost, delta_snapshots

pytestmark = pytest.mark.unit

TIMED = SyntheticHost(vms=2, vcpus=2, interval_s=5.0, exit_timing=True)


def _record(path: Path, snaps: list[Snapshot], part_intervals: int = 4) -> None:
    rec = Recorder(path, base_meta(5.0, ["exits"], "live"), part_intervals)
    for s in snaps:
        rec.add(s)
    rec.close()


def report_json(path: Path) -> dict[str, Any]:
    """`vprof report PATH --json --top 100`, run as users run it, parsed."""
    out = subprocess.run(
        [sys.executable, "-m", "vprof", "report", str(path), "--json", "--top", "100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _bound(hist: list[int], q: float) -> int:
    """The test's own quantile: the upper bound of the first slot whose
    running count reaches q of the total."""
    total, seen = sum(hist), 0
    for slot, n in enumerate(hist):
        seen += n
        if seen >= q * total:
            return 2 ** (slot + 1)
    raise AssertionError("empty histogram")


def test_handling_histograms_and_slow_exits_reach_the_report(tmp_path: Path) -> None:
    snaps = list(delta_snapshots(TIMED, 10))
    _record(tmp_path / "r", snaps)
    doc = report_json(tmp_path / "r")
    handling = {(r["vm"], r["reason"]): r for r in doc["tables"]["handling"]}
    slow = doc["tables"]["slow_exits"]
    for i in range(TIMED.vms):
        name = f"vm-{i:03d}"
        for reason in {r.reason for r in snaps[0].vms[i].reasons}:
            mine = [r for s in snaps for r in s.vms[i].reasons if r.reason == reason]
            hist = [sum(r.hist[k] for r in mine if r.hist) for k in range(HIST_SLOTS)]
            row = handling[(name, reason)]
            assert row["timed"] == sum(hist) == sum(r.count for r in mine)
            assert row["mean_ns"] == pytest.approx(
                sum(r.handling_ns or 0 for r in mine) / sum(hist)
            )
            assert row["p50_ns"] == _bound(hist, 0.5)
            assert row["p99_ns"] == _bound(hist, 0.99)
            assert row["max_ns"] == 2 ** (max(k for k, n in enumerate(hist) if n) + 1)
        fed = {
            (x.tid, x.reason, x.duration_ns, x.timestamp_ns)
            for s in snaps
            for x in s.vms[i].slow_exits
        }
        got = {
            (r["tid"], r["reason"], r["duration_ns"], r["monotonic_ns"])
            for r in slow
            if r["vm"] == name
        }
        assert got == fed and len(fed) == 10 * TIMED.vcpus * 2
        durations = [r["duration_ns"] for r in slow if r["vm"] == name]
        assert durations == sorted(durations, reverse=True)


def test_without_exit_timing_no_timing_tables(tmp_path: Path) -> None:
    _record(tmp_path / "r", list(delta_snapshots(SyntheticHost(vms=2), 4)))
    tables = report_json(tmp_path / "r")["tables"]
    assert "handling" not in tables and "slow_exits" not in tables
    assert all(r["mean_handling_ns"] is None for r in tables["reasons"])


def test_replay_gives_histograms_and_slow_exits_back(tmp_path: Path) -> None:
    snaps = list(delta_snapshots(TIMED, 6))
    _record(tmp_path / "r", snaps, part_intervals=2)
    replayed = list(ReplaySource(tmp_path / "r").snapshots())
    last = replayed[-1]
    for i, vm in enumerate(last.vms):
        for r in vm.reasons:
            fed = [x for s in snaps for x in s.vms[i].reasons if x.reason == r.reason]
            want = tuple(sum(x.hist[k] for x in fed if x.hist) for k in range(HIST_SLOTS))
            assert r.hist == want
        fed_slow = [x for s in snaps for x in s.vms[i].slow_exits]
        assert {(x.tid, x.timestamp_ns, x.duration_ns) for x in vm.slow_exits} == {
            (x.tid, x.timestamp_ns, x.duration_ns) for x in fed_slow[-32:]
        }


def _as_format_1(path: Path) -> None:
    """Rewrite a recording as format 1 wrote it: no summaries in the footers."""
    for part in sorted(path.glob("part-*.parquet")):
        table = pq.read_table(part)
        pq.write_table(
            table.replace_schema_metadata({"vprof.format_version": "1"}), part, compression="zstd"
        )
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))


@pytest.mark.parametrize("timed", [False, True])
def test_a_format_1_recording_reports_the_same(tmp_path: Path, timed: bool) -> None:
    host = TIMED if timed else SyntheticHost(vms=3)
    _record(tmp_path / "r", list(delta_snapshots(host, 9)))
    new = report_json(tmp_path / "r")
    assert new["meta"]["format_version"] == FORMAT_VERSION == 2
    _as_format_1(tmp_path / "r")
    old = report_json(tmp_path / "r")
    assert old["meta"]["format_version"] == 1
    # Summaries computed from the rows on reading equal those in the footers.
    assert old["tables"] == new["tables"] and old["seconds"] == new["seconds"] == 45.0
