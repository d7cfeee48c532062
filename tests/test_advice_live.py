"""`vprof advise` and `vprof doctor` on this host, with real guests.

Micro-guests (tests/guestproc.py) for the pio and hlt workloads and for the
doctor; real QEMU VMs are in tests/test_advice_qemu.py.  Oracles: the
guest's own workload (it does port I/O on PIO_PORT), the kernel's own
module parameter (halt_poll_ns read here, not by the code), and the
kernel's own answer to opening a debugfs file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vprof.guest.workloads import PIO_PORT

pytestmark = [pytest.mark.kvm, pytest.mark.live]


def _guestproc():  # type: ignore[no-untyped-def]
    import guestproc

    return guestproc


def _vprof(*args: str) -> subprocess.CompletedProcess[str]:
    """vprof in a child process, as a user runs it (and so bcc never loads in pytest's)."""
    return subprocess.run(
        [sys.executable, "-m", "vprof", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _advise(*args: str) -> dict:  # type: ignore[type-arg]
    out = _vprof("advise", *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _tag() -> str:
    return f"adv{os.getpid()}"


def test_pio_guest_gets_the_emulated_io_advice() -> None:
    name = f"{_tag()}-pio"
    with _guestproc().start_guest(name, "pio", vcpus=1, duration=120):
        doc = _advise(name, "--seconds", "3")
    (vm,) = doc["vms"]
    rules = {f["rule"]: f for f in vm["findings"]}
    f = rules["io-unidentified-ports"]
    assert f["status"] == "advise" and f["figures"]["top_port"] == PIO_PORT
    assert f"{PIO_PORT:#x} (PCI I/O BAR or VMM port)" in f["evidence"]
    assert f["figures"]["io_exits_per_s"] >= 1000 and "KVM_IOEVENTFD" in f["remedy"]


def test_hlt_guest_gets_halt_polling_advice_only_if_halt_poll_ns_is_off_or_low() -> None:
    halt_poll_ns = int(Path("/sys/module/kvm/parameters/halt_poll_ns").read_text())
    name = f"{_tag()}-hlt"
    with _guestproc().start_guest(name, "hlt", vcpus=1, duration=120):
        doc = _advise(name, "--seconds", "3")
    (vm,) = doc["vms"]
    rules = {f["rule"]: f for f in vm["findings"]}
    assert doc["host"]["halt_poll_ns"] == halt_poll_ns
    assert ("context-switch-halt-polling" in rules) is (halt_poll_ns < 50_000)
    assert vm["buckets"]["context_switch"] < 50  # halted time is the guest's, not overhead


def test_doctor_on_this_host() -> None:
    with _guestproc().start_guest(f"{_tag()}-doc", "pio", vcpus=1, duration=120):
        result = _vprof("doctor", "--json", "--seconds", "1")
    doc = json.loads(result.stdout)
    checks = {c["check"]: c for c in doc["checks"]}
    assert result.returncode == doc["status"]
    backend = "kvm_pvm" if Path("/sys/module/kvm_pvm").is_dir() else None
    if backend is None:
        pytest.fail("these assertions are written for this kvm_pvm host")
    assert checks["backend"]["data"]["backend"] == "kvm_pvm"
    assert doc["status"] == 1  # degraded: no exit timing here
    timing = checks["exit-timing"]
    assert timing["level"] == "degraded" and "never fire on the kvm_pvm backend" in timing["detail"]
    try:
        with open("/sys/kernel/debug/kvm/exits") as f:
            f.read()
        locked = False
    except PermissionError:
        locked = True
    assert checks["debugfs"]["data"]["locked"] is locked
    tps = checks["tracepoints"]["data"]
    assert "kvm:kvm_exit" in tps["silent"] and "kvm:kvm_entry" in tps["silent"]
    assert tps["fired"]["kvm:kvm_pio"] > 0 and tps["fired"]["sched:sched_switch"] > 0
