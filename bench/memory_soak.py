"""The daemon's memory over a long VM churn, and what holds it.

    .venv/bin/python bench/memory_soak.py [--minutes 60] [--every 5] [--source auto]

Starts `vprof daemon` (every family, 1 s interval) from this checkout, then
starts a short micro-guest (pio, 1 vCPU, 0.3 s) every --every seconds, and
scrapes /metrics once a second as Prometheus would.  Once a minute it prints
the daemon's RSS and PSS (smaps_rollup); at the start and the end, what holds
them: each mapping of /proc/PID/smaps grouped as LLVM/clang (bcc's
compiler), other shared objects, the C heap and anonymous memory (Python's
heap, bcc's modules, map read buffers).  A measurement, not a test.  Needs
root and /dev/kvm.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from daemon_cost import _free_port, _healthy, _loaded, _stop, memory_mb  # noqa: E402


def _group(path: str) -> str:
    if re.search(r"lib(LLVM|clang)", path):
        return "LLVM and clang (bcc's compiler)"
    if "libbcc" in path:
        return "libbcc"
    if path == "[heap]":
        return "C heap ([heap])"
    if path.startswith("/") and (".so" in path or "python" in path):
        return "other shared objects and python"
    if not path or path.startswith("[anon") or path.startswith("[stack"):
        return "anonymous (mmap'd heaps, Python arenas)"
    return "other"


def holders(pid: int) -> dict[str, tuple[float, float]]:
    """Mapping group -> (RSS MB, PSS MB)."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    group = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            group = _group(head[5] if len(head) > 5 else "")
        elif head and head[0] in ("Rss:", "Pss:"):
            out[group][0 if head[0] == "Rss:" else 1] += int(head[1]) / 1024
    return {g: (v[0], v[1]) for g, v in sorted(out.items(), key=lambda kv: -kv[1][1])}


def _print_holders(pid: int, when: str) -> None:
    print(f"\nwhat holds the daemon's memory, {when}:")
    print("| mappings | RSS MB | PSS MB |\n| --- | --- | --- |")
    for g, (rss, pss) in holders(pid).items():
        print(f"| {g} | {rss:.1f} | {pss:.1f} |")


def _guest(n: int) -> None:
    from vprof.guest.args import RUNNER_MODULE, GuestArgs, runner_argv

    args = GuestArgs(f"soak-{n}", 1, "pio", None, 0.3, "user", json=True)
    argv = [sys.executable, "-m", RUNNER_MODULE, *runner_argv(args)]
    subprocess.run(argv, capture_output=True, check=True, timeout=60)


def _scraper(port: int, stop: threading.Event, errors: list[str]) -> None:
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                r.read()
        except OSError as e:
            errors.append(str(e))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--every", type=float, default=5.0, help="seconds between VM starts")
    p.add_argument("--source", default="auto", help="the daemon's --source")
    a = p.parse_args()
    port = _free_port()
    argv = [sys.executable, "-m", "vprof", "daemon", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        [*argv, "--interval", "1", "--source", a.source],
        cwd=BENCH.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    t0 = time.monotonic()
    while not _healthy(port):
        if proc.poll() is not None or time.monotonic() - t0 > 120:
            print("the daemon never became healthy", file=sys.stderr)
            return 1
        time.sleep(0.1)
    while not _loaded(port) and time.monotonic() - t0 < 120:
        time.sleep(0.1)
    _print_holders(proc.pid, "once every family has loaded")
    stop, errors = threading.Event(), []
    threading.Thread(target=_scraper, args=(port, stop, errors), daemon=True).start()
    print("\n| minute | VMs so far | RSS MB | PSS MB |\n| --- | --- | --- | --- |")
    n, end, next_min = 0, time.monotonic() + a.minutes * 60, 0.0
    try:
        while time.monotonic() < end and proc.poll() is None:
            started = time.monotonic()
            if started - t0 >= next_min * 60:
                rss, pss = memory_mb(proc.pid)
                print(f"| {next_min:.0f} | {n} | {rss:.1f} | {pss:.1f} |", flush=True)
                next_min += 1
            _guest(n)
            n += 1
            time.sleep(max(0.0, a.every - (time.monotonic() - started)))
        rss, pss = memory_mb(proc.pid)
        print(f"| end | {n} | {rss:.1f} | {pss:.1f} |")
        _print_holders(proc.pid, f"after {n} VM lifetimes")
    finally:
        stop.set()
        if proc.poll() is None:
            _stop(proc)
    print(f"\nscrape errors: {len(errors)}; daemon exit status {proc.returncode}")
    return 0 if proc.returncode == 0 and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
