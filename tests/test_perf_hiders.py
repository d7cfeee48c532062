"""Which classic tracepoint BPF programs hide events from perf counters, and
what the perf source's status says with nothing to count yet.

Oracles: BPF instructions assembled here by hand from the ISA
(Documentation/bpf/standardization/instruction-set.rst), whose return value
on each path is known by construction; live, programs compiled from C whose
returns are written in their source, and vprof's own BPF source, whose
classic programs return VPROF_PASS (1) on every path (probes/vprof.h).
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from vprof.model import ProbeStatus
from vprof.sources.absent import PERF_WAITING
from vprof.sources.perf.hiders import hiding_programs, returns_one
from vprof.sources.perf.source import PerfConfig, PerfSource

OLD = Path(__file__).parent / "fixtures" / "perf-tracefs" / "4.19-minimal"


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, src << 4 | dst, off, imm)


MOV_R0 = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
MOV_W0 = 0xB4  # BPF_ALU | BPF_MOV | BPF_K
EXIT = insn(0x95)
JEQ_R1 = 0x15  # BPF_JMP | BPF_JEQ | BPF_K, on r1
CALL = 0x85


def test_programs_that_return_one_on_every_path_pass() -> None:
    assert returns_one(insn(MOV_R0, imm=1) + EXIT)
    assert returns_one(insn(MOV_W0, imm=1) + EXIT)  # w0 = 1 zero-extends r0
    # if r1 == 0 goto L; r2 = 5; L: r0 = 1; exit  (the jump lands on the mov)
    assert returns_one(insn(JEQ_R1, 1, off=1) + insn(MOV_R0, 2, imm=5) + insn(MOV_R0, imm=1) + EXIT)
    # two exits, each right after r0 = 1
    two = insn(JEQ_R1, 1, off=2) + insn(MOV_R0, imm=1) + EXIT + insn(MOV_R0, imm=1) + EXIT
    assert returns_one(two)


def test_programs_that_can_return_other_than_one_hide() -> None:
    assert not returns_one(insn(MOV_R0, imm=0) + EXIT)
    assert not returns_one(insn(MOV_R0, imm=2) + EXIT)  # trace_call_bpf ANDs: 2 & 1 == 0
    assert not returns_one(insn(MOV_R0, 2, imm=1) + EXIT)  # r2 = 1, not r0
    # r0 = 0; if r1 == 0 goto EXIT; r0 = 1; EXIT: exit  (the jump skips the mov)
    skip = insn(MOV_R0, imm=0) + insn(JEQ_R1, 1, off=1) + insn(MOV_R0, imm=1) + EXIT
    assert not returns_one(skip)
    # r0 = 1; gotol +1 (JMP32 | JA, offset in imm) over nothing: lands on exit
    assert not returns_one(insn(MOV_R0, imm=1) + insn(0x06, imm=0) + EXIT)
    # a tail call (helper 12) replaces the program: its target's return stands
    assert not returns_one(insn(CALL, imm=12) + insn(MOV_R0, imm=1) + EXIT)
    assert not returns_one(insn(0xF5) + insn(MOV_R0, imm=1) + EXIT)  # the verifier's form
    assert not returns_one(b"")  # no exit: nothing to show
    # a subprogram (call, src 1) that returns 0: its exit is not after r0 = 1
    sub = insn(CALL, src=1, imm=2) + insn(MOV_R0, imm=1) + EXIT + insn(MOV_R0, imm=0) + EXIT
    assert not returns_one(sub)


def _status(tmp_path: Path, tracefs: str) -> dict[str, ProbeStatus]:
    """The perf source's status on a host with no process (an empty /proc)."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys").mkdir()
    roots = {"proc_root": str(tmp_path / "proc"), "sys_root": str(tmp_path / "sys")}
    with PerfSource(PerfConfig(**roots, tracefs=tracefs)) as src:
        assert src.fds == 0
        return {p.family: p for p in src.status()}


@pytest.mark.live
def test_status_with_no_vcpu_thread_says_waiting_not_attached(tmp_path: Path) -> None:
    """Attached means its events are open: with no VM, none are; the
    families whose counters opened (on the source's own thread) wait."""
    from conftest import unavailable

    if os.geteuid() != 0 or not Path("/sys/kernel/tracing/events/kvm").is_dir():
        unavailable("needs root and tracefs with the kvm events")
    status = _status(tmp_path, "/sys/kernel/tracing")
    assert not any(p.attached for p in status.values()), status
    for fam in ("io", "privileged", "sched"):
        assert status[fam].reason == PERF_WAITING, status[fam]
    assert "kvm:kvm_pio" in status["io"].tracepoints
    assert "perf source" in status["vmm"].reason


def test_status_says_why_when_perf_refuses_every_counter(tmp_path: Path) -> None:
    """A tracefs (a 4.19 fixture's) whose event ids no kernel event has:
    every family is off with perf's own error, never attached nor waiting."""
    tracefs = tmp_path / "tracefs"
    shutil.copytree(OLD, tracefs)
    for i, id_file in enumerate(sorted(tracefs.glob("events/*/*/id"))):
        id_file.write_text(f"{0xFFFFFF00 + i}\n")  # perf_event_open: ENOENT
    status = _status(tmp_path, str(tracefs))
    assert not any(p.attached for p in status.values()), status
    assert "perf_event_open" in status["io"].reason, status["io"]
    assert PERF_WAITING not in {p.reason for p in status.values()}


@pytest.mark.live
def test_live_programs_are_judged_by_what_they_return() -> None:
    """bcc programs on kvm:kvm_cpuid: return 0 only for pid 1 (which runs no
    vCPU, so other users' counts stay whole meanwhile) hides; return 1 passes."""
    from conftest import unavailable

    if os.geteuid() != 0:
        unavailable("needs root (BPF_TASK_FD_QUERY, BPF_PROG_GET_FD_BY_ID)")
    from bcc import BPF

    c = """
TRACEPOINT_PROBE(kvm, kvm_cpuid) { return %s; }
"""
    for body, hides in (("(bpf_get_current_pid_tgid() >> 32) != 1", True), ("1", False)):
        b = BPF(text=(c % body).encode())
        try:
            found = hiding_programs("/proc", {"kvm_cpuid"})
        finally:
            b.cleanup()
        assert (os.getpid() in found.get("kvm_cpuid", [])) is hides, (body, found)


def test_alert_and_fleet_panel_leave_out_exactly_the_waiting_families() -> None:
    """VprofProbeFamilyOff and the fleet's "Probe families off" skip the
    perf source's waiting reason, and only it (Prometheus anchors =~ and !~)."""
    import re

    from dashboards.fleet import NOT_WAITING

    pattern = NOT_WAITING.split('"')[1]
    assert re.fullmatch(pattern, PERF_WAITING)
    assert not re.fullmatch(pattern, "kvm:kvm_pio: [Errno 13] Permission denied")
    rules = (Path(__file__).parent.parent / "deploy" / "alerts" / "vprof-alerts.yml").read_text()
    assert f'vprof_probe_attached{{job="vprof",{NOT_WAITING}}} == 0' in rules
