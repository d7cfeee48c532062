"""Advice on a live source: VmStat.advice, the vprof_vm_advice_info series, top's drill-down.

A fake source replays two cumulative snapshots of a fixture VM (an e1000 +
IDE libvirt domain doing IDE port I/O); the rule it must match is known
from the tree the test built.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from advice_cases import IDE_PORTS, LIBVIRT_EMULATED_TAIL, Tree, libvirt, vmstat
from prometheus_client import CollectorRegistry

from vprof.advice.annotate import MAX_PER_VM, AdvisingSource, Advisor
from vprof.model import Snapshot, VmStat
from vprof.sinks.prometheus import ExportOptions, ExportState, SnapshotCollector
from vprof.sinks.top import drill, host, render_drill, state


def _advisor(t: Tree) -> Advisor:
    adv = Advisor(str(t.fake.proc), str(t.fake.sys))

    def fd_count(pid: int) -> int | None:  # a fake directory has no kernel-made size
        return len(os.listdir(t.fake.proc / str(pid) / "fd"))

    adv._inv._fs.fd_count = fd_count  # type: ignore[method-assign]
    return adv


class _Replay:
    def __init__(self, snaps: list[Snapshot]) -> None:
        self.snaps = snaps
        self.closed = False

    def snapshots(self, interval: float) -> Iterator[Snapshot]:
        yield from self.snaps

    def close(self) -> None:
        self.closed = True


def _cumulative(vm: VmStat, key: str) -> list[Snapshot]:
    vm = replace(vm, key=key, name="web-1", name_raw="web-1")
    empty = replace(vm, vcpus=(), reasons=(), io=())
    base = Snapshot(0.0, 0, 0, "test", False)
    return [
        replace(base, vms=(empty,)),
        replace(base, monotonic_ns=10**10, interval_ns=10**10, vms=(vm,)),
    ]


def _annotated(tmp_path: Path) -> Snapshot:
    t = Tree(tmp_path)
    tids = t.vm(100, libvirt("web-1", LIBVIRT_EMULATED_TAIL))
    io = vmstat(
        100, tids, {"vmm_userspace": 28.0, "kernel_io": 2.0, "in_kvm_run": 70.0}, ports=IDE_PORTS
    )
    source = AdvisingSource(_Replay(_cumulative(io, "100:1000")), _advisor(t))
    first, second = list(source.snapshots(1.0))
    assert first.vms[0].advice == ()  # no interval yet
    source.close()
    return second


def test_snapshots_carry_the_matching_rules_best_first_and_bounded(tmp_path: Path) -> None:
    snap = _annotated(tmp_path)
    advice = snap.vms[0].advice
    assert advice[0].rule == "io-emulated-device" and advice[0].status == "advise"
    assert "e1000e -> virtio-net-pci" in advice[0].summary
    assert 1 <= len(advice) <= MAX_PER_VM
    assert all(a.status in ("advise", "blocked") for a in advice)


def test_advice_info_series_and_drill_down(tmp_path: Path) -> None:
    snap = _annotated(tmp_path)
    reg = CollectorRegistry(auto_describe=False)
    st = ExportState(snapshot=snap, options=ExportOptions(), last_success=True)
    reg.register(SnapshotCollector(lambda: st))
    labels = {"vm": "web-1", "rule": "io-emulated-device", "bucket": "io"}
    assert reg.get_sample_value("vprof_vm_advice_info", labels) == 1
    rules = {a.rule for a in snap.vms[0].advice}
    series = [s for m in reg.collect() if m.name == "vprof_vm_advice" for s in m.samples]
    assert {s.labels["rule"] for s in series} == rules
    d = drill.drill(snap.vms[0], 10.0)
    assert d.advice is not None and d.advice.startswith(
        "io-emulated-device (advise): ide-hd -> virtio-blk-pci"
    )
    text = render_drill.render_drill(
        host.host_summary(snap, 2), d, state.UiState(drill=snap.vms[0].key), 160, 40
    )
    assert "advice: io-emulated-device (advise)" in text
