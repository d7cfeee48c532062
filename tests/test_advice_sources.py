"""`vprof advise --recording` and advice from a source without addresses or
time shares (the perf source), on recordings written here; bad input for
advise and record.

The oracle is what the recordings were written with: the port counts, the
ledger nanoseconds and the interval lengths put in below.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest
from click.testing import CliRunner

from vprof.advice.cli import advise
from vprof.model import Bucket, IoStat, Ledger, ReasonStat, Snapshot, VcpuStat, VmStat
from vprof.offline.cli import record
from vprof.sinks.recorder import Recorder, base_meta
from vprof.sources.absent import PERF_ABSENT

pytestmark = pytest.mark.unit

NS = 1_000_000_000
PORT = 0xC000
PER_INTERVAL = 6000  # port writes per 1 s interval
VMM_NS = 300_000_000  # of each 1 s of vCPU wall time, in the VMM's userspace


def _interval(seq: int, perf: bool) -> Snapshot:
    ledger = {Ledger.RUNQUEUE: 10_000_000}
    if not perf:
        ledger |= {Ledger.VMM_USERSPACE: VMM_NS, Ledger.IN_KVM_RUN: NS - VMM_NS - 10_000_000}
    vcpu = VcpuStat(tid=501, index=0, wall_ns=NS, ledger=MappingProxyType(ledger))
    details = MappingProxyType({"out": PER_INTERVAL})
    reasons = (
        ReasonStat("event", "kvm_pio", Bucket.IO, PER_INTERVAL, details=details),
        ReasonStat("userspace", "KVM_EXIT_IO", Bucket.IO, PER_INTERVAL),
    )
    io = () if perf else (IoStat("pio", "out", PORT, 1, PER_INTERVAL),)
    vm = VmStat(
        key="500:1",
        pid=500,
        name="rec-vm",
        name_raw="rec-vm",
        name_source="test",
        uuid="",
        vmm="vprof-guest",
        vcpu_count=1,
        vcpus=(vcpu,),
        reasons=reasons,
        io=io,
    )
    return Snapshot(
        timestamp=1000.0 + seq,
        monotonic_ns=NS * (seq + 1),
        interval_ns=NS,
        backend="vmx",
        exit_timing=False,
        vms=(vm,),
        is_delta=True,
        source="perf" if perf else "bpf",
        absent=PERF_ABSENT if perf else frozenset(),
    )


def _recording(path: Path, intervals: int, perf: bool = False, cpus: int | None = 4) -> Path:
    meta = base_meta(1.0, ["io"], "live")
    meta |= {"snapshot_source": "perf" if perf else "bpf", "absent": sorted(PERF_ABSENT) * perf}
    if cpus is not None:
        meta["host_cpus"] = cpus
    rec = Recorder(path, meta, part_intervals=2)
    for seq in range(intervals):
        rec.add(_interval(seq, perf))
    rec.close()
    return path


def _advise(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(advise, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_advice_from_a_recording_cites_its_figures(tmp_path: Path) -> None:
    rec = _recording(tmp_path / "r", 3)
    code, out, err = _advise("--recording", str(rec), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["recording"] == str(rec) and doc["seconds"] == 3.0 and doc["source"] == "bpf"
    assert doc["host"]["recorded"] is True and doc["host"]["cpus"] == 4
    (vm,) = doc["vms"]
    assert (vm["name"], vm["pid"], vm["vcpus"]) == ("rec-vm", 500, 1)
    f = {x["rule"]: x for x in vm["findings"]}["io-unidentified-ports"]
    assert f["figures"]["top_port"] == PORT
    assert f["figures"]["io_exits_per_s"] == PER_INTERVAL  # 3 x 6000 over 3 s
    assert f["figures"]["io_pct"] == pytest.approx(100 * VMM_NS / NS)
    assert "the vprof-guest command line is not in the recording" in f["evidence"]
    unchecked = {u["rule"]: u["needs"] for u in vm["unchecked"]}
    assert unchecked["context-switch-halt-polling"] == "kvm halt_poll_ns"
    assert "io-unidentified-ports" not in unchecked and "context-switch-overcommit" not in unchecked
    code, text, _ = _advise("--recording", str(rec), "rec-vm")
    assert code == 0 and f"recording {rec} (3.0 s, bpf source" in text
    assert "not checked: the recording does not hold the live facts" in text


def test_a_perf_recording_says_na_for_what_perf_lacks(tmp_path: Path) -> None:
    rec = _recording(tmp_path / "r", 2, perf=True, cpus=None)
    code, out, err = _advise("--recording", str(rec), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["source"] == "perf" and doc["host"]["cpus"] is None  # not recorded: not 0
    (vm,) = doc["vms"]
    assert set(vm["buckets"].values()) == {None}
    f = {x["rule"]: x for x in vm["findings"]}["io-unidentified-ports"]
    assert f["figures"]["port_exits_per_s"] == PER_INTERVAL and "io_pct" not in f["figures"]
    assert "top_port" not in f["figures"]
    assert "per-port counts: not available with the perf source" in f["evidence"]
    code, text, _ = _advise("--recording", str(rec))
    assert "time shares n/a (not available with the perf source)" in text
    assert "host CPUs not recorded" in text and "0.0%" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recording", "/nonexistent/rec"], "/nonexistent/rec: no such file or directory"),
        (["--recording", "{rec}", "--source", "perf"], "--source and --recording exclude"),
        (["--recording", "{rec}", "--seconds", "3"], "--seconds and --recording exclude"),
        (["--recording", "{rec}", "nope"], "no VM named 'nope' in the recording"),
        (["--recording", "{empty}"], "the recording holds no interval"),
        (["--recording", "{tmp}"], "not a vprof recording"),
        (["--source", "nope"], "Invalid value for '--source'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    paths = {
        "rec": str(_recording(tmp_path / "r", 1)),
        "empty": str(_recording(tmp_path / "e", 0)),
        "tmp": str(tmp_path),
    }
    code, out, err = _advise(*(a.format(**paths) for a in args))
    assert code == 2 and message in err and "Traceback" not in out + err, err


def test_record_refuses_a_used_directory_before_it_opens_a_source(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("x")
    result = CliRunner().invoke(record, ["-o", str(tmp_path), "--source", "perf"])
    assert result.exit_code == 2 and "exists and is not empty" in result.stderr
    result = CliRunner().invoke(record, ["-o", str(tmp_path / "n"), "--source", "bcc"])
    assert result.exit_code == 2 and "Invalid value for '--source'" in result.stderr
