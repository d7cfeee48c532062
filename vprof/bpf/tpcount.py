"""Count how often tracepoints fire, for `vprof doctor`: a short BPF attach.

Counting with perf_event_open would miss events: a classic tracepoint BPF
program that returns 0 (as other tools' probes may) hides the event from
every perf user.  A BPF program of our own runs beside theirs and sees
every hit.  Ours returns 1, so it hides nothing from anyone else.  The C is
a fixed text: one counter function per slot, made by a macro.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

SLOTS = 64

_C = (
    f"BPF_ARRAY(hits, u64, {SLOTS});\n"
    # bcc rewrites map calls only outside macros, so the macro calls a function.
    "static __always_inline void bump(u32 k) {"
    " u64 *v = hits.lookup(&k); if (v) __sync_fetch_and_add(v, 1); }\n"
    "#define COUNTER(n) int count_##n(void *ctx) { bump(n); return 1; }\n"
) + "".join(f"COUNTER({n})\n" for n in range(SLOTS))


def count(tracepoints: Sequence[str], seconds: float) -> dict[str, int | None]:
    """Hits of each "category:name" tracepoint over `seconds` (None: would not attach)."""
    from vprof.bpf import _bcc

    if len(tracepoints) > SLOTS:
        raise ValueError(f"at most {SLOTS} tracepoints at once")
    bpf: Any = _bcc.compile_text(_C)
    try:
        attached: dict[str, int] = {}
        out: dict[str, int | None] = {}
        for slot, tp in enumerate(tracepoints):
            try:
                bpf.attach_tracepoint(tp=tp.encode(), fn_name=f"count_{slot}".encode())
                attached[tp] = slot
            except Exception:  # bcc raises bare Exception for a missing tracepoint
                out[tp] = None
        time.sleep(seconds)
        table = bpf.get_table(b"hits")
        for tp, slot in attached.items():
            out[tp] = int(table[table.Key(slot)].value)
        return out
    finally:
        bpf.cleanup()
