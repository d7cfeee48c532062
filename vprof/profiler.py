"""The Profiler: the live pipeline behind every sink.

    with Profiler(ProfilerConfig()) as prof:
        for snap in prof.snapshots(interval=1.0):
            ...

Importing this module does not import bcc; constructing a Profiler compiles
and attaches the probe families (vprof/bpf/).  Each snapshot is cumulative:
the loader reads every map, vprof/events.py decodes it, vprof/aggregate.py
classifies and builds the Snapshot, the inventory names the VMs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from vprof import events as ev
from vprof.aggregate import Aggregator, VmIdentity, fallback_identity
from vprof.model import PROBE_FAMILIES, ProbeStatus, ProgStat, Snapshot

# A VM's counters stay in the kernel maps this long after its process died,
# so a last snapshot still shows its final figures; then they are deleted.
DEAD_GRACE_S = 30.0


@dataclass(frozen=True)
class ProfilerConfig:
    families: frozenset[str] | None = None  # None: all of PROBE_FAMILIES
    slow_exit_threshold_ns: int = 1_000_000
    proc_root: str = "/proc"
    bpf_stats: bool = False  # kernel BPF run-time stats while running (restored on close)
    sys_root: str = "/sys"
    injector: str | None = None  # test injector binary for the exit path (tests only)


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


class _Names:
    """VM identities from the inventory, remembered after a VM dies.

    Each refresh also registers in the kernel's vCPU map the vCPU threads it
    lacks (`vcpu_map`, the loader; vprof/seed.py): the filter the probes
    apply in-kernel follows the inventory."""

    def __init__(self, proc_root: str, sys_root: str, vcpu_map: Any = None) -> None:
        self._inv: Any = None
        self._vcpu_map = vcpu_map
        self.unreadable = 0
        self.seeded = 0  # vCPU threads registered from userspace so far
        # The snapshot thread and the namer (new vCPU threads) both look up.
        self._cond = threading.Condition()
        try:
            from vprof.inventory import Inventory
        except ImportError:
            return
        self._inv = Inventory(proc_root=proc_root, sys_root=sys_root)
        self._known: dict[int, VmIdentity] = {}
        # Keys of VMs the inventory cannot name (yet).  They use the same
        # "<pid>:<start time>" form as the inventory's, so a VM named later
        # keeps its key and diff() never takes it for a new VM.
        self._unnamed_keys: dict[int, str] = {}
        self._noted: set[int] = set()  # threads whose kvm_exit vcpu_id was noted

    def lookup(
        self, pids: set[int], vcpu_ids: Mapping[int, int] | None = None
    ) -> dict[int, VmIdentity]:
        """Identities of `pids`; `vcpu_ids` (tid -> vcpu_id from kvm_exit,
        where the host has it) map threads that no thread name indexes."""
        if self._inv is None:
            return {}
        with self._cond:
            found = self._lookup(pids, vcpu_ids or {})
            self._cond.notify_all()
        return found

    def wait(self, pid: int, timeout: float) -> VmIdentity | None:
        """The identity of `pid` once known, waiting up to `timeout` s."""
        if self._inv is None:
            return None
        with self._cond:
            self._cond.wait_for(lambda: pid in self._known, timeout)
            return self._known.get(pid)

    def _lookup(self, pids: set[int], vcpu_ids: Mapping[int, int]) -> dict[int, VmIdentity]:
        view = self._inv.refresh()
        # Once per thread; note_vcpu() needs the thread in the last view and
        # counts from the next refresh, so a new note refreshes once more.
        noted = [
            t for t in vcpu_ids if t not in self._noted and self._inv.note_vcpu(t, vcpu_ids[t])
        ]
        if noted:
            view = self._inv.refresh()
        self._noted.update(noted)
        self.unreadable = int(getattr(view, "unreadable", 0))
        # No new-vCPU record comes for seeded threads: name their VMs now.
        pids = pids | self._seed(view)
        for pid in pids:
            vm = view.vm_of_pid(pid)
            if vm is not None:
                self._known[pid] = VmIdentity(
                    key=vm.key,
                    pid=vm.pid,
                    name=vm.name,
                    name_raw=vm.name_raw,
                    name_source=vm.name_source,
                    uuid=vm.uuid,
                    vmm=vm.vmm,
                    vcpu_count=vm.vcpu_count,
                    vcpu_index=dict(vm.vcpus),
                )
        return {p: self._known.get(p) or self._unnamed(p) for p in pids}

    def _unnamed(self, pid: int) -> VmIdentity:
        """A process the kernel counts and the inventory cannot name (yet)."""
        key = self._unnamed_keys.get(pid)
        if key is None:
            # A PID of another namespace's /proc would name another process.
            start = self._inv.start_time(pid) if self._inv.host_pids() is not False else None
            key = f"{pid}:{start or 0}"
            self._unnamed_keys[pid] = key
        return replace(fallback_identity(pid), key=key)

    def _seed(self, view: Any) -> set[int]:
        """Register the vCPU threads the kernel lacks; their VMs' PIDs."""
        # Thread ids of another PID namespace's /proc would name other threads.
        if self._vcpu_map is None or self._inv.host_pids() is False:
            return set()
        from vprof.seed import seed_vcpus

        seeded = seed_vcpus(view, self._vcpu_map, self._inv.run_state)
        self.seeded += len(seeded)
        return set(seeded.values())

    def forget(self, pids: set[int]) -> None:
        if self._inv is not None:
            with self._cond:
                for pid in pids:
                    self._known.pop(pid, None)
                    self._unnamed_keys.pop(pid, None)
                self._noted.clear()  # a reused tid gets noted again (rare, cheap)


class _Namer(threading.Thread):
    """Names the VM of each new vCPU thread as soon as the kernel reports
    it (probes/vmm.bpf.c), while its process still lives: a VM that exits
    before the next snapshot keeps its name.  One record per new thread,
    never per event."""

    POLL_MS = 100  # also how long close() may wait for this thread

    def __init__(self, loader: Any, names: _Names) -> None:
        super().__init__(name="vprof-namer", daemon=True)
        self._loader = loader
        self._names = names
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            pids = set()
            for raw in self._loader.poll_new_vcpus(self.POLL_MS):
                try:
                    pids.add(ev.decode_new_vcpu(raw)[0])
                except ValueError:
                    continue  # a size mismatch: named at the next snapshot
            if pids and not self.stopping.is_set():
                self._names.lookup(pids)

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join()


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
        )
        self._agg = Aggregator()
        self._names = _Names(self.config.proc_root, self.config.sys_root, self._loader)
        self._names.lookup(set())  # VMs already running: register their vCPU threads
        self._namer = _Namer(self._loader, self._names)
        self._namer.start()
        self._last_ns = time.monotonic_ns()
        self._dead_since: dict[int, float] = {}
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

    @property
    def seeded_vcpus(self) -> int:
        """vCPU threads registered from the inventory (vprof/seed.py), so far."""
        return self._names.seeded

    def snapshot(self) -> Snapshot:
        """Cumulative figures of every traced VM, now."""
        started = time.process_time()
        raw = self._loader.read()
        slow = self._loader.take_slow_exits()
        now = self._loader.read_ns  # when the vCPU states were read, not later
        decoded = ev.decode(raw)
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
            interval_ns=now - self._last_ns,
            backend=detect_backend(self.config.sys_root, {x.isa & 0xFF for x in decoded.exits}),
            probes=self._loader.status(),
            progs=self._progs(),
            unreadable=self._names.unreadable,
            started=started,
        )
        self._last_ns = now
        self._prune(pids, raw)
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

    def _prune(self, pids: set[int], raw: Mapping[str, ev.RawMap]) -> None:
        now = time.monotonic()
        gone = set()
        for pid in pids:
            if os.path.exists(f"{self.config.proc_root}/{pid}"):
                self._dead_since.pop(pid, None)
            elif now - self._dead_since.setdefault(pid, now) > DEAD_GRACE_S:
                gone.add(pid)
        if not gone:
            return
        self._loader.delete(stale_keys(raw, gone))
        self._agg.forget(gone)
        self._names.forget(gone)
        for pid in gone:
            self._dead_since.pop(pid, None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
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


def stale_keys(raw: Mapping[str, ev.RawMap], pids: set[int]) -> dict[str, list[bytes]]:
    """Keys of every map entry that belongs to one of `pids`."""
    out: dict[str, list[bytes]] = {}
    for name, entries in raw.items():
        if name == "overflow":
            continue
        keys = []
        for key, values in entries:
            # vcpus is keyed by tid with the pid first in the value; every
            # other map's key starts with the pid.
            owner = values[0][:4] if name == "vcpus" else key[:4]
            if name == "hot":  # an array slot: its owner's pid is in the value
                owner = values[0][-8:-4]
            if int.from_bytes(owner, "little") in pids:
                keys.append(key)
        out[name] = keys
    return out
