"""Reading a whole BPF map per snapshot: vprof's chunked batch read against bcc's.

    .venv/bin/python bench/map_read.py [--entries 500] [--max-entries 16384] [--rounds 5]

bcc's items_lookup_batch allocates and zeroes key and value buffers for the
map's max_entries on every call (per-CPU maps: times the number of CPUs),
then builds a ctypes object per entry; vprof/bpf/_bcc.py reads CHUNK entries
at a time into buffers it keeps, as bytes.  Both read the same per-CPU hash
(the shape of vprof's events and exits maps), alternating in each round, and
the ratio is the median over rounds.  Needs root (BPF).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vprof.bpf import _bcc


def bcc_read(table: Any) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """What vprof did before: bcc's batch read, then bytes of each entry."""
    size = ctypes.sizeof(table.sLeaf)
    out = []
    for k, v in list(table.items_lookup_batch()):
        raw = _bcc._raw(v)
        vals = tuple(raw[i : i + size] for i in range(0, len(raw), size))
        out.append((_bcc._raw(k, table.Key), vals))
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--entries", type=int, default=500, help="entries in the map")
    p.add_argument("--max-entries", type=int, default=16384, help="the map's size")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reads", type=int, default=50, help="reads per round and reader")
    a = p.parse_args()
    bpf = _bcc.compile_text(f"BPF_PERCPU_HASH(ev, u64, u64, {a.max_entries});", ("ev",))
    table = bpf[b"ev"]
    for i in range(a.entries):
        table[table.Key(i)] = (table.sLeaf * table.total_cpu)(*([i] * table.total_cpu))
    if sorted(bcc_read(table)) != sorted(_bcc.dump_table(bpf, "ev")):
        print("the two reads differ", file=sys.stderr)
        return 1
    ms: dict[str, list[float]] = {"bcc": [], "vprof": []}
    for r in range(a.rounds):
        readers = [("bcc", lambda: bcc_read(table)), ("vprof", lambda: _bcc.dump_table(bpf, "ev"))]
        for name, read in readers if r % 2 == 0 else readers[::-1]:
            t0 = time.thread_time()
            for _ in range(a.reads):
                read()
            ms[name].append((time.thread_time() - t0) / a.reads * 1e3)
    ratios = [v / b for v, b in zip(ms["vprof"], ms["bcc"], strict=True)]
    print(f"per-CPU hash, {a.entries} of {a.max_entries} entries, {table.total_cpu} CPUs")
    print("| reader | CPU ms per read, median [min-max] |")
    print("| --- | --- |")
    for name, v in ms.items():
        print(f"| {name} | {statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}] |")
    print(f"vprof / bcc: {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
