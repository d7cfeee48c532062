"""The peers bench/overhead.py runs a guest under, beside vprof.

- `perf kvm stat record -a`: records the kvm tracepoints into a file.  What it
  recorded (SAMPLE events in `perf report --stats`) goes beside its ratio:
  on the pio and mmio workloads it records kvm_pio/kvm_mmio on every
  operation, unless a classic-tracepoint BPF program that returns 0 (older
  vprof, other tools) hides the events from perf; then it records nothing
  and its ratio says nothing about its cost.
- bcc's kvmexit (Debian bpfcc-tools): counts kvm_exit by reason.  Where it
  cannot start its column says why; where it runs, the exits its final table
  counted go beside its ratio (0 under kvm_pvm, where kvm_exit never fires:
  its ratio is then the cost of an idle BPF program, not of counting).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KVMEXIT = Path("/usr/sbin/kvmexit-bpfcc")
Guest = Callable[[], tuple[float, int]]  # one timed guest run: (iterations/s, iterations)


class PeerUnavailable(RuntimeError):
    """The peer cannot run on this host (the message says why)."""


@dataclass
class PerfRun:
    rate: float
    samples: int  # SAMPLE events perf wrote
    iterations: int  # guest loop iterations in the same run


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def perf_samples(data: str) -> int:
    out = subprocess.run(
        ["perf", "report", "-i", data, "--stats"], capture_output=True, text=True, timeout=120
    ).stdout
    m = re.search(r"SAMPLE events:\s+(\d+)", out)
    return int(m.group(1)) if m else 0


def with_perf(guest: Guest) -> PerfRun:
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        perf = subprocess.Popen(
            ["perf", "kvm", "stat", "record", "-a", "-o", data],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)  # perf opens its events before the guest starts
            if perf.poll() is not None:
                raise PeerUnavailable(f"perf kvm stat record exited with {perf.returncode}")
            rate, iterations = guest()
        finally:
            _stop(perf)
        return PerfRun(rate, perf_samples(data), iterations)


def with_kvmexit(guest: Guest) -> PerfRun:
    """One guest run under kvmexit; `samples` is the exits its table counted."""
    if not KVMEXIT.is_file():
        raise PeerUnavailable(f"{KVMEXIT} missing (Debian bpfcc-tools)")
    # -u: its header, printed once its program is attached, must not sit in a buffer.
    tool = subprocess.Popen(
        ["/usr/bin/python3", "-u", str(KVMEXIT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tool.stdout is not None and tool.stderr is not None
    try:
        if not tool.stdout.readline().startswith(b"Display kvm exit reasons"):
            tool.wait(30)
            err = tool.stderr.read().decode(errors="replace").strip().splitlines()
            why = err[-1].rpartition("due to: ")[2] if err else f"exit {tool.returncode}"
            raise PeerUnavailable(why.strip(" .")[:100])
        rate, iterations = guest()
    finally:
        if tool.poll() is None:
            _stop(tool)
    return PerfRun(rate, kvmexit_exits(tool.stdout.read().decode(errors="replace")), iterations)


def kvmexit_exits(table: str) -> int:
    """The exits kvmexit's final table counted (rows: PID TID REASON COUNT)."""
    return sum(int(m.group(1)) for m in re.finditer(r"^\s*\d+\s+\d+\s+.*?\s(\d+)\s*$", table, re.M))
