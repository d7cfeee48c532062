"""The perf source beside the BPF source, on the same workload, in the same rounds.

    .venv/bin/python bench/perf_source.py [--rounds 5] [--seconds 2] [--workloads pio,mmio]
                                          [--side-by-side]

For each workload on 1 and 2 vCPUs, each round runs the micro-guest for a
fixed time untraced, under the BPF source and under the perf source, in a
rotating order, and prints per mode the median over rounds of: the guest's
throughput as a ratio of untraced, the source process's CPU (% of one core,
steady state: one snapshot per second, start-up excluded) and the file
descriptors it holds (the perf source: one per counter per vCPU thread, plus
the KVM stats fds it duplicates).  The guest waits (`--hold`) until the
source counts it, so every mode measures the same work.  Needs root, bcc and
/dev/kvm.  Compare the columns of one run, not separate runs: the 2-core
test host is shared.  `--side-by-side` adds a fourth mode to the rotation:
both sources open at once on the same guest run (rows "bpf (beside perf)"
and "perf (beside bpf)": the guest ratio under both, each source's own CPU
and fds), as the BPF source hides no event from perf counters.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TREE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TREE))

from vprof.guest.args import RUNNER_MODULE, GuestArgs, runner_argv  # noqa: E402

CHILD = Path(__file__).resolve().parent / "_source_child.py"
MODES = ("untraced", "bpf", "perf")
# (mode, source) of each row; "both": the guest ratio with the two sources
# open at once, and each one's own CPU and fds in that run.
ROWS = (("bpf", "bpf"), ("perf", "perf"), ("both", "bpf"), ("both", "perf"))


def _guest(workload: str, vcpus: int, seconds: float) -> subprocess.Popen[str]:
    args = GuestArgs(
        f"bench-ps-{workload}", vcpus, workload, None, seconds, "user", json=True, hold=True,
        keep_stats_fds=True,
    )  # fmt: skip
    argv = [sys.executable, "-m", RUNNER_MODULE, *runner_argv(args)]
    g = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert g.stdout is not None
    json.loads(g.stdout.readline())  # ready: its vCPU threads exist
    return g


def _rate(g: subprocess.Popen[str]) -> float:
    assert g.stdout is not None
    result = json.loads(g.stdout.read().splitlines()[-1])
    g.wait(30)
    return float(result["total_ops"]) / float(result["seconds"])


def _child(kind: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(TREE), kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the {kind} source did not start (exit {child.wait()})")
    return child


def _ask(child: subprocess.Popen[str], line: str) -> None:
    assert child.stdin is not None
    child.stdin.write(line + "\n")
    child.stdin.flush()


def _counts(child: subprocess.Popen[str], pid: int) -> bool:
    assert child.stdout is not None
    _ask(child, "snap")
    return pid in json.loads(child.stdout.readline())["pids"]


def _cost(child: subprocess.Popen[str]) -> dict[str, float]:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    cost = json.loads(child.stdout.readline())
    child.wait(30)
    per_thread = cost["perf_counters"] / cost["threads"] if cost["threads"] else 0.0
    cpu = 100 * cost["cpu_s"] / cost["wall_s"]
    return {"cpu_pct": cpu, "fds": cost["fds"], "per_thread": per_thread,
            "threads": cost["threads"]}  # fmt: skip


def one(mode: str, workload: str, vcpus: int, seconds: float) -> dict[str, Any]:
    """One guest run: its rate, and the cost of each source of `mode` (both:
    the BPF and perf sources open at once, counting the same run)."""
    kinds = {"untraced": (), "both": ("bpf", "perf")}.get(mode, (mode,))
    children = {k: _child(k) for k in kinds}
    g = _guest(workload, vcpus, seconds)
    deadline = time.monotonic() + 10
    waiting = set(kinds)
    while waiting and time.monotonic() < deadline:  # until every source counts the guest
        waiting = {k for k in waiting if not _counts(children[k], g.pid)}
        time.sleep(0.05)
    for child in children.values():
        _ask(child, "run")
    g.send_signal(signal.SIGUSR2)
    rate = _rate(g)
    return {"rate": rate, **{k: _cost(c) for k, c in children.items()}}


Runs = dict[str, list[dict[str, Any]]]


def measure(workload: str, vcpus: int, rounds: int, seconds: float, modes: tuple[str, ...]) -> Runs:
    out: Runs = {m: [] for m in modes}
    one("untraced", workload, vcpus, seconds)  # warm-up, discarded
    for r in range(rounds):
        k = r % len(modes)
        for mode in modes[k:] + modes[:k]:
            out[mode].append(one(mode, workload, vcpus, seconds))
    return out


def report(workload: str, vcpus: int, runs: Runs) -> list[str]:
    rows = []
    base = runs["untraced"]
    for mode, kind in ROWS:
        if mode not in runs:
            continue
        ratios = [m["rate"] / b["rate"] for m, b in zip(runs[mode], base, strict=True)]
        costs = [m[kind] for m in runs[mode]]
        cpu = statistics.median(c["cpu_pct"] for c in costs)
        fds = statistics.median(c["fds"] for c in costs)
        threads = statistics.median(c["threads"] for c in costs)
        per = statistics.median(c["per_thread"] for c in costs)
        per_text = f"{per:.0f}" if kind == "perf" else "-"
        label = kind if mode == kind else f"{kind} (beside {'perf' if kind == 'bpf' else 'bpf'})"
        rows.append(
            f"| {workload} | {vcpus} | {label} | {statistics.median(ratios):.3f} | "
            f"{cpu:.2f} | {fds:.0f} | {threads:.0f} | {per_text} |"
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--workloads", default="pio,mmio")
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="also a mode with both sources open at once, counting the same guest run",
    )
    a = p.parse_args()
    modes = MODES + (("both",) if a.side_by_side else ())
    lines = [
        "| workload | vCPUs | source | guest ratio | source CPU % of a core | fds held "
        "| vCPU threads on the host | perf fds per vCPU thread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workload in a.workloads.split(","):
        for vcpus in (1, 2):
            rows = report(workload, vcpus, measure(workload, vcpus, a.rounds, a.seconds, modes))
            lines += rows
            print(*rows, sep="\n", file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
