"""Close one vCPU thread's time ledger at a given moment.

The kernel (probes/shared.h vprof_move) charges each finished stretch of a
vCPU thread's time to its state; the stretch still running is charged here up
to `now_ns`.  Exit handling time ("kernel") is split by overhead bucket by
the on-CPU kernel time the exits map measured per reason for that thread
(exact but for an exit still in progress), with integer rounding put on the
largest share so the parts sum exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

from vprof.model import Bucket, Ledger, kernel_ledger
from vprof.records.events import VcpuRecord

_DIRECT: Mapping[str, Ledger] = {
    "guest": Ledger.GUEST,
    "in_kvm_run": Ledger.IN_KVM_RUN,
    "vmm_userspace": Ledger.VMM_USERSPACE,
    "vmm_blocked": Ledger.VMM_BLOCKED,
    "runqueue": Ledger.RUNQUEUE,
    "halted": Ledger.HALTED,
    "unattributed": Ledger.UNATTRIBUTED,
}


def state_ns(rec: VcpuRecord, now_ns: int) -> dict[str, int]:
    """ns per kernel state, the running stretch included (not after death)."""
    ns = dict(rec.ns)
    if rec.state != "dead" and now_ns > rec.since_ns:
        ns[rec.state] = ns.get(rec.state, 0) + now_ns - rec.since_ns
    ns.pop("dead", None)
    return ns


def split_kernel(total: int, by_bucket: Mapping[Bucket, int]) -> dict[Ledger, int]:
    """`total` ns of exit handling, split like the measured handling times."""
    weights = {b: w for b, w in by_bucket.items() if w > 0}
    if total <= 0:
        return {}
    if not weights:
        return {Ledger.KERNEL_UNCLASSIFIED: total}
    whole = sum(weights.values())
    out = {kernel_ledger(b): total * w // whole for b, w in weights.items()}
    biggest = max(weights, key=lambda b: weights[b])
    out[kernel_ledger(biggest)] += total - sum(out.values())
    return out


def vcpu_ledger(
    rec: VcpuRecord, kernel_by_bucket: Mapping[Bucket, int], now_ns: int
) -> dict[Ledger, int]:
    """Ledger category -> ns for one vCPU thread; the values sum to its wall time."""
    out = dict.fromkeys(Ledger, 0)
    for state, ns in state_ns(rec, now_ns).items():
        if state == "kernel":
            for cat, part in split_kernel(ns, kernel_by_bucket).items():
                out[cat] += part
        else:
            out[_DIRECT.get(state, Ledger.UNATTRIBUTED)] += ns
    return out
