"""The host's floor for BPF ns/event, for bench/overhead.py.

    python bench/_floor_child.py

Attaches, with bcc, programs that do (almost) nothing to the tracepoints on
which vprof's hottest programs run: an empty one and one that adds 1 to a
per-CPU array slot (ebpf_exporter's "simple counter"), each as a raw
tracepoint (kvm_pio, kvm_mmio) and as a classic one (the KVM_RUN ioctl's
sys_enter and sys_exit).  With kernel BPF statistics on, prints "ready",
waits until stdin closes, then prints one JSON line: each program's
(run_time_ns, run_cnt) over the run.  What they cost is what any program
costs here before its body does anything: the dispatch, and the two clock
reads the statistics themselves add.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vprof.bpf.loader import disable_bpf_stats, enable_bpf_stats, prog_stats

# name -> (attach kind, tracepoint, body).  Names are what the table prints.
PROGRAMS = {
    "empty raw kvm_pio": ("raw", "kvm_pio", "return 0;"),
    "empty classic sys_enter_ioctl": ("tp", "syscalls:sys_enter_ioctl", "return 1;"),
    "array += 1 raw kvm_mmio": ("raw", "kvm_mmio", "BUMP return 0;"),
    "array += 1 classic sys_exit_ioctl": ("tp", "syscalls:sys_exit_ioctl", "BUMP return 1;"),
}
BUMP = "int k = 0; u64 *v = floor_count.lookup(&k); if (v) *v += 1;"


def _source() -> tuple[str, dict[str, str]]:
    parts, fns = ["BPF_PERCPU_ARRAY(floor_count, u64, 1);"], {}
    for i, (name, (kind, _tp, body)) in enumerate(PROGRAMS.items()):
        fn = f"floor_{i}"
        fns[name] = fn
        ctx = "struct bpf_raw_tracepoint_args *ctx" if kind == "raw" else "void *ctx"
        parts.append(f"int {fn}({ctx}) {{ {body.replace('BUMP', BUMP)} }}")
    return "\n".join(parts), fns


def main() -> int:
    from bcc import BPF

    text, fns = _source()
    b = BPF(text=text)
    fds = {}
    for name, (kind, tp, _) in PROGRAMS.items():
        if kind == "raw":
            b.attach_raw_tracepoint(tp=tp, fn_name=fns[name])
        else:
            b.attach_tracepoint(tp=tp, fn_name=fns[name])
        kind_id = BPF.RAW_TRACEPOINT if kind == "raw" else BPF.TRACEPOINT
        fds[name] = b.load_func(fns[name], kind_id).fd  # bcc's cached load
    stats = enable_bpf_stats()
    if stats is None:
        print("BPF_ENABLE_STATS failed", file=sys.stderr)
        return 1
    try:
        before = {n: prog_stats(fd) for n, fd in fds.items()}
        print("ready", flush=True)
        sys.stdin.read()  # the parent closes stdin when the guest is done
        after = {n: prog_stats(fd) for n, fd in fds.items()}
    finally:
        disable_bpf_stats(stats)
    progs = {n: (after[n][0] - before[n][0], after[n][1] - before[n][1]) for n in fds}
    print(json.dumps({"progs": progs}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
