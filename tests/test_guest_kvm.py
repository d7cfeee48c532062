"""The micro-guest on real KVM: exact operation counts, checked against KVM's own.

KVM's binary stats fd is served only to the VM's own process, so the guest
reads it itself (--stats) and the tests compare.  Backend quirks seen on
kvm_pvm (the backend of the test host) and asserted here:
  - io_exits stays 0: kvm_pvm does not count port I/O exits, whether handled
    in the VMM or in the kernel.  Elsewhere it counts at least the pio ops.
  - mmio_exits counts exactly the MMIO accesses that reach the VMM; the
    in-kernel LAPIC EOI writes of hlt/mixed are not counted there.
  - halt_exits counts every HLT executed, blocking or not.
  - pagetouch faults show up in pf_fixed only in user mode: in kernel mode
    kvm_pvm emulates CPL0 code, and emulated writes fault in no shadow PTE.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from guestproc import start_guest

from vprof.guest import workloads as W
from vprof.guest.args import ArgError, host_hypercall_isa

pytestmark = pytest.mark.kvm

KVM_PVM = os.path.isdir("/sys/module/kvm_pvm")
try:
    HARDWARE = host_hypercall_isa() in ("svm", "vmx")
except ArgError:
    HARDWARE = False  # kvm_pvm, or no svm/vmx flag: vmcall is refused (tested below)
# The workloads this host runs (vmcall only on SVM/VMX, never on kvm_pvm).
RUNNABLE = [w for w in W.WORKLOADS if HARDWARE or w not in W.HARDWARE_ONLY]
# Per-iteration time varies (hlt waits for a 1 ms tick), so counts are sized
# to keep each run well under a second.
COUNTS = {"hlt": 400, "mixed": 300, "pagetouch": 3000}
DEFAULT_COUNT = 2000
VMM_KINDS = ("pio_out", "pio_in", "mmio_write", "mmio_read")


def _check_exact(result: dict[str, Any], workload: str, count: int | None) -> None:
    per_iteration = W.ops_by_kind(workload)
    for v in result["vcpus"]:
        if count is not None:
            assert v["ops"] == count
        assert v["ops_by_kind"] == {k: n * v["ops"] for k, n in per_iteration.items()}
        # Ops that exit to the VMM were also counted there, one exit each.
        for kind in VMM_KINDS:
            assert v["vmm_exits"].get(kind, 0) == v["ops_by_kind"].get(kind, 0)
        assert v["timer_irqs"] >= v["ops_by_kind"].get("hlt", 0)
    assert result["total_ops"] == sum(v["ops"] for v in result["vcpus"])


def _check_kvm_stats(result: dict[str, Any], mode: str) -> None:
    stats = result["kvm_stats"]
    assert len(stats["vcpus"]) == len(result["vcpus"])
    for v, s in zip(result["vcpus"], stats["vcpus"], strict=True):
        kinds = v["ops_by_kind"]
        assert s["mmio_exits"] == kinds.get("mmio_write", 0) + kinds.get("mmio_read", 0)
        assert s["halt_exits"] == kinds.get("hlt", 0)
        pio = sum(n for k, n in kinds.items() if k.startswith("pio"))
        if KVM_PVM:
            assert s["io_exits"] == 0
        else:
            assert s["io_exits"] >= pio
        if mode == "user" and "pagetouch" in kinds:
            # plus the few pages of code, data and stack touched at start
            assert kinds["pagetouch"] <= s["pf_fixed"] <= kinds["pagetouch"] + 16
        if mode == "user" and "cpuid" in kinds:
            assert s["insn_emulation"] >= kinds["cpuid"]  # each CPUID traps
    if "pio_kernel_out" in result["vcpus"][0]["ops_by_kind"]:
        total = sum(v["ops_by_kind"]["pio_kernel_out"] for v in result["vcpus"])
        assert result["ioeventfd_signals"] == total


@pytest.mark.parametrize("vcpus", [1, 2])
@pytest.mark.parametrize("workload", RUNNABLE)
def test_user_mode_counts_are_exact(workload: str, vcpus: int) -> None:
    count = COUNTS.get(workload, DEFAULT_COUNT)
    name = f"t-guest-{workload}-{vcpus}"
    with start_guest(name, workload, vcpus=vcpus, count=count, stats=True) as g:
        assert [v["index"] for v in g.ready["vcpus"]] == list(range(vcpus))
        result = g.wait(60)
    assert result["pid"] == g.pid and result["name"] == name and result["mode"] == "user"
    _check_exact(result, workload, count)
    _check_kvm_stats(result, "user")


@pytest.mark.parametrize("vcpus", [1, 2])
@pytest.mark.parametrize("workload", RUNNABLE)
def test_kernel_mode_counts_are_exact(workload: str, vcpus: int) -> None:
    count = COUNTS.get(workload, DEFAULT_COUNT)
    with start_guest(
        f"t-guestk-{workload}", workload, vcpus=vcpus, count=count, mode="kernel", stats=True
    ) as g:
        result = g.wait(60)
    assert result["mode"] == "kernel"
    _check_exact(result, workload, count)
    _check_kvm_stats(result, "kernel")


@pytest.mark.parametrize("mode", W.MODES)
def test_vmcall_is_refused_without_hardware_virtualization(mode: str) -> None:
    if HARDWARE:
        pytest.skip("this host has SVM/VMX: vmcall runs (test_*_mode_counts_are_exact)")
    argv = ["--name", "t-vmcall", "--workload", "vmcall", "--mode", mode, "--count", "1"]
    for cmd in (
        [sys.executable, "-m", "vprof", "guest", *argv],
        # The runner refuses too, for callers that skip the CLI.
        [sys.executable, "-m", "vprof.guest.runner", "-name", "guest=t-vmcall", *argv[2:]],
    ):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out
        assert "vmcall" in out.stderr and ("kvm_pvm" in out.stderr or "svm" in out.stderr)
        assert out.stdout == ""  # no "ready": no VM was made


def test_looks_like_a_qemu_vm() -> None:
    with start_guest("t-guest-ident", "pause", vcpus=2) as g:
        with open(f"/proc/{g.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        i = argv.index(b"-name")
        assert argv[i + 1] == b"guest=t-guest-ident"
        for v in g.ready["vcpus"]:
            with open(f"/proc/{g.pid}/task/{v['tid']}/comm") as f:
                assert f.read().strip() == f"CPU {v['index']}/KVM"
        time.sleep(0.3)
        g.stop()
        result = g.wait(10)
    assert result["total_ops"] > 0


@pytest.mark.parametrize("workload", ["pio", "hlt", "mixed"])
def test_sigterm_stops_cleanly_with_exact_counts(workload: str) -> None:
    with start_guest(f"t-guest-term-{workload}", workload, vcpus=2) as g:
        time.sleep(0.3)
        g.stop()
        result = g.wait(10)  # raises unless the exit status is 0
    assert result["total_ops"] > 0  # per vCPU could be 0 on a busy 2-core host
    _check_exact(result, workload, None)


def test_duration() -> None:
    with start_guest("t-guest-dur", "cpuid", duration=0.3) as g:
        result = g.wait(10)
    assert 0.3 <= result["seconds"] < 5 and result["total_ops"] > 0


def test_pagetouch_recycles_its_region() -> None:
    per_region = W.PAGETOUCH_PER_VCPU // 4096
    count = per_region * 2 + 5
    with start_guest("t-guest-refill", "pagetouch", count=count, stats=True) as g:
        result = g.wait(60)
    assert result["vcpus"][0]["vmm_exits"]["refill"] == 2
    _check_exact(result, "pagetouch", count)
    _check_kvm_stats(result, "user")  # discarded pages fault again: new first touches


def test_cli_execs_the_guest_in_place() -> None:
    argv = [sys.executable, "-m", "vprof", "guest", "--name", "t-guest-cli"]
    argv += ["--workload", "mmio", "--count", "100", "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert '"event":"ready"' in lines[0] and '"total_ops":100' in lines[1]


def test_cli_human_output_and_sigint() -> None:
    argv = [sys.executable, "-m", "vprof", "guest", "--name", "t-guest-int", "--stats"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert "ready" in proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "workload pio (user mode)" in out and "KVM stats, vCPU 0:" in out


def test_too_many_vcpus_for_the_host() -> None:
    argv = [sys.executable, "-m", "vprof", "guest", "--name", "t", "--vcpus", "100000"]
    proc = subprocess.run([*argv, "--count", "1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "KVM_CAP_MAX_VCPUS" in proc.stderr


def test_a_vcpu_stuck_in_the_kernel_is_abandoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() cannot reach a vCPU blocked in KVM_RUN; a signal then interrupts it."""
    from vprof.guest import kvmapi as K
    from vprof.guest import runner, vm
    from vprof.guest.args import GuestArgs

    monkeypatch.setattr(runner, "STOP_GRACE_SECONDS", 0.2)
    previous = signal.signal(vm.KICK_SIGNAL, lambda signum, frame: None)
    machine = vm.Machine("hlt", "kernel", 1, 0)
    try:
        cpu = machine.vcpus[0]
        lapic = K.KvmLapicState()
        K.ioctl(cpu.fd, K.KVM_GET_LAPIC, lapic)
        lapic.regs[0x322] |= 1  # LVTT bit 16: mask the timer, so HLT never wakes
        K.ioctl(cpu.fd, K.KVM_SET_LAPIC, lapic)
        cpu.thread.start()
        cpu.started.wait(5)
        cpu.go.set()
        time.sleep(0.3)  # into its first HLT, where it stays
        runner._wait(machine, GuestArgs("t"), [True])
        assert cpu.result.error is not None and "stopped from outside" in cpu.result.error
    finally:
        machine.close()
        signal.signal(vm.KICK_SIGNAL, previous)
