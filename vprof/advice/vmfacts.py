"""Per-VM facts for advice: device models, passthrough, memory backing, affinity.

Read for a VM the inventory found (vprof.inventory.VmInfo), from the same
injectable /proc root.  Sources: /proc/PID/cmdline (at most CMDLINE_LIMIT
bytes: a longer one is cut there and flagged), /proc/PID/fd links to
/dev/vfio/<group> (a VFIO group held open is a passthrough device),
/proc/PID/smaps_rollup (AnonHugePages, Shared_/Private_Hugetlb, Rss; in kB,
fs/proc/task_mmu.c), and Cpus_allowed_list in each vCPU thread's status.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from vprof.advice import cmdline
from vprof.advice.host import parse_cpulist
from vprof.inventory.procfs import CMDLINE_LIMIT, ProcFS
from vprof.inventory.types import VmInfo


def _empty() -> Mapping[int, tuple[int, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class VmFacts:
    key: str
    name: str  # sanitised
    pid: int
    vmm: str
    vcpu_count: int
    config: cmdline.VmmConfig
    cmdline_bytes: int = 0
    cmdline_truncated: bool = False
    vfio_groups: tuple[str, ...] = ()
    rss_kb: int | None = None
    anon_huge_kb: int | None = None
    hugetlb_kb: int | None = None
    affinity: Mapping[int, tuple[int, ...]] = field(default_factory=_empty)  # vCPU tid -> CPUs
    unreadable: tuple[str, ...] = ()  # what could not be read, as "/proc/PID/<file>"
    recorded: bool = False  # from a recording: identity and vCPU count only

    @property
    def guest_ram_kb(self) -> int | None:
        if self.config.memory_mb:
            return self.config.memory_mb * 1024
        return self.rss_kb

    @property
    def huge_backed(self) -> str:
        """How guest RAM is on huge pages for sure: "hugetlbfs", "memfd-hugetlb" or ""."""
        if self.config.hugepages:
            return self.config.hugepages
        return "hugetlbfs" if (self.hugetlb_kb or 0) > 0 else ""


def parse_smaps_rollup(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            out[key.strip()] = int(words[0])
    return out


def _vfio(fs: ProcFS, pid: int) -> tuple[str, ...] | None:
    try:
        names = os.listdir(fs.path(pid, "fd"))
    except OSError:
        return None
    groups = set()
    for name in names:
        target = fs.link(pid, "fd", name)
        # /dev/vfio/vfio is the container; /dev/vfio/<N> (or devices/vfioN) a group.
        if target and target.startswith("/dev/vfio/") and target != "/dev/vfio/vfio":
            groups.add(target.rsplit("/", 1)[-1])
    return tuple(sorted(groups))


def _affinity(fs: ProcFS, pid: int, tids: Sequence[int]) -> dict[int, tuple[int, ...]]:
    out = {}
    for tid in tids:
        status = fs.read_text(pid, "task", tid, "status")
        for line in (status or "").splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out[tid] = parse_cpulist(line.partition(":")[2])
    return out


def read_vm(vm: VmInfo, proc_root: str = "/proc") -> VmFacts:
    fs = ProcFS(proc_root)
    unreadable = []
    raw = fs.read_bytes(vm.pid, "cmdline", limit=CMDLINE_LIMIT + 1)
    if raw is None:
        unreadable.append(f"/proc/{vm.pid}/cmdline")
    data = (raw or b"")[:CMDLINE_LIMIT]
    argv = cmdline_split(data)
    vfio = _vfio(fs, vm.pid)
    if vfio is None:
        unreadable.append(f"/proc/{vm.pid}/fd")
    rollup_text = fs.read_text(vm.pid, "smaps_rollup")
    if rollup_text is None:
        unreadable.append(f"/proc/{vm.pid}/smaps_rollup")
    rollup = parse_smaps_rollup(rollup_text or "")
    hugetlb = None
    if rollup_text is not None:
        hugetlb = rollup.get("Shared_Hugetlb", 0) + rollup.get("Private_Hugetlb", 0)
    return VmFacts(
        key=vm.key,
        name=vm.name,
        pid=vm.pid,
        vmm=vm.vmm,
        vcpu_count=vm.vcpu_count,
        config=cmdline.parse(vm.vmm, argv),
        cmdline_bytes=len(raw or b""),
        cmdline_truncated=raw is not None and len(raw) > CMDLINE_LIMIT,
        vfio_groups=vfio or (),
        rss_kb=rollup.get("Rss"),
        anon_huge_kb=rollup.get("AnonHugePages"),
        hugetlb_kb=hugetlb,
        affinity=MappingProxyType(_affinity(fs, vm.pid, sorted(vm.vcpus))),
        unreadable=tuple(unreadable),
    )


def cmdline_split(data: bytes) -> list[str]:
    if data.endswith(b"\0"):
        data = data[:-1]
    return [p.decode("utf-8", "replace") for p in data.split(b"\0")] if data else []
