"""`vprof record --source perf`, `vprof advise --source perf` and
`vprof advise --recording` against the micro-guest, each in a child process
as a user runs them.

Oracles: the guest's own operation counts (its JSON result) and its own
port number.  The perf counters count a thread from the moment they are
open, so the guest is held until the recording shows its vCPU threads.
Another process's classic-tracepoint BPF programs hide events from perf
counters (vprof/sources/perf/hiders.py): the perf tests then refuse to count.
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

import pandas as pd
import pytest
from conftest import unavailable
from guestproc import GuestProcess, start_guest
from perf_fixtures import foreign_hiders
from pipeline_fixtures import ops

from vprof.guest.workloads import PIO_PORT
from vprof.sources.absent import PERF_ABSENT
from vprof.sources.replay import read_recording

pytestmark = [pytest.mark.live, pytest.mark.kvm]

NEEDED = ("kvm:kvm_pio", "kvm:kvm_mmio", "kvm:kvm_userspace_exit")
# How long `vprof record` may take to open its source and write the part that
# shows the guest: compiling every BPF family took over 60 s under others' load.
OPEN_WITHIN_S = 240.0


def _vprof(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vprof", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _no_hiders() -> None:
    hidden = foreign_hiders(NEEDED)
    if hidden:
        unavailable(f"BPF programs of other processes hide events from perf: {hidden}")


def _record(out: Path, *extra: str) -> subprocess.Popen[str]:
    argv = ["record", "-o", str(out), "-d", "0.2", "--part-seconds", "0.2", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "vprof", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _seen(out: Path, pid: int, tids: set[int]) -> bool:
    """Whether a written part holds every vCPU thread of guest `pid`."""
    try:
        frame = read_recording(out).frame
    except Exception:  # the directory or meta.json not written yet
        return False
    rows = frame[(frame["vm_pid"] == pid) & (frame["kind"] == "wall")]
    return tids <= set(rows["tid"].astype(int))


def _wait_seen(proc: subprocess.Popen[str], out: Path, g: GuestProcess) -> None:
    tids = {int(v["tid"]) for v in g.ready["vcpus"]}
    deadline = time.monotonic() + OPEN_WITHIN_S
    while not _seen(out, g.pid, tids):
        if proc.poll() is not None:
            raise AssertionError(f"vprof record exited: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the recording never showed guest {g.pid}'s vCPUs")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def _report(out: Path) -> dict[str, Any]:
    res = _vprof("report", str(out), "--json", "--top", "100")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _record_guest(out: Path, name: str, workload: str, vcpus: int, *extra: str) -> dict[str, Any]:
    """Record a held guest from before its first operation to after its last."""
    with start_guest(name, workload, vcpus=vcpus, count=1500, hold=True) as g:
        proc = _record(out, *extra)
        try:
            _wait_seen(proc, out, g)
            g.go()
            result = g.wait(60)
            g.proc.wait(10)
            time.sleep(1.0)  # a few intervals after the last operation
        finally:
            if proc.poll() is None:
                _stop(proc)
    return result


def _rows(doc: dict[str, Any], table: str, name: str) -> list[dict[str, Any]]:
    return [r for r in doc["tables"][table] if r.get("vm") == name]


@pytest.mark.parametrize(("workload", "vcpus"), [("pio", 1), ("mmio", 2)])
def test_record_source_perf_holds_the_guest_counts(
    tmp_path: Path, workload: str, vcpus: int
) -> None:
    _no_hiders()
    name = f"scli-{workload}-{vcpus}-{os.getpid()}"
    out = tmp_path / "rec"
    result = _record_guest(out, name, workload, vcpus, "--source", "perf")
    _no_hiders()  # none attached while it ran, as far as two looks can tell
    meta = json.loads((out / "meta.json").read_text())
    assert meta["snapshot_source"] == "perf" and set(meta["absent"]) == PERF_ABSENT
    doc = _report(out)
    reasons = {r["reason"]: r["count"] for r in _rows(doc, "reasons", name)}
    details = {(r["reason"], r["detail"]): r["count"] for r in _rows(doc, "details", name)}
    done = vcpus  # each vCPU's final DONE write is one more port write
    if workload == "pio":
        assert details[("kvm_pio", "in")] == ops(result, "pio_in")
        assert details[("kvm_pio", "out")] == ops(result, "pio_out") + done
        assert reasons["KVM_EXIT_IO"] == ops(result, "pio_in") + ops(result, "pio_out") + done
    else:
        assert details[("kvm_mmio", "read")] == ops(result, "mmio_read")
        assert reasons["KVM_EXIT_MMIO"] == ops(result, "mmio_read") + ops(result, "mmio_write")
    # What perf cannot give is absent from the recording, not zero.
    assert _rows(doc, "io", name) == []
    assert all(pd.isna(r["handling_ns"]) for r in _rows(doc, "reasons", name))


def test_advise_source_perf_gives_the_emulated_io_advice() -> None:
    _no_hiders()
    name = f"scli-adv-{os.getpid()}"
    with start_guest(name, "pio", vcpus=1, duration=120):
        res = _vprof("advise", name, "--seconds", "3", "--source", "perf", "--json")
    assert res.returncode == 0, res.stderr
    _no_hiders()
    doc = json.loads(res.stdout)
    assert doc["source"] == "perf"
    (vm,) = doc["vms"]
    assert all(v is None for v in vm["buckets"].values())  # not measured: null, not 0
    f = {x["rule"]: x for x in vm["findings"]}["io-unidentified-ports"]
    assert f["status"] == "advise" and "KVM_IOEVENTFD" in f["remedy"]
    assert f["figures"]["port_exits_per_s"] >= 1000 and "io_pct" not in f["figures"]
    assert "not available with the perf source" in f["evidence"]


def test_advise_from_a_recording_gives_the_reports_figures(tmp_path: Path) -> None:
    name = f"scli-rec-{os.getpid()}"
    out = tmp_path / "rec"
    with start_guest(name, "pio", vcpus=1, duration=600) as g:
        proc = _record(out)
        try:
            _wait_seen(proc, out, g)
            time.sleep(3)
        finally:
            _stop(proc)
    res = _vprof("advise", "--recording", str(out), name, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    rep = _report(out)
    assert doc["recording"] == str(out) and doc["host"]["recorded"] is True
    assert doc["host"]["kernel"] == os.uname().release
    assert doc["seconds"] == pytest.approx(rep["seconds"], abs=1e-3)
    (vm,) = doc["vms"]
    f = {x["rule"]: x for x in vm["findings"]}["io-unidentified-ports"]
    assert f["status"] == "advise" and f["figures"]["top_port"] == PIO_PORT
    (row,) = _rows(rep, "vms", name)
    assert f["figures"]["io_pct"] == pytest.approx(100 * row["io"], abs=0.01)
    io = sum(r["count"] for r in _rows(rep, "io", name))
    assert f["figures"]["io_exits_per_s"] == pytest.approx(io / rep["seconds"], abs=0.1)
    unchecked = {u["rule"] for u in vm["unchecked"]}
    assert {"context-switch-halt-polling", "privileged-emulation"} <= unchecked
    text = _vprof("advise", "--recording", str(out), name)
    assert "not checked: the recording does not hold the live facts" in text.stdout
    assert "kvm halt_poll_ns" in text.stdout
