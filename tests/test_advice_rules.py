# ruff: noqa: E501  (command lines and expected sentences read better whole)
"""Every advice rule fires on a fixture tree built to trigger it and stays quiet on one built not to.

The oracle is the tree and the figures the test itself put in: a rule's
evidence must quote them back (a 30% I/O share in, "30.0%" out).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from advice_cases import (
    CLOUD_HYPERVISOR,
    FIRECRACKER,
    LIBVIRT_EMULATED_TAIL,
    LIBVIRT_HUGE_RAM,
    LIBVIRT_VIRTIO_TAIL,
    SECONDS,
    Tree,
    finding,
    libvirt,
    qemu,
    vmstat,
)

from vprof.advice.rule import ADVISE, BLOCKED, NOT_POSSIBLE
from vprof.advice.rules import RULES

IO30 = {"vmm_userspace": 28.0, "kernel_io": 2.0, "in_kvm_run": 70.0}
IDE = {0x1F0: 40_000, 0x1F7: 20_000, 0x3F6: 20_000, 0xCF8: 100}


def test_rule_ids_are_unique_and_every_rule_names_its_parts() -> None:
    assert len({r.id for r in RULES}) == len(RULES) >= 14
    for r in RULES:
        assert r.remedy and r.needs and r.check and r.fires_when, r.id
        assert r.technology in ("hardware assist", "hypervisor configuration", "paravirtualisation")


def test_emulated_nic_and_disk_get_virtio_advice_naming_them(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    tids = t.vm(100, libvirt("web-1", LIBVIRT_EMULATED_TAIL))
    f = finding(t.advise([vmstat(100, tids, IO30, ports=IDE)]), 100, "io-emulated-device")
    assert f is not None and f.status == ADVISE
    assert "30.0% of vCPU time on I/O (28.0% in the VMM's userspace)" in f.evidence
    assert "0x1f0-0x1f7 (IDE primary channel) 75%" in f.evidence
    assert "e1000e" in f.evidence and "ide-hd" in f.evidence
    assert "e1000e -> virtio-net-pci" in f.remedy and "ide-hd -> virtio-blk-pci" in f.remedy
    assert f.figures["io_exits_per_s"] == pytest.approx(sum(IDE.values()) / SECONDS)
    assert "vprof diff" in f.check


def test_virtio_vm_with_the_same_io_gets_no_emulated_device_advice(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    tids = t.vm(100, libvirt("web-2", LIBVIRT_VIRTIO_TAIL))
    report = t.advise([vmstat(100, tids, IO30, ports=IDE)])
    assert finding(report, 100, "io-emulated-device") is None
    assert finding(report, 100, "io-virtio-vhost") is None  # vhost=true
    assert finding(report, 100, "io-virtio-iothread") is None  # iothread=iothread1


def test_emulated_device_rule_is_quiet_when_io_is_small(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    tids = t.vm(100, libvirt("web-1", LIBVIRT_EMULATED_TAIL))
    report = t.advise(
        [vmstat(100, tids, {"vmm_userspace": 1.0, "in_kvm_run": 99.0}, ports={0x1F0: 50})]
    )
    assert finding(report, 100, "io-emulated-device") is None


def test_unidentified_ports_on_a_vmm_without_devices(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    argv = [
        "/usr/bin/python3",
        "-m",
        "vprof.guest.runner",
        "-name",
        "guest=pio-1",
        "--workload",
        "pio",
    ]
    tids = t.vm(100, argv, comm="python3")
    f = finding(
        t.advise(
            [
                vmstat(
                    100, tids, {"vmm_userspace": 60.0, "in_kvm_run": 40.0}, ports={0x5650: 500_000}
                )
            ]
        ),
        100,
        "io-unidentified-ports",
    )
    assert (
        f is not None
        and "0x5650 (PCI I/O BAR or VMM port) 100%" in f.evidence
        and "60.0% of vCPU time on I/O" in f.evidence
    )
    quiet = t.advise([vmstat(100, tids, {"in_kvm_run": 100.0})])
    assert finding(quiet, 100, "io-unidentified-ports") is None


def test_busy_serial_console(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    tids = t.vm(100, libvirt("web-1", LIBVIRT_EMULATED_TAIL))
    f = finding(
        t.advise([vmstat(100, tids, {"in_kvm_run": 100.0}, ports={0x3F8: 30_000, 0x3FD: 10_000})]),
        100,
        "io-emulated-console",
    )
    assert f is not None and "4.0k/s accesses to 0x3f8-0x3fd (COM1 serial)" in f.evidence
    quiet = t.advise([vmstat(100, tids, {"in_kvm_run": 100.0}, ports={0x3F8: 100})])
    assert finding(quiet, 100, "io-emulated-console") is None


def test_virtio_net_without_vhost_blocked_then_advised(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    tids = t.vm(
        100,
        qemu(
            "lab",
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no",
            "-device",
            "virtio-net-pci,netdev=n0",
        ),
    )
    stats = [vmstat(100, tids, IO30, ports={0xC050: 90_000})]
    f = finding(t.advise(stats), 100, "io-virtio-vhost")
    assert f is not None and f.status == BLOCKED and "modprobe vhost_net" in f.needs
    t.host.vhost_net()
    f = finding(t.advise(stats), 100, "io-virtio-vhost")
    assert f is not None and f.status == ADVISE
    t.vm(100, qemu("lab", "-netdev", "tap,id=n0,vhost=on", "-device", "virtio-net-pci,netdev=n0"))
    assert finding(t.advise(stats), 100, "io-virtio-vhost") is None


def test_virtio_disk_without_iothread(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    tids = t.vm(100, qemu("db", "-drive", "file=/srv/db.qcow2,if=virtio"))
    stats = [vmstat(100, tids, IO30, ports={0xC040: 90_000})]
    f = finding(t.advise(stats), 100, "io-virtio-iothread")
    assert f is not None and f.status == ADVISE and "virtio-blk-pci" in f.evidence
    t.vm(
        100,
        qemu(
            "db",
            "-object",
            "iothread,id=io0",
            "-drive",
            "file=/srv/db.qcow2,if=none,id=d0",
            "-device",
            "virtio-blk-pci,drive=d0,iothread=io0",
        ),
    )
    assert finding(t.advise(stats), 100, "io-virtio-iothread") is None


def test_passthrough_not_possible_without_iommu_advised_with_one_quiet_with_vfio(
    tmp_path: Path,
) -> None:
    t = Tree(tmp_path)
    argv = libvirt("nfv-1", LIBVIRT_VIRTIO_TAIL)
    tids = t.vm(100, argv)
    stats = [
        vmstat(100, tids, {"vmm_userspace": 45.0, "in_kvm_run": 55.0}, ports={0xC050: 200_000})
    ]
    f = finding(t.advise(stats), 100, "io-passthrough")
    assert f is not None and f.status == NOT_POSSIBLE
    assert (
        "no IOMMU on this host (/sys/class/iommu is empty): passthrough is not possible"
        in f.evidence
    )
    assert "intel_iommu=on iommu=pt" in f.needs
    t.host.iommu(["dmar0", "dmar1"])
    assert finding(t.advise(stats), 100, "io-passthrough").status == ADVISE
    (t.fake.proc / "100" / "fd" / "40").symlink_to("/dev/vfio/17")
    assert finding(t.advise(stats), 100, "io-passthrough") is None


def test_hugepages_advised_for_plain_ram_quiet_for_hugetlbfs_memfd_and_cloud_hypervisor(
    tmp_path: Path,
) -> None:
    t = Tree(tmp_path)
    t.vm(100, libvirt("plain", LIBVIRT_EMULATED_TAIL), anon_huge_kb=512 * 1024)
    t.vm(200, libvirt("huge", LIBVIRT_EMULATED_TAIL, LIBVIRT_HUGE_RAM))
    t.vm(
        300,
        qemu(
            "memfd",
            "-object",
            "memory-backend-memfd,id=mem,size=1G,hugetlb=on,hugetlbsize=2M",
            "-machine",
            "q35,memory-backend=mem",
        ),
    )
    t.vm(400, CLOUD_HYPERVISOR, comm="cloud-hypervisor")
    t.vm(500, qemu("nocmd"), hugetlb_kb=1 << 20)  # hugetlb seen only in smaps_rollup
    report = t.advise()
    f = finding(report, 100, "memory-hugepages")
    assert f is not None and f.status == BLOCKED
    assert "512 of 4096 MiB on transparent huge pages (12%, THP madvise)" in f.evidence
    assert "echo 2048 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages" in f.needs
    for pid in (200, 300, 400, 500):
        assert finding(report, pid, "memory-hugepages") is None, pid
    t.host.memory(pool_total=4096, pool_free=4096)
    assert finding(t.advise(), 100, "memory-hugepages").status == ADVISE


def test_hugepages_quiet_when_thp_covers_the_guest(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.vm(100, qemu("thp"), anon_huge_kb=1000 * 1024)  # -m 1024: 98% on THP
    assert finding(t.advise(), 100, "memory-hugepages") is None


def test_ept_off_is_said_and_quiet_when_on(tmp_path: Path) -> None:
    t = Tree(tmp_path, ept="N")
    tids = t.vm(100, qemu("a"))
    f = finding(
        t.advise([vmstat(100, tids, {"kernel_memory": 12.0, "in_kvm_run": 88.0})]),
        100,
        "memory-tdp",
    )
    assert f is not None and f.status == ADVISE and "EPT is off: kvm_intel ept=N" in f.evidence
    assert "modprobe kvm_intel ept=1" in f.remedy
    t2 = Tree(tmp_path / "on")
    tids = t2.vm(100, qemu("a"))
    assert (
        finding(
            t2.advise([vmstat(100, tids, {"kernel_memory": 12.0, "in_kvm_run": 88.0})]),
            100,
            "memory-tdp",
        )
        is None
    )


def test_tdp_cannot_apply_on_kvm_pvm(tmp_path: Path) -> None:
    t = Tree(tmp_path, backend="pvm")
    tids = t.vm(100, qemu("a"))
    f = finding(
        t.advise([vmstat(100, tids, {"in_kvm_run": 100.0}, events={"kvm_mmu_set_spte": 60_000})]),
        100,
        "memory-tdp",
    )
    assert (
        f is not None
        and f.status == NOT_POSSIBLE
        and "no EPT/NPT" in f.evidence
        and "6.0k/s memory events" in f.evidence
    )


def test_emulation_on_a_host_without_vmx_or_svm(tmp_path: Path) -> None:
    t = Tree(tmp_path, backend="pvm")
    tids = t.vm(100, qemu("a"))
    f = finding(
        t.advise(
            [
                vmstat(
                    100,
                    tids,
                    {"in_kvm_run": 100.0},
                    events={"kvm_emulate_insn": 7_000_000, "kvm_cpuid": 40_000},
                )
            ]
        ),
        100,
        "privileged-emulation",
    )
    assert f is not None and f.status == NOT_POSSIBLE
    assert (
        "700k/s instructions run through KVM's emulator" in f.evidence
        and "99% of the VM's events" in f.evidence
    )
    quiet = t.advise([vmstat(100, tids, {"in_kvm_run": 100.0}, events={"kvm_emulate_insn": 1000})])
    assert finding(quiet, 100, "privileged-emulation") is None


def test_apicv_off(tmp_path: Path) -> None:
    t = Tree(tmp_path, enable_apicv="N")
    tids = t.vm(100, qemu("a"))
    stats = [
        vmstat(
            100,
            tids,
            {"in_kvm_run": 100.0},
            events={"kvm_apic_accept_irq": 80_000, "kvm_eoi": 80_000},
        )
    ]
    f = finding(t.advise(stats), 100, "privileged-apicv")
    assert (
        f is not None
        and f.status == ADVISE
        and "kvm_intel enable_apicv=N" in f.evidence
        and "16k/s" in f.evidence
    )
    t2 = Tree(tmp_path / "on")
    tids = t2.vm(100, qemu("a"))
    assert finding(t2.advise(stats), 100, "privileged-apicv") is None


def test_vcpus_sharing_a_host_cpu_get_pinning_advice_with_their_run_queue_wait(
    tmp_path: Path,
) -> None:
    t = Tree(tmp_path)
    a = t.vm(100, qemu("a", "-smp", "1"), vcpus=1, affinity="3")
    b = t.vm(200, qemu("b", "-smp", "1"), vcpus=1, affinity="3")
    ledger = {"runqueue": 40.0, "in_kvm_run": 60.0}
    stats = [vmstat(100, a, ledger, preempt=500), vmstat(200, b, ledger, preempt=500)]
    report = t.advise(stats)
    for pid, other in ((100, "b"), (200, "a")):
        f = finding(report, pid, "context-switch-pinning")
        assert f is not None and f.status == ADVISE
        assert (
            "run-queue wait 40.0% of vCPU time (400 ms/s over 1 vCPUs), 50/s preemptions"
            in f.evidence
        )
        assert f"shared (3) with {other}" in f.evidence
        assert f.figures["runqueue_ms_per_s"] == 400.0
    t.host.affinity(200, dict.fromkeys(b, "4"))
    assert finding(t.advise(stats), 100, "context-switch-pinning") is None


def test_overcommit_and_pinning_blocked_by_it(tmp_path: Path) -> None:
    t = Tree(tmp_path, cpus=2)
    tids = {pid: t.vm(pid, qemu(f"v{pid}")) for pid in (100, 200, 300)}
    stats = [vmstat(pid, tt, {"runqueue": 30.0, "in_kvm_run": 70.0}) for pid, tt in tids.items()]
    report = t.advise(stats)
    f = finding(report, 100, "context-switch-overcommit")
    assert f is not None and "6 vCPUs of 3 VMs on 2 host CPUs (3.0x overcommit)" in f.evidence
    assert finding(report, 100, "context-switch-pinning").status == BLOCKED
    t1 = Tree(tmp_path / "one", cpus=2)
    tt = t1.vm(100, qemu("solo", "-smp", "1"), vcpus=1)
    assert (
        finding(
            t1.advise([vmstat(100, tt, {"runqueue": 30.0, "in_kvm_run": 70.0})]),
            100,
            "context-switch-overcommit",
        )
        is None
    )


@pytest.mark.parametrize(("halt_poll_ns", "fires"), [(0, True), (10_000, True), (200_000, False)])
def test_halt_polling_only_when_off_or_low(tmp_path: Path, halt_poll_ns: int, fires: bool) -> None:
    t = Tree(tmp_path, halt_poll_ns=halt_poll_ns)
    tids = t.vm(100, qemu("idle"))
    f = finding(
        t.advise([vmstat(100, tids, {"halted": 80.0, "in_kvm_run": 20.0}, wakeups=5000)]),
        100,
        "context-switch-halt-polling",
    )
    assert (f is not None) is fires
    if f is not None:
        assert (
            f"halted 80.0% of vCPU time with 1.0k/s wake-ups; kvm halt_poll_ns={halt_poll_ns}"
            in f.evidence
        )


def test_pause_loop_exiting_off(tmp_path: Path) -> None:
    t = Tree(tmp_path, ple_gap=0)
    tids = t.vm(100, qemu("locks"))
    stats = [vmstat(100, tids, {"runqueue": 20.0, "in_kvm_run": 80.0})]
    f = finding(t.advise(stats), 100, "context-switch-ple")
    assert f is not None and "kvm_intel ple_gap=0" in f.evidence
    t2 = Tree(tmp_path / "on")
    tids = t2.vm(100, qemu("locks"))
    assert finding(t2.advise(stats), 100, "context-switch-ple") is None


def test_firecracker_and_cloud_hypervisor_lines_parse_as_virtio(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    fc = t.vm(100, FIRECRACKER, comm="firecracker")
    ch = t.vm(200, CLOUD_HYPERVISOR, comm="cloud-hypervisor")
    report = t.advise([vmstat(100, fc, IO30, ports={0x3F8: 50_000}), vmstat(200, ch, IO30)])
    by = {a.facts.pid: a for a in report.vms}
    assert by[100].facts.vmm == "firecracker" and by[200].facts.vmm == "cloud-hypervisor"
    assert [(d.kind, d.paravirtual) for d in by[200].facts.config.devices] == [
        ("block", True),
        ("net", True),
    ]
    assert by[200].facts.huge_backed == "hugetlbfs" and by[200].facts.config.vcpus == 2
    assert finding(report, 200, "io-emulated-device") is None
    f = finding(report, 100, "io-emulated-console")  # Firecracker's 8250 UART
    assert f is not None and "8250" in f.remedy


def test_findings_are_ranked_advise_first_then_by_share(tmp_path: Path) -> None:
    t = Tree(tmp_path, backend="pvm")
    tids = t.vm(100, libvirt("web-1", LIBVIRT_EMULATED_TAIL))
    report = t.advise(
        [
            vmstat(
                100,
                tids,
                {**IO30, "runqueue": 0.0},
                ports=IDE,
                events={"kvm_emulate_insn": 9_000_000},
            )
        ]
    )
    statuses = [f.status for f in report.vms[0].findings]
    assert statuses == sorted(statuses, key=[ADVISE, BLOCKED, NOT_POSSIBLE].index)
    assert report.vms[0].top.rule == "io-emulated-device"
