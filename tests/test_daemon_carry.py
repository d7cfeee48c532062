"""carry(): counters stay monotonic across a Profiler swap on SIGHUP."""

from __future__ import annotations

from vprof.daemon.carry import carry, remember
from vprof.model import Bucket, IoStat, ProgStat, ReasonStat, Snapshot, VcpuStat, VmStat


def vm(key: str, n: int, tid: int = 11) -> VmStat:
    vcpu = VcpuStat(tid, 0, n, {"guest": n}, {"io": n}, n, n, n, n)
    reason = ReasonStat("event", "kvm_pio", Bucket.IO, n, n, (n, 0), {"port 0x3f8": n})
    return VmStat(
        key, 1, key, key, "t", "", "qemu", 1, (vcpu,), (reason,), (IoStat("pio", "out", 1, 1, n),)
    )


def snap(*vms: VmStat, lost: int = 0) -> Snapshot:
    return Snapshot(
        0.0, 0, 0, "t", True, vms, events_lost=lost, map_overflows={"m": lost},
        progs=(ProgStat("p", lost, lost),),
    )  # fmt: skip


def test_carry_adds_every_counter_of_matching_vms() -> None:
    out = carry(snap(vm("a", 10), lost=2), snap(vm("a", 3), lost=1))
    (a,) = out.vms
    assert a.vcpus[0].wall_ns == 13 and a.vcpus[0].ledger["guest"] == 13
    assert a.vcpus[0].events["io"] == 13 and a.vcpus[0].preemptions == 13
    r = a.reasons[0]
    assert (r.count, r.handling_ns, r.hist, r.details["port 0x3f8"]) == (13, 13, (13, 0), 13)
    assert a.io[0].count == 13
    assert out.events_lost == 3 and out.map_overflows["m"] == 3 and out.progs[0].run_cnt == 3


def test_vanished_vms_stay_gone_and_new_ones_pass_through() -> None:
    out = carry(snap(vm("gone", 10)), snap(vm("new", 4)))
    assert [v.key for v in out.vms] == ["new"] and out.vms[0].reasons[0].count == 4


def test_new_threads_and_reasons_are_added() -> None:
    out = carry(snap(vm("a", 10, tid=11)), snap(vm("a", 1, tid=12)))
    assert sorted(v.tid for v in out.vms[0].vcpus) == [11, 12]


def test_remember_keeps_vms_not_yet_seen_again() -> None:
    base = snap(vm("a", 10), vm("b", 5))
    last = carry(base, snap(vm("a", 1)))
    kept = remember(base, last)
    assert {v.key: v.reasons[0].count for v in kept.vms} == {"a": 11, "b": 5}
    assert remember(None, last) is last
