"""Scrape latency, series count and daemon memory with 500 VMs x 8 vCPUs.

Synthetic snapshots (no BPF): each VM has 8 vCPU threads with a full ledger,
~16 exit reasons with histograms, and a dozen I/O addresses, which is more
detail than a busy production VM shows.  A real `Daemon` (vprof/daemon/core.py)
serves them over HTTP on a loopback port; we time GET /metrics end to end.

    .venv/bin/python bench/scrape.py [--vms 500] [--vcpus 8] [--scrapes 20]

Goal (issue 6): < 50 ms per scrape and < 150 MB RSS at default granularity.
Run it in a fresh process: RSS includes the interpreter, prometheus_client
and the snapshots the daemon keeps (current, previous and the reload base).
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request
from dataclasses import replace

from vprof.daemon.config import DaemonConfig
from vprof.daemon.core import Daemon
from vprof.model import ProbeStatus, Snapshot
from vprof.sources.synthetic import synthetic_snapshot


class StaticSource:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def snapshot(self) -> Snapshot:
        return self.snap

    def status(self) -> tuple[ProbeStatus, ...]:
        return self.snap.probes

    def close(self) -> None:
        pass


def rss_mb() -> tuple[float, float]:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure(snap: Snapshot, granularity: str, scrapes: int) -> dict[str, float]:
    """Times of one Daemon serving `snap`: the per-interval render and GET /metrics."""
    cfg = DaemonConfig(listen="127.0.0.1:0", granularity=granularity)
    d = Daemon(cfg, lambda _cfg, _stopping: StaticSource(snap))
    d.start()
    assert d.server is not None
    url = f"http://127.0.0.1:{d.server.server_address[1]}/metrics"
    try:
        cold = _get(url, d, uncached=True)[0]  # rendered inside the scrape: the worst case
        t0 = time.perf_counter()
        d.tick()  # publishes and renders the snapshot, as every interval does
        tick_ms = (time.perf_counter() - t0) * 1000
        runs = [_get(url, d) for _ in range(scrapes)]
        gz = _get(url, d, gzip=True)
    finally:
        d.shutdown()
    times = [t for t, _ in runs]
    body = runs[-1][1]
    return {
        "series": sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#")),
        "bytes": len(body),
        "gzip_bytes": len(gz[1]),
        "cold_ms": cold,
        "tick_ms": tick_ms,
        "median_ms": statistics.median(times),
        "max_ms": max(times),
    }


def _get(url: str, d: Daemon, uncached: bool = False, gzip: bool = False) -> tuple[float, bytes]:
    if uncached:  # a new snapshot object the cache has not seen
        d.state = replace(d.state, snapshot=replace(d._source.snapshot()))  # type: ignore[union-attr]
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip else {})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    return (time.perf_counter() - t0) * 1000, body


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--vms", type=int, default=500)
    ap.add_argument("--vcpus", type=int, default=8)
    ap.add_argument("--scrapes", type=int, default=20)
    args = ap.parse_args()
    base_rss = rss_mb()[0]
    t0 = time.perf_counter()
    snap = synthetic_snapshot(args.vms, args.vcpus, exit_timing=False)
    build_s = time.perf_counter() - t0
    print(f"{args.vms} VMs x {args.vcpus} vCPUs; snapshot built in {build_s:.2f} s; "
          f"RSS before snapshots {base_rss:.0f} MB")  # fmt: skip
    print(f"{'granularity':<12}{'timing':<8}{'series':>8}{'MB':>7}{'gzip MB':>8}"
          f"{'render/interval ms':>20}{'uncached scrape ms':>20}"
          f"{'scrape ms (median/max)':>24}")  # fmt: skip
    _row("vm", snap, args.scrapes)
    rss_default = rss_mb()[1]
    timed = synthetic_snapshot(args.vms, args.vcpus, exit_timing=True)
    for granularity, s in [
        ("vm", timed),
        ("vcpu", snap),
        ("vcpu", timed),
        ("full", snap),
        ("full", timed),
    ]:
        _row(granularity, s, args.scrapes)
    rss, hwm = rss_mb()
    print(f"peak RSS after the default-granularity runs: {rss_default:.0f} MB; "
          f"after all runs: {hwm:.0f} MB (now {rss:.0f} MB)")  # fmt: skip
    print("goals: < 50 ms per scrape and < 150 MB RSS at granularity vm")


def _row(granularity: str, s: Snapshot, scrapes: int) -> None:
    m = measure(s, granularity, scrapes)
    print(f"{granularity:<12}{str(s.exit_timing).lower():<8}{m['series']:>8.0f}"
          f"{m['bytes'] / 1e6:>7.1f}{m['gzip_bytes'] / 1e6:>8.2f}{m['tick_ms']:>20.0f}"
          f"{m['cold_ms']:>20.0f}{m['median_ms']:>14.1f} / {m['max_ms']:<7.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
