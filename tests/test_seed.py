"""Registering already-running vCPU threads from the inventory (vprof/pipeline/seed.py)."""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

import pytest

from vprof.inventory.threads import run_state
from vprof.inventory.types import InventoryView, ThreadInfo, VmInfo
from vprof.pipeline.seed import seed_vcpus
from vprof.records import events as ev

KVM_RUN_BLOCKED = "16 0xc 0xae80 0x0 0x0 0x0 0x0 0x7ffd 0x7f00"


@pytest.mark.parametrize(
    ("syscall", "expect"),
    [
        ("running\n", (True, False)),  # runnable: taken as inside KVM_RUN
        (KVM_RUN_BLOCKED, (True, True)),  # halted inside KVM_RUN
        ("16 0xc 0x4020ae46 0x0 0x0 0x0 0x0 0x1 0x2", (False, True)),  # another ioctl
        ("202 0x7f 0x80 0x0 0x0 0x0 0x0 0x1 0x2", (False, True)),  # futex wait
        ("-1 0x7ffd 0x7f00", (False, True)),  # blocked outside any syscall
    ],
)
def test_run_state(syscall: str, expect: tuple[bool, bool]) -> None:
    assert run_state(syscall, "x86_64") == expect


@pytest.mark.parametrize(
    ("in_run", "blocked", "state", "resume", "flags"),
    [
        (True, False, "in_kvm_run", "in_kvm_run", 0),
        (True, True, "halted", "in_kvm_run", ev.F_BLOCKED),
        (False, False, "vmm_userspace", "vmm_userspace", 0),
        (False, True, "vmm_blocked", "vmm_userspace", ev.F_BLOCKED),
    ],
)
def test_seed_state_decodes_as_the_probes_make_it(
    in_run: bool, blocked: bool, state: str, resume: str, flags: int
) -> None:
    rec = ev.decode_vcpu((77).to_bytes(4, "little"), ev.encode_vcpu_seed(10, in_run, blocked, 5))
    assert (rec.tid, rec.pid, rec.vcpu_id) == (77, 10, None)
    assert (rec.state, rec.resume, rec.in_run, rec.flags) == (state, resume, in_run, flags)
    assert (rec.since_ns, rec.first_ns) == (5, 5)
    assert not any(rec.ns.values()) and rec.preemptions == 0


class FakeMap:
    def __init__(self, present: set[int], raced: frozenset[int] = frozenset()) -> None:
        self.present = present
        self.raced = raced  # a probe registers these between the check and the insert
        self.written: dict[int, bytes] = {}

    def missing_vcpus(self, tids: Iterable[int]) -> list[int]:
        return [t for t in tids if t not in self.present]

    def seed_vcpu(self, tid: int, state: bytes) -> bool:
        if tid in self.present or tid in self.raced:
            return False
        self.written[tid] = state
        self.present.add(tid)
        return True


def _view() -> InventoryView:
    roles = {100: "main", 101: "vcpu", 102: "vcpu", 103: "vcpu", 104: "io", 105: "vcpu"}
    threads = {
        t: ThreadInfo(t, "100:1", r, (t - 101) if r == "vcpu" else None) for t, r in roles.items()
    }
    vm = VmInfo(
        key="100:1",
        pid=100,
        start_time=1,
        name="vm",
        name_raw="vm",
        name_source="qemu -name",
        uuid="",
        vmm="qemu",
        vcpus=MappingProxyType(
            {t: i.vcpu_index for t, i in threads.items() if i.vcpu_index is not None}
        ),
        threads=MappingProxyType(threads),
        vcpu_count=4,
        comm="qemu",
    )
    return InventoryView.build({vm.key: vm}, 0)


def test_seeds_only_vcpu_threads_the_map_lacks() -> None:
    vmap = FakeMap(present={101}, raced={103})
    states = {102: (True, False), 103: (True, False)}  # 105 exited: no syscall file
    asked: list[tuple[int, int]] = []

    def state_of(pid: int, tid: int) -> tuple[bool, bool] | None:
        asked.append((pid, tid))
        return states.get(tid)

    seeded = seed_vcpus(_view(), vmap, state_of, clock=lambda: 42)
    assert seeded == {102: 100}  # 101 known, 103 lost the race to a probe, 105 gone
    assert asked == [(100, 102), (100, 103), (100, 105)]  # never the io or main thread
    rec = ev.decode_vcpu((102).to_bytes(4, "little"), vmap.written[102])
    assert (rec.pid, rec.state, rec.in_run, rec.first_ns) == (100, "in_kvm_run", True, 42)
    assert seed_vcpus(_view(), vmap, state_of) == {}  # nothing left to do
