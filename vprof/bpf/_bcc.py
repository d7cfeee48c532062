"""The one untyped boundary to bcc (excluded from mypy; see pyproject.toml).

Everything bcc returns is turned into plain bytes and ints here.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# bcc builds and frees its modules through process-wide state (clang, LLVM,
# the shared-map registry): two compiles at once corrupted the heap here
# ("free(): invalid next size").  Whoever builds, frees or first looks up a
# module's tables holds this; reading a map already looked up is fd-only.
_COMPILER = threading.Lock()


@contextlib.contextmanager
def compiler(blocking: bool = True) -> Iterator[bool]:
    """Hold bcc's module state; yields False if not blocking and it is busy."""
    got = _COMPILER.acquire(blocking)
    try:
        yield got
    finally:
        if got:
            _COMPILER.release()


def compile_text(text: str, tables: Iterable[str] = ()) -> Any:
    """Compile and load `text`; bcc attaches every TRACEPOINT_PROBE itself.
    `tables` are looked up now, under the lock (bcc caches them)."""
    from bcc import BPF  # the only bcc import in vprof

    with _COMPILER:
        bpf = BPF(text=text.encode())
        for name in tables:
            bpf[name.encode()]
    for fd in bpf.tracepoint_fds.values():
        sample_events(fd, False)
    return bpf


# bcc attaches a classic tracepoint program through one perf event (on CPU
# 0, sample period 1).  The program hangs on the tracepoint itself
# (tp_event->prog_array) and runs on every CPU; the perf event only adds
# itself to CPU 0's list of events that take samples.  A program that
# returns 1 (VPROF_PASS: other perf users must still see the event) sends
# each hit on to that list (perf_trace_run_bpf_submit), so on CPU 0 perf
# also made a sample of vprof's own event, for a ring buffer no one mapped:
# perf_tp_event, perf_swevent_event and the overflow path cost more than the
# program did (bench/tp_samples.py).  Disabled, the event leaves the list and
# the program keeps running: with no other perf user the hit ends at the
# program, and perf's own events still get every hit the program passes.
PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_DISABLE = 0x2400, 0x2401  # _IO('$', 0), _IO('$', 1)


def sample_events(fd: int, on: bool) -> bool:
    """Enable (bcc's way) or disable a tracepoint perf event's own samples;
    False where the kernel refuses."""
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE if on else PERF_EVENT_IOC_DISABLE, 0)
    except OSError:
        return False
    return True


def _table(bpf: Any, name: str) -> Any:
    return bpf[name.encode()]  # cached by bcc after the first lookup


def _raw(obj: Any, kind: Any = None) -> bytes:
    if isinstance(obj, int):  # batch lookups give plain ints for integer types
        obj = kind(obj)
    return ctypes.string_at(ctypes.addressof(obj), ctypes.sizeof(obj))


def dump_table(bpf: Any, name: str) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """All entries of map `name` as (key bytes, per-CPU value bytes)."""
    table = _table(bpf, name)
    percpu = hasattr(table, "total_cpu")
    size = ctypes.sizeof(table.sLeaf) if percpu else ctypes.sizeof(table.Leaf)
    out: list[tuple[bytes, tuple[bytes, ...]]] = []
    for key, raw in _entries(table):
        vals = tuple(raw[i : i + size] for i in range(0, len(raw), size))
        out.append((key, vals))
    return out


def _entries(table: Any) -> list[tuple[bytes, bytes]]:
    """All entries as (key bytes, value bytes; per-CPU maps: every CPU's),
    by BPF_MAP_LOOKUP_BATCH where the kernel and map type have it, else key
    by key."""
    if not hasattr(table, "total_cpu") or table.__class__.__name__ == "PerCpuHash":
        with contextlib.suppress(OSError):
            return _batched(table)
    return [(_raw(k, table.Key), _raw(v, table.Leaf)) for k, v in table.items()]


class _Batch:
    """Reusable buffers for one map's batch reads, CHUNK entries at a time.

    bcc's own items_lookup_batch allocates and zeroes buffers for the map's
    max_entries on every call: for a 16,384-entry per-CPU hash on a 96-CPU
    host, 12 MB per map per snapshot, whatever the map holds."""

    CHUNK = 256

    def __init__(self, table: Any, count: int) -> None:
        self.count = count
        self.key_size, self.leaf_size = ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf)
        self.keys = ctypes.create_string_buffer(self.key_size * count)
        self.values = ctypes.create_string_buffer(self.leaf_size * count)


_ENOENT, _ENOSPC = 2, 28


def _batched(table: Any) -> list[tuple[bytes, bytes]]:
    """Raises OSError where the kernel has no batch ops for this map (< 5.6)."""
    from bcc.libbcc import lib

    # Kept on bcc's table object, which lives and dies with its module: a
    # map fd is reused by the next module's maps, of other sizes (keyed by
    # fd, the kernel wrote past a smaller map's buffers: heap corruption).
    b = getattr(table, "_vprof_batch", None) or _Batch(table, _Batch.CHUNK)
    table._vprof_batch = b
    out: list[tuple[bytes, bytes]] = []
    token, cnt = ctypes.c_uint32(0), ctypes.c_uint32(0)  # the token: a bucket index
    first = True
    while True:
        cnt.value = b.count
        rc = lib.bpf_lookup_batch(
            table.map_fd, None if first else ctypes.byref(token), ctypes.byref(token),
            b.keys, b.values, ctypes.byref(cnt),
        )  # fmt: skip
        err = ctypes.get_errno() if rc else 0
        if err == _ENOSPC and cnt.value == 0:  # one bucket holds more than the buffer
            b = table._vprof_batch = _Batch(table, b.count * 2)
            continue
        if err not in (0, _ENOENT):
            raise OSError(err, f"BPF_MAP_LOOKUP_BATCH on {table.name}")
        keys = b.keys.raw[: b.key_size * cnt.value]
        values = b.values.raw[: b.leaf_size * cnt.value]
        ks, ls = b.key_size, b.leaf_size
        out += [
            (keys[i * ks : (i + 1) * ks], values[i * ls : (i + 1) * ls]) for i in range(cnt.value)
        ]
        if err == _ENOENT:  # the last entries came with it
            return out
        first = False


BPF_NOEXIST = 1  # include/uapi/linux/bpf.h


def has_key(bpf: Any, name: str, key: bytes) -> bool:
    table = _table(bpf, name)
    try:
        table[table.Key.from_buffer_copy(key)]
    except KeyError:
        return False
    return True


def insert_new(bpf: Any, name: str, key: bytes, value: bytes) -> bool:
    """Add an entry unless one exists (BPF_NOEXIST: an entry a probe created
    meanwhile wins); True if this call added it."""
    from bcc.libbcc import lib

    table = _table(bpf, name)
    k = table.Key.from_buffer_copy(key)
    v = table.Leaf.from_buffer_copy(value)
    rc = lib.bpf_update_elem(table.map_fd, ctypes.byref(k), ctypes.byref(v), BPF_NOEXIST)
    return int(rc) == 0


def delete_keys(bpf: Any, name: str, keys: list[bytes]) -> int:
    table = _table(bpf, name)
    gone = 0
    for raw in keys:
        try:
            del table[table.Key.from_buffer_copy(raw)]
            gone += 1
        except KeyError:
            pass
    return gone


def set_u32(bpf: Any, name: str, index: int, value: int) -> None:
    """Write one u32 element of array map `name` (its first lookup: held)."""
    with _COMPILER:
        table = _table(bpf, name)
    table[ctypes.c_int(index)] = ctypes.c_uint32(value)


def open_ringbuf(bpf: Any, name: str, sink: Callable[[bytes], None]) -> None:
    def callback(_ctx: Any, data: Any, size: int) -> int:
        sink(ctypes.string_at(data, size))
        return 0

    with _COMPILER:
        bpf[name.encode()].open_ring_buffer(callback)


def consume_ringbuf(bpf: Any) -> None:
    bpf.ring_buffer_consume()


def poll_ringbuf(bpf: Any, timeout_ms: int) -> None:
    bpf.ring_buffer_poll(timeout_ms)


def prog_fds(bpf: Any) -> dict[str, int]:
    return {(n.decode() if isinstance(n, bytes) else n): fn.fd for n, fn in bpf.funcs.items()}


def load_uprobe(bpf: Any, path: str, symbol: str, fn_name: str) -> None:
    bpf.attach_uprobe(name=path.encode(), sym=symbol.encode(), fn_name=fn_name.encode())


def detach_all(bpfs: list[Any]) -> None:
    """Stop every program of `bpfs` (fd-level: safe while another thread
    compiles).  Each tracepoint's detach waits for an RCU grace period
    (~70 ms on a busy host); done one by one, 30 of them took over 2 s, so
    they are detached in parallel (ctypes releases the GIL) and the grace
    periods overlap."""
    jobs = [(bpf.detach_tracepoint, tp) for bpf in bpfs for tp in list(bpf.tracepoint_fds)]
    jobs += [(bpf.detach_raw_tracepoint, tp) for bpf in bpfs for tp in list(bpf.raw_tracepoint_fds)]
    try:
        with ThreadPoolExecutor(max_workers=min(len(jobs), 32) or 1) as pool:
            list(pool.map(lambda job: _detach(*job), jobs))
    except RuntimeError:  # at interpreter shutdown (atexit): no new threads
        pass


def free_all(bpfs: list[Any]) -> None:
    """Free the modules (uprobes, ring buffers, maps); hold compiler()."""
    for bpf in bpfs:
        bpf.cleanup()


def close_all(bpfs: list[Any]) -> None:
    """Detach and free every object."""
    detach_all(bpfs)
    with _COMPILER:
        free_all(bpfs)


def _detach(detach: Callable[[bytes], None], tp: bytes) -> None:
    # bcc raises bare Exception; cleanup() retries whatever is left
    with contextlib.suppress(Exception):
        detach(tp)
