"""Probe sources, the loader's pure parts and `vprof probes` (no root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from vprof.bpf.loader import _first_line, prog_stats
from vprof.bpf.source import CORE, SHARED_TRACEPOINT, missing_tracepoints, render
from vprof.model import PROBE_FAMILIES, Bucket, Ledger
from vprof.pipeline.ledger import split_kernel, state_ns, vcpu_ledger
from vprof.pipeline.probes_cli import probes
from vprof.pipeline.profiler import detect_backend
from vprof.records.events import VcpuRecord
from vprof.records.maps import stale_keys


@pytest.mark.parametrize("family", [CORE, *PROBE_FAMILIES])
def test_render_expands_includes_and_defines(family: str) -> None:
    src = render(family, {"VPROF_SLOW_NS": 123})
    assert '#include "' not in src.text
    assert "struct vcpu_state {" in src.text
    assert "#define VPROF_SLOW_NS 123" in src.text
    if family != CORE:
        assert src.tracepoints, family


def test_tracepoints_per_family() -> None:
    assert render("io").tracepoints[:2] == ("kvm:kvm_pio", "kvm:kvm_mmio")
    assert "sched:sched_switch" in render("sched").tracepoints
    assert render("exits").tracepoints[:2] == ("kvm:kvm_exit", "kvm:kvm_entry")
    with pytest.raises(ValueError, match="unknown probe family"):
        render("nope")


def test_missing_tracepoints(tmp_path: Path) -> None:
    (tmp_path / "events" / "kvm" / "kvm_pio").mkdir(parents=True)
    assert missing_tracepoints(("kvm:kvm_pio", "kvm:kvm_exit"), tmp_path) == ("kvm:kvm_exit",)


def test_detect_backend(tmp_path: Path) -> None:
    assert detect_backend(str(tmp_path), set()) == "unknown"
    (tmp_path / "module" / "kvm_pvm").mkdir(parents=True)
    assert detect_backend(str(tmp_path), set()) == "kvm_pvm (no kvm_exit)"
    assert detect_backend(str(tmp_path), {1}) == "vmx"
    assert detect_backend(str(tmp_path), {2}) == "svm"


def test_prog_stats_from_fdinfo() -> None:
    text = "pos:\t0\nprog_type:\t5\nrun_time_ns:\t1200\nrun_cnt:\t12\n"
    assert prog_stats(3, fdinfo=lambda fd: text) == (1200, 12)
    assert prog_stats(3, fdinfo=lambda fd: "prog_type:\t5\n") == (0, 0)


def test_stale_keys_pick_the_dead_pids() -> None:
    pid = (77).to_bytes(4, "little")
    other = (88).to_bytes(4, "little")
    raw = {
        "vcpus": [(b"\x01\x00\x00\x00", [pid + bytes(4)]), (b"\x02\x00\x00\x00", [other])],
        "events": [(pid + bytes(20), [bytes(16)]), (other + bytes(20), [bytes(16)])],
        "overflow": [(bytes(4), [bytes(8)])],
    }
    keys = stale_keys(raw, {77})
    assert keys == {"vcpus": [b"\x01\x00\x00\x00"], "events": [pid + bytes(20)]}


def _rec(state: str, since: int, ns: dict[str, int]) -> VcpuRecord:
    full = {"guest": 0, "in_kvm_run": 0, "kernel": 0, "vmm_userspace": 0, "runqueue": 0}
    full |= {"halted": 0, "unattributed": 0, "dead": 0} | ns
    return VcpuRecord(1, 1, None, state, state, True, 0, since, 0, full, 0, 0, 0, 0)


def test_ledger_running_stretch_and_kernel_split() -> None:
    rec = _rec("kernel", 1000, {"guest": 500, "kernel": 300, "halted": 200})
    ns = state_ns(rec, 1100)
    assert ns["kernel"] == 400 and "dead" not in ns
    ledger = vcpu_ledger(rec, {Bucket.IO: 3, Bucket.MEMORY: 1}, 1100)
    assert ledger[Ledger.KERNEL_IO] == 300 and ledger[Ledger.KERNEL_MEMORY] == 100
    assert sum(ledger.values()) == 500 + 400 + 200
    dead = _rec("dead", 1000, {"guest": 10})
    assert sum(vcpu_ledger(dead, {}, 10**9).values()) == 10


@pytest.mark.parametrize("total", [0, 1, 7, 999_999_937])
def test_split_kernel_sums_exactly(total: int) -> None:
    weights = {Bucket.IO: 3, Bucket.MEMORY: 5, Bucket.PRIVILEGED: 11}
    assert sum(split_kernel(total, weights).values()) == total
    assert split_kernel(5, {}) == {Ledger.KERNEL_UNCLASSIFIED.value: 5}


def test_cli_dump_and_bad_usage() -> None:
    runner = CliRunner()
    out = runner.invoke(probes, ["--dump", "--families", "io"])
    assert out.exit_code == 0
    assert "VPROF_RAW_PROBE(kvm, kvm_pio)" in out.output
    assert "TRACEPOINT_PROBE(sched, sched_switch)" not in out.output
    for args in ([], ["--dump", "--check"], ["--dump", "--families", "bogus"]):
        bad = runner.invoke(probes, args)
        assert bad.exit_code == 2, args
        assert "Traceback" not in bad.output


def test_cli_check_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    out = CliRunner().invoke(probes, ["--check"])
    assert out.exit_code == 2 and "root" in out.output


def test_a_refused_program_reports_the_verifier_logs_end() -> None:
    # what bcc prints to fd 2 when the kernel refuses a program (6.1, io)
    log = "\n".join(
        [
            "bpf: Failed to load program: Permission denied",
            "0: R1=ctx(off=0,imm=0) R10=fp0",
            "; u64 pt = bpf_get_current_pid_tgid();",
            "41: (79) r1 = *(u64 *)(r6 +0)",
            "R6 unbounded memory access, make sure to bounds check any such access",
            "processed 57 insns (limit 1000000) max_states_per_insn 0 total_states 3",
        ]
    )
    err = Exception("Failed to load BPF program b'tracepoint__kvm__kvm_userspace_exit'")
    reason = _first_line(err, log)
    assert reason.startswith("Failed to load BPF program b'tracepoint__kvm__kvm_userspace_exit'")
    assert reason.endswith("R6 unbounded memory access, make sure to bounds check any such access")
    assert "processed" not in reason
    # a compile error keeps clang's first error line
    clang = "/virtual/main.c:12:5: error: no member named 'vcpu_id'\n1 error generated."
    assert _first_line(Exception("Failed to compile BPF module"), clang).endswith(
        "no member named 'vcpu_id'"
    )


def test_kernel_release_parses_debian_and_odd_releases() -> None:
    from vprof.bpf.loader import kernel_release

    assert kernel_release("5.10.0-46-amd64") == (5, 10)
    assert kernel_release("6.12.117+deb12-amd64") == (6, 12)
    assert kernel_release("6.18.44-fc-v857") == (6, 18)
    assert kernel_release("6.1rc3") == (6, 1)
    assert kernel_release("weird") == (99, 0)


def test_one_program_per_tracepoint_when_every_family_loads() -> None:
    # The loader renders io without kvm_userspace_exit once exits is attached
    # (vprof/bpf/loader.py): exits' program counts it for io.
    without = {"io": (SHARED_TRACEPOINT,)}
    tps = [tp for f in PROBE_FAMILIES for tp in render(f, without=without.get(f, ())).tracepoints]
    assert len(tps) == len(set(tps))
    assert SHARED_TRACEPOINT in render("exits").tracepoints
    io = render("io", without=(SHARED_TRACEPOINT,))
    assert SHARED_TRACEPOINT not in io.tracepoints + io.raw
    assert "#define VPROF_WITHOUT_kvm_userspace_exit 1" in io.text
    # without exits, io keeps its own
    assert SHARED_TRACEPOINT in render("io").tracepoints
