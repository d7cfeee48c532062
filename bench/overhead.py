"""vprof's overhead on a busy guest, side by side with `perf kvm stat record`.

    .venv/bin/python bench/overhead.py [--pairs 5] [--seconds 2] [--workloads pio,mmio]
        [--against /path/to/other/checkout]

For each exit-heavy micro-guest workload on 1 and 2 vCPUs it runs the guest
for a fixed time without any tracer, with vprof attached (every family, a
snapshot per second as the daemon takes them) and with `perf kvm stat record`,
rotating the order of the modes in each round, and prints the median of the
per-round throughput ratios (traced / untraced).  Goals: ratio >= 0.97.
One untraced warm-up run per configuration is discarded.  With --against,
vprof from another checkout (e.g. `git worktree add /tmp/old <commit>`) is a
fourth mode in the same rounds, so old and new are compared under the same
load rather than in runs minutes apart.

vprof runs in a child process (bench/_vprof_child.py) that imports it from
its checkout.  Kernel BPF statistics (BPF_ENABLE_STATS) cost two clock reads
per program run, which production does not pay, so the ratio trials run
without them; one extra trial per configuration and checkout switches them
on (off again when it ends) for each program's run time per event (goal:
median < 100 ns).  The snapshot thread's CPU time gives the aggregator's cost
per second of a busy host (goal: < 2% of one core).  Needs root and /dev/kvm.
On a 2-core host the guest, the VMM threads and the tracers share the cores
with whatever else runs: compare the columns of one run, not separate runs.
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
import time
from dataclasses import dataclass, field
from pathlib import Path

TREE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TREE))

from vprof.guest.args import RUNNER_MODULE, GuestArgs, runner_argv  # noqa: E402

CHILD = Path(__file__).resolve().parent / "_vprof_child.py"


@dataclass
class VprofCost:
    prog_ns: dict[str, int] = field(default_factory=dict)
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


def with_vprof(
    tree: Path, workload: str, vcpus: int, seconds: float, cost: VprofCost, stats: bool = False
) -> float:
    argv = [sys.executable, str(CHILD), str(tree), *(["--stats"] if stats else [])]
    child = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"vprof from {tree} did not start (exit {child.wait()})")
        rate = run_guest(workload, vcpus, seconds)
        child.stdin.close()
        doc = json.loads(child.stdout.readline())
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    cost.wall_s += doc["wall_s"]
    cost.agg_cpu_s += doc["agg_cpu_s"]
    for name, (ns, cnt) in doc["progs"].items():
        cost.prog_ns[name] = cost.prog_ns.get(name, 0) + ns
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
    workload: str,
    vcpus: int,
    pairs: int,
    seconds: float,
    trees: dict[str, Path],
    costs: dict[str, VprofCost],
) -> dict[str, list[float]]:
    modes = ["none", *trees, "perf"]
    ratios: dict[str, list[float]] = {m: [] for m in modes}
    run_guest(workload, vcpus, seconds)  # warm-up: page cache, CPU frequency, KVM
    for i in range(pairs):
        k = i % len(modes)
        rates = {}
        for mode in modes[k:] + modes[:k]:  # rotate: no mode always goes first
            if mode == "none":
                rates[mode] = run_guest(workload, vcpus, seconds)
            elif mode == "perf":
                rates[mode] = with_perf(workload, vcpus, seconds)
            else:
                rates[mode] = with_vprof(trees[mode], workload, vcpus, seconds, costs[mode])
        ratios["none"].append(rates["none"])
        for mode in modes[1:]:
            ratios[mode].append(rates[mode] / rates["none"])
    # BPF statistics from trials of their own (they slow every program down).
    for mode in trees if vcpus % 2 else reversed(list(trees)):
        with_vprof(trees[mode], workload, vcpus, seconds, costs[mode], stats=True)
    return ratios


def _md(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def report(
    rows: list[tuple[str, int, dict[str, list[float]]]], costs: dict[str, VprofCost]
) -> None:
    labels = list(costs)
    print(
        _md(
            [
                "workload",
                "vCPUs",
                "untraced it/s",
                *[f"{m} ratio" for m in labels],
                "perf kvm stat ratio",
            ]
        )
    )
    print(_md(["---"] * (4 + len(labels))))
    for wl, vcpus, r in rows:
        cells = [wl, str(vcpus), f"{statistics.median(r['none']):,.0f}"]
        cells += [f"{statistics.median(r[m]):.3f}" for m in [*labels, "perf"]]
        print(_md(cells))
    # Per program: run_time_ns / run_cnt over all its stats trials, so a trial
    # where it ran twice (cold caches) weighs as little as its two events.
    per_prog = {
        m: {n: ns / c.prog_events[n] for n, ns in c.prog_ns.items()} for m, c in costs.items()
    }
    print()
    print(_md(["BPF ns/event", *labels]))
    print(_md(["---"] * (1 + len(labels))))
    print(
        _md(
            [
                "median over programs",
                *[f"{statistics.median(per_prog[m].values()):.0f}" for m in labels],
            ]
        )
    )
    print(
        _md(
            [
                "all events (weighted)",
                *[f"{c.bpf_ns / max(c.events, 1):.0f}" for c in costs.values()],
            ]
        )
    )
    print(_md(["events", *[f"{c.events:,}" for c in costs.values()]]))
    pct = [100 * c.agg_cpu_s / c.wall_s if c.wall_s else 0.0 for c in costs.values()]
    print(_md(["aggregator CPU, % of a core", *[f"{p:.2f}" for p in pct]]))
    names = sorted(
        {n for p in per_prog.values() for n in p},
        key=lambda n: -costs[labels[0]].prog_events.get(n, 0),
    )
    print()
    print(_md(["program", *[f"{m} events" for m in labels], *[f"{m} ns/event" for m in labels]]))
    print(_md(["---"] * (1 + 2 * len(labels))))
    for n in names:
        evs = [f"{costs[m].prog_events.get(n, 0):,}" for m in labels]
        ns = [f"{per_prog[m][n]:.0f}" if n in per_prog[m] else "-" for m in labels]
        print(_md([n, *evs, *ns]))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pairs", type=int, default=5, help="rounds of every mode")
    p.add_argument("--seconds", type=float, default=2.0, help="guest run time per trial")
    p.add_argument("--workloads", default="pio,mmio", help="comma-separated guest workloads")
    p.add_argument("--vcpus", default="1,2", help="comma-separated vCPU counts")
    p.add_argument("--against", type=Path, help="another vprof checkout to compare with")
    a = p.parse_args()
    if a.pairs < 1 or a.seconds <= 0:
        p.error("--pairs must be >= 1 and --seconds > 0")
    if a.against is not None and not (a.against / "vprof" / "profiler.py").is_file():
        p.error(f"--against {a.against}: not a vprof checkout")
    if os.geteuid() != 0:
        p.error("needs root (BPF) and /dev/kvm")
    trees = {"vprof": TREE, **({"against": a.against.resolve()} if a.against else {})}
    costs = {m: VprofCost() for m in trees}
    rows = []
    for wl in a.workloads.split(","):
        for vcpus in (int(v) for v in a.vcpus.split(",")):
            rows.append((wl, vcpus, measure(wl, vcpus, a.pairs, a.seconds, trees, costs)))
            print(f"done {wl} x{vcpus}", file=sys.stderr)
    report(rows, costs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
