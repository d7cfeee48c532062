"""The aggregator on recorded map contents (tests/fixtures/pipeline/): no root.

mixed_2vcpu.json: the maps after a 2-vCPU `mixed` micro-guest run of 200
iterations, with the guest's own result.  exits_injected.json: the maps and
ring-buffer records after the injector replayed test_probes_inject.SEQUENCE.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vprof.bpf.source import PROBES_DIR
from vprof.model import Bucket, Ledger, VmIdentity, diff
from vprof.pipeline.aggregate import Aggregator
from vprof.records import events as ev
from vprof.records import maps as records

FIX = Path(__file__).parent / "fixtures" / "pipeline"


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIX / name).read_text())
    return doc


def _snapshot(doc: dict[str, Any], identities: dict[int, VmIdentity] | None = None) -> Any:
    agg = Aggregator()
    agg.add_slow_exits(ev.decode_slow_exit(bytes.fromhex(s)) for s in doc.get("slow", []))
    decoded = records.decode(ev.maps_from_json(doc["maps"]))
    return agg.snapshot(
        decoded, identities or {}, now_ns=doc["now_ns"], interval_ns=10**9, backend="test"
    )


def _ops(result: dict[str, Any], kind: str) -> int:
    return sum(v["ops_by_kind"].get(kind, 0) for v in result["vcpus"])


def test_decode_recorded_maps() -> None:
    doc = _load("mixed_2vcpu.json")
    decoded = records.decode(ev.maps_from_json(doc["maps"]))
    assert decoded.errors == 0
    assert {v.tid for v in decoded.vcpus} == {v["tid"] for v in doc["result"]["vcpus"]}
    assert all(v.pid == doc["pid"] and v.state == "dead" for v in decoded.vcpus)
    assert all(n == 0 for n in decoded.overflows.values())


def test_mixed_counts_from_fixture() -> None:
    doc = _load("mixed_2vcpu.json")
    W = SimpleNamespace(**doc["constants"])  # the workload constants when recorded
    (vm,) = _snapshot(doc).vms
    res = doc["result"]
    io = {(s.kind, s.direction, s.address): s.count for s in vm.io}
    assert io[("pio", "out", W.PIO_PORT)] == _ops(res, "pio_out")
    assert io[("pio", "in", W.PIO_PORT)] == _ops(res, "pio_in")
    assert io[("mmio", "write", W.MMIO_ADDR)] == _ops(res, "mmio_write")
    assert io[("mmio", "unsatisfied_read", W.MMIO_ADDR)] == _ops(res, "mmio_read")
    details = {r.reason: r.details for r in vm.reasons}
    assert details["kvm_cpuid"][f"cpuid {W.CPUID_LEAF:#x}"] == _ops(res, "cpuid")
    assert details["kvm_msr"][f"msr {W.MSR_INDEX:#x} read"] == _ops(res, "msr_read")
    assert details["kvm_msr"][f"msr {W.MSR_INDEX:#x} write"] == _ops(res, "msr_write")
    assert details["kvm_emulate_insn"]["opcode 0xf4"] == _ops(res, "hlt")
    region = f"gpa {W.PAGETOUCH_BASE:#x}+1G"
    assert details["kvm_mmu_set_spte"][region] == _ops(res, "pagetouch")
    buckets = vm.events_by_bucket()
    assert buckets[Bucket.IO] > 0 and buckets[Bucket.MEMORY] > 0
    assert buckets[Bucket.UNCLASSIFIED] == 0


def test_ledger_closes_and_identity_is_used() -> None:
    doc = _load("mixed_2vcpu.json")
    tids = [v["tid"] for v in doc["result"]["vcpus"]]
    ident = VmIdentity(
        "k:1", doc["pid"], "fixture", "fixture", "qemu -name", vcpu_index={tids[1]: 1}
    )
    (vm,) = _snapshot(doc, {doc["pid"]: ident}).vms
    assert vm.name == "fixture" and vm.key == "k:1"
    by_tid = {v.tid: v for v in vm.vcpus}
    assert by_tid[tids[1]].index == 1
    # The threads died before the read: each one's wall time is its life as the kernel
    # stamped it, from first seen (first_ns) to death (since_ns of the dead state).
    life = {
        r.tid: r.since_ns - r.first_ns
        for r in records.decode(ev.maps_from_json(doc["maps"])).vcpus
        if r.state == "dead"
    }
    assert set(life) == set(by_tid)
    for v in vm.vcpus:
        assert v.wall_ns == life[v.tid] > 0
        assert v.ledger[Ledger.GUEST] == 0
        assert v.ledger[Ledger.IN_KVM_RUN] > 0 and v.ledger[Ledger.VMM_USERSPACE] > 0


def test_dead_threads_stop_accruing() -> None:
    doc = _load("mixed_2vcpu.json")
    a = _snapshot(doc).vms[0]
    doc["now_ns"] += 10**9
    b = _snapshot(doc).vms[0]
    assert [v.wall_ns for v in a.vcpus] == [v.wall_ns for v in b.vcpus]


def test_exits_fixture_counts_histograms_and_slow_exits() -> None:
    doc = _load("exits_injected.json")
    (vm,) = _snapshot(doc).vms
    got = {r.reason: r for r in vm.reasons}
    unknown = got["unknown:vmx:9999"]
    assert (unknown.count, unknown.handling_ns, unknown.bucket) == (1, 1, Bucket.UNCLASSIFIED)
    assert unknown.hist is not None and unknown.hist[0] == 1
    flagged = [r for r in vm.reasons if r.reason.endswith("+FAILED_VMENTRY")]
    assert [(r.count, r.handling_ns) for r in flagged] == [(1, 3000)]
    total = sum(h for _, _, h in doc["sequence"])
    assert sum(r.handling_ns or 0 for r in vm.reasons) == total
    assert sum(r.count for r in vm.reasons) == len(doc["sequence"])
    (slow,) = vm.slow_exits
    assert (slow.duration_ns, slow.vcpu, slow.bucket) == (5_000_000, 3, Bucket.CONTEXT_SWITCH)
    (v,) = vm.vcpus
    kernel = sum(ns for k, ns in v.ledger.items() if k.startswith("kernel_"))
    assert kernel == total


def test_diff_of_cumulative_snapshots() -> None:
    doc = _load("mixed_2vcpu.json")
    first = _snapshot(doc)
    delta = diff(first, first)
    (vm,) = delta.vms
    assert all(r.count == 0 and all(n == 0 for n in r.details.values()) for r in vm.reasons)


def test_bad_entries_are_counted_not_fatal() -> None:
    maps: dict[str, ev.RawMap] = {
        "events": [(b"\x00" * 3, [b"\x00" * 16])],
        "io": [(bytes(32), [bytes(8)])],  # kind 0: unknown
        "vcpus": [(bytes(4), [bytes(7)])],
    }
    decoded = records.decode(maps)
    assert decoded.errors == 3
    assert decoded.events == () and decoded.io == () and decoded.vcpus == ()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_ctypes_mirrors_match_vprof_h(tmp_path: Path) -> None:
    """The C compiler's sizes and offsets of vprof.h equal the ctypes mirrors."""
    mirrors = {
        "vcpu_state": ev.CVcpuState,
        "event_key": ev.CEventKey,
        "event_val": ev.CEventVal,
        "exit_key": ev.CExitKey,
        "exit_val": ev.CExitVal,
        "io_key": ev.CIoKey,
        "slow_exit": ev.CSlowExit,
        "new_vcpu": ev.CNewVcpu,
    }
    lines = ["#include <stddef.h>", "#include <linux/types.h>", '#include "vprof.h"']
    for cname, cls in mirrors.items():
        lines.append(f'_Static_assert(sizeof(struct {cname}) == {ctypes_size(cls)}, "{cname}");')
        for fname, _ in cls._fields_:
            off = getattr(cls, fname).offset
            lines.append(
                f'_Static_assert(offsetof(struct {cname}, {fname}) == {off}, "{cname}.{fname}");'
            )
    lines.append(f'_Static_assert(L_NCAT == {ev.L_NCAT}, "L_NCAT");')
    src = tmp_path / "check.c"
    src.write_text("\n".join(lines) + "\n")
    run = subprocess.run(
        ["gcc", "-fsyntax-only", f"-I{PROBES_DIR}", str(src)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr


def ctypes_size(cls: type) -> int:
    import ctypes

    return ctypes.sizeof(cls)
