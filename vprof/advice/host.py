"""Host facts for advice: what the CPU, KVM and the kernel offer the VMs.

A pure reader over injectable /proc and /sys roots (like vprof.inventory):
every file may be absent or unreadable, and then the fact is None or empty,
never an exception.  Paths and formats are the kernel's own:
/proc/cpuinfo (arch/x86/kernel/cpu/proc.c, "flags" and "vmx flags"),
/sys/module/<mod>/parameters (module_param), /sys/class/iommu (one entry
per IOMMU unit), /sys/kernel/mm/transparent_hugepage/enabled ("[mode]"),
/sys/kernel/mm/hugepages/hugepages-<n>kB/, /sys/devices/system/cpu/smt/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from vprof.inventory.procfs import ProcFS

KVM_MODULES: tuple[str, ...] = ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm", "vhost_net", "vfio_pci")
_MODE = re.compile(r"\[(\w+)\]")


def _empty() -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class HugePool:
    size_kb: int
    total: int
    free: int


@dataclass(frozen=True)
class HostFacts:
    cpu_flags: frozenset[str] = frozenset()
    vmx_flags: frozenset[str] = frozenset()  # the "vmx flags" line (Linux >= 5.9), VMX only
    arm64: bool = False
    modules: Mapping[str, Mapping[str, str]] = field(
        default_factory=_empty
    )  # mod -> param -> value
    iommu_units: tuple[str, ...] = ()
    kernel_cmdline: str = ""
    thp: str | None = None  # "always", "madvise", "never"
    huge_pools: tuple[HugePool, ...] = ()
    kernel: str = ""
    smt: str | None = None  # smt/control: "on", "off", "forceoff", "notsupported", ...
    cpus: tuple[int, ...] = ()  # online CPUs
    vhost_net: bool = False  # /dev/vhost-net exists
    unreadable: tuple[str, ...] = ()
    recorded: bool = False  # from a recording's metadata: only kernel and CPU count

    @property
    def backend(self) -> str:
        """ "vmx", "svm", "kvm_pvm", "arm64" or "none"."""
        for mod, name in (("kvm_intel", "vmx"), ("kvm_amd", "svm"), ("kvm_pvm", "kvm_pvm")):
            if mod in self.modules:
                return name
        if self.arm64 and "kvm" in self.modules:
            return "arm64"
        return "none"

    def param(self, module: str, name: str) -> str | None:
        return self.modules.get(module, {}).get(name)

    def param_int(self, module: str, name: str) -> int | None:
        value = self.param(module, name)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def param_on(self, module: str, name: str) -> bool | None:
        """A bool or int module parameter: Y/1 on, N/0 off, None unknown."""
        value = self.param(module, name)
        if value is None:
            return None
        return value.strip() not in ("N", "n", "0")

    def cmdline_option(self, key: str) -> str | None:
        for word in self.kernel_cmdline.split():
            name, _, value = word.partition("=")
            if name == key:
                return value
        return None

    @property
    def hardware_virt(self) -> bool:
        return bool({"vmx", "svm"} & self.cpu_flags) or self.arm64


def parse_cpulist(text: str) -> tuple[int, ...]:
    """ "0-3,8,10-11" -> (0, 1, 2, 3, 8, 10, 11); junk yields ()."""
    out: set[int] = set()
    for part in text.strip().split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            if sep:
                out.update(range(int(lo), int(hi) + 1))
            elif lo:
                out.add(int(lo))
        except ValueError:
            return ()
    return tuple(sorted(out))


def _cpuinfo(text: str) -> tuple[frozenset[str], frozenset[str], bool]:
    flags: frozenset[str] = frozenset()
    vmx: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = frozenset(value.split())
        elif key == "vmx flags" and not vmx:
            vmx = frozenset(value.split())
    return flags, vmx, "CPU implementer" in text


class _Sys:
    def __init__(self, root: str) -> None:
        self.fs = ProcFS(root)  # the same failure-tolerant reads, rooted at /sys
        self.root = self.fs.root

    def text(self, *parts: str) -> str | None:
        data = self.fs.read_text(*parts, limit=4096)
        return None if data is None else data.strip()

    def listdir(self, *parts: str) -> list[str]:
        try:
            return sorted(os.listdir(self.fs.path(*parts)))
        except OSError:
            return []


def _modules(sysfs: _Sys) -> dict[str, Mapping[str, str]]:
    out: dict[str, Mapping[str, str]] = {}
    for mod in KVM_MODULES:
        if not os.path.isdir(sysfs.fs.path("module", mod)):
            continue
        params = {}
        for name in sysfs.listdir("module", mod, "parameters"):
            value = sysfs.text("module", mod, "parameters", name)
            if value is not None:
                params[name] = value
        out[mod] = MappingProxyType(params)
    return out


def _pools(sysfs: _Sys) -> tuple[HugePool, ...]:
    pools = []
    for name in sysfs.listdir("kernel", "mm", "hugepages"):
        m = re.fullmatch(r"hugepages-(\d+)kB", name)
        if m is None:
            continue
        total = sysfs.text("kernel", "mm", "hugepages", name, "nr_hugepages")
        free = sysfs.text("kernel", "mm", "hugepages", name, "free_hugepages")
        if total and free and total.isdigit() and free.isdigit():
            pools.append(HugePool(int(m.group(1)), int(total), int(free)))
    return tuple(pools)


def read_host(
    proc_root: str = "/proc", sys_root: str = "/sys", dev_root: str = "/dev"
) -> HostFacts:
    """Read every host fact; missing files leave their fact empty."""
    proc = ProcFS(proc_root)
    sysfs = _Sys(sys_root)
    unreadable = []
    cpuinfo = proc.read_text("cpuinfo", limit=1 << 22)
    if cpuinfo is None:
        unreadable.append(proc.path("cpuinfo"))
    flags, vmx, arm64 = _cpuinfo(cpuinfo or "")
    thp_text = sysfs.text("kernel", "mm", "transparent_hugepage", "enabled")
    thp = _MODE.search(thp_text) if thp_text else None
    online = sysfs.text("devices", "system", "cpu", "online")
    if online is None:
        unreadable.append(sysfs.fs.path("devices", "system", "cpu", "online"))
    return HostFacts(
        cpu_flags=flags,
        vmx_flags=vmx,
        arm64=arm64,
        modules=MappingProxyType(_modules(sysfs)),
        iommu_units=tuple(sysfs.listdir("class", "iommu")),
        kernel_cmdline=(proc.read_text("cmdline") or "").strip(),
        thp=thp.group(1) if thp else None,
        huge_pools=_pools(sysfs),
        kernel=(proc.read_text("sys", "kernel", "osrelease") or "").strip(),
        smt=sysfs.text("devices", "system", "cpu", "smt", "control"),
        cpus=parse_cpulist(online or ""),
        vhost_net=os.path.exists(os.path.join(dev_root, "vhost-net")),
        unreadable=tuple(unreadable),
    )
