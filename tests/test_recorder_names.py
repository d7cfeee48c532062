"""The recorder keeps VMs whose names collide apart, and a restarted VM together.

Synthetic delta Snapshots (vprof/sources/synthetic.py) renamed so that VMs
share a name; the oracle is the sum of the figures handed to the recorder,
per VM key, against `vprof report`'s vms and io tables.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vprof.model import Snapshot
from vprof.offline import read_recording
from vprof.offline.report import build_report
from vprof.sinks.recorder import Recorder, base_meta
from vprof.sources.synthetic import SyntheticHost, delta_snapshots

pytestmark = pytest.mark.unit


def _io_out(snaps: list[Snapshot], pid: int) -> int:
    return sum(s.count for sn in snaps for vm in sn.vms if vm.pid == pid for s in vm.io
               if s.direction == "out")  # fmt: skip


def _report(tmp: Path, snaps: list[Snapshot]) -> dict[str, int]:
    rec = Recorder(tmp / "r", base_meta(5.0, ["io"], "live"), 4)
    for s in snaps:
        rec.add(s)
    rec.close()
    io = build_report(read_recording(tmp / "r")).tables["io"]
    out = io[io["direction"] == "out"].groupby("vm", observed=True)["count"].sum()
    return {str(k): int(v) for k, v in out.items()}


def test_two_live_vms_of_one_name_stay_two(tmp_path: Path) -> None:
    snaps = [
        replace(s, vms=tuple(replace(vm, name="same") for vm in s.vms))
        for s in delta_snapshots(SyntheticHost(vms=2, vcpus=1), 6)
    ]
    pids = [vm.pid for vm in snaps[0].vms]
    got = _report(tmp_path, snaps)
    assert got == {"same": _io_out(snaps, pids[0]), f"same~{pids[1]}": _io_out(snaps, pids[1])}


def test_a_restarted_vm_keeps_its_plain_name(tmp_path: Path) -> None:
    a, b = (list(delta_snapshots(SyntheticHost(vms=1, vcpus=1, seed=s), 3)) for s in (1, 2))
    # The same name, a new key and PID: the first VM is gone when the second runs.
    b = [replace(s, vms=tuple(replace(vm, key="9:9", pid=9) for vm in s.vms)) for s in b]
    snaps = [*a, *(replace(s, timestamp=s.timestamp + 100) for s in b)]
    got = _report(tmp_path, snaps)
    name = a[0].vms[0].name
    assert got == {name: _io_out(a, a[0].vms[0].pid) + _io_out(b, 9)}
