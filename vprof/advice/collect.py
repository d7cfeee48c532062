"""Gather what `vprof advise` needs: the VMs, their facts, a profile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vprof.advice.host import HostFacts, read_host
from vprof.advice.vmfacts import VmFacts, read_vm
from vprof.inventory.types import InventoryView, VmInfo
from vprof.model import Snapshot, diff
from vprof.sources import SnapshotSource


class UnknownVm(ValueError):
    """A VM name or key on the command line that no running VM has."""


@dataclass(frozen=True)
class Facts:
    host: HostFacts
    vms: tuple[VmFacts, ...]
    unreadable: int  # /proc entries the inventory skipped


def select(view: InventoryView, names: Sequence[str]) -> list[VmInfo]:
    """The VMs named (by sanitised name, raw name or key); every VM when none is."""
    if not names:
        return sorted(view.vms.values(), key=lambda v: (v.name, v.key))
    chosen: dict[str, VmInfo] = {}
    for name in names:
        found = view.by_name(name) or [v for v in view.vms.values() if v.key == name]
        if not found:
            known = ", ".join(sorted(v.name for v in view.vms.values())) or "none"
            raise UnknownVm(f"no VM named {name!r} (VMs now: {known})")
        chosen.update({v.key: v for v in found})
    return sorted(chosen.values(), key=lambda v: (v.name, v.key))


def merged(before: InventoryView, after: InventoryView) -> InventoryView:
    """The view after profiling (vCPU threads named meanwhile), keeping VMs that a
    refresh under load missed or that exited: their facts are then read as they are."""
    vms = {**before.vms, **after.vms}
    return InventoryView.build(vms, after.unreadable)


def gather(view: InventoryView, proc_root: str, sys_root: str, dev_root: str = "/dev") -> Facts:
    return Facts(
        host=read_host(proc_root, sys_root, dev_root),
        vms=tuple(read_vm(vm, proc_root) for vm in sorted(view.vms.values(), key=lambda v: v.key)),
        unreadable=view.unreadable,
    )


def profile(source: SnapshotSource, seconds: float) -> Snapshot:
    """The second interval of `seconds` from any snapshot source, as a delta.

    The first interval is a warm-up: the live source names the VMs and
    registers their running vCPU threads at its first snapshot, so counts
    before it would be partial."""
    it = source.snapshots(seconds)
    first = next(it)
    return diff(first, next(it))
