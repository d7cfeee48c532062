"""VM names for the pipeline: the inventory's identities, kept after a VM dies.

`Names` looks VMs up in the inventory (vprof/inventory/) and registers their
vCPU threads in the kernel's map (seed.py); `Namer` names the VM of each new
vCPU thread as soon as the kernel reports it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Protocol

from vprof.inventory import Inventory, InventoryView
from vprof.model import VmIdentity, vm_key
from vprof.pipeline.aggregate import fallback_identity
from vprof.pipeline.seed import VcpuMap, seed_vcpus
from vprof.records import events as ev


class NewVcpus(Protocol):
    """The loader's ring buffer of new vCPU threads (vprof/bpf/loader.py)."""

    def poll_new_vcpus(self, timeout_ms: int) -> Iterable[bytes]: ...


class Names:
    """VM identities from the inventory, remembered after a VM dies.

    Each refresh also registers in the kernel's vCPU map the vCPU threads it
    lacks (`vcpu_map`, the loader; vprof/pipeline/seed.py): the filter the probes
    apply in-kernel follows the inventory."""

    def __init__(self, proc_root: str, sys_root: str, vcpu_map: VcpuMap | None = None) -> None:
        self._vcpu_map = vcpu_map
        self.unreadable = 0
        self.seeded = 0  # vCPU threads registered from userspace so far
        # The snapshot thread and the namer (new vCPU threads) both look up.
        self._cond = threading.Condition()
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
        with self._cond:
            found = self._lookup(pids, vcpu_ids or {})
            self._cond.notify_all()
        return found

    def wait(self, pid: int, timeout: float) -> VmIdentity | None:
        """The identity of `pid` once known, waiting up to `timeout` s."""
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
        self.unreadable = view.unreadable
        # No new-vCPU record comes for seeded threads: name their VMs now.
        pids = pids | self._seed(view)
        for pid in pids:
            vm = view.vm_of_pid(pid)
            if vm is not None:
                self._known[pid] = vm.identity
        return {p: self._known.get(p) or self._unnamed(p) for p in pids}

    def _unnamed(self, pid: int) -> VmIdentity:
        """A process the kernel counts and the inventory cannot name (yet)."""
        key = self._unnamed_keys.get(pid)
        if key is None:
            # A PID of another namespace's /proc would name another process.
            start = self._inv.start_time(pid) if self._inv.host_pids() is not False else None
            key = vm_key(pid, start or 0)
            self._unnamed_keys[pid] = key
        return replace(fallback_identity(pid), key=key)

    def _seed(self, view: InventoryView) -> set[int]:
        """Register the vCPU threads the kernel lacks; their VMs' PIDs."""
        # Thread ids of another PID namespace's /proc would name other threads.
        if self._vcpu_map is None or self._inv.host_pids() is False:
            return set()
        seeded = seed_vcpus(view, self._vcpu_map, self._inv.run_state)
        self.seeded += len(seeded)
        return set(seeded.values())

    def forget(self, pids: set[int]) -> None:
        with self._cond:
            for pid in pids:
                self._known.pop(pid, None)
                self._unnamed_keys.pop(pid, None)
            self._noted.clear()  # a reused tid gets noted again (rare, cheap)


class Namer(threading.Thread):
    """Names the VM of each new vCPU thread as soon as the kernel reports
    it (probes/vmm.bpf.c), while its process still lives: a VM that exits
    before the next snapshot keeps its name.  One record per new thread,
    never per event."""

    POLL_MS = 100  # also how long close() may wait for this thread

    def __init__(self, loader: NewVcpus, names: Names) -> None:
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
