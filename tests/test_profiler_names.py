"""The Profiler's VM names: kvm_exit vcpu_ids reach the inventory.

On hosts with kvm_exit, each vCPU state carries the vcpu_id of its exits;
the Profiler notes it in the inventory (Inventory.note_vcpu), so threads
whose names give no index (a VMM that does not name them) still map to
their vCPU index.  Unit test on a fake /proc tree, no root.
"""

from __future__ import annotations

import os
from pathlib import Path

from fixtures.proc.fakeproc import FakeProc

from vprof.pipeline.names import Names as _Names


def _names(fake: FakeProc) -> _Names:
    names = _Names(str(fake.proc), str(fake.sys))

    def fd_count(pid: int) -> int | None:  # a fake directory has no size
        return len(os.listdir(fake.proc / str(pid) / "fd"))

    names._inv._fs.fd_count = fd_count
    return names


def test_kvm_exit_vcpu_ids_index_unnamed_threads(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.vm(700, "kvmtest", ["./kvmtest"], vcpus=2, threads={701: "kvmtest", 702: "kvmtest"})
    names = _names(fake)
    assert names.lookup({700})[700].vcpu_index == {}
    # The first snapshot that carries vcpu_ids already shows them.
    ident = names.lookup({700}, {701: 0, 702: 1, 999: 0})[700]
    assert ident.vcpu_index == {701: 0, 702: 1}
    assert names.lookup({700}, {701: 0, 702: 1})[700].vcpu_index == {701: 0, 702: 1}
    assert names._noted == {701, 702}  # noted once; 999 belongs to no VM


def test_a_vm_named_late_keeps_its_key(tmp_path: Path) -> None:
    # The kernel counts a process before the inventory can name it (its KVM
    # descriptors are not there yet, or it is already closing them).  Its key
    # must not change when the name arrives, or diff() takes the named VM for
    # a new one and reports its whole history as one interval.
    fake = FakeProc(tmp_path)
    fake.process(800, "vmm", ["./vmm"], start_time=4242)
    names = _names(fake)
    early = names.lookup({800})[800]
    assert (early.key, early.name, early.name_source) == ("800:4242", "pid-800", "fallback")
    fake.vm(800, "vmm", ["./vmm", "-name", "guest=late"], vcpus=1, start_time=4242)
    named = names.lookup({800})[800]
    assert (named.key, named.name) == ("800:4242", "late")


def test_an_unnamed_vm_keeps_its_key_after_its_process_is_gone(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.process(810, "vmm", ["./vmm"], start_time=77)
    names = _names(fake)
    assert names.lookup({810})[810].key == "810:77"
    fake.remove(810)
    assert names.lookup({810})[810].key == "810:77"
    names.forget({810})
    assert names.lookup({810})[810].key == "810:0"  # a reused PID starts afresh
