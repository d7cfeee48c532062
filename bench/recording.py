"""Recording size and report time, on a synthetic host (vprof/sources/synthetic.py).

    python bench/recording.py [--vms 50] [--hours 24] [--interval 5] [--written-hours 1]
                              [--exit-timing]

Prints bytes per VM-hour at the default interval (goal: < 1 MB compressed)
and the time `vprof report` takes to build its tables from a recording of
`--vms` VMs over `--hours` hours (goal: < 5 s), wall and CPU, the command
itself and in process.  A size and a time measured here, not a timed test.

The first `--written-hours` go through the Recorder, snapshot by snapshot
(~15 s an hour here); the later hours are those parts again, their seq and
time shifted, each written by the same write_part (rows and footer summary)
so the 24-hour case is written in minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from vprof.offline import read_recording
from vprof.offline.report import build_report
from vprof.sinks.recorder import Recorder, base_meta, write_part
from vprof.sources.replay import part_name
from vprof.sources.synthetic import SyntheticHost, delta_snapshots


def _write(path: Path, host: SyntheticHost, intervals: int, part_s: float) -> float:
    started = time.perf_counter()
    rec = Recorder(
        path,
        base_meta(host.interval_s, ["all"], "synthetic"),
        max(1, round(part_s / host.interval_s)),
    )
    for snap in delta_snapshots(host, intervals):
        rec.add(snap)
    rec.close()
    return time.perf_counter() - started


def _tile(path: Path, hours: float, interval_s: float) -> int:
    """Repeat the parts written so far until the recording spans `hours`."""
    parts = sorted(path.glob("part-*.parquet"))
    frames = [pq.read_table(p).to_pandas() for p in parts]
    span = int(max(f["seq"].max() for f in frames)) + 1
    n, total = len(parts), int(hours * 3600 / interval_s)
    k = 1
    while k * span < total:
        for frame in frames:
            shifted = frame.assign(seq=frame["seq"] + k * span)
            shifted = shifted[shifted["seq"] < total]
            if shifted.empty:
                break
            shifted["time"] += k * span * interval_s
            n += 1
            write_part(path / part_name(n), shifted)
        k += 1
    return n


def _timed_report(path: Path) -> tuple[float, float, int]:
    """`vprof report` in process: wall s, CPU s, rows summarised."""
    wall, cpu = time.perf_counter(), time.process_time()
    rec = read_recording(path)
    rep = build_report(rec)
    del rep
    return time.perf_counter() - wall, time.process_time() - cpu, len(rec.summary.totals)


def _command(path: Path) -> tuple[float, float]:
    """`vprof report PATH` as a user runs it: wall s, CPU s (user + sys)."""
    before = os.times()
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vprof", "report", str(path)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    wall = time.perf_counter() - wall
    after = os.times()
    return wall, (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=50)
    ap.add_argument("--vcpus", type=int, default=2)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--interval", type=float, default=5.0, help="vprof record's default")
    ap.add_argument("--part-seconds", type=float, default=60.0)
    ap.add_argument("--written-hours", type=float, default=1.0)
    ap.add_argument(
        "--exit-timing", action="store_true", help="with handling histograms and slow exits"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vprof-bench-rec-"))
    try:
        host = SyntheticHost(
            vms=args.vms, vcpus=args.vcpus, interval_s=args.interval, exit_timing=args.exit_timing
        )
        written = min(args.hours, args.written_hours)
        wrote = _write(tmp / "r", host, int(written * 3600 / args.interval), args.part_seconds)
        own = sum(p.stat().st_size for p in (tmp / "r").iterdir())
        started = time.perf_counter()
        parts = _tile(tmp / "r", args.hours, args.interval)
        tiled = time.perf_counter() - started
        size = sum(p.stat().st_size for p in (tmp / "r").iterdir())
        print(
            f"recording: {args.vms} VMs x {args.vcpus} vCPUs, {args.hours:g} h at "
            f"{args.interval:g} s, {parts} parts of {args.part_seconds:g} s"
            + (", exit timing" if args.exit_timing else "")
        )
        print(f"  Recorder: {written:g} h in {wrote:.1f} s; the rest tiled in {tiled:.1f} s")
        print(f"  {size / 1e6:.1f} MB on disk")
        print(
            f"  bytes per VM-hour: {size / (args.vms * args.hours):,.0f} "
            f"(the Recorder's own {written:g} h: {own / (args.vms * written):,.0f}; "
            "goal < 1,000,000)"
        )
        wall, cpu, rows = _timed_report(tmp / "r")
        print(f"  read + report in process: {wall:.2f} s wall, {cpu:.2f} s CPU "
              f"({rows:,} summary rows; goal < 5 s)")  # fmt: skip
        wall, cpu = _command(tmp / "r")
        print(f"  `vprof report REC`: {wall:.2f} s wall, {cpu:.2f} s CPU (goal < 5 s)")
        print(f"  load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
