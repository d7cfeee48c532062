"""Recordings without the live pipeline: write, read back, replay, report, diff.

Synthetic delta Snapshots (vprof/sources/synthetic.py) are the oracle: the
test sums the figures it handed to the recorder and compares them with what
the reader, the replay source and the report give back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from vprof.model import Ledger, Snapshot, diff
from vprof.offline import read_recording
from vprof.offline.diff import build_diff
from vprof.offline.report import build_report
from vprof.sinks.recorder import Recorder, base_meta
from vprof.sources.replay import FORMAT_VERSION, ReplaySource
from vprof.sources.synthetic import SyntheticHost, delta_snapshots

HOST = SyntheticHost(vms=3, vcpus=2, interval_s=5.0)


def _record(path: Path, snaps: list[Snapshot], part_intervals: int = 4) -> Recorder:
    rec = Recorder(path, base_meta(5.0, ["io", "sched"], "live"), part_intervals)
    for s in snaps:
        rec.add(s)
    rec.close()
    return rec


def _vprof(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vprof", *args], capture_output=True, text=True, timeout=60
    )


def test_parts_hold_every_interval_and_value(tmp_path: Path) -> None:
    snaps = list(delta_snapshots(HOST, 10))
    rec = _record(tmp_path / "r", snaps)
    assert rec.parts == 3  # 4 + 4 + 2 intervals
    got = read_recording(tmp_path / "r")
    assert (got.parts, got.seconds()) == (3, 50.0)
    assert got.meta["format_version"] == FORMAT_VERSION
    f = got.frame
    for vm_i in range(HOST.vms):
        name = f"vm-{vm_i:03d}"
        want_pio = sum(r.count for s in snaps for r in s.vms[vm_i].reasons if r.reason == "kvm_pio")
        ev = f[(f["vm_name"] == name) & (f["kind"] == "event") & (f["reason"] == "kvm_pio")]
        assert int(ev["value"].sum()) == want_pio
        want_wall = sum(v.wall_ns for s in snaps for v in s.vms[vm_i].vcpus)
        wall = f[(f["vm_name"] == name) & (f["kind"] == "wall")]
        assert int(wall["value"].sum()) == want_wall


def test_replay_gives_the_cumulative_snapshots_back(tmp_path: Path) -> None:
    snaps = list(delta_snapshots(HOST, 6))
    _record(tmp_path / "r", snaps)
    replayed = list(ReplaySource(tmp_path / "r").snapshots())
    assert len(replayed) == 6
    last = replayed[-1]
    for i, vm in enumerate(last.vms):
        want = sum(r.count for s in snaps for r in s.vms[i].reasons)
        assert sum(r.count for r in vm.reasons) == want
        assert vm.io[0].count > 0
    # diff() of two replayed snapshots is the recorded interval again.
    delta = diff(replayed[2], replayed[3])
    for got, want in zip(delta.vms, snaps[3].vms, strict=True):
        assert {(r.reason, r.count) for r in got.reasons} == {
            (r.reason, r.count) for r in want.reasons
        }
        assert sorted(v.ledger[Ledger.HALTED] for v in got.vcpus) == sorted(
            v.ledger[Ledger.HALTED] for v in want.vcpus
        )


def test_report_shares_and_rates_match_the_input(tmp_path: Path) -> None:
    snaps = list(delta_snapshots(HOST, 8))
    _record(tmp_path / "r", snaps)
    rep = build_report(read_recording(tmp_path / "r"))
    vms = rep.tables["vms"].set_index("vm")
    for i in range(HOST.vms):
        wall = sum(v.wall_ns for s in snaps for v in s.vms[i].vcpus)
        io_ns = sum(v.ledger[Ledger.VMM_USERSPACE] for s in snaps for v in s.vms[i].vcpus)
        ctx_ns = sum(v.ledger[Ledger.RUNQUEUE] for s in snaps for v in s.vms[i].vcpus)
        row = vms.loc[f"vm-{i:03d}"]
        assert row["io"] == pytest.approx(io_ns / wall)
        assert row["context_switch"] == pytest.approx(ctx_ns / wall)
        assert row["vcpu_seconds"] == pytest.approx(wall / 1e9)
    reasons = rep.tables["reasons"]
    cpuid = reasons[(reasons["vm"] == "vm-000") & (reasons["reason"] == "kvm_cpuid")].iloc[0]
    n = sum(r.count for s in snaps for r in s.vms[0].reasons if r.reason == "kvm_cpuid")
    assert cpuid["count"] == n
    assert cpuid["rate_per_s"] == pytest.approx(n / 40.0)
    worst = rep.tables["worst"].set_index("vm").loc["vm-000"]
    per = [
        sum(v.ledger[Ledger.VMM_USERSPACE] + v.ledger[Ledger.RUNQUEUE] for v in s.vms[0].vcpus)
        / sum(v.wall_ns for v in s.vms[0].vcpus)
        for s in snaps
    ]
    assert worst["overhead"] == pytest.approx(max(per))
    assert worst["seq"] == per.index(max(per))


def _moved(snap: Snapshot, frac: float) -> Snapshot:
    """Move `frac` of each vCPU's VMM time to in-kernel run time (ioeventfd)."""
    vms = []
    for vm in snap.vms:
        vcpus = []
        for v in vm.vcpus:
            led = dict(v.ledger)
            moved = int(led[Ledger.VMM_USERSPACE] * frac)
            led[Ledger.VMM_USERSPACE] -= moved
            led[Ledger.IN_KVM_RUN] += moved
            vcpus.append(replace(v, ledger=led))
        vms.append(replace(vm, vcpus=tuple(vcpus)))
    return replace(snap, vms=tuple(vms))


def test_diff_sign_size_and_noise(tmp_path: Path) -> None:
    before = list(delta_snapshots(HOST, 12))
    after = [_moved(s, 0.75) for s in delta_snapshots(replace(HOST, seed=2), 8)]
    _record(tmp_path / "b", before)
    _record(tmp_path / "a", after)
    rb, ra = read_recording(tmp_path / "b"), read_recording(tmp_path / "a")
    tables = build_diff(rb, ra)
    led = tables["ledger"].set_index(["vm", "category"])
    for i in range(HOST.vms):
        name = f"vm-{i:03d}"
        share = {
            k: sum(v.ledger[Ledger.VMM_USERSPACE] for s in snaps for v in s.vms[i].vcpus)
            / sum(v.wall_ns for s in snaps for v in s.vms[i].vcpus)
            for k, snaps in (("b", before), ("a", after))
        }
        row = led.loc[(name, "vmm_userspace")]
        assert row["d_share"] == pytest.approx(share["a"] - share["b"])
        assert row["d_share"] < 0 and not row["within_noise"]
    # Same rates, different seed: the event rates differ only by jitter.
    buckets = tables["buckets"]
    priv = buckets[buckets["bucket"] == "privileged"]
    assert (priv["d_rate"].abs() <= priv["rate_noise"] * 2).all()


def test_a_recording_is_compact(tmp_path: Path) -> None:
    _record(tmp_path / "r", list(delta_snapshots(HOST, 60)), part_intervals=60)
    size = sum(p.stat().st_size for p in (tmp_path / "r").iterdir())
    per_vm_hour = size / HOST.vms / (60 * HOST.interval_s / 3600)
    assert per_vm_hour < 1_000_000, per_vm_hour  # the bench measures it; this is the goal


def test_report_json_csv_html_from_the_command(tmp_path: Path) -> None:
    snaps = list(delta_snapshots(HOST, 4))
    _record(tmp_path / "r", snaps)
    out = _vprof("report", str(tmp_path / "r"), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    io = [t for t in doc["tables"]["io"] if t["vm"] == "vm-001" and t["direction"] == "out"]
    want = sum(s.count for sn in snaps for s in sn.vms[1].io if s.direction == "out")
    assert io[0]["count"] == want
    csv = _vprof("report", str(tmp_path / "r"), "--csv", "--table", "reasons")
    assert csv.returncode == 0 and csv.stdout.startswith("vm,isa,reason,bucket,count")
    html = tmp_path / "r.html"
    out = _vprof("report", str(tmp_path / "r"), "--html", str(html))
    assert out.returncode == 0, out.stderr
    text = html.read_text()
    assert "<script src" not in text and "http" not in text.replace("http://www.w3.org", "")
    text_out = _vprof("diff", str(tmp_path / "r"), str(tmp_path / "r"))
    assert text_out.returncode == 0 and "vm-002" in text_out.stdout


@pytest.mark.parametrize("case", ["missing", "newer", "truncated", "not_a_recording"])
def test_bad_recordings_are_one_line_exit_2(tmp_path: Path, case: str) -> None:
    path = tmp_path / "r"
    if case != "missing":
        _record(path, list(delta_snapshots(HOST, 8)))
    if case == "newer":
        meta = json.loads((path / "meta.json").read_text())
        meta["format_version"] = FORMAT_VERSION + 1
        (path / "meta.json").write_text(json.dumps(meta))
    elif case == "truncated":
        part = path / "part-000002.parquet"
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    elif case == "not_a_recording":
        (path / "meta.json").unlink()
    out = _vprof("report", str(path))
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    expect = {"missing": "no such file", "newer": "newer", "truncated": "part-000002"}
    assert expect.get(case, "not a vprof recording") in lines[0]


def test_unknown_dialect_and_no_kvm_events(tmp_path: Path) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\nworld\n")
    out = _vprof("import", str(junk), "-o", str(tmp_path / "x"))
    assert out.returncode == 2 and "unknown dialect" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    sched = tmp_path / "sched.txt"
    sched.write_text(
        "  bash  100 [000]  10.000001: sched:sched_wakeup: comm=x pid=5 prio=120 target_cpu=000\n"
    )
    out = _vprof("import", str(sched), "-o", str(tmp_path / "y"))
    assert out.returncode == 2 and "no KVM events" in out.stderr
    missing = _vprof("import", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "z"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
