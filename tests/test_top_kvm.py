"""`vprof top` on real micro-guests: the live view driven in tmux, and batch JSON counts.

Other tests may run guests at the same time, so every check filters on this
test's own guest names (they carry the test process's PID).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from guestproc import start_guest

from vprof.guest.workloads import PIO_PORT

pytestmark = [pytest.mark.live, pytest.mark.kvm, pytest.mark.e2e]

VPROF = str(Path(sys.executable).with_name("vprof"))
TAG = f"tt{os.getpid()}"
PIO, HLT = f"{TAG}-pio", f"{TAG}-hlt"


class Pane:
    """One tmux session running a command in a fixed-size window."""

    def __init__(self, command: list[str], cols: int, rows: int) -> None:
        self.name = f"vprof-top-{TAG}"
        # The shell prints the exit status and keeps the pane open to read it.
        shell = f"{shlex.join(command)}; echo EXIT=$?; sleep 120"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(cols), "-y", str(rows), shell],
            check=True,
        )

    def tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", *args], check=True, capture_output=True, text=True)
        return out.stdout

    def capture(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def literal(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.name, "-l", text)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.capture()
            if re.search(pattern, text, re.MULTILINE):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on screen after {timeout}s:\n{text}")
            time.sleep(0.2)

    def state(self, fmt: str) -> str:
        return self.tmux("display", "-p", "-t", self.name, fmt).strip()

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False, capture_output=True)


def table(text: str) -> dict[str, dict[str, str]]:
    """The VM table on screen: name -> {column title: cell}."""
    lines = text.splitlines()
    head_i = next(i for i, ln in enumerate(lines) if re.match(r"VM[▲▼]? ", ln))
    titles = re.findall(r"\S+(?: REASON)?", lines[head_i])
    out: dict[str, dict[str, str]] = {}
    for ln in lines[head_i + 1 :]:
        cells = ln.split()
        if len(cells) < len(titles) - 1 or not cells[0].startswith(TAG):
            continue
        out[cells[0]] = {t.rstrip("▲▼"): c for t, c in zip(titles, cells, strict=False)}
    return out


def rate(cell: str) -> float:
    mult = {"k": 1e3, "M": 1e6, "G": 1e9}
    return float(cell[:-1]) * mult[cell[-1]] if cell[-1] in mult else float(cell)


def sort_by(pane: Pane, title: str) -> str:
    for _ in range(20):
        text = pane.capture()
        if f"{title}▼" in text.splitlines()[4]:
            return text
        pane.keys(">")
        time.sleep(0.3)
    raise AssertionError(f"could not sort by {title}")


def settle(
    pane: Pane, check: Callable[[dict[str, dict[str, str]]], bool]
) -> dict[str, dict[str, str]]:
    """The first frame (of up to ~10 s of frames) with both guests' rows passing `check`."""
    rows: dict[str, dict[str, str]] = {}
    for _ in range(20):
        rows = table(pane.capture())
        if {PIO, HLT} <= set(rows) and check(rows):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"no frame passed the check; last rows: {rows}")


@pytest.fixture
def guests() -> Iterator[None]:
    with start_guest(PIO, "pio", duration=60), start_guest(HLT, "hlt", duration=60):
        yield


@pytest.fixture
def pane(guests: None) -> Iterator[Pane]:
    p = Pane([VPROF, "top", "-d", "0.5", "-f", f"^{TAG}-"], 120, 40)
    yield p
    p.kill()


def test_live_view_in_tmux(pane: Pane) -> None:
    pane.wait_for(rf"^{PIO} ")
    pane.wait_for(rf"^{HLT} ")

    # The pio guest leads in I/O events.  Judged on the first of a few frames
    # where both rows show, since other tests load the host at the same time.
    sort_by(pane, "IO/s")
    rows = settle(pane, lambda r: rate(r[PIO]["IO/s"]) > max(10.0, rate(r[HLT]["IO/s"]) * 2))
    assert next(iter(rows)) == PIO

    # The hlt guest shows halted time, the pio guest none to speak of.
    sort_by(pane, "HALT%")
    rows = settle(pane, lambda r: float(r[HLT]["HALT%"]) > 10.0)
    assert next(iter(rows)) == HLT
    assert float(rows[PIO]["HALT%"]) < float(rows[HLT]["HALT%"])

    # Filter to the hlt guest and drill down into it.
    pane.keys("/", *["BSpace"] * 40)
    pane.literal("hlt$")
    pane.keys("Enter")
    text = pane.wait_for(r"filter /hlt\$/")
    assert set(table(text)) == {HLT}
    pane.keys("Enter")
    text = pane.wait_for(rf"^VM {HLT} ")
    assert "vCPUs" in text and "Top reasons" in text
    pane.keys("Escape")
    pane.wait_for(r"filter /hlt\$/")

    # Drill into the pio guest: its port is the busiest.
    pane.keys("/", *["BSpace"] * 40)
    pane.literal("pio$")
    pane.keys("Enter")
    pane.wait_for(r"filter /pio\$/")
    pane.keys("Enter")
    text = pane.wait_for(rf"0x{PIO_PORT:x}")
    io_lines = text[text.index("Busiest I/O") :].splitlines()[2:3]
    assert io_lines and f"0x{PIO_PORT:x}" in io_lines[0]
    pane.keys("Escape")

    # 80x24: nothing wraps, columns drop by priority.
    pane.tmux("resize-window", "-t", pane.name, "-x", "80", "-y", "24")
    time.sleep(1.5)
    text = pane.wait_for(r"TOP REASON")
    lines = text.splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    assert "PRIV/s" not in text and "EV/s" in text and re.search(rf"^{PIO} ", text, re.M)

    pane.keys("q")
    pane.wait_for(r"^EXIT=0$", timeout=10)
    assert pane.state("#{alternate_on}") == "0"
    assert pane.state("#{cursor_flag}") == "1"


def test_batch_json_counts_match_the_guest() -> None:
    """Summed over the intervals, the port accesses top reports are the guest's own count."""
    name = f"{TAG}-cnt"
    cmd = [VPROF, "top", "--json", "-d", "0.5", "-f", f"^{name}$"]
    top = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    records = []
    try:
        assert top.stdout is not None
        json.loads(top.stdout.readline())  # the probes are attached from here on
        with start_guest(name, "pio", count=20_000) as guest:
            result = guest.wait(60)
        ended = time.time()
        # Read on until two intervals after the guest ended (the pipe kept the rest).
        while not records or records[-1]["timestamp"] < ended + 1.0:
            records.append(json.loads(top.stdout.readline()))
    finally:
        top.terminate()
        top.wait(10)
    seen = {"out": 0, "in": 0}
    for rec in records:
        for vm in rec["vms"]:
            assert vm["vm"] == name
            for io in vm["io"]:
                if io["kind"] == "pio" and io["address"] == PIO_PORT:
                    seen[io["direction"]] += io["count"]
    ops = {"out": 0, "in": 0}
    for vcpu in result["vcpus"]:
        ops["out"] += vcpu["ops_by_kind"]["pio_out"]
        ops["in"] += vcpu["ops_by_kind"]["pio_in"]
    assert ops["out"] > 0
    assert seen == ops


def test_piped_output_is_batch_and_an_unknown_vm_is_exit_2() -> None:
    with start_guest(f"{TAG}-pipe", "pio", duration=30):
        out = subprocess.run(
            [VPROF, "top", "-n", "1", "-f", f"^{TAG}-pipe$"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("vprof top ")
        assert re.search(rf"^{TAG}-pipe +1 ", out.stdout, re.M)  # plain table, 1 vCPU
        assert "\x1b" not in out.stdout
        bad = subprocess.run(
            [VPROF, "top", "-b", "-n", "1", "-p", f"{TAG}-nope"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and f"no VM named '{TAG}-nope'" in bad.stderr
