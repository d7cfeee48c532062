"""Compile, attach and read the probe families, each on its own.

A family whose tracepoints the kernel lacks, or whose program fails to
compile or load, is switched off with the reason; the others run.  The core
(shared maps, no programs) loads first and lives until close().  Closing the
BPF objects detaches everything; the kernel also detaches when the process
dies, so even SIGKILL leaves nothing attached.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vprof.bpf import _bcc
from vprof.bpf.source import CORE, FamilySource, missing_tracepoints, render, shared_map_name
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


class LoadError(RuntimeError):
    """The core could not load: nothing can run."""


@dataclass
class _Family:
    source: FamilySource
    bpf: Any = None  # bcc.BPF; Any at this boundary
    status: ProbeStatus = field(default_factory=lambda: ProbeStatus("", False, "not loaded"))


def _first_line(err: BaseException, log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if "error" in ln.lower()]
    return (lines[0] if lines else str(err).splitlines()[0] if str(err) else type(err).__name__)[
        :300
    ]


class Loader:
    """The attached probe families and their maps."""

    def __init__(
        self,
        families: Iterable[str] = PROBE_FAMILIES,
        slow_exit_threshold_ns: int = 1_000_000,
        injector: str | None = None,
        tracefs: Path = TRACEFS,
        map_bounds: dict[str, int] | None = None,
    ) -> None:
        self._tracefs = tracefs
        self.read_ns = 0  # CLOCK_MONOTONIC right after the last read of the vCPU states
        # Shared map names are per Loader (see probes/shared.h).
        self._instance = next(_INSTANCES)
        bounds = {f"VPROF_MAX_{k.upper()}": v for k, v in (map_bounds or {}).items()}
        defines = {"VPROF_SLOW_NS": slow_exit_threshold_ns, **bounds}
        if injector:
            defines["VPROF_INJECTOR"] = 1
        self._core = _Family(render(CORE, bounds, instance=self._instance))
        self._core.bpf, err = self._compile(self._core.source)
        if self._core.bpf is None:
            raise LoadError(f"cannot load the shared maps: {err}")
        self._families: dict[str, _Family] = {}
        wanted = set(families)
        for name in PROBE_FAMILIES:
            fam = _Family(render(name, defines, instance=self._instance))
            self._families[name] = fam
            if name not in wanted:
                fam.status = ProbeStatus(name, False, "not selected", fam.source.tracepoints)
                continue
            self._load(fam)
        if injector:
            self._attach_injector(injector)
        self._slow: list[bytes] = []
        exits = self._families["exits"]
        if exits.bpf is not None:
            _bcc.open_ringbuf(exits.bpf, "slow", self._slow.append)
        self._new_vcpus: list[bytes] = []
        vmm = self._families["vmm"]
        if vmm.bpf is not None:
            _bcc.open_ringbuf(vmm.bpf, "new_vcpus", self._new_vcpus.append)

    @staticmethod
    def _compile(source: FamilySource) -> tuple[Any, str]:
        # clang and libbpf print diagnostics on fd 2 from C: capture them so
        # the reason names the real error, not "Failed to compile".
        with tempfile.TemporaryFile(mode="w+") as log:
            saved = os.dup(2)
            os.dup2(log.fileno(), 2)
            try:
                return _bcc.compile_text(source.text), ""
            except Exception as err:  # bcc raises bare Exception
                os.dup2(saved, 2)
                log.seek(0)
                return None, _first_line(err, log.read())
            finally:
                os.dup2(saved, 2)
                os.close(saved)

    def _load(self, fam: _Family) -> None:
        name, tps = fam.source.family, fam.source.tracepoints
        missing = missing_tracepoints(tps, self._tracefs)
        if missing:
            reason = f"kernel lacks tracepoint(s) {', '.join(missing)}"
            fam.status = ProbeStatus(name, False, reason, tps)
            return
        fam.bpf, err = self._compile(fam.source)
        if fam.bpf is None:
            fam.status = ProbeStatus(name, False, f"failed to load: {err}", tps)
        else:
            fam.status = ProbeStatus(name, True, "", tps)

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

        The vCPU states go last and `read_ns` is stamped right after them:
        the ledger charges each thread's running stretch up to that moment,
        so any delay before it (other maps, preemption under load) must not
        count, or the state a thread was in at the read would be credited
        with time it never spent there (measured: 40 ms per read here, more
        on a loaded host; tests/test_pipeline_kvm.py checks against
        sum_exec_runtime).
        """
        out: dict[str, RawMap] = {}
        for owner, names in FAMILY_MAPS.items():
            fam = self._core if owner == CORE else self._families[owner]
            if fam.bpf is None:
                continue
            for name in names:
                if name != VCPUS:
                    out[name] = _bcc.dump_table(fam.bpf, self._map_name(owner, name))
        out[VCPUS] = _bcc.dump_table(self._core.bpf, self._map_name(CORE, VCPUS))
        self.read_ns = time.monotonic_ns()
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
        """Register a vCPU thread from userspace (vprof/seed.py) unless a
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
        fams = [f for f in (*self._families.values(), self._core) if f.bpf is not None]
        try:
            _bcc.close_all([f.bpf for f in fams])
        finally:
            for fam in fams:
                fam.bpf = None


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
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 30)()  # union bpf_attr; enable_stats.type = BPF_STATS_RUN_TIME (0)
    nr_bpf, bpf_enable_stats = 321, 32  # x86_64 __NR_bpf; BPF_ENABLE_STATS in uapi/linux/bpf.h
    fd = int(libc.syscall(nr_bpf, bpf_enable_stats, ctypes.byref(attr), ctypes.sizeof(attr)))
    return fd if fd >= 0 else None


def disable_bpf_stats(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
