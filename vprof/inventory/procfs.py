"""Small, failure-tolerant readers for /proc, rooted anywhere.

Every process can exit, and every file can turn unreadable, between two
reads.  Each reader therefore returns None instead of raising; the caller
skips the entry and counts it.  Nothing here interprets what it reads beyond
the kernel's own format (see fs/proc/array.c for stat and status).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vprof.model import vm_key_start

# Bounds on what a VM owner can make us read: a command line may be up to
# ARG_MAX (a few MiB) and an environment as large; names come from the start.
CMDLINE_LIMIT = 1 << 20
SMALL_LIMIT = 1 << 16

KVM_VM_LINK = "anon_inode:kvm-vm"
KVM_VCPU_PREFIX = "anon_inode:kvm-vcpu:"


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat the inventory needs."""

    comm: str
    state: str
    ppid: int
    flags: int  # field 9: PF_* (include/linux/sched.h)
    start_time: int  # field 22, clock ticks after boot


@dataclass(frozen=True)
class FdScan:
    """What a process's descriptor table says about KVM."""

    count: int  # descriptors listed
    has_vm: bool  # holds an anon_inode:kvm-vm descriptor
    vcpus: dict[int, int]  # fd -> vcpu id (the <n> of anon_inode:kvm-vcpu:<n>)


def parse_stat(text: str) -> Stat | None:
    """Parse /proc/PID/stat.  comm may hold spaces and parentheses, so the
    fields after it are found from the *last* ')'."""
    open_at = text.find("(")
    close_at = text.rfind(")")
    if open_at < 0 or close_at < open_at:
        return None
    rest = text[close_at + 1 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    if len(rest) < 20:
        return None
    try:
        return Stat(
            comm=text[open_at + 1 : close_at],
            state=rest[0],
            ppid=int(rest[1]),
            flags=int(rest[6]),
            start_time=int(rest[19]),
        )
    except ValueError:
        return None


def parse_nspid(status: str) -> tuple[int, ...]:
    """The NSpid line of /proc/PID/status: the PID from proc_root's namespace
    down to the process's own."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            try:
                return tuple(int(x) for x in line[6:].split())
            except ValueError:
                return ()
    return ()


def split_nul(data: bytes) -> list[str]:
    """Split a NUL-separated file (cmdline, environ) into strings."""
    if data.endswith(b"\0"):
        data = data[:-1]
    if not data:
        return []
    return [part.decode("utf-8", "replace") for part in data.split(b"\0")]


class ProcFS:
    """Reads one /proc tree; every method returns None when the entry is gone."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root.rstrip("/") or "/"

    def path(self, *parts: object) -> str:
        return os.path.join(self.root, *(str(p) for p in parts))

    def read_bytes(self, *parts: object, limit: int = SMALL_LIMIT) -> bytes | None:
        try:
            with open(self.path(*parts), "rb") as f:
                return f.read(limit)
        except OSError:
            return None

    def read_text(self, *parts: object, limit: int = SMALL_LIMIT) -> str | None:
        data = self.read_bytes(*parts, limit=limit)
        return None if data is None else data.decode("utf-8", "replace")

    def pids(self) -> list[int]:
        """Numeric entries of the root: one per process (thread-group leader)."""
        return [int(name) for name in os.listdir(self.root) if name.isdigit()]

    def tasks(self, pid: int) -> list[int] | None:
        try:
            return [int(name) for name in os.listdir(self.path(pid, "task")) if name.isdigit()]
        except OSError:
            return None

    def stat(self, pid: int, tid: int | None = None) -> Stat | None:
        parts: tuple[object, ...] = (pid, "stat") if tid is None else (pid, "task", tid, "stat")
        text = self.read_text(*parts)
        return parse_stat(text) if text is not None else None

    def comm(self, pid: int, tid: int | None = None) -> str | None:
        parts: tuple[object, ...] = (pid, "comm") if tid is None else (pid, "task", tid, "comm")
        text = self.read_text(*parts, limit=256)
        return text[:-1] if text is not None and text.endswith("\n") else text

    def cmdline(self, pid: int) -> list[str] | None:
        data = self.read_bytes(pid, "cmdline", limit=CMDLINE_LIMIT)
        return split_nul(data) if data is not None else None

    def environ(self, pid: int) -> dict[str, str] | None:
        data = self.read_bytes(pid, "environ", limit=CMDLINE_LIMIT)
        if data is None:
            return None
        return dict(item.partition("=")[::2] for item in split_nul(data) if "=" in item)

    def link(self, *parts: object) -> str | None:
        try:
            return os.readlink(self.path(*parts))
        except OSError:
            return None

    def fd_count(self, pid: int) -> int | None:
        """Open descriptors, from the size of /proc/PID/fd (Linux >= 6.2; 0 before)."""
        try:
            return os.stat(self.path(pid, "fd")).st_size
        except OSError:
            return None

    def scan_fds(self, pid: int) -> FdScan | None:
        """Read every descriptor link of a process.  Only readlink: no open,
        no stat, so a scan of thousands of processes stays cheap."""
        try:
            dfd = os.open(self.path(pid, "fd"), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            names = os.listdir(dfd)
            has_vm = False
            vcpus: dict[int, int] = {}
            for name in names:
                try:
                    target = os.readlink(name, dir_fd=dfd)
                except OSError:
                    continue  # closed since listdir: an ordinary race
                if not target.startswith("anon_inode:kvm-"):
                    continue
                if target == KVM_VM_LINK:
                    has_vm = True
                elif target.startswith(KVM_VCPU_PREFIX):
                    vcpu_id = target[len(KVM_VCPU_PREFIX) :]
                    if vcpu_id.isdigit() and name.isdigit():
                        vcpus[int(name)] = int(vcpu_id)
            return FdScan(count=len(names), has_vm=has_vm, vcpus=vcpus)
        except OSError:
            return None
        finally:
            os.close(dfd)


def alive(vm_key: str, pid: int, proc_root: str) -> bool:
    """Whether the process behind a VmStat still runs (same pid and start time).

    The Profiler keeps a dead VM's figures for 30 s; the exporter keeps its
    final series for `dead_vm_grace_seconds` after the process is gone.
    """
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    want = vm_key_start(vm_key)
    # Field 22 (starttime) counts from after the ")" that ends comm.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return not want.isdigit() or (len(fields) > 19 and fields[19].decode() == want)
