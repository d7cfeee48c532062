"""One vprof run for bench/overhead.py, in a process of its own.

    python bench/_vprof_child.py TREE [--stats]

Imports vprof from TREE (a checkout: this one, or an older commit's worktree
to compare against), attaches every family, prints "ready", takes a snapshot
per second as the daemon does until stdin closes, then prints one JSON line:
the snapshot thread's CPU seconds, the wall seconds and, with --stats, each
BPF program's (run_time_ns, run_cnt) over the run.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


def main() -> int:
    tree, stats = sys.argv[1], "--stats" in sys.argv[2:]
    sys.path.insert(0, tree)
    # By file, not by ImportError: the .venv's editable install would supply
    # a subpackage this checkout lacks from the other one.
    if (Path(tree) / "vprof" / "pipeline" / "profiler.py").is_file():
        from vprof.pipeline.profiler import Profiler, ProfilerConfig
    else:  # a checkout from before the layout of issue 11
        from vprof.profiler import Profiler, ProfilerConfig  # type: ignore[no-redef]

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
        print("ready", flush=True)
        sys.stdin.read()  # the parent closes stdin when the guest is done
        stop.set()
        worker.join()
        wall = time.monotonic() - t0
        last = prof.snapshot()
    before = {p.name: (p.run_time_ns, p.run_cnt) for p in first.progs}
    progs = {}
    for p in last.progs:
        ns0, cnt0 = before.get(p.name, (0, 0))
        if p.run_cnt > cnt0:
            progs[p.name] = (p.run_time_ns - ns0, p.run_cnt - cnt0)
    print(json.dumps({"agg_cpu_s": sum(cpu), "wall_s": wall, "progs": progs}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
