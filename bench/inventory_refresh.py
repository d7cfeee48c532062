"""Measure what an inventory refresh costs on this host, side by side.

    python -m bench.inventory_refresh               # the host as it is
    python -m bench.inventory_refresh --spawn 1000  # plus 1000 idle processes, 20 fds each

Prints the median refresh time with a full scan every refresh and with the
default (processes whose descriptor count did not change are skipped), and
how many processes each one re-reads.  Not a test: figures depend on the host.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from vprof.inventory.inventory import Inventory

_IDLE = (
    "import os, time\n"
    "fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(20)]\n"
    "time.sleep(3600)"
)


def measure(inv: Inventory, rounds: int) -> tuple[float, float]:
    """(median seconds per refresh, processes re-read per refresh) after a warm-up."""
    inv.refresh()
    reads = 0
    scan = inv._fs.scan_fds

    def counting(pid: int) -> object:
        nonlocal reads
        reads += 1
        return scan(pid)

    inv._fs.scan_fds = counting  # type: ignore[method-assign,assignment]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        inv.refresh()
        times.append(time.perf_counter() - start)
    inv._fs.scan_fds = scan  # type: ignore[method-assign]
    return statistics.median(times), reads / rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawn", type=int, default=0, help="idle processes to add first")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--proc-root", default="/proc")
    args = parser.parse_args(argv)
    idle = [
        subprocess.Popen([sys.executable, "-c", _IDLE], stdin=subprocess.DEVNULL)
        for _ in range(args.spawn)
    ]
    try:
        time.sleep(1.0 + args.spawn / 200)  # let them open their descriptors
        full_s, full_reads = measure(Inventory(args.proc_root, full_rescan_s=0.0), args.rounds)
        fast_s, fast_reads = measure(Inventory(args.proc_root), args.rounds)
        procs = len(Inventory(args.proc_root)._fs.pids())
        print(f"processes: {procs}")
        print(f"full scan every refresh: {full_s * 1e3:7.1f} ms, {full_reads:6.0f} re-read")
        print(f"default refresh:         {fast_s * 1e3:7.1f} ms, {fast_reads:6.0f} re-read")
        print(f"ratio: {full_s / fast_s:.1f}x")
    finally:
        for p in idle:
            p.kill()
        for p in idle:
            p.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
