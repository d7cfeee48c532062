"""Find every KVM VM on the host and say which VM and vCPU each thread is.

A VM is a process with a descriptor linking to `anon_inode:kvm-vm`; its
vCPUs are its `anon_inode:kvm-vcpu:<n>` descriptors.  That holds for every
VMM, so discovery needs no VMM API; names and metadata come on top
(vprof.inventory.naming).

Cost: a full scan reads one link per descriptor of every process, and the
name of each descriptor-less process (kernel threads, to find vhost
workers).  Later refreshes re-read a non-VM process only when its descriptor
count (one stat) has changed, with a full scan every FULL_RESCAN_S.  What
only changes with the process (its name, namespace, cgroup identity) is
learnt once per process key; VM processes' threads are re-read every time.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from vprof import sanitize
from vprof.inventory import naming
from vprof.inventory.procfs import FdScan, ProcFS, Stat, parse_nspid
from vprof.inventory.threads import (
    PF_KERNEL_MADE,
    ioctl_vcpu_fd,
    kernel_worker_owner,
    role_of,
    run_state,
    vcpu_index_from_name,
)
from vprof.inventory.types import InventoryView, ThreadInfo, VmInfo
from vprof.model import vm_key

# Processes whose descriptor count has not changed are not re-read, except
# on a full rescan this often (see Inventory._unchanged).
FULL_RESCAN_S = 30.0
# PROC_PID_INIT_INO (include/linux/proc_ns.h): the initial PID namespace.
INIT_PID_NS = f"pid:[{0xEFFFFFFC}]"
ANCESTOR_DEPTH = 4  # virt-launcher-monitor -> virt-launcher -> (virtqemud) -> qemu
_ENV_KEYS = ("POD_NAME", "POD_NAMESPACE")  # the only environment variables kept
_LIBVIRT_VCPU_DIR = re.compile(r"vcpu(\d+)")
_Worker = tuple[int, str, str, int]  # kernel thread: (tid, comm, role, owner pid)


@dataclass
class _Known:
    """What is learnt once per VM process key, and per-thread findings."""

    identity: naming.Identity
    comm: str
    local_pid: int | None
    cgroup_v2: str  # the process's cgroup v2 path, "" if none
    noted: dict[int, int] = field(default_factory=dict)  # tid -> vcpu id from KVM events
    probed: dict[int, int] = field(default_factory=dict)  # tid -> vcpu id from ioctl
    provisional: bool = False  # identity read from incomplete facts: learn again


class Inventory:
    """Discover VMs under `proc_root`; `refresh()` returns an immutable view.

    `proc_root` is the /proc to read: the host's, mounted anywhere (for
    example /host/proc in a container).  PIDs are numbered as in that /proc,
    which for the host's /proc are the PIDs BPF reports.  `sys_root` is used
    for libvirt's per-vCPU cgroups (`<sys_root>/fs/cgroup/...`).
    """

    def __init__(
        self, proc_root: str = "/proc", sys_root: str = "/sys", full_rescan_s: float = FULL_RESCAN_S
    ) -> None:
        self._fs = ProcFS(proc_root)
        self.sys_root = sys_root
        self.full_rescan_s = full_rescan_s
        self._last_full = -float("inf")
        self._quiet: dict[int, int] = {}  # pid -> descriptor count, for non-VM processes
        self._kthreads: dict[int, _Worker | None] = {}  # descriptor-less pid -> worker or None
        self._known: dict[str, _Known] = {}
        self._view = InventoryView.build({}, 0)
        self._unreadable = 0
        self._self_ns: tuple[int, str | None] | None = None

    @property
    def proc_root(self) -> str:
        return self._fs.root

    @property
    def view(self) -> InventoryView:
        """The view from the last refresh (empty before the first)."""
        return self._view

    def refresh(self) -> InventoryView:
        """Rescan: new VMs appear, exited ones go, reused PIDs get new keys."""
        self._unreadable = 0
        now = time.monotonic()
        full = now - self._last_full >= self.full_rescan_s
        if full:
            self._last_full = now
        quiet: dict[int, int] = {}
        kthreads: dict[int, _Worker | None] = {}
        vms: dict[str, VmInfo] = {}
        workers: list[_Worker] = []
        for pid in self._fs.pids():
            fd_count = self._fs.fd_count(pid)
            if not full and self._unchanged(pid, fd_count, quiet, kthreads):
                continue
            scan = self._fs.scan_fds(pid)
            if scan is None:
                self._unreadable += 1
            elif scan.has_vm:
                vm = self._vm(pid, scan)
                if vm is not None:
                    vms[vm.key] = vm
            elif scan.count == 0:
                worker = kthreads[pid] = self._kernel_worker(pid)
                workers += [worker] if worker is not None else []
            elif fd_count:
                quiet[pid] = fd_count
        self._quiet, self._kthreads = quiet, kthreads
        vms = _attach_workers(vms, workers)
        for key in set(self._known) - set(vms):
            del self._known[key]
        self._view = InventoryView.build(vms, self._unreadable)
        return self._view

    def _unchanged(
        self,
        pid: int,
        fd_count: int | None,
        quiet: dict[int, int],
        kthreads: dict[int, _Worker | None],
    ) -> bool:
        """True for a process known to hold no KVM descriptor whose descriptor
        count has not moved: creating a VM adds descriptors, so it would."""
        if fd_count is None:
            return False
        if fd_count > 0 and self._quiet.get(pid) == fd_count:
            quiet[pid] = fd_count
            return True
        if fd_count == 0 and pid in self._kthreads and self._kthreads[pid] is None:
            kthreads[pid] = None  # a kernel thread is named once; vhost ones are re-read
            return True
        return False

    def note_vcpu(self, tid: int, vcpu_id: int) -> bool:
        """Record the vcpu_id a KVM event reported for thread `tid`.

        Used where no thread name gives the index; takes effect from the next
        refresh.  Returns False if `tid` belongs to no VM of the last view.
        """
        thread = self._view.thread(tid)
        known = self._known.get(thread.vm_key) if thread is not None else None
        if known is None or vcpu_id < 0:
            return False
        known.noted[tid] = vcpu_id
        return True

    def run_state(self, pid: int, tid: int) -> tuple[bool, bool] | None:
        """(inside KVM_RUN, blocked) of vCPU thread `tid` now (threads.run_state),
        or None if it is gone or unreadable."""
        syscall = self._fs.read_text(pid, "task", tid, "syscall", limit=512)
        return run_state(syscall) if syscall else None

    # -- one VM ---------------------------------------------------------------

    def _vm(self, pid: int, scan: FdScan) -> VmInfo | None:
        stat = self._fs.stat(pid)
        if stat is None:
            self._unreadable += 1
            return None
        key = vm_key(pid, stat.start_time)
        known = self._known.get(key)
        if known is None or known.provisional:
            learnt = self._learn(pid, stat)
            if known is not None:
                learnt.noted, learnt.probed = known.noted, known.probed
            known = self._known[key] = learnt
        threads = self._threads(pid, key, scan, known)
        if threads is None:
            self._unreadable += 1
            self._known.pop(key, None)
            return None
        ident = known.identity
        vcpus = {t.tid: t.vcpu_index for t in threads.values() if t.vcpu_index is not None}
        return VmInfo(
            key=key,
            pid=pid,
            start_time=stat.start_time,
            name=sanitize.display(ident.name_raw),
            name_raw=naming.bounded(ident.name_raw),
            name_source=ident.name_source,
            uuid=sanitize.display(ident.uuid),
            vmm=ident.vmm,
            vcpus=MappingProxyType(vcpus),
            threads=MappingProxyType(threads),
            vcpu_count=max(len(set(scan.vcpus.values())), len(vcpus)),
            comm=sanitize.display(known.comm),
            local_pid=known.local_pid,
            manager=ident.manager,
            namespace=sanitize.display(ident.namespace),
            vcpu_ids=tuple(sorted(set(scan.vcpus.values()))),
            meta=MappingProxyType({k: sanitize.display(v) for k, v in ident.meta.items()}),
        )

    def _learn(self, pid: int, stat: Stat) -> _Known:
        """Read what stays fixed for the life of a process: its identity."""
        argv = self._fs.cmdline(pid)
        cgroup = self._fs.read_text(pid, "cgroup")
        env = {k: v for k, v in (self._fs.environ(pid) or {}).items() if k in _ENV_KEYS}
        ancestors: list[list[str]] = []
        ppid = stat.ppid
        for _ in range(ANCESTOR_DEPTH):
            parent = self._fs.stat(ppid) if ppid > 1 else None
            if parent is None:
                break
            ancestors.append(self._fs.cmdline(ppid) or [])
            ppid = parent.ppid
        facts = naming.ProcessFacts(pid, stat.comm, argv or [], cgroup or "", env, ancestors)
        v2 = next((ln[3:] for ln in (cgroup or "").splitlines() if ln.startswith("0::")), "")
        known = _Known(naming.identify(facts), stat.comm, self._local_pid(pid), v2)
        # Read again next time if the files that name the VM could not be read.
        known.provisional = argv is None or cgroup is None
        return known

    def _local_pid(self, pid: int) -> int | None:
        """This process's PID in vprof's own PID namespace, if it is visible there."""
        depth, own_ns = self._own_namespace()
        if depth == 0:
            return pid
        nspid = parse_nspid(self._fs.read_text(pid, "status") or "")
        if len(nspid) > depth and own_ns is not None and self._fs.link(pid, "ns", "pid") == own_ns:
            return nspid[depth]
        return None

    def start_time(self, pid: int) -> int | None:
        """The process's start time (clock ticks after boot, as in VmInfo.key),
        or None if it cannot be read."""
        stat = self._fs.stat(pid)
        return stat.start_time if stat is not None else None

    def host_pids(self) -> bool | None:
        """Whether proc_root numbers processes as the initial PID namespace
        does, which is how BPF reports them; None when it cannot be told."""
        depth, own_ns = self._own_namespace()
        if depth == 0 and own_ns is not None:
            return own_ns == INIT_PID_NS
        return None

    def _own_namespace(self) -> tuple[int, str | None]:
        """How many PID namespaces vprof sits below proc_root's, and its own."""
        if self._self_ns is None:
            nspid = parse_nspid(self._fs.read_text("self", "status") or "")
            depth = max(len(nspid) - 1, 0)
            self._self_ns = (depth, self._fs.link("self", "ns", "pid"))
        return self._self_ns

    # -- threads --------------------------------------------------------------

    def _threads(
        self, pid: int, key: str, scan: FdScan, known: _Known
    ) -> dict[int, ThreadInfo] | None:
        tids = self._fs.tasks(pid)
        if tids is None:
            return None
        comms: dict[int, str] = {}
        for tid in tids:
            comm = self._fs.comm(pid, tid)
            if comm is None:
                self._unreadable += 1  # exited between listing and reading
            else:
                comms[tid] = comm
        found = {tid: self._known_index(comm, tid, known) for tid, comm in comms.items()}
        mapped = sum(1 for f in found.values() if f is not None)
        if mapped < len(set(scan.vcpus.values())):
            found.update(self._fallback_indexes(pid, scan, known, comms, found))
        out: dict[int, ThreadInfo] = {}
        for tid, comm in comms.items():
            shown = sanitize.display(comm, 32)
            hit = found.get(tid)
            if hit is None:
                out[tid] = ThreadInfo(tid, key, role_of(comm, tid, pid), None, shown, "")
            else:
                out[tid] = ThreadInfo(tid, key, "vcpu", hit[0], shown, hit[1])
        return out

    @staticmethod
    def _known_index(comm: str, tid: int, known: _Known) -> tuple[int, str] | None:
        idx = vcpu_index_from_name(comm)
        if idx is not None:
            return idx, "thread name"
        if tid in known.noted:
            return known.noted[tid], "kvm event"
        if tid in known.probed:
            return known.probed[tid], "ioctl"
        return None

    def _fallback_indexes(
        self,
        pid: int,
        scan: FdScan,
        known: _Known,
        comms: dict[int, str],
        found: dict[int, tuple[int, str] | None],
    ) -> dict[int, tuple[int, str]]:
        """Indexes for threads whose names say nothing: libvirt's per-vCPU
        cgroups, then the vCPU descriptor a thread is blocked in KVM_RUN on."""
        out: dict[int, tuple[int, str]] = {}
        if known.identity.manager == "libvirt":
            for tid, idx in self._libvirt_vcpus(known.cgroup_v2).items():
                if tid in comms and found.get(tid) is None:
                    out[tid] = (idx, "libvirt cgroup")
        for tid, comm in comms.items():
            if tid in out or found.get(tid) is not None or role_of(comm, tid, pid) == "vhost":
                continue
            stat = self._fs.stat(pid, tid)
            if stat is None or stat.flags & PF_KERNEL_MADE:
                continue
            syscall = self._fs.read_text(pid, "task", tid, "syscall", limit=512)
            fd = ioctl_vcpu_fd(syscall) if syscall else None
            if fd is not None and fd in scan.vcpus:
                known.probed[tid] = scan.vcpus[fd]
                out[tid] = (scan.vcpus[fd], "ioctl")
        return out

    def _libvirt_vcpus(self, cgroup_v2: str) -> dict[int, int]:
        """tid -> vCPU index from libvirt's `<scope>/libvirt/vcpu<n>` cgroups."""
        end = cgroup_v2.find(".scope")
        if end < 0:
            return {}
        scope = os.path.join(self.sys_root, "fs", "cgroup", cgroup_v2[: end + 6].lstrip("/"))
        out: dict[int, int] = {}
        for base in (os.path.join(scope, "libvirt"), scope):
            try:
                entries = os.listdir(base)
            except OSError:
                continue
            for entry in entries:
                m = _LIBVIRT_VCPU_DIR.fullmatch(entry)
                text = _read(os.path.join(base, entry, "cgroup.threads")) if m else None
                for line in (text or "").split():
                    if m and line.isdigit():
                        out[int(line)] = int(m.group(1))
        return out

    def _kernel_worker(self, pid: int) -> _Worker | None:
        comm = self._fs.comm(pid)
        owner = kernel_worker_owner(comm) if comm else None
        return (pid, comm, owner[0], owner[1]) if comm and owner is not None else None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read(1 << 20)
    except OSError:
        return None


def _attach_workers(vms: dict[str, VmInfo], workers: list[_Worker]) -> dict[str, VmInfo]:
    """Charge kernel threads named after a VM thread (vhost-<pid>, kvm-pit/<pid>)
    to that VM: their CPU time is the VM's."""
    if not workers:
        return vms
    owner_of = {tid: vm.key for vm in vms.values() for tid in vm.threads}
    owner_of.update({vm.pid: vm.key for vm in vms.values()})
    extra: dict[str, dict[int, ThreadInfo]] = {}
    for tid, comm, role, owner in workers:
        key = owner_of.get(owner)
        if key is not None:
            info = ThreadInfo(tid, key, role, None, sanitize.display(comm, 32), "")
            extra.setdefault(key, {})[tid] = info
    out = dict(vms)
    for key, threads in extra.items():
        merged = {**out[key].threads, **threads}
        out[key] = replace(out[key], threads=MappingProxyType(merged))
    return out
