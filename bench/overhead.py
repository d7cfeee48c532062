"""vprof's overhead on a busy guest, side by side with `perf kvm stat record`.

    .venv/bin/python bench/overhead.py [--pairs 5] [--seconds 2] [--workloads pio,mmio]

For each exit-heavy micro-guest workload on 1 and 2 vCPUs it runs the guest
for a fixed time without any tracer, with vprof attached (every family, a
snapshot per second as the daemon takes them) and with `perf kvm stat record`,
rotating the order of the three in each round, and prints the median of the
per-round throughput ratios (traced / untraced).  Goals: ratio >= 0.97.
One untraced warm-up run per configuration is discarded.

Kernel BPF statistics (BPF_ENABLE_STATS) cost two clock reads per program
run, which production does not pay, so the ratio trials run without them.
One extra vprof trial per configuration switches them on (off again when it
ends) and gives each program's run time per event (goal: median < 100 ns);
its throughput is printed apart ("vprof+stats"), not used for the ratio.
The snapshot thread's CPU time gives the aggregator's cost per second of a
busy host (goal: < 2% of one core).  Needs root and /dev/kvm.
On a 2-core host the guest, the VMM threads and the tracers share the cores:
compare the columns of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vprof.guest.args import RUNNER_MODULE, GuestArgs, runner_argv
from vprof.model import ProgStat
from vprof.profiler import Profiler, ProfilerConfig

MODES = ("none", "vprof", "perf")


@dataclass
class VprofCost:
    prog_ns_per_event: dict[str, list[float]] = field(default_factory=dict)
    prog_events: dict[str, int] = field(default_factory=dict)
    events: int = 0
    bpf_ns: int = 0
    agg_cpu_s: float = 0.0
    wall_s: float = 0.0


def run_guest(workload: str, vcpus: int, seconds: float) -> float:
    """Iterations per second of one timed guest run."""
    args = GuestArgs(f"bench-oh-{workload}", vcpus, workload, None, seconds, "user", json=True)
    argv = [sys.executable, "-m", RUNNER_MODULE, *runner_argv(args)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60 + seconds)
    result = json.loads(out.stdout.splitlines()[-1])
    return float(result["total_ops"]) / float(result["seconds"])


def _prog_delta(
    before: tuple[ProgStat, ...], after: tuple[ProgStat, ...]
) -> dict[str, tuple[int, int]]:
    prev = {p.name: p for p in before}
    out = {}
    for p in after:
        b = prev.get(p.name)
        ns, cnt = p.run_time_ns - (b.run_time_ns if b else 0), p.run_cnt - (b.run_cnt if b else 0)
        if cnt > 0:
            out[p.name] = (ns, cnt)
    return out


def with_vprof(
    workload: str, vcpus: int, seconds: float, cost: VprofCost, stats: bool = False
) -> float:
    with Profiler(ProfilerConfig(bpf_stats=stats)) as prof:
        first = prof.snapshot()
        stop = threading.Event()
        cpu: list[float] = []

        def snap_loop() -> None:  # what `vprof daemon` does each interval
            while not stop.wait(1.0):
                t0 = time.thread_time()
                prof.snapshot()
                cpu.append(time.thread_time() - t0)

        worker = threading.Thread(target=snap_loop, daemon=True)
        t0 = time.monotonic()
        worker.start()
        rate = run_guest(workload, vcpus, seconds)
        stop.set()
        worker.join()
        cost.wall_s += time.monotonic() - t0
        cost.agg_cpu_s += sum(cpu)
        last = prof.snapshot()
    for name, (ns, cnt) in _prog_delta(first.progs, last.progs).items():
        cost.prog_ns_per_event.setdefault(name, []).append(ns / cnt)
        cost.prog_events[name] = cost.prog_events.get(name, 0) + cnt
        cost.events += cnt
        cost.bpf_ns += ns
    return rate


def with_perf(workload: str, vcpus: int, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        perf = subprocess.Popen(
            ["perf", "kvm", "stat", "record", "-a", "-o", os.path.join(tmp, "perf.data")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)  # perf opens its events before the guest starts
            if perf.poll() is not None:
                raise RuntimeError(f"perf kvm stat record exited with {perf.returncode}")
            return run_guest(workload, vcpus, seconds)
        finally:
            perf.send_signal(signal.SIGINT)
            try:
                perf.wait(30)
            except subprocess.TimeoutExpired:
                perf.terminate()
                perf.wait(10)


def measure(
    workload: str, vcpus: int, pairs: int, seconds: float, cost: VprofCost
) -> dict[str, list[float]]:
    ratios: dict[str, list[float]] = {"vprof": [], "perf": [], "base": [], "stats": []}
    run_guest(workload, vcpus, seconds)  # warm-up: page cache, CPU frequency, KVM
    for i in range(pairs):
        order = MODES[i % 3 :] + MODES[: i % 3]  # rotate: no mode always goes first
        rates = {}
        for mode in order:
            if mode == "none":
                rates[mode] = run_guest(workload, vcpus, seconds)
            elif mode == "vprof":
                rates[mode] = with_vprof(workload, vcpus, seconds, cost)
            else:
                rates[mode] = with_perf(workload, vcpus, seconds)
        ratios["base"].append(rates["none"])
        ratios["vprof"].append(rates["vprof"] / rates["none"])
        ratios["perf"].append(rates["perf"] / rates["none"])
    # BPF statistics from a trial of their own (they slow every program down).
    ratios["stats"].append(with_vprof(workload, vcpus, seconds, cost, stats=True))
    return ratios


def report(rows: list[tuple[str, int, dict[str, list[float]]]], cost: VprofCost) -> None:
    print(
        "| workload | vCPUs | untraced it/s (median) | vprof ratio | perf kvm stat ratio "
        "| vprof+stats it/s |"
    )
    print("|---|---|---|---|---|---|")
    for wl, vcpus, r in rows:
        print(
            f"| {wl} | {vcpus} | {statistics.median(r['base']):,.0f} "
            f"| {statistics.median(r['vprof']):.3f} | {statistics.median(r['perf']):.3f} "
            f"| {statistics.median(r['stats']):,.0f} |"
        )
    per_prog = {n: statistics.median(v) for n, v in cost.prog_ns_per_event.items()}
    print(f"\nBPF programs that ran: {len(per_prog)}, events: {cost.events:,}")
    print(f"BPF ns/event, median over programs: {statistics.median(per_prog.values()):.0f}")
    print(f"BPF ns/event, all events (weighted): {cost.bpf_ns / max(cost.events, 1):.0f}")
    for name, ns in sorted(per_prog.items(), key=lambda kv: -kv[1]):
        print(f"  {ns:8.0f} ns  {cost.prog_events[name]:>10,} events  {name}")
    pct = 100 * cost.agg_cpu_s / cost.wall_s if cost.wall_s else 0.0
    print(f"aggregator CPU: {pct:.2f}% of one core (snapshot every 1 s)")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pairs", type=int, default=5, help="rounds of (none, vprof, perf)")
    p.add_argument("--seconds", type=float, default=2.0, help="guest run time per trial")
    p.add_argument("--workloads", default="pio,mmio", help="comma-separated guest workloads")
    p.add_argument("--vcpus", default="1,2", help="comma-separated vCPU counts")
    a = p.parse_args()
    if a.pairs < 1 or a.seconds <= 0:
        p.error("--pairs must be >= 1 and --seconds > 0")
    if os.geteuid() != 0:
        p.error("needs root (BPF) and /dev/kvm")
    cost = VprofCost()
    rows = []
    for wl in a.workloads.split(","):
        for vcpus in (int(v) for v in a.vcpus.split(",")):
            rows.append((wl, vcpus, measure(wl, vcpus, a.pairs, a.seconds, cost)))
            print(f"done {wl} x{vcpus}", file=sys.stderr)
    report(rows, cost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
