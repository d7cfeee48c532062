"""The inventory's data: immutable views of the VMs on a host at one refresh.

Everything here is plain data so that the pipeline, sinks and tests can hold a
view without touching /proc.  Strings the VM owner controls appear twice: a
sanitised form (`name`, `comm`) for terminals, labels and file names, and the
original (`name_raw`) for export only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from vprof.model import VmIdentity

ROLES: tuple[str, ...] = ("vcpu", "io", "main", "vhost", "other")


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class ThreadInfo:
    """One thread whose CPU time belongs to a VM."""

    tid: int
    vm_key: str
    role: str  # one of ROLES
    vcpu_index: int | None = None
    comm: str = ""  # sanitised thread name
    index_source: str = ""  # "thread name", "kvm event", "ioctl", "libvirt cgroup" or ""


@dataclass(frozen=True)
class VmInfo:
    """One VM: a process holding a KVM VM file descriptor."""

    key: str  # "<pid>:<starttime>": never reused, unlike the PID
    pid: int  # as numbered in proc_root (the host's PIDs when proc_root is the host's /proc)
    start_time: int  # field 22 of /proc/PID/stat: clock ticks after boot
    name: str  # sanitised: safe for a terminal, a label or a file name
    name_raw: str  # as the VM owner wrote it, for export only
    name_source: str  # which source named it; see vprof.inventory.naming.NAME_SOURCES
    uuid: str  # "" when no source gives one
    vmm: str  # "qemu", "firecracker", "cloud-hypervisor", "kubevirt", "vprof-guest", ...
    vcpus: Mapping[int, int]  # vCPU thread id -> vCPU index, for the threads mapped so far
    threads: Mapping[int, ThreadInfo]  # every thread charged to the VM, vhost workers included
    vcpu_count: int  # vCPU file descriptors the process holds
    comm: str  # sanitised process name
    local_pid: int | None = None  # the PID in vprof's own PID namespace, if visible there
    manager: str = ""  # "libvirt", "kubevirt" or ""
    namespace: str = ""  # KubeVirt: the pod's Kubernetes namespace
    vcpu_ids: tuple[int, ...] = ()  # the <n> of each anon_inode:kvm-vcpu:<n> descriptor
    meta: Mapping[str, str] = field(default_factory=_empty)  # sanitised extra facts

    @property
    def identity(self) -> VmIdentity:
        """Who this VM is, as the pipeline and its snapshots carry it."""
        return VmIdentity(
            key=self.key,
            pid=self.pid,
            name=self.name,
            name_raw=self.name_raw,
            name_source=self.name_source,
            uuid=self.uuid,
            vmm=self.vmm,
            vcpu_count=self.vcpu_count,
            vcpu_index=dict(self.vcpus),
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, raw name included (for export)."""
        return {
            "key": self.key,
            "pid": self.pid,
            "local_pid": self.local_pid,
            "start_time": self.start_time,
            "name": self.name,
            "name_raw": self.name_raw,
            "name_source": self.name_source,
            "uuid": self.uuid,
            "vmm": self.vmm,
            "manager": self.manager,
            "namespace": self.namespace,
            "comm": self.comm,
            "vcpu_count": self.vcpu_count,
            "vcpu_ids": list(self.vcpu_ids),
            "vcpus": [
                {"index": idx, "tid": tid} for tid, idx in sorted(self.vcpus.items(), key=_by_idx)
            ],
            "threads": [
                {
                    "tid": t.tid,
                    "role": t.role,
                    "vcpu_index": t.vcpu_index,
                    "comm": t.comm,
                    "index_source": t.index_source,
                }
                for t in sorted(self.threads.values(), key=lambda t: t.tid)
            ],
            "meta": dict(self.meta),
        }


def _by_idx(item: tuple[int, int]) -> tuple[int, int]:
    return (item[1], item[0])


@dataclass(frozen=True)
class InventoryView:
    """The VMs found by one refresh, with tid and pid lookups."""

    vms: Mapping[str, VmInfo]
    unreadable: int = 0  # /proc entries skipped (vanished mid-read, permission denied)
    _threads: Mapping[int, ThreadInfo] = field(default_factory=_empty, repr=False)
    _pids: Mapping[int, str] = field(default_factory=_empty, repr=False)
    _local: Mapping[int, int] = field(default_factory=_empty, repr=False)

    @classmethod
    def build(cls, vms: Mapping[str, VmInfo], unreadable: int) -> InventoryView:
        threads = {tid: t for vm in vms.values() for tid, t in vm.threads.items()}
        pids = {vm.pid: vm.key for vm in vms.values()}
        local = {vm.local_pid: vm.pid for vm in vms.values() if vm.local_pid is not None}
        return cls(
            vms=MappingProxyType(dict(vms)),
            unreadable=unreadable,
            _threads=MappingProxyType(threads),
            _pids=MappingProxyType(pids),
            _local=MappingProxyType(local),
        )

    def thread(self, tid: int) -> ThreadInfo | None:
        """The VM thread with this (host) thread id, or None if no VM owns it."""
        return self._threads.get(tid)

    def vm_of_pid(self, pid: int) -> VmInfo | None:
        """The VM whose process has this (host) PID, or None."""
        key = self._pids.get(pid)
        return self.vms[key] if key is not None else None

    def vm_of_tid(self, tid: int) -> VmInfo | None:
        """The VM a thread (vCPU, I/O, vhost worker, ...) works for, or None."""
        t = self._threads.get(tid)
        return self.vms.get(t.vm_key) if t is not None else None

    def pid_of_local(self, local_pid: int) -> int | None:
        """Map a PID from vprof's own PID namespace to proc_root's numbering."""
        return self._local.get(local_pid)

    def by_name(self, name: str) -> list[VmInfo]:
        """VMs whose sanitised or raw name is `name` (names need not be unique)."""
        return [vm for vm in self.vms.values() if name in (vm.name, vm.name_raw)]

    @property
    def pids(self) -> frozenset[int]:
        """Every VM process: what the probes' in-kernel filter should admit."""
        return frozenset(self._pids)

    @property
    def tids(self) -> frozenset[int]:
        """Every thread charged to some VM."""
        return frozenset(self._threads)
