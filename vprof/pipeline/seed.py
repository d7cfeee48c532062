"""Register vCPU threads that were already running when vprof attached.

The probes register a vCPU thread in the kernel's vCPU map (probes/shared.h)
at its first KVM_RUN ioctl, exit or marking event.  A thread that was inside
KVM_RUN before vprof attached, stays there, and whose events only count
(probes/count.h: cpuid, emulated instructions, port I/O) is never
registered: no ledger, and sched_switch/sched_wakeup filter it out.  That is
every busy VM when `vprof daemon` restarts.  So the inventory's vCPU threads
that the map lacks are added from userspace, at start and at every inventory
refresh, in the state the thread's syscall file shows (threads.run_state).
A probe that registered the thread meanwhile wins (BPF_NOEXIST).

Left as is: a thread that exits between its /proc read and the insert keeps
an entry that accrues time (sched_process_exit never saw it registered)
until its VM process exits and the entry is pruned; a vCPU thread has the
life of its VM but for vCPU hot-unplug.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from vprof.inventory.types import InventoryView
from vprof.records import events as ev

log = logging.getLogger("vprof.pipeline.seed")


class VcpuMap(Protocol):
    """The loader's side (vprof/bpf/loader.py)."""

    def missing_vcpus(self, tids: Iterable[int]) -> list[int]: ...

    def seed_vcpu(self, tid: int, state: bytes) -> bool: ...


RunState = Callable[[int, int], "tuple[bool, bool] | None"]  # (pid, tid) -> (in_run, blocked)


def seed_vcpus(
    view: InventoryView,
    vcpu_map: VcpuMap,
    run_state: RunState,
    clock: Callable[[], int] = time.monotonic_ns,
) -> dict[int, int]:
    """Register every vCPU thread of `view` the kernel map lacks; the ones
    this call registered, tid -> pid (their VMs get no new-vCPU record)."""
    pid_of = {
        tid: vm.pid for vm in view.vms.values() for tid, t in vm.threads.items() if t.role == "vcpu"
    }
    seeded: dict[int, int] = {}
    for tid in vcpu_map.missing_vcpus(sorted(pid_of)):
        state = run_state(pid_of[tid], tid)
        if state is None:  # exited meanwhile
            continue
        # Stamped after the /proc read: no time before it is charged.
        raw = ev.encode_vcpu_seed(pid_of[tid], state[0], state[1], clock())
        if vcpu_map.seed_vcpu(tid, raw):
            seeded[tid] = pid_of[tid]
    if seeded:
        log.debug("registered %d vCPU thread(s) from the inventory", len(seeded))
    return seeded
