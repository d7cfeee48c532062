"""`vprof doctor`'s KVM binary-statistics line with real micro-guests.

One guest keeps its KVM stats fds open (reachable with pidfd_getfd), one
does not (no route: the micro-guest has no QMP socket).  The oracle is the
guests' own /proc/PID/fd links, read here, not by the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from guestproc import start_guest

pytestmark = [pytest.mark.live, pytest.mark.kvm]


def _holds_stats_fd(pid: int) -> bool:
    base = f"/proc/{pid}/fd"
    return any(os.readlink(f"{base}/{fd}") == "anon_inode:kvm-vm-stats" for fd in os.listdir(base))


def test_doctor_names_each_guests_route() -> None:
    tag = os.getpid()
    with (
        start_guest(f"dks-keep-{tag}", "hlt", duration=60, stats=True, keep_stats_fds=True) as keep,
        start_guest(f"dks-none-{tag}", "hlt", duration=60) as none,
    ):
        assert _holds_stats_fd(keep.pid) and not _holds_stats_fd(none.pid)
        res = subprocess.run(
            [sys.executable, "-m", "vprof", "doctor", "--json", "--no-count"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        text = subprocess.run(
            [sys.executable, "-m", "vprof", "doctor", "--no-count"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    doc = json.loads(res.stdout)
    assert res.returncode == doc["status"] >= 1  # a VM without statistics is degraded
    check = {c["check"]: c for c in doc["checks"]}["kvm-stats"]
    vms = {v["pid"]: v for v in check["data"]["vms"]}
    assert vms[keep.pid]["route"] == "pidfd" and vms[keep.pid]["counters"] > 0
    assert vms[none.pid]["route"] == "none" and "holds no KVM stats fd" in vms[none.pid]["why"]
    assert check["level"] == "degraded"
    assert f"dks-keep-{tag} (pid {keep.pid}): a stats fd the VMM holds" in text.stdout
    assert f"dks-none-{tag} (pid {none.pid}): none (" in text.stdout
