"""What the samples of vprof's own tracepoint perf events cost a guest, side by side.

    .venv/bin/python bench/tp_samples.py [--rounds 9] [--seconds 2] [--workload pio] [--cpu 0]

bcc attaches each classic tracepoint program through a perf event on CPU 0
with sample_period 1; vprof's programs return 1 (other perf users must still
see each event), so with the event enabled every hit on CPU 0 also makes a
sample of vprof's own event, which no one reads.  vprof disables the event
after attaching (vprof/bpf/_bcc.py): the program still runs.  This attaches
every family once, then alternates, round by round, bcc's enabled events and
vprof's disabled ones (all of the process's perf events) while a micro-guest
pinned to --cpu runs for --seconds, and prints the guest's iterations/s
under each and their ratio (median and range over the rounds).  Pinned to CPU 0
the guest's events all take that path; on any other CPU none do.  Needs
root and /dev/kvm.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

TREE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TREE))

from vprof.bpf._bcc import sample_events  # noqa: E402
from vprof.guest.args import RUNNER_MODULE, GuestArgs, runner_argv  # noqa: E402
from vprof.pipeline.profiler import Profiler, ProfilerConfig  # noqa: E402


def perf_fds() -> list[int]:
    """This process's perf event descriptors: the classic tracepoint attachments."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[perf_event]":
                out.append(int(name))
        except OSError:
            continue
    return out


def guest(workload: str, cpu: int, seconds: float) -> float:
    args = GuestArgs(f"bench-samples-{workload}", 1, workload, None, seconds, "user", json=True)
    argv = ["taskset", "-c", str(cpu), sys.executable, "-m", RUNNER_MODULE, *runner_argv(args)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60 + seconds)
    result = json.loads(out.stdout.splitlines()[-1])
    return float(result["total_ops"]) / float(result["seconds"])


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--workload", default="pio")
    p.add_argument("--cpu", type=int, default=0, help="the CPU the guest is pinned to")
    a = p.parse_args()
    rates: dict[str, list[float]] = {"enabled (bcc)": [], "disabled (vprof)": []}
    enabled = dict(zip(rates, (True, False), strict=True))
    with Profiler(ProfilerConfig()) as prof:
        prof.snapshot()
        fds = perf_fds()
        guest(a.workload, a.cpu, 1.0)  # warm-up
        for r in range(a.rounds):
            for mode in list(rates) if r % 2 == 0 else list(rates)[::-1]:
                if not all(sample_events(fd, enabled[mode]) for fd in fds):
                    print("PERF_EVENT_IOC_ENABLE/DISABLE refused", file=sys.stderr)
                    return 1
                rates[mode].append(guest(a.workload, a.cpu, a.seconds))
    ratios = [b / a_ for a_, b in zip(*rates.values(), strict=True)]
    print(f"{a.workload} x1 pinned to CPU {a.cpu}, {len(fds)} perf events, {a.rounds} rounds")
    print("| vprof's perf events | guest iterations/s, median [min-max] |\n| --- | --- |")
    for mode, v in rates.items():
        print(f"| {mode} | {statistics.median(v):,.0f} [{min(v):,.0f}-{max(v):,.0f}] |")
    lo, hi = min(ratios), max(ratios)
    print(f"disabled / enabled: {statistics.median(ratios):.3f} [{lo:.3f}-{hi:.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
