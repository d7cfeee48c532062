"""Who a VM is: its identity value and the one "<pid>:<start time>" key format.

Re-exported by vprof/model.py, the usual place to import them from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def vm_key(pid: int, start_time: int) -> str:
    """A VM's identity key, "<pid>:<start time>" (field 22 of /proc/PID/stat,
    clock ticks after boot; 0 while unknown): a reused PID gets a new key."""
    return f"{pid}:{start_time}"


def vm_key_start(key: str) -> str:
    """The start-time part of a vm_key(), as text ("" when it has none)."""
    return key.partition(":")[2]


@dataclass(frozen=True)
class VmIdentity:
    """Who a VM is: the one value the inventory finds, the pipeline carries and
    a VmStat is built from (VmStat.of)."""

    key: str  # vm_key(): stable for the process's life, never reused
    pid: int
    name: str  # sanitised for terminals, labels and file names
    name_raw: str  # as the VM owner gave it; only for export
    name_source: str  # how the name was found, e.g. "qemu -name", "fallback"
    uuid: str = ""
    vmm: str = "unknown"
    vcpu_count: int = 0
    vcpu_index: Mapping[int, int] = field(default_factory=dict)  # tid -> vCPU index
