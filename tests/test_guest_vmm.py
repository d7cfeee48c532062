"""The VMM's exit decoding and stop logic, with a fake kvm_run page and fake vCPUs."""

from __future__ import annotations

import struct
import threading
from typing import Any

import pytest

from vprof.guest import kvmapi as K
from vprof.guest import runner
from vprof.guest import workloads as W
from vprof.guest.args import GuestArgs
from vprof.guest.vm import GuestFault, Vcpu, VcpuResult

DATA_OFFSET = 0x1000  # where KVM would put the PIO data inside the run page


class FakeVm:
    def __init__(self) -> None:
        self.refilled: list[int] = []

    def refill(self, index: int) -> None:
        self.refilled.append(index)


def fake_vcpu() -> Any:
    v: Any = object.__new__(Vcpu)
    v.index, v.vm, v.run, v.result = 0, FakeVm(), bytearray(0x2000), VcpuResult(0)
    v._regs_text = lambda: "regs"
    v._frame = lambda: ""
    return v


def put_io(v: Any, direction: int, port: int, size: int = 1) -> None:
    struct.pack_into("<BBHIQ", v.run, K.RUN_EXIT_UNION, direction, size, port, 1, DATA_OFFSET)


def put_mmio(v: Any, addr: int, is_write: int, length: int = 4) -> None:
    struct.pack_into("<Q8sIB", v.run, K.RUN_EXIT_UNION, addr, b"\0" * 8, length, is_write)


def test_pio_in_is_answered_and_both_directions_counted() -> None:
    v = fake_vcpu()
    put_io(v, K.KVM_EXIT_IO_OUT, W.PIO_PORT)
    assert v._io() is False
    put_io(v, K.KVM_EXIT_IO_IN, W.PIO_PORT)
    assert v._io() is False
    assert v.run[DATA_OFFSET] == 0x5A
    assert v.result.exits == {"pio_out": 1, "pio_in": 1}


def test_control_ports() -> None:
    v = fake_vcpu()
    put_io(v, K.KVM_EXIT_IO_OUT, W.REFILL_PORT)
    assert v._io() is False and v.vm.refilled == [0]
    put_io(v, K.KVM_EXIT_IO_OUT, W.DONE_PORT)
    assert v._io() is True
    put_io(v, K.KVM_EXIT_IO_OUT, W.FAULT_PORT)
    v.run[DATA_OFFSET] = 13
    with pytest.raises(GuestFault, match="exception 13"):
        v._io()
    put_io(v, K.KVM_EXIT_IO_OUT, 0x80)
    with pytest.raises(GuestFault, match="unexpected port 0x80"):
        v._io()


def test_mmio_read_gets_the_marker_and_stray_addresses_fail() -> None:
    v = fake_vcpu()
    put_mmio(v, W.MMIO_ADDR, is_write=0)
    v._mmio()
    data = v.run[K.RUN_EXIT_UNION + 8 : K.RUN_EXIT_UNION + 12]
    assert struct.unpack("<I", data)[0] == W.MMIO_READ_VALUE
    put_mmio(v, W.MMIO_ADDR, is_write=1)
    v._mmio()
    assert v.result.exits == {"mmio_read": 1, "mmio_write": 1}
    put_mmio(v, 0xFEE000B0, is_write=1)
    with pytest.raises(GuestFault, match="MMIO at 0xfee000b0"):
        v._mmio()


class FakeCpu:
    def __init__(self, stuck: bool = False) -> None:
        self.go = threading.Event()
        self.finished = threading.Event()
        self.result = VcpuResult(0)
        self.stuck = stuck


class FakeMachine:
    """Finishes its vCPUs on stop(), except stuck ones, which need abandon()."""

    def __init__(self, *cpus: FakeCpu) -> None:
        self.vcpus = list(cpus)
        self.abandoned = False
        self.calls: list[str] = []

    def stop(self) -> None:
        self.calls.append("stop")
        for c in self.vcpus:
            if not c.stuck:
                c.finished.set()

    def abandon(self) -> None:
        self.calls.append("abandon")
        self.abandoned = True
        for c in self.vcpus:
            c.finished.set()


def test_duration_stops_the_guest() -> None:
    m = FakeMachine(FakeCpu(), FakeCpu())
    seconds = runner._wait(m, GuestArgs("t", duration=0.05), [False])  # type: ignore[arg-type]
    assert m.calls == ["stop"] and 0.05 <= seconds < 2
    assert all(c.go.is_set() for c in m.vcpus)


def test_a_signal_stops_the_guest_and_a_stuck_vcpu_is_abandoned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "STOP_GRACE_SECONDS", 0.05)
    m = FakeMachine(FakeCpu(), FakeCpu(stuck=True))
    runner._wait(m, GuestArgs("t"), [True])  # type: ignore[arg-type]
    assert m.calls == ["stop", "abandon"]


def test_a_failed_vcpu_stops_the_others() -> None:
    bad = FakeCpu()
    bad.result.error = "boom"
    bad.finished.set()
    m = FakeMachine(bad, FakeCpu())
    runner._wait(m, GuestArgs("t"), [False])  # type: ignore[arg-type]
    assert m.calls == ["stop"]
