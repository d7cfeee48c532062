"""Compile, attach and read the probe families, each on its own.

A family whose tracepoints the kernel lacks, or whose program fails to
compile or load, is switched off with the reason; the others run.  The core
(shared maps, no programs) loads first and lives until close().  Closing the
BPF objects detaches everything; the kernel also detaches when the process
dies, so even SIGKILL leaves nothing attached.

The families compile one after another (bcc's compiler is not thread-safe:
two BPF() constructions at once corrupt the heap here), but not necessarily
in the constructor: with `defer=True` the caller runs load_pending() in a
thread of its own, each family counts from the moment it is attached, and
reading the maps of the families already loaded while the next one compiles
is safe (measured: thousands of map dumps during a dozen compiles).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from vprof.bpf import _bcc, source
from vprof.bpf.fields import tracefs_fields
from vprof.bpf.source import CORE, FamilySource, missing_tracepoints, render, shared_map_name
from vprof.families import LOAD_ORDER
from vprof.model import PROBE_FAMILIES, ProbeStatus

TRACEFS = Path("/sys/kernel/tracing")
RawMap = list[tuple[bytes, tuple[bytes, ...]]]

VCPUS = "vcpus"  # the core's vCPU states, read last (Loader.read)
# Maps each family owns (the core's are shared by all).
FAMILY_MAPS: dict[str, tuple[str, ...]] = {
    CORE: ("vcpus", "events", "overflow", "hot"),
    "exits": ("exits",),
    "io": ("io",),
}
INJECTOR_SYMBOLS = (  # family, symbol in the injector, BPF function
    ("exits", "vprof_inject_exit", "vprof_injected_exit"),
    ("exits", "vprof_inject_entry", "vprof_injected_entry"),
    ("exits", "vprof_inject_userspace", "vprof_injected_userspace"),
    ("io", "vprof_inject_mmio", "vprof_injected_mmio"),
)


_INSTANCES = itertools.count(1)
PENDING = "compiling"  # a wanted family's reason until load_pending() reaches it
INTERRUPTED = "start-up interrupted"


class LoadError(RuntimeError):
    """The core could not load: nothing can run."""


class Cancelled(Exception):
    """`cancelled()` turned true while the families compiled (a stop signal):
    what was loaded is closed again."""


@dataclass
class _Family:
    source: FamilySource
    bpf: Any = None  # bcc.BPF; Any at this boundary
    status: ProbeStatus = field(default_factory=lambda: ProbeStatus("", False, "not loaded"))


VERIFIER_TAIL = 4  # lines of the verifier's log kept in a reason


def _replay_own_lines(captured: str, fd: int) -> None:
    """fd 2 is the whole process's: while a family compiles in the
    background, the other threads' log lines ("vprof ...: level: ...") land
    in the capture too.  They go on to the real stderr, the compiler's don't."""
    own = [ln for ln in captured.splitlines(keepends=True) if ln.startswith("vprof")]
    if own:
        with contextlib.suppress(OSError):
            os.write(fd, "".join(own).encode())


def _first_line(err: BaseException, log: str) -> str:
    """Why a family failed: clang's first error, or for a program the kernel
    refused, bcc's line and the end of the verifier's log (which says why;
    the start only replays the program)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    refused = next((i for i, ln in enumerate(lines) if "Failed to load program" in ln), None)
    if refused is not None:
        tail = [ln for ln in lines[refused + 1 :] if not ln.startswith(("processed ", "HINT:"))]
        return " | ".join([first[:200], *(ln[:200] for ln in tail[-VERIFIER_TAIL:])])
    return (errors[0] if errors else first)[:300]


class Loader:
    """The attached probe families and their maps."""

    def __init__(
        self,
        families: Iterable[str] = PROBE_FAMILIES,
        slow_exit_threshold_ns: int = 1_000_000,
        injector: str | None = None,
        tracefs: Path = TRACEFS,
        map_bounds: dict[str, int] | None = None,
        defer: bool = False,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self._tracefs = tracefs
        self._injector = injector
        # Guards publishing a compiled family against close() in another thread.
        self._lock = threading.Lock()
        self._closed = False
        self.read_ns = 0  # CLOCK_MONOTONIC right before the last read of the vCPU states
        # Shared map names are per Loader (see probes/shared.h).
        self._instance = next(_INSTANCES)
        bounds = {f"VPROF_MAX_{k.upper()}": v for k, v in (map_bounds or {}).items()}
        defines = {"VPROF_SLOW_NS": slow_exit_threshold_ns, **bounds}
        if injector:
            defines["VPROF_INJECTOR"] = 1
        if kernel_release() < (5, 12):  # BPF_ATOMIC cmpxchg came in 5.12 (probes/count.h)
            defines["VPROF_NO_CMPXCHG"] = 1
        self._core = _Family(render(CORE, bounds, instance=self._instance))
        self._core.bpf, err = self._compile(self._core.source, self._tables(CORE))
        if self._core.bpf is None:
            raise LoadError(f"cannot load the shared maps: {err}")
        self._families: dict[str, _Family] = {}
        wanted = set(families)
        layouts = tracefs_fields(tracefs)
        self._render = partial(render, defines=defines, instance=self._instance, fields=layouts)
        for name in PROBE_FAMILIES:
            fam = _Family(self._render(name))
            self._families[name] = fam
            why = PENDING if name in wanted else "not selected"
            fam.status = ProbeStatus(name, False, why, fam.source.tracepoints)
        self._slow: list[bytes] = []
        self._new_vcpus: list[bytes] = []
        if not defer:
            # Each compile takes ~0.5-1 s (more on a loaded host) and signal
            # handlers only run between them: a stop request is honoured
            # between families, not after the last one (issue 15).
            self.load_pending(cancelled or (lambda: False))
            if cancelled is not None and any(
                f.status.reason == INTERRUPTED for f in self._families.values()
            ):
                self.close()
                raise Cancelled("stopped while the probes compiled")

    def load_pending(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Compile and attach each wanted family not loaded yet, in LOAD_ORDER, until
        `stop()` says so (between families: a compile, ~1 s, cannot be interrupted)."""
        for fam in (self._families[name] for name in LOAD_ORDER):
            if fam.status.reason != PENDING:
                continue
            if stop() or self._closed:
                fam.status = ProbeStatus(
                    fam.source.family, False, INTERRUPTED, fam.status.tracepoints
                )
                continue
            self._load(fam)
        if self._injector and not self._closed:
            self._attach_injector(self._injector)
        release_compiler_memory()

    @property
    def loading(self) -> bool:
        """Whether a wanted family still waits for its compile."""
        return any(f.status.reason == PENDING for f in self._families.values())

    def _tables(self, owner: str) -> tuple[str, ...]:
        return tuple(self._map_name(owner, n) for n in FAMILY_MAPS.get(owner, ()))

    @staticmethod
    def _compile(source: FamilySource, tables: tuple[str, ...] = ()) -> tuple[Any, str]:
        # clang and libbpf print diagnostics on fd 2 from C: capture them so
        # the reason names the real error, not "Failed to compile".
        with tempfile.TemporaryFile(mode="w+") as log:
            saved = os.dup(2)
            os.dup2(log.fileno(), 2)
            try:
                return _bcc.compile_text(source.text, tables), ""
            except Exception as err:  # bcc raises bare Exception
                os.dup2(saved, 2)
                log.seek(0)
                return None, _first_line(err, log.read())
            finally:
                os.dup2(saved, 2)
                log.seek(0)
                _replay_own_lines(log.read(), saved)
                os.close(saved)

    def _load(self, fam: _Family) -> None:
        if fam.source.family == "io" and self._families["exits"].bpf is not None:
            fam.source = self._render("io", without=(source.SHARED_TRACEPOINT,))
        name, tps = fam.source.family, fam.source.tracepoints
        missing = missing_tracepoints(tps, self._tracefs)
        if missing:
            reason = f"kernel lacks tracepoint(s) {', '.join(missing)}"
            fam.status = ProbeStatus(name, False, reason, tps)
            return
        bpf, err = self._compile(fam.source, self._tables(name))
        if bpf is None:
            fam.status = ProbeStatus(name, False, f"failed to load: {err}", tps)
            return
        with self._lock:
            if self._closed:  # closed while this family compiled
                _bcc.close_all([bpf])
                fam.status = ProbeStatus(name, False, INTERRUPTED, tps)
                return
            if name == "exits":
                _bcc.open_ringbuf(bpf, "slow", self._slow.append)
            if name == "vmm":
                _bcc.open_ringbuf(bpf, "new_vcpus", self._new_vcpus.append)
            fam.bpf = bpf
            fam.status = ProbeStatus(name, True, "", tps, fam.source.unavailable)
            if name == "io" and self._families["exits"].bpf is not None:
                _bcc.set_u32(self._families["exits"].bpf, "exits_seen", source.SEEN_IO, 1)

    def _attach_injector(self, path: str) -> None:
        if self._families["exits"].bpf is None:
            reason = self._families["exits"].status.reason
            raise LoadError(f"exits family is off ({reason}): no injector")
        for family, symbol, fn in INJECTOR_SYMBOLS:
            if self._families[family].bpf is not None:
                _bcc.load_uprobe(self._families[family].bpf, path, symbol, fn)

    def status(self) -> tuple[ProbeStatus, ...]:
        return tuple(f.status for f in self._families.values())

    def sources(self) -> tuple[FamilySource, ...]:
        return (self._core.source, *(f.source for f in self._families.values()))

    def read(self) -> dict[str, RawMap]:
        """Every map's entries as raw bytes, keyed by map name.

        The vCPU states go last and `read_ns` is stamped right before them:
        the ledger charges each thread's running stretch up to that moment,
        so any delay (other maps, preemption under load) must not count, or
        the state a thread was in at the read would be credited with time it
        never spent there (measured: 40 ms per read here, more on a loaded
        host; tests/test_pipeline_kvm.py checks against sum_exec_runtime).
        """
        out: dict[str, RawMap] = {}
        for owner, names in FAMILY_MAPS.items():
            fam = self._core if owner == CORE else self._families[owner]
            if fam.bpf is None:
                continue
            for name in names:
                if name != VCPUS:
                    out[name] = _bcc.dump_table(fam.bpf, self._map_name(owner, name))
        # Before the dump: an entry with since_ns <= read_ns held its state all along;
        # one that moved meanwhile is charged up to its own since_ns (no guess).
        self.read_ns = time.monotonic_ns()
        out[VCPUS] = _bcc.dump_table(self._core.bpf, self._map_name(CORE, VCPUS))
        return out

    def _map_name(self, owner: str, name: str) -> str:
        return shared_map_name(name, self._instance) if owner == CORE else name

    def take_slow_exits(self) -> list[bytes]:
        """Ring-buffer records received since the last call."""
        exits = self._families["exits"]
        if exits.bpf is not None:
            _bcc.consume_ringbuf(exits.bpf)
        taken, self._slow[:] = list(self._slow), []
        return taken

    def poll_new_vcpus(self, timeout_ms: int) -> list[bytes]:
        """new_vcpu records, waiting up to `timeout_ms` for the first one.

        For one thread at a time (the Profiler's namer); the vmm family's
        BPF object has only this ring buffer, so the snapshot thread, which
        reads maps of other objects, never touches it.  Without the vmm
        family it just waits: new VMs are then named at each snapshot.
        """
        vmm = self._families["vmm"]
        if vmm.bpf is None:
            time.sleep(timeout_ms / 1000)
            return []
        _bcc.poll_ringbuf(vmm.bpf, timeout_ms)
        taken, self._new_vcpus[:] = list(self._new_vcpus), []
        return taken

    def delete(self, keys: dict[str, list[bytes]]) -> None:
        """Drop entries (of VMs gone for good) so the bounded maps stay free."""
        for owner, names in FAMILY_MAPS.items():
            fam = self._core if owner == CORE else self._families[owner]
            for name in names:
                if fam.bpf is not None and keys.get(name):
                    _bcc.delete_keys(fam.bpf, self._map_name(owner, name), keys[name])

    def missing_vcpus(self, tids: Iterable[int]) -> list[int]:
        """The threads among `tids` that the kernel's vCPU map lacks."""
        name = self._map_name(CORE, VCPUS)
        return [t for t in tids if not _bcc.has_key(self._core.bpf, name, _tid_key(t))]

    def seed_vcpu(self, tid: int, state: bytes) -> bool:
        """Register a vCPU thread from userspace (vprof/pipeline/seed.py) unless a
        probe registered it meanwhile; True if this call did."""
        return _bcc.insert_new(self._core.bpf, self._map_name(CORE, VCPUS), _tid_key(tid), state)

    def prog_fds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for fam in self._families.values():
            if fam.bpf is not None:
                for prog, fd in _bcc.prog_fds(fam.bpf).items():
                    out[f"{fam.source.family}:{prog}"] = fd
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            fams = [f for f in (*self._families.values(), self._core) if f.bpf is not None]
            for f in self._families.values():  # never compiled now (or dropped when done)
                if f.status.reason == PENDING:
                    f.status = ProbeStatus(
                        f.source.family, False, INTERRUPTED, f.status.tracepoints
                    )
        bpfs = [f.bpf for f in fams]
        try:
            _bcc.detach_all(bpfs)  # nothing counts from here on
            with _bcc.compiler(blocking=False) as free:
                if free:
                    _bcc.free_all(bpfs)
            if not free:  # a compile is in flight: free the modules after it
                threading.Thread(target=_bcc.close_all, args=(bpfs,), daemon=True).start()
        finally:
            for fam in fams:
                fam.bpf = None


def kernel_release(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of the running kernel (or of `release`, "5.10.0-46-amd64")."""
    m = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (99, 0)  # unknown: a current kernel


# Shared libraries whose pages only bcc's compiler touches (Debian's bcc links them).
COMPILER_LIBS = ("libLLVM", "libclang")
MADV_PAGEOUT = 21  # include/uapi/asm-generic/mman-common.h, Linux 5.4+


def release_compiler_memory(maps: Path = Path("/proc/self/maps")) -> None:
    """Hand back what the compiles left resident, once they are done.

    Measured after loading every family here (bench/overhead.py reports
    RSS/PSS): glibc keeps ~40 MB that clang and LLVM freed (malloc_trim
    returns it), and ~75 MB of LLVM's and clang's code and data stay mapped
    from their files although nothing runs them until the next compile
    (MADV_PAGEOUT drops those clean file pages; a reload's compile reads
    them back).  Together: RSS 162 -> 49 MB.  glibc and Linux only; an older
    kernel's EINVAL just leaves the pages where they are."""
    libc = ctypes.CDLL(None, use_errno=True)
    with contextlib.suppress(AttributeError):
        libc.malloc_trim(0)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with contextlib.suppress(OSError):
        for line in maps.read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and any(lib in parts[5] for lib in COMPILER_LIBS):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                madvise(lo, hi - lo, MADV_PAGEOUT)


def _tid_key(tid: int) -> bytes:
    return tid.to_bytes(4, "little")  # the vcpus map's u32 key (x86_64, arm64)


def prog_stats(fd: int, fdinfo: Callable[[int], str] | None = None) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded program, from /proc/self/fdinfo."""
    text = fdinfo(fd) if fdinfo else Path(f"/proc/self/fdinfo/{fd}").read_text()
    vals = dict(ln.split(":", 1) for ln in text.splitlines() if ":" in ln)
    return int(vals.get("run_time_ns", "0")), int(vals.get("run_cnt", "0"))


def enable_bpf_stats() -> int | None:
    """Switch kernel BPF run-time statistics on for as long as the returned fd
    stays open (BPF_ENABLE_STATS): closing it, or dying, switches them off,
    so no exit path can leave kernel.bpf_stats_enabled on."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 30)()  # union bpf_attr; enable_stats.type = BPF_STATS_RUN_TIME (0)
    nr_bpf, bpf_enable_stats = 321, 32  # x86_64 __NR_bpf; BPF_ENABLE_STATS in uapi/linux/bpf.h
    fd = int(libc.syscall(nr_bpf, bpf_enable_stats, ctypes.byref(attr), ctypes.sizeof(attr)))
    return fd if fd >= 0 else None


def disable_bpf_stats(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
