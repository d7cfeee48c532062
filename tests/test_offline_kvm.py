"""`vprof record` against the micro-guest under the live pipeline.

The guest's own operation counts are the oracle: the recording, read back
by `vprof report --json`, must hold them exactly, and the same figures the
Prometheus exporter gives for the same Profiler run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from guestproc import start_guest
from pipeline_fixtures import ops, shared_profiler
from test_offline_timing import report_json

from vprof.guest import workloads as W
from vprof.model import Ledger, Snapshot, diff
from vprof.offline import read_recording
from vprof.offline.diff import build_diff
from vprof.sinks.prometheus import ExportOptions, snapshot_families
from vprof.sinks.recorder import Recorder, base_meta

pytestmark = [pytest.mark.live, pytest.mark.kvm]

# cpuid: at CPL3 CPUID runs natively under kvm_pvm, so the workload issues it
# through its CPL0 gate (vprof/guest/workloads.py), where every backend sees it.
COUNTS = {"pio": 3000, "mmio": 2000, "cpuid": 3000, "msr": 2000, "hlt": 300, "pio-kernel": 3000}


def _record_run(
    path: Path, name: str, workload: str, vcpus: int, count: int | None = None
) -> tuple[dict[str, Any], Snapshot]:
    """Record one guest run in 0.2 s intervals; its result and the last snapshot."""
    prof = shared_profiler()
    rec = Recorder(path, base_meta(0.2, ["all"], "live"), part_intervals=3)
    prev = prof.snapshot()
    with start_guest(name, workload, vcpus=vcpus, count=count or COUNTS[workload]) as g:
        prof.wait_named(g.pid, 10)
        while g.proc.poll() is None:
            time.sleep(0.2)
            cur = prof.snapshot()
            rec.add(diff(prev, cur))
            prev = cur
        result = g.wait(60)
    g.proc.wait(10)
    last = prof.snapshot()
    rec.add(diff(prev, last))
    rec.close()
    return result, last


def _exported(snap: Snapshot, name: str) -> dict[tuple[str, ...], float]:
    found = {}
    for family in snapshot_families(snap, ExportOptions(granularity="full")):
        for s in family.samples:
            if s.labels.get("vm") == name and s.name.endswith("_total"):
                found[(s.name, *sorted(s.labels.items()))] = s.value
    return {tuple(str(x) for x in k): v for k, v in found.items()}


@pytest.mark.parametrize(
    ("workload", "vcpus"),
    [("pio", 1), ("mmio", 2), ("cpuid", 1), ("cpuid", 2), ("msr", 1), ("hlt", 2)],
)
def test_report_of_a_recording_holds_the_guest_counts(
    tmp_path: Path, workload: str, vcpus: int
) -> None:
    name = f"off-{workload}-{vcpus}-{os.getpid()}"
    result, last = _record_run(tmp_path / "r", name, workload, vcpus)
    assert result["total_ops"] == COUNTS[workload] * vcpus
    doc = report_json(tmp_path / "r")
    t = {k: [r for r in v if r.get("vm") == name] for k, v in doc["tables"].items()}
    assert t["vms"] and t["vms"][0]["vcpus"] == vcpus
    io = {(r["kind"], r["direction"], r["address"]): r["count"] for r in t["io"]}
    details = {(r["reason"], r["detail"]): r["count"] for r in t["details"]}
    if workload == "pio":
        assert io[("pio", "out", f"{W.PIO_PORT:#x}")] == ops(result, "pio_out")
        assert io[("pio", "in", f"{W.PIO_PORT:#x}")] == ops(result, "pio_in")
    if workload == "mmio":
        assert io[("mmio", "write", f"{W.MMIO_ADDR:#x}")] == ops(result, "mmio_write")
        assert io[("mmio", "read", f"{W.MMIO_ADDR:#x}")] == ops(result, "mmio_read")
    if workload == "cpuid":
        assert details[("kvm_cpuid", f"cpuid {W.CPUID_LEAF:#x}")] == ops(result, "cpuid")
    if workload == "msr":
        assert details[("kvm_msr", f"msr {W.MSR_INDEX:#x} read")] == ops(result, "msr_read")
        assert details[("kvm_msr", f"msr {W.MSR_INDEX:#x} write")] == ops(result, "msr_write")
    if workload == "hlt":
        assert details[("kvm_emulate_insn", "opcode 0xf4")] == ops(result, "hlt")
        # Every vCPU thread has its scheduler row (its index may be unmapped
        # for an interval under load, so match by thread id).
        assert {v["tid"] for v in result["vcpus"]} <= {r["tid"] for r in t["runqueue"]}
    # The exporter, on the same Profiler's cumulative figures, says the same.
    vm = next(v for v in last.vms if v.name == name)
    exported = _exported(replace_vm(last, vm), name)
    for r in t["reasons"]:
        key = (
            "vprof_vm_reason_events_total",
            *(
                str(x)
                for x in sorted(
                    {
                        "bucket": r["bucket"],
                        "isa": r["isa"],
                        "reason": r["reason"],
                        "vm": name,
                    }.items()
                )
            ),
        )
        assert exported[key] == r["count"], r
    for (kind, direction, _addr), n in io.items():
        key = (
            "vprof_vm_io_accesses_total",
            *(str(x) for x in sorted({"direction": direction, "kind": kind, "vm": name}.items())),
        )
        assert exported[key] >= n


def replace_vm(snap: Snapshot, vm: Any) -> Snapshot:
    from dataclasses import replace

    return replace(snap, vms=(vm,))


def test_diff_pio_to_ioeventfd_moves_io_time_out_of_the_vmm(tmp_path: Path) -> None:
    name = f"off-diff-{os.getpid()}"  # the same VM name: diff matches by name
    # Long enough for ~10 intervals each: the noise is judged from them.
    _, before_snap = _record_run(tmp_path / "before", name, "pio", 1, 25_000)
    _, after_snap = _record_run(tmp_path / "after", name, "pio-kernel", 1, 75_000)
    tables = build_diff(read_recording(tmp_path / "before"), read_recording(tmp_path / "after"))
    led = tables["ledger"].set_index(["vm", "category"]).loc[(name, "vmm_userspace")]
    b = read_recording(tmp_path / "before").frame
    a = read_recording(tmp_path / "after").frame

    def share(f: Any) -> float:
        f = f[f["vm_name"] == name]
        vmm = f[(f["kind"] == "ledger") & (f["reason"] == Ledger.VMM_USERSPACE.value)]
        return float(vmm["value"].sum()) / float(f[f["kind"] == "wall"]["value"].sum())

    assert led["share_before"] > 0.02 and led["share_after"] < led["share_before"] / 5, led
    assert led["d_share"] == pytest.approx(share(a) - share(b))
    assert led["d_share"] < 0 and not led["within_noise"]
    io = tables["buckets"].set_index(["vm", "bucket"]).loc[(name, "io")]
    assert io["d_share"] < 0
    del before_snap, after_snap


def _vprof_record(out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vprof",
            "record",
            "-o",
            str(out),
            "-d",
            "0.2",
            "--part-seconds",
            "0.4",
            "--families",
            "io,vmm",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_parts(path: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(path.glob("part-*.parquet"))) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} parts in {path} after {timeout} s")


def test_sigkill_leaves_every_completed_part_readable(tmp_path: Path) -> None:
    out = tmp_path / "r"
    with start_guest(f"off-kill-{os.getpid()}", "pio", duration=60):
        proc = _vprof_record(out)
        try:
            _wait_parts(out, 3)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
    parts = sorted(out.glob("part-*.parquet"))
    rec = read_recording(out)  # raises on any corrupt part
    assert rec.parts == len(parts) >= 3
    assert rec.frame["seq"].nunique() == rec.frame["seq"].max() + 1  # no interval missing


def _backend(path: Path) -> str | None:
    try:
        backend: str = json.loads((path / "meta.json").read_text())["backend"]
    except (OSError, ValueError):
        return None
    return backend


def test_sigterm_writes_the_last_part_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "r"
    with start_guest(f"off-term-{os.getpid()}", "pio", duration=60):
        proc = _vprof_record(out, "--part-seconds", "60")
        # The first recorded interval writes the backend into meta.json.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _backend(out) in (None, "unknown"):
            time.sleep(0.1)
        time.sleep(1)  # a few more intervals, all in the part still open
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rec = read_recording(out)
    assert rec.parts == 1 and rec.seconds() > 0, err
    assert not list(out.glob("*.tmp"))


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Any:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        # lazily: a pyarrow buffer may still map a part for a moment
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_full_disk_is_a_clear_error_and_parts_stay_readable(small_tmpfs: Path) -> None:
    from vprof.sinks.recorder import RecordingFull
    from vprof.sources.synthetic import SyntheticHost, delta_snapshots

    rec = Recorder(small_tmpfs / "r", base_meta(5.0, ["io"], "live"), part_intervals=2)
    with pytest.raises(RecordingFull) as err:
        for snap in delta_snapshots(SyntheticHost(vms=20), 10_000):
            rec.add(snap)
    assert "disk full" in str(err.value)
    got = read_recording(small_tmpfs / "r")
    assert got.parts == rec.parts > 0
    assert got.frame["seq"].nunique() == 2 * rec.parts
    assert not list((small_tmpfs / "r").glob("*.tmp"))
