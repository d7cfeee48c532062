"""`vprof import`: every dialect gives the same exact counts.

The four hand-made fixtures hold one scenario (tests/fixtures/import/make.py
says what each vCPU did); the counts below follow from that description.
The real dump was recorded on this host with `perf record -e 'kvm:*' -e
'kvmmmu:*' -e sched:sched_switch -e sched:sched_wakeup -a` around the
micro-guest (mixed workload, 2 vCPUs); the guest's own result, kept beside
it, is the oracle.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vprof.offline import read_recording
from vprof.offline.importer import import_file
from vprof.offline.report import build_report

FIXTURES = Path(__file__).parent / "fixtures"
DIALECTS = {
    "perf-5.11-vmx": ("perf", "vmx"),
    "perf-old-vmx": ("perf", "vmx"),
    "trace-cmd-svm": ("trace-cmd", "svm"),
    "ftrace-svm": ("ftrace", "svm"),
}
# Names of (stage-2 fault, port I/O, HLT, CPUID) exits per ISA.
EXITS = {
    "vmx": ("EPT_VIOLATION", "IO_INSTRUCTION", "HLT", "CPUID"),
    "svm": ("npf", "io", "hlt", "cpuid"),
}


def _import(tmp_path: Path, name: str) -> tuple[object, object]:
    stats = import_file(FIXTURES / "import" / f"{name}.txt", tmp_path / name, 1.0)
    return stats, build_report(read_recording(tmp_path / name), top=50)


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_dialect_counts_are_exact(tmp_path: Path, name: str) -> None:
    dialect, isa = DIALECTS[name]
    stats, rep = _import(tmp_path, name)
    assert stats.dialect == dialect  # type: ignore[attr-defined]
    assert stats.bad == 1 and stats.bad_shown[0][1].startswith("this line is damaged")  # type: ignore[attr-defined]
    t = rep.tables  # type: ignore[attr-defined]
    vms = t["vms"]
    assert len(vms) == 1 and vms.iloc[0]["vcpus"] == 2
    s2, io, hlt, cpuid = EXITS[isa]
    reasons = {(r.reason, r.bucket): (r.count, r.handling_ns) for r in t["reasons"].itertuples()}
    # 3 stage-2 faults per vCPU continued as MMIO (I/O), 1 stayed memory.
    assert reasons[(f"{s2}+MMIO", "io")] == (6, 6 * 2000)
    assert reasons[(s2, "memory")] == (2, 2 * 3000)
    assert reasons[(io, "io")] == (4, 4 * 5000)
    assert reasons[(hlt, "context_switch")] == (2, 2 * 61_000)
    assert reasons[(cpuid, "privileged")] == (2, 2 * 2000)
    assert reasons[("KVM_EXIT_IO", "io")][0] == 4
    assert reasons[("kvm_pio", "io")][0] == 4
    assert reasons[("kvm_mmio", "io")][0] == 6
    ports = {(r.kind, r.direction, r.address, r.size): r.count for r in t["io"].itertuples()}
    assert ports == {("pio", "out", "0x5650", 1): 4, ("mmio", "write", "0xd0000000", 4): 6}
    details = {(r.reason, r.detail): r.count for r in t["details"].itertuples()}
    assert details[("kvm_cpuid", "cpuid 0x40000000")] == 2
    rq = t["runqueue"].set_index("vcpu")
    assert sorted(rq.index) == [0, 1]
    assert (rq["runqueue_wait_ns"] == 10_000).all() and (rq["voluntary_switches"] == 1).all()
    ledger = t["ledger"].set_index("category")["ns"].to_dict()
    # Per vCPU: guest 50 us, halted 49 us, run queue 10 us, VMM 2 x 3 us, in-kernel
    # I/O 3 x 2 us + 2 x 2 us, memory 3 us, HLT 2 x 1 us, CPUID 2 us.
    assert ledger == {
        "guest": 100_000,
        "halted": 98_000,
        "runqueue": 20_000,
        "vmm_userspace": 12_000,
        "kernel_io": 20_000,
        "kernel_memory": 6_000,
        "kernel_context_switch": 4_000,
        "kernel_privileged": 4_000,
    }


def test_vms_by_pid_where_the_dump_has_it(tmp_path: Path) -> None:
    _, with_pid = _import(tmp_path, "perf-5.11-vmx")
    _, by_comm = _import(tmp_path, "perf-old-vmx")
    assert list(with_pid.tables["vms"]["vm"]) == ["pid-4120"]  # type: ignore[attr-defined]
    assert list(by_comm.tables["vms"]["vm"]) == ["qemu (CPU n/KVM threads)"]  # type: ignore[attr-defined]


def _ops(result: dict[str, object], kind: str) -> int:
    return sum(v["ops_by_kind"].get(kind, 0) for v in result["vcpus"])  # type: ignore[attr-defined, union-attr]


def test_real_perf_script_dump_of_this_host(tmp_path: Path) -> None:
    real = FIXTURES / "perf-script" / "kvm_pvm-6.18-mixed"
    result = json.loads((real / "guest.json").read_text().splitlines()[-1])
    stats = import_file(real / "perf-script.txt", tmp_path / "r", 1.0)
    assert stats.dialect == "perf" and stats.bad == 0, stats.summary()
    t = build_report(read_recording(tmp_path / "r"), top=100).tables
    vm = t["vms"].iloc[0]
    assert vm["vcpus"] == len(result["vcpus"])
    io = {(r.kind, r.direction, r.address): r.count for r in t["io"].itertuples()}
    assert io[("pio", "out", "0x5650")] == _ops(result, "pio_out")
    assert io[("pio", "in", "0x5650")] == _ops(result, "pio_in")
    assert io[("pio", "out", "0x5660")] == _ops(result, "pio_kernel_out")
    assert io[("pio", "in", "0xa1")] == _ops(result, "pio_kernel_in")
    assert io[("mmio", "write", "0xd0000000")] == _ops(result, "mmio_write")
    assert io[("mmio", "read", "0xd0000000")] == _ops(result, "mmio_read")
    assert io[("mmio", "unsatisfied_read", "0xd0000000")] == _ops(result, "mmio_read")
    details = {(r.reason, r.detail): r.count for r in t["details"].itertuples()}
    assert details[("kvm_msr", "msr 0x1a0 read")] == _ops(result, "msr_read")
    assert details[("kvm_msr", "msr 0x1a0 write")] == _ops(result, "msr_write")
    assert details[("kvm_emulate_insn", "opcode 0xf4")] == _ops(result, "hlt")
    reasons = {r.reason: r.count for r in t["reasons"].itertuples()}
    vcpus = len(result["vcpus"])
    # One KVM_EXIT_IO per VMM port access and one per vCPU for its final DONE port.
    assert reasons["KVM_EXIT_IO"] == _ops(result, "pio_out") + _ops(result, "pio_in") + vcpus
    assert reasons["KVM_EXIT_MMIO"] == _ops(result, "mmio_write") + _ops(result, "mmio_read")


REAL_SVM = sorted((FIXTURES / "perf-script").glob("*-amd64.txt"))


@pytest.mark.parametrize("dump", REAL_SVM, ids=[p.stem for p in REAL_SVM])
def test_real_svm_kernels_exit_counts(tmp_path: Path, dump: Path) -> None:
    """perf script dumps of the micro-guest on real SVM (5.10, 6.1, 6.12; branch
    realhost): every kvm_exit line is counted under its reason, and timed."""
    want: dict[str, int] = {}
    for text in dump.read_text().splitlines():
        if "kvm:kvm_exit:" in text:
            reason = text.split(" reason ", 1)[1].split()[0]
            want[reason] = want.get(reason, 0) + 1
    assert want, "fixture without kvm_exit lines"
    stats = import_file(dump, tmp_path / "r", 1.0)
    rec = read_recording(tmp_path / "r")
    assert stats.bad == 0, stats.summary()
    assert rec.meta["exit_timing"] is True
    t = build_report(rec, top=1000).tables["reasons"]
    exits = t[t["isa"] == "svm"]
    got: dict[str, int] = {}
    for r in exits.itertuples():
        base = str(r.reason).split("+", 1)[0]  # npf+MMIO is an npf exit too
        got[base] = got.get(base, 0) + int(r.count)
    assert got == want
    entries = sum(1 for line in dump.read_text().splitlines() if "kvm:kvm_entry:" in line)
    if entries >= sum(want.values()):
        assert exits["handling_ns"].notna().all()
