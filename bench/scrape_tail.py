"""wrk's p99 on /metrics with and without the GC policy (vprof/daemon/gcpolicy.py).

The set-up of tests/test_reliability_load.py: a Daemon in a fresh process
polls vprof/sources/synthetic.py (500 VMs x 8 vCPUs) every second while wrk
(2 threads x 4 connections, gzip, 2 s timeout) scrapes it over loopback.
Each mode runs `--rounds` times, alternating, so both see the same load.

    .venv/bin/python bench/scrape_tail.py [--rounds 3] [--seconds 8]

Goal (issue 15): p99 < 100 ms.  Prints p50/p99 per run and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(out: str, pct: str) -> float:
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    assert m, out
    return float(m.group(1)) * UNITS[m.group(2)]


def child(mode: str, seconds: int) -> None:
    from vprof.daemon.config import DaemonConfig
    from vprof.daemon.core import Daemon
    from vprof.sources.synthetic import SyntheticSource

    source = SyntheticSource(500, 8)
    d = Daemon(DaemonConfig(listen="127.0.0.1:0", interval=1.0), lambda _c, _s: source)
    d.gc.enabled = mode == "on"
    if mode == "nogc":  # the bound: no cyclic GC at all
        import gc

        gc.disable()
    d.start()
    d.tick()
    threading.Thread(target=d.run, daemon=True).start()
    assert d.server is not None
    url = f"http://127.0.0.1:{d.server.server_address[1]}/metrics"
    out = subprocess.run(
        ["wrk", "-t2", "-c4", f"-d{seconds}s", "--timeout", "2s", "--latency",
         "-H", "Accept-Encoding: gzip", url],
        capture_output=True, text=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    d.request_stop()
    reqs = re.search(r"(\d+) requests in", out)
    errors = "Socket errors" in out or "Non-2xx" in out
    doc = {"p50": _ms(out, "50"), "p99": _ms(out, "99"), "requests": reqs and int(reqs[1])}
    print(json.dumps({**doc, "errors": errors, "snapshots": source.taken}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--child", choices=["on", "off", "nogc"], help=argparse.SUPPRESS)
    ap.add_argument("--modes", default="off,on", help="of off, on, nogc (no GC at all)")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.seconds)
        return
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in a.modes.split(",")}
    for r in range(a.rounds):
        for mode in runs:
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--seconds", str(a.seconds)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            runs[mode].append(json.loads(out))
            load = os.getloadavg()[0]
            print(f"round {r + 1} gc policy {mode:3}: {runs[mode][-1]}  load {load:.1f}")
    for mode, rs in runs.items():
        p50 = statistics.median(x["p50"] for x in rs)
        p99 = statistics.median(x["p99"] for x in rs)
        print(f"gc policy {mode:3}: median p50 {p50:.1f} ms, median p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
