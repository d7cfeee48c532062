"""The Profiler: the live pipeline behind every sink.

    with Profiler(ProfilerConfig()) as prof:
        for snap in prof.snapshots(interval=1.0):
            ...

Importing this module does not import bcc; constructing a Profiler compiles
and attaches the probe families (vprof/bpf/).  Each snapshot is cumulative:
the loader reads every map, vprof/records/events.py decodes it, vprof/pipeline/aggregate.py
classifies and builds the Snapshot, the inventory names the VMs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from vprof.inventory.procfs import alive
from vprof.model import PROBE_FAMILIES, ProbeStatus, ProgStat, Snapshot, vm_key_start
from vprof.pipeline.aggregate import Aggregator
from vprof.pipeline.names import Namer, Names
from vprof.records import events as ev
from vprof.records import maps
from vprof.records.maps import stale_keys

# A dead VM's entries leave the kernel maps in the first snapshot that found
# it dead before reading them (so that snapshot shows its final figures), not
# later: a process that reuses the PID (or a thread that reuses a tid) would
# add onto them and inherit its counters (in the churn soak every one of 35
# reused PIDs did while they stayed 30 s).  Consumers keep a dead VM's final
# figures themselves (the daemon: dead_vm_grace_seconds).  A PID reused
# within one interval of its VM's death still mixes: only the kernel side
# (clearing a thread's entries at its exit) could tell the two apart.


@dataclass(frozen=True)
class ProfilerConfig:
    families: frozenset[str] | None = None  # None: all of PROBE_FAMILIES
    slow_exit_threshold_ns: int = 1_000_000
    proc_root: str = "/proc"
    bpf_stats: bool = False  # kernel BPF run-time stats while running (restored on close)
    sys_root: str = "/sys"
    injector: str | None = None  # test injector binary for the exit path (tests only)
    # Map bounds by name (vcpus, events, exits, io, hot, slow_pages; probes/vprof.h):
    # tests make them tiny to overflow each one on purpose (tests only).
    map_bounds: Mapping[str, int] | None = None
    # Compile the families in a thread after the constructor returns (the
    # daemon): each counts once attached, status() says which still compile.
    background: bool = False
    # Polled between family compiles; when true the constructor closes what it
    # loaded and raises vprof.bpf.loader.Cancelled (the daemon's stop signal);
    # with `background`, the loading thread stops instead.
    cancelled: Callable[[], bool] | None = None


def detect_backend(sys_root: str, exit_isas: set[int]) -> str:
    """The KVM backend: what exits were seen, else which module is loaded."""
    if 1 in exit_isas:
        return "vmx"
    if 2 in exit_isas:
        return "svm"
    mod = Path(sys_root) / "module"
    if (mod / "kvm_pvm").is_dir():
        return "kvm_pvm (no kvm_exit)"
    if (mod / "kvm_intel").is_dir():
        return "vmx (no exits seen yet)"
    if (mod / "kvm_amd").is_dir():
        return "svm (no exits seen yet)"
    return "unknown"


class Profiler:
    """Compiles and attaches the probes; builds Snapshots on demand."""

    def __init__(self, config: ProfilerConfig | None = None) -> None:
        from vprof.bpf import loader  # imports bcc (through _bcc) only now

        self.config = config or ProfilerConfig()
        fams = self.config.families
        unknown = set(fams or ()) - set(PROBE_FAMILIES)
        if unknown:
            raise ValueError(f"unknown probe families: {', '.join(sorted(unknown))}")
        self._loader_mod = loader
        self._stats_fd = loader.enable_bpf_stats() if self.config.bpf_stats else None
        self._loader = loader.Loader(
            fams if fams is not None else PROBE_FAMILIES,
            slow_exit_threshold_ns=self.config.slow_exit_threshold_ns,
            injector=self.config.injector,
            map_bounds=dict(self.config.map_bounds or {}),
            defer=self.config.background,
            cancelled=self.config.cancelled,
        )
        self._stopping = threading.Event()
        self._load_thread: threading.Thread | None = None
        if self.config.background:
            # A daemon thread: close() does not wait for a compile in flight
            # (the loader drops what finishes after close), so a SIGTERM
            # during start-up is not held up by bcc.
            self._load_thread = threading.Thread(
                target=self._loader.load_pending,
                args=(self._stop_loading,),
                name="vprof-loader",
                daemon=True,
            )
            self._load_thread.start()
        self._agg = Aggregator()
        self._names = Names(self.config.proc_root, self.config.sys_root, self._loader)
        self._names.lookup(set())  # VMs already running: register their vCPU threads
        self._namer = Namer(self._loader, self._names)
        self._namer.start()
        self._last_ns = time.monotonic_ns()
        self._taken = False  # no snapshot yet (the first is a baseline)
        self._watched: dict[int, str] = {}  # pid -> VM key, of the last snapshot
        self._closed = False
        self._old_sigterm: Any = None
        self._install_sigterm()

    def _install_sigterm(self) -> None:
        # SIGTERM's default kills without unwinding; make it unwind so `with`
        # blocks and finally clauses detach and restore state.
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

            def _term(signum: int, _frame: FrameType | None) -> None:
                raise SystemExit(128 + signum)

            self._old_sigterm = signal.signal(signal.SIGTERM, _term)

    def status(self) -> tuple[ProbeStatus, ...]:
        return self._loader.status()

    def _stop_loading(self) -> bool:
        cancelled = self.config.cancelled
        return self._stopping.is_set() or (cancelled is not None and cancelled())

    @property
    def loading(self) -> bool:
        """Whether the loading thread (ProfilerConfig.background) still runs.

        It may be inside a compile even after close().  A process must then
        leave with os._exit(): exit() runs LLVM's static destructors under
        the running compile, which aborts (seen: "free(): invalid pointer").
        The kernel detaches everything when the process dies."""
        return self._load_thread is not None and self._load_thread.is_alive()

    @property
    def seeded_vcpus(self) -> int:
        """vCPU threads registered from the inventory (vprof/pipeline/seed.py), so far."""
        return self._names.seeded

    def snapshot(self) -> Snapshot:
        """Cumulative figures of every traced VM, now."""
        started = time.process_time()
        gone = self._dead()  # before the read: their figures in it are final
        raw = self._loader.read()
        slow = self._loader.take_slow_exits()
        now = self._loader.read_ns  # when the vCPU states were read, not later
        decoded = maps.decode(raw)
        good_slow = []
        for rec in slow:
            try:
                good_slow.append(ev.decode_slow_exit(rec))
            except ValueError:
                self._agg.decode_errors += 1
        self._agg.add_slow_exits(good_slow)
        pids = {v.pid for v in decoded.vcpus} | {e.pid for e in decoded.events}
        pids |= {x.pid for x in decoded.exits} | {i.pid for i in decoded.io}
        snap = self._agg.snapshot(
            decoded,
            self._names.lookup(
                pids, {v.tid: v.vcpu_id for v in decoded.vcpus if v.vcpu_id is not None}
            ),
            now_ns=now,
            # The first snapshot's counts began as each family attached, seconds
            # apart while bcc compiled: no one interval covers them, so it is a
            # baseline (0), not a rate over the time since the last attach.
            interval_ns=now - self._last_ns if self._taken else 0,
            backend=detect_backend(self.config.sys_root, {x.isa & 0xFF for x in decoded.exits}),
            probes=self._loader.status(),
            progs=self._progs(),
            unreadable=self._names.unreadable,
            started=started,
        )
        self._last_ns = now
        self._taken = True
        self._prune(gone, snap, raw)
        return snap

    def wait_named(self, pid: int, timeout: float) -> str | None:
        """The name of VM process `pid` once the inventory found it (None
        after `timeout` s).  New VMs are named at their first KVM_RUN."""
        found = self._names.wait(pid, timeout)
        return found.name if found is not None else None

    def snapshots(self, interval: float) -> Iterator[Snapshot]:
        """A cumulative Snapshot every `interval` seconds, until closed."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        deadline = time.monotonic()
        while not self._closed:
            deadline += interval
            time.sleep(max(0.0, deadline - time.monotonic()))
            yield self.snapshot()

    def _progs(self) -> tuple[ProgStat, ...]:
        if self._stats_fd is None:
            return ()
        out = []
        for name, fd in sorted(self._loader.prog_fds().items()):
            run_ns, cnt = self._loader_mod.prog_stats(fd)
            out.append(ProgStat(name, run_ns, cnt))
        return tuple(out)

    def _dead(self) -> set[int]:
        """PIDs of the last snapshot's VMs that are dead now: gone from /proc,
        or the PID now another process (start time; a key with start time 0
        has none to compare).  Asked before the maps are read, so the read
        holds their final figures."""
        root = self.config.proc_root
        return {
            pid
            for pid, key in self._watched.items()
            if not os.path.exists(f"{root}/{pid}")
            or (vm_key_start(key) not in ("", "0") and not alive(key, pid, root))
        }

    def _prune(self, gone: set[int], snap: Snapshot, raw: Mapping[str, ev.RawMap]) -> None:
        self._watched = {vm.pid: vm.key for vm in snap.vms if vm.pid not in gone}
        if not gone:
            return
        self._loader.delete(stale_keys(raw, gone))
        self._agg.forget(gone)
        self._names.forget(gone)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._namer.stop()
        self._loader.close()
        self._loader_mod.disable_bpf_stats(self._stats_fd)
        self._stats_fd = None
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)

    def __enter__(self) -> Profiler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
