"""The micro-guest's output: JSON events and the human summary (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from vprof.guest import workloads as W
from vprof.guest.args import GuestArgs
from vprof.sanitize import display


def ready_event(pid: int, name: str, tids: Sequence[int]) -> dict[str, Any]:
    return {
        "event": "ready",
        "pid": pid,
        "name": name,
        "vcpus": [{"index": i, "tid": tid} for i, tid in enumerate(tids)],
    }


def vcpu_entry(
    index: int, tid: int, iterations: int, vmm_exits: Mapping[str, int], irqs: int, workload: str
) -> dict[str, Any]:
    """One vCPU's ground truth: each loop iteration does ops_by_kind(workload)."""
    per_iteration = W.ops_by_kind(workload)
    return {
        "index": index,
        "tid": tid,
        "ops": iterations,
        "ops_by_kind": {kind: n * iterations for kind, n in per_iteration.items()},
        "vmm_exits": dict(vmm_exits),
        "timer_irqs": irqs,
    }


def result_event(
    pid: int,
    args: GuestArgs,
    seconds: float,
    vcpus: list[dict[str, Any]],
    kvm_stats: Mapping[str, Any] | None = None,
    errors: Sequence[str] = (),
    ioeventfd_signals: int | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event": "result",
        "pid": pid,
        "name": args.name,
        "workload": args.workload,
        "mode": args.mode,
        "seconds": round(seconds, 6),
        "total_ops": sum(v["ops"] for v in vcpus),
        "vcpus": vcpus,
    }
    if ioeventfd_signals is not None:
        # Counted by the kernel: pio_kernel_out summed over vCPUs.
        out["ioeventfd_signals"] = ioeventfd_signals
    if kvm_stats is not None:
        out["kvm_stats"] = dict(kvm_stats)
    if errors:
        out["errors"] = list(errors)
    return out


def json_line(event: Mapping[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), sort_keys=False)


def ready_text(event: Mapping[str, Any]) -> str:
    threads = ", ".join(f"CPU {v['index']}/KVM={v['tid']}" for v in event["vcpus"])
    return f"guest {display(event['name'])} ready: pid {event['pid']}, vCPU threads {threads}"


def _scalars(stats: Mapping[str, Any]) -> str:
    items = [f"{k}={v}" for k, v in sorted(stats.items()) if isinstance(v, int) and v]
    return " ".join(items) or "(all zero)"


def result_text(event: Mapping[str, Any]) -> str:
    secs = event["seconds"]
    lines = [
        f"guest {display(event['name'])}: workload {event['workload']} "
        f"({event['mode']} mode), {len(event['vcpus'])} vCPU(s), {secs:.3f} s"
    ]
    for v in event["vcpus"]:
        kinds = " ".join(f"{k}={n}" for k, n in v["ops_by_kind"].items())
        rate = v["ops"] / secs if secs > 0 else 0.0
        lines.append(
            f"  vCPU {v['index']} (tid {v['tid']}): {v['ops']} iterations ({rate:,.0f}/s)  {kinds}"
        )
    lines.append(f"  total: {event['total_ops']} iterations")
    stats = event.get("kvm_stats")
    if stats:
        lines.append(f"  KVM stats, VM: {_scalars(stats['vm'])}")
        for i, vs in enumerate(stats["vcpus"]):
            lines.append(f"  KVM stats, vCPU {i}: {_scalars(vs)}")
    lines.extend(f"  error: {e}" for e in event.get("errors", ()))
    return "\n".join(lines)
