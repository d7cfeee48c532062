"""vprof's cost, side by side with its peers, in one table per run.

    .venv/bin/python bench/overhead.py [--rounds 7] [--seconds 2] [--workloads pio,mmio]
        [--vcpus 1,2] [--startups 3] [--against /path/to/other/checkout] [--programs]

For each exit-heavy micro-guest workload on 1 and 2 vCPUs it runs the guest
for a fixed time without any tracer, with vprof attached (every family, a
snapshot per second as the daemon takes them), with `perf kvm stat record`
and with bcc's kvmexit (where it runs), rotating the order of the modes in
each round.  Each ratio (traced / untraced, same round) is the median over
the rounds with its interquartile range; "(!)" marks a figure whose spread is
wider than the effect it claims (the cost 1 - ratio, or the difference
between vprof and perf in the same rounds): run more rounds before believing
it.  perf's column shows the samples it recorded: zero means another BPF
program on the host hides the kvm events from perf (bench/peers.py), so its
ratio says nothing.  With --against, vprof from another checkout (e.g. `git
worktree add /tmp/old <commit>`) is one more mode of the same rounds.

vprof runs in a child process (bench/_vprof_child.py) that imports it from
its checkout.  Kernel BPF statistics (BPF_ENABLE_STATS) cost two clock reads
per program run, which production does not pay, so the ratio trials run
without them; one extra trial per configuration and checkout switches them
on for each program's run time per event, and one more runs the guest under
bench/_floor_child.py's trivial programs (empty, and one per-CPU array
increment, raw and classic): what any program costs on this host before its
body does anything, the floor under the ns/event goals.  The snapshot thread's CPU time
gives the aggregator's cost per second.  Then each checkout's `vprof daemon`
is started --startups times (seconds to /healthz 200, RSS/PSS once every family has loaded
and after --settle s of VM churn), sent SIGTERM as soon as it serves HTTP
while still compiling (seconds to exit), and its bench/scrape.py times a
scrape of 500 VMs x 8 vCPUs (bench/daemon_cost.py).  Needs root and
/dev/kvm.  Other work on this 2-core host moves every figure: compare the
columns of one run, not separate runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
TREE = BENCH.parent
sys.path.insert(0, str(TREE))
sys.path.insert(0, str(BENCH))

from budget import KVMEXIT, PERF, Config, VprofCost, per_program, report  # noqa: E402
from daemon_cost import DaemonCost, one_sigterm, one_start, scrape_ms  # noqa: E402
from peers import PeerUnavailable, with_kvmexit, with_perf  # noqa: E402

from vprof.guest.args import RUNNER_MODULE, GuestArgs, runner_argv  # noqa: E402

CHILD = BENCH / "_vprof_child.py"
FLOOR_CHILD = BENCH / "_floor_child.py"


def run_guest(workload: str, vcpus: int, seconds: float) -> tuple[float, int]:
    """(iterations per second, iterations) of one timed guest run."""
    args = GuestArgs(f"bench-oh-{workload}", vcpus, workload, None, seconds, "user", json=True)
    argv = [sys.executable, "-m", RUNNER_MODULE, *runner_argv(args)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60 + seconds)
    result = json.loads(out.stdout.splitlines()[-1])
    return float(result["total_ops"]) / float(result["seconds"]), int(result["total_ops"])


def with_vprof(*args: Any, **kw: Any) -> tuple[float, float]:
    """One trial; a vprof that fails to start (seen while other loaders ran
    on this host) gets one more try before the run gives up."""
    try:
        return _with_vprof(*args, **kw)
    except RuntimeError:
        time.sleep(1.0)
        return _with_vprof(*args, **kw)


def _with_vprof(
    tree: Path, guest: Callable[[], tuple[float, int]], cost: VprofCost, stats: bool
) -> tuple[float, float]:
    """(guest rate, aggregator CPU in % of a core) of one trial."""
    argv = [sys.executable, str(CHILD), str(tree), *(["--stats"] if stats else [])]
    rate, doc = _with_child(argv, guest)
    _add_progs(cost, doc)
    return rate, 100 * doc["agg_cpu_s"] / doc["wall_s"] if doc["wall_s"] else 0.0


def with_floor(guest: Callable[[], tuple[float, int]], cost: VprofCost) -> None:
    """One trial under bench/_floor_child.py's trivial programs (the host's floor)."""
    _add_progs(cost, _with_child([sys.executable, str(FLOOR_CHILD)], guest)[1])


def _add_progs(cost: VprofCost, doc: dict[str, Any]) -> None:
    for name, (ns, cnt) in doc["progs"].items():
        cost.prog_ns[name] = cost.prog_ns.get(name, 0) + ns
        cost.prog_events[name] = cost.prog_events.get(name, 0) + cnt


def _with_child(argv: list[str], guest: Callable[[], tuple[float, int]]) -> tuple[float, Any]:
    """(guest rate, the child's JSON line) of a guest run while the child is attached."""
    child = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{' '.join(argv[1:])} did not start (exit {child.wait()})")
        rate = guest()[0]
        child.stdin.close()
        doc = json.loads(child.stdout.readline())
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return rate, doc


def measure(cfg: Config, rounds: int, seconds: float, trees: dict[str, Path],
            costs: dict[str, VprofCost], off: dict[str, str],
            floor: VprofCost) -> None:  # fmt: skip
    def guest() -> tuple[float, int]:
        return run_guest(cfg.workload, cfg.vcpus, seconds)

    modes = ["none", *trees, PERF, KVMEXIT]
    guest()  # warm-up: page cache, CPU frequency, KVM
    for i in range(rounds):
        k = i % len(modes)
        rates: dict[str, float] = {}
        for mode in modes[k:] + modes[:k]:  # rotate: no mode always goes first
            if mode in off:
                continue
            try:
                if mode == "none":
                    rates[mode] = guest()[0]
                elif mode == PERF:
                    run = with_perf(guest)
                    rates[mode] = run.rate
                    cfg.perf_samples.append(run.samples)
                    cfg.perf_iterations.append(run.iterations)
                elif mode == KVMEXIT:
                    kx = with_kvmexit(guest)
                    rates[mode] = kx.rate
                    cfg.kvmexit_exits.append(kx.samples)
                else:
                    rates[mode], agg = with_vprof(trees[mode], guest, costs[mode], stats=False)
                    cfg.agg_pct.setdefault(mode, []).append(agg)
            except PeerUnavailable as e:
                off[mode] = str(e)
        cfg.untraced.append(rates["none"])
        for mode, rate in rates.items():
            if mode != "none":
                cfg.ratios.setdefault(mode, []).append(rate / rates["none"])
    # BPF statistics from trials of their own (they slow every program down).
    for mode in trees if cfg.vcpus % 2 else reversed(list(trees)):
        with_vprof(trees[mode], guest, costs[mode], stats=True)
    with_floor(guest, floor)


def daemon_costs(trees: dict[str, Path], startups: int, settle: float) -> dict[str, DaemonCost]:
    out = {m: DaemonCost() for m in trees}
    for i in range(startups):
        order = list(trees) if i % 2 == 0 else list(reversed(trees))
        for m in order:
            one_start(trees[m], out[m], settle)
            one_sigterm(trees[m], out[m])
    for m in trees:
        out[m].scrape_ms = scrape_ms(trees[m])
    return out


def programs_table(costs: dict[str, VprofCost]) -> list[str]:
    """Per program: run_time_ns / run_cnt over all its stats trials."""
    labels = list(costs)
    per = {m: per_program(c) for m, c in costs.items()}
    names = sorted({n for p in per.values() for n in p},
                   key=lambda n: -costs[labels[0]].prog_events.get(n, 0))  # fmt: skip
    out = ["| program | " + " | ".join(f"{m} events | {m} ns/event" for m in labels) + " |"]
    out.append("|---" * (1 + 2 * len(labels)) + "|")
    for n in names:
        cells = [f"{costs[m].prog_events.get(n, 0):,} | {per[m].get(n, 0):.0f}" for m in labels]
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", "--pairs", type=int, default=7, help="rounds of every mode")
    p.add_argument("--seconds", type=float, default=2.0, help="guest run time per trial")
    p.add_argument("--workloads", default="pio,mmio", help="comma-separated guest workloads")
    p.add_argument("--vcpus", default="1,2", help="comma-separated vCPU counts")
    p.add_argument("--startups", type=int, default=3, help="daemon start-ups per checkout")
    p.add_argument(
        "--settle", type=float, default=10.0, help="seconds of VM churn before steady-state memory"
    )
    p.add_argument("--against", type=Path, help="another vprof checkout to compare with")
    p.add_argument("--programs", action="store_true", help="also print ns/event per program")
    a = p.parse_args()
    if a.rounds < 1 or a.seconds <= 0 or a.startups < 0:
        p.error("--rounds must be >= 1, --seconds > 0, --startups >= 0")
    profilers = ("vprof/pipeline/profiler.py", "vprof/profiler.py")  # since and before issue 11
    if a.against is not None and not any((a.against / f).is_file() for f in profilers):
        p.error(f"--against {a.against}: not a vprof checkout")
    if os.geteuid() != 0:
        p.error("needs root (BPF) and /dev/kvm")
    trees = {"vprof": TREE, **({"against": a.against.resolve()} if a.against else {})}
    costs = {m: VprofCost() for m in trees}
    floor = VprofCost()  # bench/_floor_child.py's trivial programs
    off: dict[str, str] = {}  # peers that cannot run here, and why
    configs = []
    for wl in a.workloads.split(","):
        for vcpus in (int(v) for v in a.vcpus.split(",")):
            cfg = Config(wl, vcpus)
            measure(cfg, a.rounds, a.seconds, trees, costs, off, floor)
            configs.append(cfg)
            print(f"done {cfg.label}", file=sys.stderr)
    daemons = daemon_costs(trees, a.startups, a.settle)
    print("\n".join(report(configs, costs, daemons, off, floor)))
    if a.programs:
        print()
        print("\n".join(programs_table({**costs, "floor": floor})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
