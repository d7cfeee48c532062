"""`vprof vms`: list the KVM VMs on this host."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter

import click

from vprof.inventory.types import InventoryView, VmInfo

_EPILOG = """\b
Examples:
  vprof vms                         # table of VMs, vCPU threads and name sources
  vprof vms --json | jq '.vms[].name'
  vprof vms --proc-root /host/proc  # in a container, with the host's /proc mounted

\b
A VM is any process holding a KVM VM descriptor (anon_inode:kvm-vm), whatever
its VMM.  Names come, in order, from: KubeVirt (virt-launcher arguments or
the "<namespace>_<name>" domain), QEMU -name, libvirt's cgroup scope,
Firecracker --id, Cloud Hypervisor --api-socket, else "<comm>-<pid>".
Run as root: other users' descriptors are unreadable otherwise, and skipped.
"""


@click.command(epilog=_EPILOG)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (raw names included).")
@click.option(
    "--proc-root",
    default="/proc",
    show_default=True,
    type=click.Path(exists=True, file_okay=False),
    help="The /proc to read (the host's, when vprof runs in a container).",
)
@click.option(
    "--sys-root",
    default="/sys",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The /sys to read (libvirt per-vCPU cgroups).",
)
def vms(as_json: bool, proc_root: str, sys_root: str) -> None:
    """List the KVM VMs on this host: name, PID, vCPU threads and indexes,
    VMM kind, and how each name was found.

    Overhead: one readlink per open file descriptor on the host, once.
    """
    from vprof.inventory.inventory import Inventory

    inv = Inventory(proc_root, sys_root)
    view = inv.refresh()
    host_pids = inv.host_pids()
    if host_pids is False:
        click.echo(
            f"note: {proc_root} is not the host's PID namespace, so its PIDs are not the ones"
            " BPF reports; mount the host's /proc and pass --proc-root",
            err=True,
        )
    if as_json:
        doc = as_document(view, proc_root, host_pids)
        click.echo(terminal_safe_json(doc))
    else:
        _print_table(view)


def terminal_safe_json(doc: object) -> str:
    """JSON that keeps readable Unicode but escapes what a terminal would act
    on: json escapes C0 controls itself; DEL, C1 controls (0x9b is CSI) and
    format characters (bidi overrides) are escaped here.  They can only occur
    inside strings, where \\uXXXX means the same character."""
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    return "".join(
        json.dumps(ch)[1:-1] if ord(ch) > 0x7E and unicodedata.category(ch)[0] == "C" else ch
        for ch in text
    )


def as_document(
    view: InventoryView, proc_root: str, host_pids: bool | None = None
) -> dict[str, object]:
    """The `--json` document."""
    return {
        "proc_root": proc_root,
        "host_pids": host_pids,
        "unreadable": view.unreadable,
        "vms": [vm.as_dict() for vm in _ordered(view)],
    }


def _ordered(view: InventoryView) -> list[VmInfo]:
    return sorted(view.vms.values(), key=lambda vm: (vm.name, vm.pid))


def vcpu_cell(vm: VmInfo) -> str:
    """`2: 0=4711 1=4712`: the vCPU count, then index=tid per mapped thread."""
    pairs = sorted((idx, tid) for tid, idx in vm.vcpus.items())
    listed = " ".join(f"{idx}={tid}" for idx, tid in pairs)
    unmapped = vm.vcpu_count - len(pairs)
    tail = f" (+{unmapped} unmapped)" if unmapped > 0 and pairs else ""
    return f"{vm.vcpu_count}: {listed}{tail}" if pairs else f"{vm.vcpu_count}: unmapped"


def threads_cell(vm: VmInfo) -> str:
    roles = Counter(t.role for t in vm.threads.values() if t.role != "vcpu")
    return " ".join(f"{role}={n}" for role, n in sorted(roles.items()))


def _print_table(view: InventoryView) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not view.vms:
        console.print(Text("No KVM VMs found."))
    else:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("NAME", "PID", "VMM", "vCPUs (index=tid)", "OTHER THREADS", "NAME SOURCE"):
            table.add_column(col, overflow="fold")
        for vm in _ordered(view):
            vmm = f"{vm.vmm}/{vm.manager}" if vm.manager and vm.manager != vm.vmm else vm.vmm
            # Text(), never markup: names are VM-owner data, and "[red]" is markup.
            cells = (vm.name, str(vm.pid), vmm, vcpu_cell(vm), threads_cell(vm), vm.name_source)
            table.add_row(*(Text(c) for c in cells))
        console.print(table)
    if view.unreadable:
        console.print(Text(f"{view.unreadable} /proc entries skipped (exited or unreadable)"))
