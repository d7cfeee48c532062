"""The inventory against fake /proc and /sys trees, one per VMM.

Command lines, cgroup paths and thread names copy what each VMM really
produces (see the comments on each fixture); tests/fixtures/proc/fakeproc.py
builds the trees.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures.proc.fakeproc import FakeProc

from vprof.inventory import Inventory, InventoryView, VmInfo
from vprof.inventory.cli import vms as vms_command
from vprof.sanitize import MAX_NAME

UUID = "5f1c8a4e-0c1b-4d6e-9f3a-2b7c9d1e0f42"

# libvirt 9.x for a domain "web-front" (id 3): the head of its real command line.
LIBVIRT_ARGV = [
    "/usr/bin/qemu-system-x86_64",
    "-name",
    "guest=web-front,debug-threads=on",
    "-S",
    "-object",
    '{"qom-type":"secret","id":"masterKey0","format":"raw"}',
    "-machine",
    "pc-q35-8.2,usb=off,dump-guest-core=off,memory-backend=pc.ram",
    "-accel",
    "kvm",
    "-cpu",
    "host,migratable=on",
    "-m",
    "size=4194304k",
    "-smp",
    "2,sockets=2,cores=1,threads=1",
    "-uuid",
    UUID,
    "-no-user-config",
    "-nodefaults",
]
LIBVIRT_SCOPE = "machine.slice/machine-qemu\\x2d3\\x2dweb\\x2dfront.scope"
QEMU_THREADS = {
    101: "IO mon_iothread",
    102: "CPU 0/KVM",
    103: "CPU 1/KVM",
    104: "call_rcu",
    105: "worker",
    106: "vhost-100",  # Linux >= 6.4: vhost workers are threads of the VMM
}


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


def inventory(fake: FakeProc, full_rescan_s: float = 30.0) -> Inventory:
    """An Inventory on the fake tree.  The kernel reports a process's open
    descriptors as the size of /proc/PID/fd; a fake directory cannot, so the
    count is taken by listing it."""
    inv = Inventory(str(fake.proc), str(fake.sys), full_rescan_s=full_rescan_s)

    def fd_count(pid: int) -> int | None:
        try:
            return len(os.listdir(fake.proc / str(pid) / "fd"))
        except OSError:
            return None

    inv._fs.fd_count = fd_count  # type: ignore[method-assign]
    return inv


def refresh(fake: FakeProc) -> InventoryView:
    return inventory(fake).refresh()


def only(view: InventoryView) -> VmInfo:
    assert len(view.vms) == 1, view.vms
    return next(iter(view.vms.values()))


def test_plain_qemu_name_with_escaped_comma(fake: FakeProc) -> None:
    argv = ["qemu-system-x86_64", "-name", "guest=web,,front,debug-threads=on", "-uuid", UUID]
    fake.vm(100, "qemu-system-x86", argv, vcpus=2, threads=QEMU_THREADS, start_time=555)
    fake.process(200, "bash", ["bash"])  # not a VM
    vm = only(refresh(fake))
    assert (vm.key, vm.pid, vm.start_time) == ("100:555", 100, 555)
    assert (vm.name, vm.name_raw, vm.name_source) == ("web,front", "web,front", "qemu -name")
    assert (vm.vmm, vm.manager, vm.uuid, vm.comm) == ("qemu", "", UUID, "qemu-system-x86")
    assert vm.vcpu_count == 2 and vm.vcpu_ids == (0, 1)
    assert dict(vm.vcpus) == {102: 0, 103: 1}
    roles = {tid: t.role for tid, t in vm.threads.items()}
    assert roles == {
        100: "main",
        101: "io",
        102: "vcpu",
        103: "vcpu",
        104: "other",
        105: "io",
        106: "vhost",
    }
    assert vm.threads[102].index_source == "thread name"


def test_libvirt_domain_with_scope_and_uuid(fake: FakeProc) -> None:
    cgroup = f"0::/{LIBVIRT_SCOPE}/libvirt/emulator\n"
    fake.vm(100, "qemu-system-x86", LIBVIRT_ARGV, vcpus=2, threads=QEMU_THREADS, cgroup=cgroup)
    vm = only(refresh(fake))
    assert (vm.name, vm.name_source, vm.vmm, vm.manager) == (
        "web-front",
        "qemu -name",
        "qemu",
        "libvirt",
    )
    assert vm.uuid == UUID
    assert dict(vm.meta) == {"libvirt_id": "3", "libvirt_scope_name": "web-front"}


def test_libvirt_scope_names_a_vm_without_name_and_maps_vcpus_by_cgroup(fake: FakeProc) -> None:
    # No -name and no debug-threads: every thread is called after the binary,
    # so libvirt's per-vCPU cgroups give the indexes.
    scope = "machine.slice/machine-qemu\\x2d12\\x2dd\\xc3\\xa9mo\\x2dvm.scope"
    threads = {301: "qemu-system-x86", 302: "qemu-system-x86", 303: "qemu-system-x86"}
    argv = ["/usr/bin/qemu-system-x86_64", "-m", "1G", "-smp", "2"]
    fake.vm(
        300,
        "qemu-system-x86",
        argv,
        vcpus=2,
        threads=threads,
        cgroup=f"0::/{scope}/libvirt/emulator\n",
    )
    fake.cgroup_threads(f"{scope}/libvirt/vcpu0", [302])
    fake.cgroup_threads(f"{scope}/libvirt/vcpu1", [303])
    fake.cgroup_threads(f"{scope}/libvirt/emulator", [300, 301])
    vm = only(refresh(fake))
    assert (vm.name, vm.name_source, vm.manager) == ("démo-vm", "libvirt scope", "libvirt")
    assert dict(vm.vcpus) == {302: 0, 303: 1}
    assert vm.threads[302].index_source == "libvirt cgroup"
    assert vm.threads[301].role == "other"


def test_firecracker_under_jailer(fake: FakeProc) -> None:
    # The jailer execs /firecracker inside its chroot with --id and timing flags.
    argv = [
        "/firecracker",
        "--id",
        "lambda-4f2a",
        "--start-time-us",
        "1735689600000000",
        "--start-time-cpu-us",
        "1200",
        "--parent-cpu-time-us",
        "900",
        "--api-sock",
        "/run/firecracker.socket",
    ]
    threads = {401: "fc_api", 402: "fc_vcpu 0", 403: "fc_vcpu 1"}
    fake.vm(400, "firecracker", argv, vcpus=2, threads=threads)
    vm = only(refresh(fake))
    assert (vm.name, vm.name_source, vm.vmm) == ("lambda-4f2a", "firecracker --id", "firecracker")
    assert dict(vm.vcpus) == {402: 0, 403: 1}
    assert vm.threads[400].role == "main" and vm.threads[401].role == "other"


def test_firecracker_default_id_falls_back(fake: FakeProc) -> None:
    argv = ["firecracker", "--api-sock", "/tmp/fc.sock", "--id", "anonymous-instance"]
    fake.vm(410, "firecracker", argv, vcpus=1, threads={411: "fc_vcpu 0"})
    vm = only(refresh(fake))
    assert (vm.name, vm.name_source) == ("firecracker-410", "fallback")


@pytest.mark.parametrize(
    ("socket", "name"),
    [
        ("/run/vc/vm/sandbox-42/clh-api.sock", "sandbox-42"),  # Kata Containers
        ("path=/run/ch/db-primary.sock", "db-primary"),
    ],
)
def test_cloud_hypervisor(fake: FakeProc, socket: str, name: str) -> None:
    argv = ["/usr/bin/cloud-hypervisor", "--api-socket", socket, "--cpus", "boot=2"]
    argv += ["--memory", "size=1024M", "--kernel", "/vmlinux", "--disk", "path=/r.img"]
    threads = {
        501: "vmm",
        502: "http-server",
        503: "signal_handler",
        504: "vcpu0",
        505: "vcpu1",
        506: "_disk0_q0",
        507: "_net1_qp0",
    }
    fake.vm(500, "cloud-hyperviso", argv, vcpus=2, threads=threads)
    vm = only(refresh(fake))
    assert (vm.name, vm.name_source, vm.vmm) == (
        name,
        "cloud-hypervisor --api-socket",
        "cloud-hypervisor",
    )
    assert dict(vm.vcpus) == {504: 0, 505: 1}
    roles = {tid: t.role for tid, t in vm.threads.items()}
    assert roles[501] == "main" and roles[506] == roles[507] == "io" and roles[502] == "other"


KUBE_CGROUP = (
    "0::/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod0f7c4ea1_21c4_4b8e_9a3e_6c1e8a1b2c3d.slice/"
    "cri-containerd-6b2f9c0d1e.scope\n"
)
KUBE_ARGV = [
    "/usr/libexec/qemu-kvm",
    "-name",
    "guest=prod_db-vm,debug-threads=on",
    "-uuid",
    UUID,
    "-smbios",
    f"type=1,manufacturer=KubeVirt,product=None,uuid={UUID},family=KubeVirt",
    "-chardev",
    "socket,id=charserial0,path=/var/run/kubevirt-private/0f7c4ea1/virt-serial0,server=on",
]


def test_kubevirt_from_virt_launcher_arguments(fake: FakeProc) -> None:
    # virt-launcher-monitor (pid 1 of the pod) reaps the daemonised QEMU.
    launcher = ["/usr/bin/virt-launcher-monitor", "--qemu-timeout", "262s", "--name", "db-vm"]
    launcher += ["--uid", "0f7c4ea1-21c4-4b8e-9a3e-6c1e8a1b2c3d", "--namespace", "prod"]
    fake.process(600, "virt-launcher-m", launcher, cgroup=KUBE_CGROUP)
    fake.vm(
        610,
        "qemu-kvm",
        KUBE_ARGV,
        vcpus=1,
        threads={611: "CPU 0/KVM"},
        ppid=600,
        cgroup=KUBE_CGROUP,
        environ={"POD_NAME": "virt-launcher-db-vm-x7k2p", "LC_ALL": "C"},
    )
    vm = only(refresh(fake))
    assert (vm.name, vm.name_source) == ("prod/db-vm", "kubevirt launcher args")
    assert (vm.vmm, vm.manager, vm.namespace, vm.uuid) == ("kubevirt", "kubevirt", "prod", UUID)
    assert vm.meta["pod_uid"] == "0f7c4ea1-21c4-4b8e-9a3e-6c1e8a1b2c3d"
    assert vm.meta["pod"] == "virt-launcher-db-vm-x7k2p"
    assert "LC_ALL" not in vm.meta  # the environment is not kept, beyond POD_*


def test_kubevirt_from_domain_name_in_pod_cgroup(fake: FakeProc) -> None:
    # The launcher's arguments are unreadable (another PID namespace, say):
    # the "<namespace>_<name>" domain name still names the VM.
    fake.vm(610, "qemu-kvm", KUBE_ARGV, vcpus=1, threads={611: "CPU 0/KVM"}, cgroup=KUBE_CGROUP)
    vm = only(refresh(fake))
    assert (vm.name, vm.name_source, vm.namespace) == ("prod/db-vm", "kubevirt domain name", "prod")


def test_other_qemu_in_a_pod_is_not_taken_for_kubevirt(fake: FakeProc) -> None:
    argv = ["/opt/kata/bin/qemu-system-x86_64", "-name", "sandbox_7f3e", "-uuid", UUID]
    fake.vm(620, "qemu-system-x86", argv, vcpus=1, cgroup=KUBE_CGROUP)
    vm = only(refresh(fake))
    assert (vm.name, vm.name_source, vm.vmm, vm.namespace) == (
        "sandbox_7f3e",
        "qemu -name",
        "qemu",
        "",
    )


def test_plain_kvm_user_falls_back_and_maps_vcpus_by_ioctl(fake: FakeProc) -> None:
    fake.vm(
        700,
        "kvmtest",
        ["./kvmtest", "--vcpus", "2"],
        vcpus=2,
        threads={701: "kvmtest", 702: "kvmtest"},
    )
    # fd 12 is kvm-vcpu:1 (DEFAULT_FDS numbering: vcpu n at fd 11+n).
    fake.blocked_in(700, 702, "16 0xc 0xae80 0x0 0x0 0x0 0x0 0x7ffc0 0x7f000")
    fake.blocked_in(700, 701, "7 0x5 0x1 0xffffffff 0x0 0x0 0x0 0x7ffc0 0x7f000")
    inv = inventory(fake)
    vm = only(inv.refresh())
    assert (vm.name, vm.name_source, vm.vmm) == ("kvmtest-700", "fallback", "unknown")
    if vm.vcpus:  # the ioctl source needs the host's syscall numbering (x86_64 here)
        assert dict(vm.vcpus) == {702: 1}
        assert vm.threads[702].index_source == "ioctl"
    # What the kernel reported stays known once the thread runs again.
    fake.blocked_in(700, 702, "running")
    assert dict(only(inv.refresh()).vcpus) == dict(vm.vcpus)


def test_kernel_worker_with_a_frozen_kvm_run_is_not_a_vcpu(fake: FakeProc) -> None:
    # Seen on Linux 6.18: kvm-nx-lpage-recovery is a user worker forked from
    # the first vCPU thread, and its syscall file shows that thread's KVM_RUN.
    # The VMM also holds two descriptors per vCPU (dup'd): two vCPUs, not four.
    fake.vm(700, "kvmtest", ["./kvmtest"], vcpus=2, threads={702: "kvmtest"})
    for n in (0, 1):
        (fake.proc / "700" / "fd" / str(20 + n)).symlink_to(f"anon_inode:kvm-vcpu:{n}")
    fake.thread(700, 703, "kvm-nx-lpage-re", flags=0x404040)
    fake.blocked_in(700, 703, "16 0xb 0xae80 0x0 0x0 0x0 0x7f64eaf1e420 0x0 0x0")
    vm = only(refresh(fake))
    assert vm.vcpu_count == 2 and vm.vcpu_ids == (0, 1)
    assert dict(vm.vcpus) == {}
    assert vm.threads[703].role == "other"


def test_kvm_event_vcpu_ids_fill_in_unnamed_threads(fake: FakeProc) -> None:
    fake.vm(700, "kvmtest", ["./kvmtest"], vcpus=2, threads={701: "kvmtest", 702: "kvmtest"})
    inv = inventory(fake)
    assert inv.note_vcpu(701, 0) is False  # before any refresh: unknown thread
    view = inv.refresh()
    assert view.thread(701) is not None and view.thread(701).role == "other"
    assert inv.note_vcpu(701, 0) and inv.note_vcpu(702, 1)
    assert not inv.note_vcpu(999, 0)
    vm = only(inv.refresh())
    assert dict(vm.vcpus) == {701: 0, 702: 1}
    assert vm.threads[701].index_source == "kvm event" and vm.threads[701].role == "vcpu"


HOSTILE = [
    "\x1b[31mred\x1b[0m\x1b]0;pwned\x07",
    "two\nlines\rand\ttabs",
    "名前 with spaces, and commas",
    "x" * 10_240,
    "\x01\x7f\x9b[31mC1 CSI",
    "evil\u202egnp.exe",  # a bidi override reverses what follows on screen
    "astral \U000f0000 private use",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_names_are_sanitised_and_kept_raw(fake: FakeProc, raw: str) -> None:
    escaped = raw.replace(",", ",,")
    fake.vm(100, "qemu-system-x86", ["qemu", "-name", f"guest={escaped},debug-threads=on"], vcpus=1)
    vm = only(refresh(fake))
    assert vm.name_raw == raw
    assert len(vm.name) <= MAX_NAME
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in vm.name)
    assert "\x1b" not in vm.name and "pwned" not in vm.name
    out = CliRunner().invoke(vms_command, ["--proc-root", str(fake.proc)])
    assert out.exit_code == 0
    assert "\x1b" not in out.output and "\r" not in out.output
    raw_json = CliRunner().invoke(vms_command, ["--json", "--proc-root", str(fake.proc)]).output
    assert not any(c in raw_json for c in "\x1b\x7f\x9b\u202e")
    assert json.loads(raw_json)["vms"][0]["name_raw"] == vm.name_raw


def test_hostile_thread_and_process_names(fake: FakeProc) -> None:
    comm = "a) (b\x1b[2J"
    fake.vm(100, comm, [], vcpus=1, threads={101: "CPU 0/KVM", 102: "\x1b[31mx"}, start_time=77)
    vm = only(refresh(fake))
    assert vm.start_time == 77 and vm.key == "100:77"
    assert vm.name_source == "fallback" and "\x1b" not in vm.name and "\x1b" not in vm.comm
    assert "\x1b" not in vm.threads[102].comm


def test_pid_reuse_gets_a_new_key_and_a_new_name(fake: FakeProc) -> None:
    inv = inventory(fake)
    fake.vm(100, "qemu-system-x86", ["qemu", "-name", "old"], vcpus=1, start_time=1000)
    assert only(inv.refresh()).key == "100:1000"
    fake.remove(100)
    fake.vm(100, "qemu-system-x86", ["qemu", "-name", "new"], vcpus=2, start_time=9000)
    vm = only(inv.refresh())
    assert (vm.key, vm.name, vm.vcpu_count) == ("100:9000", "new", 2)
    assert "100:1000" not in inv.view.vms


def test_vms_come_and_go_between_refreshes(fake: FakeProc) -> None:
    inv = inventory(fake)
    assert inv.refresh().vms == {}
    fake.vm(100, "qemu-system-x86", ["qemu", "-name", "a"], vcpus=1)
    fake.vm(200, "qemu-system-x86", ["qemu", "-name", "b"], vcpus=1)
    assert {vm.name for vm in inv.refresh().vms.values()} == {"a", "b"}
    fake.remove(100)
    view = inv.refresh()
    assert {vm.name for vm in view.vms.values()} == {"b"}
    assert view.vm_of_pid(100) is None and view.vm_of_pid(200) is not None
    assert view.pids == frozenset({200})


def test_a_process_that_creates_a_vm_later_is_found_next_refresh(fake: FakeProc) -> None:
    inv = inventory(fake)
    fake.process(800, "python3", ["python3", "mykvm.py"])
    fake.process(801, "bash", ["bash"])
    assert inv.refresh().vms == {}
    scanned: list[int] = []
    scan = inv._fs.scan_fds
    inv._fs.scan_fds = lambda pid: scanned.append(pid) or scan(pid)  # type: ignore[method-assign]
    for fd, target in ((10, "anon_inode:kvm-vm"), (11, "anon_inode:kvm-vcpu:0")):
        (fake.proc / "800" / "fd" / str(fd)).symlink_to(target)
    vm = only(inv.refresh())
    assert (vm.pid, vm.name) == (800, "python3-800")
    assert scanned == [800]  # bash's descriptors did not change: not re-read


def test_full_rescan_reads_every_process(fake: FakeProc) -> None:
    inv = inventory(fake, full_rescan_s=0.0)
    fake.process(801, "bash", ["bash"])
    inv.refresh()
    scanned: list[int] = []
    scan = inv._fs.scan_fds
    inv._fs.scan_fds = lambda pid: scanned.append(pid) or scan(pid)  # type: ignore[method-assign]
    inv.refresh()
    assert scanned == [801]


def test_threads_appear_and_vanish_between_refreshes(fake: FakeProc) -> None:
    inv = inventory(fake)
    fake.vm(100, "qemu-system-x86", ["qemu", "-name", "a"], vcpus=2, threads={101: "CPU 0/KVM"})
    assert dict(only(inv.refresh()).vcpus) == {101: 0}
    fake.thread(100, 102, "CPU 1/KVM")  # vCPU 1 started late
    fake.remove_thread(100, 101)
    view = inv.refresh()
    assert dict(only(view).vcpus) == {102: 1}
    assert view.thread(101) is None and view.thread(102) is not None
    assert view.thread(102).vcpu_index == 1 and view.vm_of_tid(102) is only(view)


def test_thread_vanishing_between_listing_and_reading(fake: FakeProc, monkeypatch) -> None:
    inv = inventory(fake)
    fake.vm(
        100,
        "qemu-system-x86",
        ["qemu", "-name", "a"],
        vcpus=2,
        threads={101: "CPU 0/KVM", 102: "CPU 1/KVM"},
    )
    listed = inv._fs.tasks

    def racing_tasks(pid: int) -> list[int] | None:
        tids = listed(pid)
        fake.remove_thread(100, 102)  # exits right after the listing
        return tids

    monkeypatch.setattr(inv._fs, "tasks", racing_tasks)
    view = inv.refresh()
    assert dict(only(view).vcpus) == {101: 0}
    assert view.unreadable == 1


def test_unreadable_entries_are_skipped_and_counted(fake: FakeProc) -> None:
    fake.vm(100, "qemu-system-x86", ["qemu", "-name", "ok"], vcpus=1)
    fake.vm(200, "qemu-system-x86", ["qemu", "-name", "hidden"], vcpus=1)
    fake.unreadable(200, "fd")  # EACCES on another user's descriptors, say
    fake.vm(300, "qemu-system-x86", ["qemu", "-name", "gone"], vcpus=1)
    fake.unreadable(300, "stat")  # exited between the fd scan and stat
    fake.vm(400, "qemu-system-x86", ["qemu", "-name", "nocmd"], vcpus=1)
    fake.unreadable(400, "cmdline")
    fake.vm(500, "qemu-system-x86", ["qemu", "-name", "notasks"], vcpus=1)
    fake.unreadable(500, "task")
    view = refresh(fake)
    assert {vm.name for vm in view.vms.values()} == {"ok", "qemu-system-x86-400"}
    assert view.unreadable == 3


def test_a_name_unreadable_once_is_read_again(fake: FakeProc) -> None:
    inv = inventory(fake)
    fake.vm(100, "qemu-system-x86", ["qemu", "-name", "late"], vcpus=1)
    fake.unreadable(100, "cmdline")
    assert only(inv.refresh()).name_source == "fallback"
    (fake.proc / "100" / "cmdline").rmdir()
    (fake.proc / "100" / "cmdline").write_bytes(b"qemu\0-name\0late\0")
    vm = only(inv.refresh())
    assert (vm.name, vm.name_source) == ("late", "qemu -name")


def test_kernel_vhost_workers_are_charged_to_their_vm(fake: FakeProc) -> None:
    fake.vm(100, "qemu-system-x86", ["qemu", "-name", "a"], vcpus=1, threads={101: "CPU 0/KVM"})
    fake.kthread(900, "vhost-100")  # Linux < 6.4: a kernel thread named after the owner
    fake.kthread(901, "kvm-pit/100")
    fake.kthread(902, "vhost-4242")  # some other owner
    fake.kthread(903, "kworker/0:1")
    view = refresh(fake)
    vm = only(view)
    assert vm.threads[900].role == "vhost" and vm.threads[901].role == "io"
    assert view.thread(900).vm_key == vm.key
    assert view.thread(902) is None and view.thread(903) is None
    assert view.tids == frozenset({100, 101, 900, 901})


def test_pid_namespace_mapping(fake: FakeProc) -> None:
    # vprof runs as PID 5 in a container (host PID 9000), reading the host's /proc.
    own_ns, other_ns = "pid:[4026532001]", "pid:[4026532999]"
    fake.process(9000, "vprof", ["vprof", "daemon"], nspid=[9000, 5])
    fake.self_link(9000, [9000, 5], own_ns)
    fake.vm(100, "qemu-system-x86", ["qemu", "-name", "mine"], vcpus=1, nspid=[100, 12])
    fake.pidns(100, own_ns)
    fake.vm(200, "qemu-system-x86", ["qemu", "-name", "theirs"], vcpus=1, nspid=[200, 12])
    fake.pidns(200, other_ns)
    fake.vm(300, "qemu-system-x86", ["qemu", "-name", "host"], vcpus=1)
    view = refresh(fake)
    (mine,), (theirs,), (host,) = view.by_name("mine"), view.by_name("theirs"), view.by_name("host")
    assert (mine.pid, mine.local_pid) == (100, 12)
    assert theirs.local_pid is None and host.local_pid is None
    assert view.pid_of_local(12) == 100
    assert view.vm_of_pid(100) is mine  # BPF's host PIDs key the view


@pytest.mark.parametrize(
    ("pidns", "host"), [("pid:[4026531836]", True), ("pid:[4026532001]", False)]
)
def test_host_pid_namespace_is_recognised(fake: FakeProc, pidns: str, host: bool) -> None:
    fake.process(9000, "vprof", ["vprof", "vms"])
    fake.self_link(9000, [9000], pidns)
    assert inventory(fake).host_pids() is host
    out = CliRunner().invoke(vms_command, ["--json", "--proc-root", str(fake.proc)])
    assert ("not the host's PID namespace" in out.output) is not host
    assert inventory(FakeProc(fake.proc.parent / "other")).host_pids() is None


def test_same_namespace_local_pid_is_the_pid(fake: FakeProc) -> None:
    fake.vm(100, "qemu-system-x86", ["qemu", "-name", "a"], vcpus=1)
    vm = only(refresh(fake))
    assert vm.local_pid == 100


def test_cli_table_and_json(fake: FakeProc) -> None:
    fake.vm(
        100,
        "qemu-system-x86",
        LIBVIRT_ARGV,
        vcpus=2,
        threads=QEMU_THREADS,
        cgroup=f"0::/{LIBVIRT_SCOPE}/emulator\n",
    )
    fake.vm(
        400, "firecracker", ["/firecracker", "--id", "[red]fc"], vcpus=1, threads={401: "fc_vcpu 0"}
    )
    runner = CliRunner()
    table = runner.invoke(vms_command, ["--proc-root", str(fake.proc), "--sys-root", str(fake.sys)])
    assert table.exit_code == 0, table.output
    for text in (
        "web-front",
        "0=102",
        "1=103",
        "qemu/libvirt",
        "qemu -name",
        "[red]fc",
        "firecracker --id",
    ):
        assert text in table.output
    doc = json.loads(runner.invoke(vms_command, ["--json", "--proc-root", str(fake.proc)]).output)
    assert [v["name"] for v in doc["vms"]] == ["[red]fc", "web-front"]
    assert doc["vms"][1]["vcpus"] == [{"index": 0, "tid": 102}, {"index": 1, "tid": 103}]
    assert doc["unreadable"] == 0


def test_cli_empty_and_bad_root(fake: FakeProc, tmp_path: Path) -> None:
    runner = CliRunner()
    empty = runner.invoke(vms_command, ["--proc-root", str(fake.proc)])
    assert empty.exit_code == 0 and "No KVM VMs found" in empty.output
    bad = runner.invoke(vms_command, ["--proc-root", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_real_proc_scan_does_not_fail() -> None:
    view = Inventory().refresh()
    assert view.unreadable >= 0
    for vm in view.vms.values():
        assert vm.key == f"{vm.pid}:{vm.start_time}"


def test_vms_is_wired_into_vprof_with_help() -> None:
    from vprof.cli import main

    out = CliRunner().invoke(main, ["vms", "--help"])
    assert out.exit_code == 0
    for text in ("--json", "--proc-root", "Examples", "QEMU -name", "Firecracker --id"):
        assert text in out.output
