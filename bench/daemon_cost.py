"""What `vprof daemon` of one checkout costs outside the guest's exits.

- start-up: seconds from exec until GET /healthz answers 200;
- SIGTERM during start-up: sent once /healthz first answers (the families
  still compiling), seconds until the process is gone;
- memory: RSS and PSS (/proc/PID/smaps_rollup) once every family has loaded and after
  `settle` seconds more of VM churn: one short micro-guest after another,
  each a new VM process the daemon names, counts and forgets;
- scrape: the checkout's own bench/scrape.py at 500 VMs x 8 vCPUs (median
  GET /metrics at granularity vm), in a process of its own.

Each checkout's daemon runs from that checkout (PYTHONPATH), with every
family, a 1 s interval and its default source (`--source auto` here), on a
loopback port of its own; `source` records what /healthz said it served once
healthy, and why.

Run alone, it times start-up and a SIGTERM at a fixed instant for each source
of this checkout, in alternation (no VM churn, no scrape):

    sudo .venv/bin/python bench/daemon_cost.py --runs 5 --sources auto,bpf --at 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DaemonCost:
    startup_s: list[float] = field(default_factory=list)
    sigterm_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)  # once every family has loaded
    pss_mb: list[float] = field(default_factory=list)
    steady_rss_mb: list[float] = field(default_factory=list)
    steady_pss_mb: list[float] = field(default_factory=list)
    scrape_ms: float | None = None
    source: set[str] = field(default_factory=set)  # "bpf: auto: ..." from /healthz
    errors: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(tree: Path, port: int, source: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", "vprof", "daemon", "--listen", f"127.0.0.1:{port}"]
    return subprocess.Popen(
        [*argv, "--interval", "1", *(("--source", source) if source else ())],
        cwd=tree,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _healthy(port: int) -> str | None:
    """The source /healthz names with its reason, once it says ok."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            doc = json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if doc.get("status") != "ok":
        return None
    return f"{doc.get('source', '?')}: {doc.get('source_why', '')}"


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB from smaps_rollup."""
    vals = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("Rss:", "Pss:"):
            vals[parts[0]] = int(parts[1]) / 1024
    return vals["Rss:"], vals["Pss:"]


def _stop(proc: subprocess.Popen[bytes]) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - t0


def churn(seconds: float) -> int:
    """New VMs, one after another, for `seconds`; how many ran."""
    from vprof.guest.args import RUNNER_MODULE, GuestArgs, runner_argv

    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        args = GuestArgs(f"bench-churn-{n}", 1, "pio", None, 0.3, "user", json=True)
        argv = [sys.executable, "-m", RUNNER_MODULE, *runner_argv(args)]
        subprocess.run(argv, capture_output=True, check=True, timeout=60)
        n += 1
    return n


def one_start(tree: Path, cost: DaemonCost, settle: float, source: str | None = None) -> None:
    port = _free_port()
    t0 = time.monotonic()
    proc = _spawn(tree, port, source)
    try:
        while (source := _healthy(port)) is None:
            if proc.poll() is not None or time.monotonic() - t0 > 120:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                cost.errors.append(f"daemon never healthy: {err.strip()[-200:]}")
                return
            time.sleep(0.02)
        cost.startup_s.append(time.monotonic() - t0)
        cost.source.add(source)
        # Healthy comes with the first family; memory is measured once every
        # family has compiled (bcc's compiler at its largest is not the steady state).
        while not _loaded(port) and proc.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.1)
        rss, pss = memory_mb(proc.pid)
        cost.rss_mb.append(rss)
        cost.pss_mb.append(pss)
        churn(settle)
        rss, pss = memory_mb(proc.pid)
        cost.steady_rss_mb.append(rss)
        cost.steady_pss_mb.append(pss)
    finally:
        if proc.poll() is None:
            _stop(proc)


def _loaded(port: int) -> bool:
    """True once /healthz lists no probe family still loading."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return not json.load(r).get("probes_loading")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except urllib.error.HTTPError:  # 503: serving, not healthy yet
        return True
    except (urllib.error.URLError, OSError):
        return False


def one_sigterm(
    tree: Path, cost: DaemonCost, source: str | None = None, at: float | None = None
) -> None:
    """SIGTERM as soon as the daemon serves HTTP (its handlers are in place,
    the families compile), not at a fixed delay that may fall in Python's
    own start-up, where the default action kills it; or `at` s after exec."""
    port = _free_port()
    proc = _spawn(tree, port, source)
    t0 = time.monotonic()
    if at is not None:
        time.sleep(at)
    while at is None and not _answers(port) and proc.poll() is None and time.monotonic() - t0 < 60:
        time.sleep(0.01)
    if proc.poll() is not None:
        cost.errors.append(f"daemon exited before SIGTERM ({proc.returncode})")
        return
    cost.sigterm_s.append(_stop(proc))
    if proc.returncode != 0:
        cost.errors.append(f"exit status {proc.returncode} after SIGTERM during start-up")


def scrape_ms(tree: Path) -> float | None:
    """Median scrape at granularity vm from the checkout's bench/scrape.py."""
    script = tree / "bench" / "scrape.py"
    if not script.is_file():
        return None
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(script), "--scrapes", "10"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    for line in out.splitlines():
        cells = line.split()
        # granularity timing series MB gzip render uncached median / max
        if cells[:2] == ["vm", "false"] and len(cells) >= 8:
            return float(cells[7])
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="start-ups and SIGTERMs per source")
    p.add_argument("--sources", default="auto,bpf", help="comma-separated --source values")
    p.add_argument("--at", type=float, default=0.5, help="seconds after exec to send SIGTERM")
    p.add_argument("--tree", type=Path, help="the checkout whose daemon runs [default: this one]")
    a = p.parse_args()
    tree = (a.tree or Path(__file__).parents[1]).resolve()
    sources = a.sources.split(",")
    costs = {s: DaemonCost() for s in sources}
    for i in range(a.runs):
        for s in sources if i % 2 == 0 else reversed(sources):
            one_start(tree, costs[s], 0.0, s)
            one_sigterm(tree, costs[s], s, a.at)
    print(f"| --source | start-up to /healthz 200, s | SIGTERM at +{a.at} s to exit, s | served |")
    print("| --- | --- | --- | --- |")
    for s, c in costs.items():
        cells = [
            f"median {statistics.median(v):.2f} (" + " ".join(f"{x:.2f}" for x in v) + ")"
            if v
            else "-"
            for v in (c.startup_s, c.sigterm_s)
        ]
        print(f"| {s} | {cells[0]} | {cells[1]} | {'; '.join(sorted(c.source))} |")
        for e in c.errors:
            print(f"{s}: {e}")


if __name__ == "__main__":
    main()
