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

from vprof.profiler import _Names


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
