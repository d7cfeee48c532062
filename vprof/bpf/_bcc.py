"""The one untyped boundary to bcc (excluded from mypy; see pyproject.toml).

Everything bcc returns is turned into plain bytes and ints here.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def compile_text(text: str) -> Any:
    """Compile and load `text`; bcc attaches every TRACEPOINT_PROBE itself."""
    from bcc import BPF  # the only bcc import in vprof

    return BPF(text=text.encode())


def _raw(obj: Any, kind: Any = None) -> bytes:
    if isinstance(obj, int):  # batch lookups give plain ints for integer types
        obj = kind(obj)
    return ctypes.string_at(ctypes.addressof(obj), ctypes.sizeof(obj))


def dump_table(bpf: Any, name: str) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """All entries of map `name` as (key bytes, per-CPU value bytes)."""
    table = bpf.get_table(name.encode())
    percpu = hasattr(table, "total_cpu")
    out: list[tuple[bytes, tuple[bytes, ...]]] = []
    for key, value in _entries(table):
        if percpu:
            size = ctypes.sizeof(table.sLeaf)
            raw = _raw(value)
            vals = tuple(raw[i * size : (i + 1) * size] for i in range(len(raw) // size))
        else:
            vals = (_raw(value, table.Leaf),)
        out.append((_raw(key, table.Key), vals))
    return out


def _entries(table: Any) -> list[tuple[Any, Any]]:
    """All entries, by BPF_MAP_LOOKUP_BATCH (one syscall per few hundred
    entries) where the kernel and map type have it, else key by key."""
    if not hasattr(table, "total_cpu") or table.__class__.__name__ == "PerCpuHash":
        try:
            return list(table.items_lookup_batch())
        except Exception:  # bcc raises bare Exception (e.g. EINVAL before 5.6)
            pass
    return list(table.items())


BPF_NOEXIST = 1  # include/uapi/linux/bpf.h


def has_key(bpf: Any, name: str, key: bytes) -> bool:
    table = bpf.get_table(name.encode())
    try:
        table[table.Key.from_buffer_copy(key)]
    except KeyError:
        return False
    return True


def insert_new(bpf: Any, name: str, key: bytes, value: bytes) -> bool:
    """Add an entry unless one exists (BPF_NOEXIST: an entry a probe created
    meanwhile wins); True if this call added it."""
    from bcc.libbcc import lib

    table = bpf.get_table(name.encode())
    k = table.Key.from_buffer_copy(key)
    v = table.Leaf.from_buffer_copy(value)
    rc = lib.bpf_update_elem(table.map_fd, ctypes.byref(k), ctypes.byref(v), BPF_NOEXIST)
    return int(rc) == 0


def delete_keys(bpf: Any, name: str, keys: list[bytes]) -> int:
    table = bpf.get_table(name.encode())
    gone = 0
    for raw in keys:
        try:
            del table[table.Key.from_buffer_copy(raw)]
            gone += 1
        except KeyError:
            pass
    return gone


def open_ringbuf(bpf: Any, name: str, sink: Callable[[bytes], None]) -> None:
    def callback(_ctx: Any, data: Any, size: int) -> int:
        sink(ctypes.string_at(data, size))
        return 0

    bpf[name.encode()].open_ring_buffer(callback)


def consume_ringbuf(bpf: Any) -> None:
    bpf.ring_buffer_consume()


def poll_ringbuf(bpf: Any, timeout_ms: int) -> None:
    bpf.ring_buffer_poll(timeout_ms)


def prog_fds(bpf: Any) -> dict[str, int]:
    return {(n.decode() if isinstance(n, bytes) else n): fn.fd for n, fn in bpf.funcs.items()}


def load_uprobe(bpf: Any, path: str, symbol: str, fn_name: str) -> None:
    bpf.attach_uprobe(name=path.encode(), sym=symbol.encode(), fn_name=fn_name.encode())


def close_all(bpfs: list[Any]) -> None:
    """Detach and free every object.  Each tracepoint's detach waits for an
    RCU grace period (~70 ms on a busy host); done one by one, 30 of them
    took over 2 s, so they are detached in parallel (ctypes releases the GIL)
    and the grace periods overlap."""
    jobs = [(bpf, tp) for bpf in bpfs for tp in list(bpf.tracepoint_fds)]
    try:
        with ThreadPoolExecutor(max_workers=min(len(jobs), 32) or 1) as pool:
            list(pool.map(lambda job: _detach(*job), jobs))
    except RuntimeError:  # at interpreter shutdown (atexit): no new threads
        pass
    for bpf in bpfs:
        bpf.cleanup()  # uprobes, ring buffer, maps; tracepoints are gone


def _detach(bpf: Any, tp: bytes) -> None:
    # bcc raises bare Exception; cleanup() retries whatever is left
    with contextlib.suppress(Exception):
        bpf.detach_tracepoint(tp)
