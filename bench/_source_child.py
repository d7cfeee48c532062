"""Child of bench/perf_source.py: one snapshot source, driven over stdin.

    python bench/_source_child.py TREE bpf|perf

Prints "ready" once the source is open.  Each stdin line "snap" takes a
snapshot and answers {"pids": [...], "perf_counters": n}; "run" starts one
snapshot per second (as the daemon takes them); EOF stops and prints
{"cpu_s", "wall_s", "fds", "perf_counters", "threads"}: CPU time of the whole process after opening
(compiling BPF is start-up, not steady state) and the fds the source holds.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

sys.path.insert(0, sys.argv[1])

from vprof.sources.select import open_source


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> int:
    before = _fds()
    src, _ = open_source(sys.argv[2])
    stop = threading.Event()
    lock = threading.Lock()

    last: dict[str, int] = {}

    def take() -> dict[str, object]:
        snap = src.snapshot()
        last["perf_counters"] = snap.perf_counters
        last["threads"] = sum(len(v.vcpus) for v in snap.vms)
        return {"pids": [v.pid for v in snap.vms], **last}

    def loop() -> None:
        while not stop.wait(1.0):
            with lock:
                take()

    cpu0, wall0 = time.process_time(), time.monotonic()
    print("ready", flush=True)
    runner = threading.Thread(target=loop, daemon=True)
    for line in sys.stdin:
        if line.strip() == "snap":
            with lock:
                print(json.dumps(take()), flush=True)
        elif line.strip() == "run":
            cpu0, wall0 = time.process_time(), time.monotonic()
            runner.start()
    stop.set()
    if runner.is_alive():
        runner.join()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    cost = {"cpu_s": cpu, "wall_s": wall, "fds": _fds() - before, **last}
    src.close()
    print(json.dumps(cost), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
