# ruff: noqa: E501  (findings and fixes are sentences: one line each reads better)
"""`vprof doctor`'s KVM binary-statistics check: which route reaches each VM.

KVM serves a VM's binary statistics (KVM_GET_STATS_FD) only to the VM's own
process, so vprof reads them by one of two routes (vprof/sources/kvmstats.py):
a stats fd the VMM holds, duplicated with pidfd_getfd, or QEMU's QMP
`query-stats`.  This check tries them on every VM, as the sources do, and
says per VM which route works, or none and why.  A VM no route reaches is
DEGRADED: vprof profiles it, without halt-poll times and KVM's own counters.
"""

from __future__ import annotations

from typing import Any

from vprof.advice.doctor import DEGRADED, OK, Check, Env
from vprof.advice.vmfacts import cmdline_split
from vprof.inventory.inventory import Inventory
from vprof.inventory.procfs import CMDLINE_LIMIT
from vprof.inventory.types import VmInfo
from vprof.sources.kvmstats import KvmStatsReader, VmStats

ROUTES = {
    "pidfd": "a stats fd the VMM holds, duplicated with pidfd_getfd",
    "qmp": "QMP query-stats on the VMM's monitor socket",
}


def _fix(vm: VmInfo, why: str) -> str:
    """The one change that opens a route to this VM's statistics."""
    if "EPERM" in why:
        return "run vprof as root with CAP_SYS_PTRACE (and kernel.yama.ptrace_scope <= 2)"
    if vm.vmm == "qemu" and "no QMP socket" in why:
        return "give QEMU >= 7.1 a QMP socket vprof can open: -qmp unix:/run/qemu-<vm>.qmp,server=on,wait=off"
    if vm.vmm == "vprof-guest":
        return "start the micro-guest with `vprof guest --keep-stats-fds`"
    if vm.vmm == "qemu":
        return "QEMU >= 7.1 answers query-stats on its QMP socket: upgrade QEMU or check the socket's permissions"
    return f"a {vm.vmm} VMM that keeps its KVM stats fds open (KVM_GET_STATS_FD), or QEMU >= 7.1 with a QMP socket"


def _entry(vm: VmInfo, stats: VmStats) -> dict[str, Any]:
    counters = len(stats.vm.cumulative) + sum(len(v.cumulative) for v in stats.vcpus.values())
    counters += sum(len(v.cumulative) for v in stats.by_tid.values())
    return {
        "vm": vm.name,
        "pid": vm.pid,
        "vmm": vm.vmm,
        "route": stats.route or "none",
        "why": stats.why,
        "counters": counters if stats.route else None,
        "fix": "" if stats.route else _fix(vm, stats.why),
    }


def _argv(env: Env, pid: int) -> list[str]:
    raw = env.proc.read_bytes(pid, "cmdline", limit=CMDLINE_LIMIT)
    return cmdline_split(raw or b"")


def check_kvm_stats(env: Env, reader: KvmStatsReader | None = None) -> Check:
    """One line per VM: the route to its KVM statistics, or none and why."""
    try:
        view = Inventory(env.proc_root, env.sys_root).refresh()
    except OSError as exc:
        return Check(
            "kvm-stats", DEGRADED, f"cannot list the VMs: {exc.strerror or exc}", "run as root"
        )
    vms = sorted(view.vms.values(), key=lambda v: (v.name, v.key))
    if not vms:
        return Check(
            "kvm-stats",
            OK,
            "no VMs running: no KVM statistics route to check (routes: pidfd_getfd of a held stats fd, QMP query-stats)",
            data={"vms": []},
        )
    reader = reader or KvmStatsReader(env.proc_root)
    try:
        entries = [_entry(vm, reader.read(vm.pid, _argv(env, vm.pid))) for vm in vms]
    finally:
        reader.close()
    lines = [
        f"{e['vm']} (pid {e['pid']}): {ROUTES[e['route']]}"
        if e["route"] != "none"
        else f"{e['vm']} (pid {e['pid']}): none ({e['why']})"
        for e in entries
    ]
    missing = [e for e in entries if e["route"] == "none"]
    if not missing:
        return Check("kvm-stats", OK, "; ".join(lines), data={"vms": entries})
    fixes = "; ".join(dict.fromkeys(f"{e['vm']}: {e['fix']}" for e in missing))
    return Check(
        "kvm-stats",
        DEGRADED,
        f"{len(missing)} of {len(entries)} VMs without KVM binary statistics (halt-poll times, KVM's own exit counters): "
        + "; ".join(lines),
        fixes,
        data={"vms": entries},
    )
