"""Pure parts of the inventory: option parsing, name sources, thread roles."""

from __future__ import annotations

import pytest

from vprof.inventory import naming, threads
from vprof.inventory.procfs import parse_nspid, parse_stat, split_nul
from vprof.inventory.types import ROLES


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("web", [(None, "web")]),
        ("guest=web,debug-threads=on", [("guest", "web"), ("debug-threads", "on")]),
        ("a,,b,process=p", [(None, "a,b"), ("process", "p")]),
        ("guest=x,,,,y", [("guest", "x,,y")]),
        ("guest=", [("guest", "")]),
        ("guest=a=b", [("guest", "a=b")]),
    ],
)
def test_qemu_opts_split_and_unescape(value: str, expected: list[tuple[str | None, str]]) -> None:
    assert naming.qemu_opts(value) == expected


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["qemu", "-name", "plain"], "plain"),
        (["qemu", "-name", "guest=a,,b,debug-threads=on"], "a,b"),
        (["qemu", "--name", "guest=dashes"], "dashes"),
        (["qemu", "-name", "first", "-name", "guest=last"], "last"),
        (["qemu", "-name", "debug-threads=on"], None),
        (["qemu", "-m", "1G"], None),
        (["qemu", "-name"], None),  # dangling option: no value
    ],
)
def test_qemu_name(argv: list[str], name: str | None) -> None:
    assert naming.qemu_name(argv) == name


def test_option_forms() -> None:
    argv = ["fc", "--id", "a", "--api-sock=/s", "--id=b"]
    assert naming.option(argv, "--id") == "b"
    assert naming.option(argv, "--api-sock") == "/s"
    assert naming.option(argv, "--missing") is None


@pytest.mark.parametrize(
    ("cgroup", "scope"),
    [
        (
            "0::/machine.slice/machine-qemu\\x2d3\\x2dweb\\x2dfront.scope/libvirt/emulator",
            ("3", "web-front"),
        ),
        ("1:cpu:/machine.slice/machine-qemu\\x2d12\\x2dd\\xc3\\xa9mo.scope\n", ("12", "démo")),
        ("0::/machine.slice/machine-qemu\\x2dold.scope\n", ("", "old")),
        ("3:cpu:/machine/qemu-5-vm1.libvirt-qemu/emulator\n", ("5", "vm1")),
        ("0::/user.slice/user-0.slice/session-1.scope\n", None),
    ],
)
def test_libvirt_scope(cgroup: str, scope: tuple[str, str] | None) -> None:
    assert naming.libvirt_scope(cgroup) == scope


def test_kube_pod_uid_from_both_cgroup_drivers() -> None:
    systemd = (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        "kubepods-burstable-pod0f7c4ea1_21c4_4b8e_9a3e_6c1e8a1b2c3d.slice/cri-containerd-ab.scope"
    )
    cgroupfs = "0::/kubepods/besteffort/pod0f7c4ea1-21c4-4b8e-9a3e-6c1e8a1b2c3d/ab12"
    for text in (systemd, cgroupfs):
        assert naming.kube_pod_uid(text) == "0f7c4ea1-21c4-4b8e-9a3e-6c1e8a1b2c3d"
    assert naming.kube_pod_uid("0::/machine.slice/x.scope") is None


@pytest.mark.parametrize(
    ("argv", "comm", "kind"),
    [
        (["/usr/bin/qemu-system-x86_64", "-name", "x"], "qemu-system-x86", "qemu"),
        (["/usr/bin/kvm", "-m", "1G"], "kvm", "qemu"),
        (["/usr/libexec/qemu-kvm"], "qemu-kvm", "qemu"),
        (["/firecracker", "--id", "x"], "firecracker", "firecracker"),
        (["/usr/bin/cloud-hypervisor"], "cloud-hyperviso", "cloud-hypervisor"),
        (["/usr/bin/python3", "-m", "vprof.guest", "-name", "guest=g"], "python3", "vprof-guest"),
        (["/venv/bin/vprof", "guest", "--name", "g", "-name", "guest=g"], "vprof", "vprof-guest"),
        (["./mykvm"], "mykvm", "unknown"),
        ([], "mykvm", "unknown"),
    ],
)
def test_vmm_kind(argv: list[str], comm: str, kind: str) -> None:
    assert naming.vmm_kind(argv, comm) == kind


def test_every_identity_source_is_listed() -> None:
    facts = naming.ProcessFacts(1, "x", ["x"])
    assert naming.identify(facts).name_source in naming.NAME_SOURCES
    assert naming.identify(facts).name_raw == "x-1"


@pytest.mark.parametrize(
    ("comm", "index"),
    [
        ("CPU 0/KVM", 0),
        ("CPU 17/KVM", 17),
        ("vcpu3", 3),
        ("fc_vcpu 2", 2),
        ("crosvm_vcpu1", 1),
        ("kvm-vcpu-4", 4),
        ("CPU 0/TCG", None),
        ("qemu-system-x86", None),
        ("vcpu", None),
    ],
)
def test_vcpu_index_from_thread_name(comm: str, index: int | None) -> None:
    assert threads.vcpu_index_from_name(comm) == index


@pytest.mark.parametrize(
    ("comm", "tid", "role"),
    [
        ("qemu-system-x86", 100, "main"),
        ("IO iothread0", 101, "io"),
        ("IO mon_iothread", 101, "io"),
        ("worker", 101, "io"),
        ("fc_vmm", 101, "io"),
        ("_disk0_q0", 101, "io"),
        ("vhost-100", 101, "vhost"),
        ("vmm", 101, "main"),
        ("call_rcu", 101, "other"),
        ("kvm-nx-lpage-re", 101, "other"),
        ("fc_api", 101, "other"),
    ],
)
def test_thread_roles(comm: str, tid: int, role: str) -> None:
    assert threads.role_of(comm, tid, 100) == role
    assert role in ROLES


def test_kernel_worker_owner() -> None:
    assert threads.kernel_worker_owner("vhost-4711") == ("vhost", 4711)
    assert threads.kernel_worker_owner("kvm-pit/4711") == ("io", 4711)
    assert threads.kernel_worker_owner("kworker/0:1") is None


@pytest.mark.parametrize(
    ("text", "machine", "fd"),
    [
        ("16 0xb 0xae80 0x0 0x7ffd 0x0 0x0 0x7ffc 0x7f00", "x86_64", 11),
        ("29 0xb 0xae80 0x0 0x0 0x0 0x0 0x7ffc 0x7f00", "aarch64", 11),
        ("16 0xb 0xae9a 0x0 0x0 0x0 0x0 0x7ffc 0x7f00", "x86_64", None),  # other ioctl
        ("7 0x0 0x1 0x0 0x0 0x0 0x0 0x7ffc 0x7f00", "x86_64", None),  # poll
        ("running", "x86_64", None),
        ("-1 0x7ffc 0x7f00", "x86_64", None),
        ("16 0xb 0xae80", "sparc", None),
    ],
)
def test_ioctl_vcpu_fd(text: str, machine: str, fd: int | None) -> None:
    assert threads.ioctl_vcpu_fd(text, machine) == fd


@pytest.mark.parametrize(
    ("comm", "start"),
    [
        ("qemu-system-x86", 1234),
        ("a) (b", 1234),  # parentheses inside comm: fields start after the last ')'
        ("sp ace", 99),
        (")", 7),
    ],
)
def test_parse_stat_survives_hostile_comm(comm: str, start: int) -> None:
    from fixtures.proc.fakeproc import stat_line

    stat = parse_stat(stat_line(42, comm, start, ppid=7))
    assert stat is not None
    assert (stat.comm, stat.ppid, stat.start_time, stat.state) == (comm, 7, start, "S")


def test_parse_stat_rejects_garbage() -> None:
    assert parse_stat("") is None
    assert parse_stat("1 (x) S 1 2") is None
    assert parse_stat("1 x S " + "y " * 30) is None


def test_nspid_and_nul_split() -> None:
    assert parse_nspid("Name:\tq\nNSpid:\t900\t12\n") == (900, 12)
    assert parse_nspid("Name:\tq\n") == ()
    assert split_nul(b"a\0b c\0\0") == ["a", "b c", ""]
    assert split_nul(b"") == []
    assert split_nul(b"\xff\0") == ["\ufffd"]
