"""Operation rates of the vprof micro-guest, per workload, vCPU count and mode.

    .venv/bin/python bench/guest_rates.py [--seconds 1.0] [--workloads pio,hlt]

Runs `python -m vprof.guest.runner` once per (workload, mode, vCPUs) for a
fixed duration and prints a markdown table of loop iterations per second
(one iteration = the operations listed by `vprof guest --help`, e.g. one OUT
and one IN for pio).  Rates on a 2-core host with 2 vCPUs include contention
with the VMM threads and anything else running: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vprof.guest.args import RUNNER_MODULE, GuestArgs, runner_argv
from vprof.guest.workloads import HARDWARE_ONLY, MODES, WORKLOADS


def measure(workload: str, mode: str, vcpus: int, seconds: float) -> dict[str, float]:
    args = GuestArgs(f"bench-{workload}", vcpus, workload, None, seconds, mode, json=True)
    argv = [sys.executable, "-m", RUNNER_MODULE, *runner_argv(args)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60 + seconds)
    result = json.loads(out.stdout.splitlines()[-1])
    per_vcpu = [v["ops"] / result["seconds"] for v in result["vcpus"]]
    return {"total": sum(per_vcpu), "min_vcpu": min(per_vcpu), "max_vcpu": max(per_vcpu)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=1.0, help="run time of each guest")
    default = ",".join(w for w in WORKLOADS if w not in HARDWARE_ONLY)
    p.add_argument(
        "--workloads", default=default, help="comma-separated (vmcall: SVM/VMX hosts only)"
    )
    ns = p.parse_args()
    print(f"guest iterations per second ({ns.seconds:g} s per run)\n")
    print("| workload | mode | vCPUs | total /s | per vCPU /s (min-max) |")
    print("|---|---|---:|---:|---:|")
    for workload in ns.workloads.split(","):
        for mode in MODES:
            for vcpus in (1, 2):
                r = measure(workload, mode, vcpus, ns.seconds)
                spread = f"{r['min_vcpu']:,.0f}-{r['max_vcpu']:,.0f}"
                print(f"| {workload} | {mode} | {vcpus} | {r['total']:,.0f} | {spread} |")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
