"""Families compiled in the background (the daemon's start-up; root + BPF)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from vprof.bpf.loader import INTERRUPTED, PENDING
from vprof.model import PROBE_FAMILIES
from vprof.pipeline.profiler import Profiler, ProfilerConfig

pytestmark = pytest.mark.live


def test_background_load_attaches_what_the_foreground_load_does() -> None:
    with Profiler(ProfilerConfig(families=frozenset({"io", "vmm", "sched"}))) as fg:
        want = {s.family: s.attached for s in fg.status()}
    with Profiler(
        ProfilerConfig(families=frozenset({"io", "vmm", "sched"}), background=True)
    ) as bg:
        first = {s.family: s.reason for s in bg.status()}
        # Until its compile ends, a wanted family says so (or is on already).
        assert all(first[f] in (PENDING, "") for f in ("io", "vmm", "sched")), first
        assert first["exits"] == "not selected"
        snaps = 0
        deadline = time.monotonic() + 120
        while bg.loading and time.monotonic() < deadline:
            bg.snapshot()  # reading the loaded maps while the next compile runs
            snaps += 1
            time.sleep(0.05)
        assert not bg.loading
        assert {s.family: s.attached for s in bg.status()} == want
        assert snaps > 0


CHILD = """
import os, time
from vprof.pipeline.profiler import Profiler, ProfilerConfig
p = Profiler(ProfilerConfig(background=True))
while not any(s.attached for s in p.status()):
    time.sleep(0.01)
p.close()
print(",".join(s.reason or "on" for s in p.status()), flush=True)
# A compile may still run: exit() would run LLVM's destructors under it.
os._exit(0 if not p.loading else 3)
"""


def test_close_during_start_up_stops_the_remaining_families() -> None:
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert run.returncode in (0, 3), run.stderr  # not an abort (-6) nor a crash
    reasons = run.stdout.strip().split(",")
    assert len(reasons) == len(PROBE_FAMILIES)
    on = dict(zip(PROBE_FAMILIES, reasons, strict=True))
    assert on["vmm"] == "on", on  # the first to compile (it names new VMs)
    # Those after the one in flight at close() are never compiled: sched is the last.
    assert on["sched"] == INTERRUPTED, on
    assert set(reasons) <= {"on", INTERRUPTED}, reasons


MEMORY_CHILD = """
from vprof.bpf.loader import COMPILER_LIBS, Loader
loader = Loader(("io",))
private = cur = 0
for line in open("/proc/self/smaps"):
    parts = line.split()
    if "-" in parts[0] and not parts[0].endswith(":"):
        cur = len(parts) > 5 and any(lib in parts[5] for lib in COMPILER_LIBS)
    elif cur and parts[0] == "Private_Clean:":
        private += int(parts[1])
print(private)
loader.close()
"""


def test_the_compilers_pages_are_handed_back_after_loading() -> None:
    # The kernel's own accounting (smaps): LLVM's and clang's pages that only
    # this process maps are no longer resident once the families are loaded
    # (pages other processes map too are Shared_* and not counted here; the
    # libraries' ~10 MB of relocated data is Private_Dirty and stays: 74 MB
    # of clean pages stay without the release).
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) < 4096, f"{run.stdout.strip()} kB of compiler pages still resident"
