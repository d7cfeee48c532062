"""Name a VM the way its operator did, from facts read out of /proc.

Sources are tried in this order; the first that yields a name wins
(`NAME_SOURCES` lists the `name_source` each one reports):

1. KubeVirt: the VM's namespace and name, as "<namespace>/<name>", from the
   virt-launcher's `--namespace`/`--name` arguments (an ancestor process), or
   from the libvirt domain name "<namespace>_<name>" that KubeVirt gives QEMU
   (`-name guest=...`) when the process sits in a Kubernetes pod cgroup.
2. QEMU `-name NAME` or `-name guest=NAME,...` (`,,` is an escaped comma).
   libvirt always passes it; libvirt's cgroup scope then adds `manager`.
3. libvirt's cgroup scope `machine-qemu\\x2d<id>\\x2d<name>.scope` (systemd
   escaping), or `qemu-<id>-<name>.libvirt-qemu` without systemd.  libvirt
   cuts names there to 20 characters, hence its rank after `-name`.
4. Firecracker `--id` (its default, "anonymous-instance", names nothing).
5. Cloud Hypervisor `--api-socket`: the socket's file name, or its directory
   when the file name is generic (Kata uses .../<sandbox>/clh-api.sock).
6. Fallback `<comm>-<pid>`: stable for the process's life.

Everything here is pure: it reads only the strings it is given.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

NAME_SOURCES: tuple[str, ...] = (
    "kubevirt launcher args",
    "kubevirt domain name",
    "qemu -name",
    "libvirt scope",
    "firecracker --id",
    "cloud-hypervisor --api-socket",
    "fallback",
)

# Bound on a raw name: far above any real VM name, far below ARG_MAX.
MAX_RAW = 16 * 1024

FIRECRACKER_DEFAULT_ID = "anonymous-instance"
_GENERIC_SOCKETS = frozenset({"api", "clh-api", "ch-api", "cloud-hypervisor", "ch", "vmm"})


@dataclass(frozen=True)
class ProcessFacts:
    """What /proc says about one VM process and its ancestors."""

    pid: int
    comm: str
    argv: Sequence[str]
    cgroup: str = ""  # /proc/PID/cgroup, all lines
    environ: Mapping[str, str] = field(default_factory=dict)
    ancestors: Sequence[Sequence[str]] = ()  # argv of parent, grandparent, ...


@dataclass(frozen=True)
class Identity:
    name_raw: str
    name_source: str
    vmm: str
    uuid: str = ""
    manager: str = ""
    namespace: str = ""
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def qemu_opts(value: str) -> list[tuple[str | None, str]]:
    """Split a QemuOpts string ("guest=a,,b,debug-threads=on") into
    (key, value) pairs; the first element may omit its key (implied key)."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == ",":
            if value[i + 1 : i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    out: list[tuple[str | None, str]] = []
    for n, part in enumerate(parts):
        key, eq, val = part.partition("=")
        out.append((key, val) if eq else ((None, part) if n == 0 else (part, "")))
    return out


def option(argv: Sequence[str], *names: str) -> str | None:
    """The value of the last `NAME VALUE` or `NAME=VALUE` in argv."""
    found: str | None = None
    for i, arg in enumerate(argv[1:], start=1):
        for name in names:
            if arg == name and i + 1 < len(argv):
                found = argv[i + 1]
            elif arg.startswith(name + "="):
                found = arg[len(name) + 1 :]
    return found


def qemu_name(argv: Sequence[str]) -> str | None:
    value = option(argv, "-name", "--name")
    if value is None:
        return None
    name: str | None = None
    for key, val in qemu_opts(value):
        if key in (None, "guest"):
            name = val
    return name or None


def vmm_kind(argv: Sequence[str], comm: str) -> str:
    """Which VMM runs this process, from its executable name and arguments."""
    exe = os.path.basename(argv[0]) if argv else ""
    names = {exe, comm}
    if any("vprof.guest" in a for a in argv) or (
        any(os.path.basename(a) == "vprof" for a in argv[:2]) and "guest" in argv[1:3]
    ):
        return "vprof-guest"
    if any(n.startswith("qemu") for n in names) or exe == "kvm":
        return "qemu"
    if "firecracker" in names:
        return "firecracker"
    if names & {"cloud-hypervisor", "cloud-hyperviso"}:
        return "cloud-hypervisor"
    if "crosvm" in names:
        return "crosvm"
    if names & {"lkvm", "kvmtool"}:
        return "kvmtool"
    if "-name" in argv:
        return "qemu"  # a QEMU under another file name
    return "unknown"


_SYSTEMD_ESC = re.compile(rb"\\x([0-9a-fA-F]{2})")
_LIBVIRT_SCOPE = re.compile(r"machine-qemu\\x2d(?:(\d+)\\x2d)?([^/]+)\.scope")
_LIBVIRT_CGROUPFS = re.compile(r"/machine/qemu-(?:(\d+)-)?([^/]+)\.libvirt-qemu")
_KUBE_POD = re.compile(r"kubepods[^\n]*?pod([0-9a-fA-F_-]{36})")


def systemd_unescape(text: str) -> str:
    """Undo systemd unit-name escaping (`\\x2d` is '-', any byte as `\\xNN`)."""
    raw = _SYSTEMD_ESC.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode())
    return raw.decode("utf-8", "replace")


def libvirt_scope(cgroup: str) -> tuple[str, str] | None:
    """(domain id, domain short name) from a libvirt cgroup path, or None."""
    m = _LIBVIRT_SCOPE.search(cgroup)
    if m:
        return m.group(1) or "", systemd_unescape(m.group(2))
    m = _LIBVIRT_CGROUPFS.search(cgroup)
    if m:
        return m.group(1) or "", m.group(2)
    return None


def kube_pod_uid(cgroup: str) -> str | None:
    """The pod UID from a kubepods cgroup path (systemd or cgroupfs driver)."""
    m = _KUBE_POD.search(cgroup)
    return m.group(1).replace("_", "-") if m else None


def launcher_args(ancestors: Sequence[Sequence[str]]) -> tuple[str, str] | None:
    """(namespace, name) from the nearest virt-launcher(-monitor) ancestor."""
    for argv in ancestors:
        if argv and os.path.basename(argv[0]).startswith("virt-launcher"):
            ns, name = option(argv, "--namespace"), option(argv, "--name")
            if ns and name:
                return ns, name
    return None


def _kubevirt_marked(argv: Sequence[str]) -> bool:
    return any("kubevirt" in arg.lower() for arg in argv)


def _kubevirt(facts: ProcessFacts, meta: dict[str, str]) -> Identity | None:
    pod = kube_pod_uid(facts.cgroup)
    launched = launcher_args(facts.ancestors)
    if pod is None and launched is None:
        return None
    if pod:
        meta["pod_uid"] = pod
    if facts.environ.get("POD_NAME"):
        meta["pod"] = facts.environ["POD_NAME"]
    uuid = option(facts.argv, "-uuid", "--uuid") or ""
    if launched is not None:
        ns, name = launched
        source = "kubevirt launcher args"
    else:
        domain = qemu_name(facts.argv)
        # KubeVirt names the libvirt domain "<namespace>_<name>"; a namespace
        # is a DNS label, so it holds no '_' and the first '_' splits.  Other
        # QEMUs run in pods too (Kata): KubeVirt's own marks in the command
        # line (SMBIOS manufacturer, /var/run/kubevirt* paths) tell them apart.
        if domain is None or "_" not in domain or not _kubevirt_marked(facts.argv):
            return None
        ns, _, name = domain.partition("_")
        ns = facts.environ.get("POD_NAMESPACE", ns)
        source = "kubevirt domain name"
    return Identity(
        f"{ns}/{name}", source, "kubevirt", uuid, "kubevirt", ns, MappingProxyType(meta)
    )


def _api_socket_name(value: str) -> str | None:
    """`--api-socket /run/x.sock` or `--api-socket path=/run/x.sock` (not fd=N)."""
    opts = dict(qemu_opts(value))
    path = opts.get("path") or opts.get(None) or ""
    stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
    if stem in _GENERIC_SOCKETS:
        stem = os.path.basename(os.path.dirname(path.rstrip("/")))
    return stem or None


def identify(facts: ProcessFacts) -> Identity:
    """Name a VM process; see the module docstring for the order."""
    meta: dict[str, str] = {}
    kube = _kubevirt(facts, meta)
    if kube is not None:
        return kube
    argv, vmm = facts.argv, vmm_kind(facts.argv, facts.comm)
    uuid = option(argv, "-uuid", "--uuid") or ""
    scope = libvirt_scope(facts.cgroup)
    manager = ""
    if scope is not None:
        manager = "libvirt"
        meta["libvirt_id"], meta["libvirt_scope_name"] = scope
    frozen = MappingProxyType(meta)
    name = qemu_name(argv)
    if name is not None:
        return Identity(name, "qemu -name", vmm, uuid, manager, "", frozen)
    if scope is not None and scope[1]:
        return Identity(scope[1], "libvirt scope", vmm, uuid, manager, "", frozen)
    if vmm == "firecracker":
        fc_id = option(argv, "--id")
        if fc_id and fc_id != FIRECRACKER_DEFAULT_ID:
            return Identity(fc_id, "firecracker --id", vmm, uuid, manager, "", frozen)
    if vmm == "cloud-hypervisor":
        sock = option(argv, "--api-socket")
        sock_name = _api_socket_name(sock) if sock else None
        if sock_name:
            source = "cloud-hypervisor --api-socket"
            return Identity(sock_name, source, vmm, uuid, manager, "", frozen)
    return Identity(f"{facts.comm}-{facts.pid}", "fallback", vmm, uuid, manager, "", frozen)


def bounded(raw: str) -> str:
    """Cap a raw name: kept for export, but never unbounded."""
    return raw if len(raw) <= MAX_RAW else raw[:MAX_RAW]
