"""Least privilege, proven (issue 15, item 7).

`vprof daemon` (families io and vmm) under `setpriv` with exactly the
capabilities that deploy/vprof-daemon.service grants (its
CapabilityBoundingSet, which must equal its AmbientCapabilities; User=root as
in the unit, so those are all root keeps), then with one of them dropped at a
time.  The VM is a micro-guest run as user nobody (with CAP_DAC_OVERRIDE
only, to open /dev/kvm, mode 0600), so what CAP_SYS_PTRACE and
CAP_DAC_READ_SEARCH buy (reading the VMM of another user) shows.  Oracle: the
guest's own count of port writes, on /metrics exactly under its name with the
unit's set.  Each absence must leave the daemon running (degraded) with one
log line per cause and no traceback.  The results are written up in the
unit's comments.  A capability missing from this test's own bounding set
cannot be granted (CAP_SYS_RESOURCE here): that run is the run without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from guestproc import REPO, GuestProcess
from reliability import DaemonProc
from test_daemon import get
from test_daemon_e2e import wait_for

from vprof.guest.args import RUNNER_MODULE, GuestArgs, runner_argv
from vprof.guest.workloads import PIO_PORT

pytestmark = [pytest.mark.reliability, pytest.mark.live, pytest.mark.kvm]

UNIT = REPO / "deploy" / "vprof-daemon.service"
NOBODY = 65534
COUNT = 3000


def unit_caps() -> list[str]:
    """The unit's capabilities, as setpriv spells them ("bpf", "sys_ptrace")."""
    lines = dict(
        ln.split("=", 1) for ln in UNIT.read_text().splitlines() if re.match(r"^[A-Z]\w+=", ln)
    )
    bounding, ambient = lines["CapabilityBoundingSet"].split(), lines["AmbientCapabilities"].split()
    assert bounding == ambient, "the unit's bounding and ambient sets differ"
    assert lines["User"] == "root", "a non-root User= needs --reuid below"
    return [c.removeprefix("CAP_").lower() for c in bounding]


def host_bounding() -> set[str]:
    """Capabilities this test itself may still grant (its bounding set)."""
    out = subprocess.run(["setpriv", "--dump"], capture_output=True, text=True, check=True)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("Capability bounding set:"))
    return set(line.split(":", 1)[1].strip().split(","))


def _setpriv(caps: list[str]) -> list[str]:
    want = ",".join(["-all", *(f"+{c}" for c in caps)])
    return ["setpriv", f"--bounding-set={want}", f"--inh-caps={want}", f"--ambient-caps={want}",
            "--no-new-privs", "--"]  # fmt: skip


def _nobody_guest(name: str, workload: str = "pio", **run: float) -> GuestProcess:
    args = GuestArgs(name, workload=workload, json=True, **run)  # type: ignore[arg-type]
    return GuestProcess(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         "--inh-caps=-all,+dac_override", "--ambient-caps=-all,+dac_override",
         sys.executable, "-m", RUNNER_MODULE, *runner_argv(args)]
    )  # fmt: skip


def _pio(text: str, name: str) -> float | None:
    m = re.search(
        rf'^vprof_vm_io_address_accesses_total\{{(?=[^}}]*vm="{re.escape(name)}")'
        rf'(?=[^}}]*direction="out")(?=[^}}]*address="{PIO_PORT:#x}")[^}}]*\}} (\S+)$',
        text,
        re.M,
    )
    return float(m.group(1)) if m else None


def _off(body: str) -> bool:
    """Every configured family off for good (none attached or compiling)."""
    doc = json.loads(body)
    return bool(doc["probes_off"]) and not doc["probes_attached"]


CONF = 'interval = 1.0\nfamilies = ["io", "vmm"]\n'


def run_daemon(tmp: Path, caps: list[str], name: str) -> dict[str, object]:
    """What a daemon with `caps` does with a guest of user nobody: its exit
    status if it did not run, /healthz, the count on /metrics, its log."""
    # A VM running from the start: a source that cannot attach to its
    # threads says so at once, whatever else runs on the host.
    with _nobody_guest(f"{name}-idle", "hlt", duration=120.0):
        return _observe(tmp, caps, name)


def _observe(tmp: Path, caps: list[str], name: str) -> dict[str, object]:
    d = DaemonProc(tmp, CONF, prefix=tuple(_setpriv(caps)))
    out: dict[str, object] = {"caps": caps}
    try:
        deadline = time.monotonic() + 120
        while d.p.poll() is None and time.monotonic() < deadline:
            try:
                code, body = get(d.url + "/healthz")
            except OSError:
                time.sleep(0.2)
                continue
            # Once no family still compiles: 200 with a snapshot published, 503 for good
            # without probes.  (200 comes with the first family attached: a guest started
            # then, while vmm compiles, has its threads created by io's programs, and no
            # new-vCPU record ever names it if it exits before the next snapshot.)
            if not json.loads(body)["probes_loading"] and (code == 200 or _off(body)):
                break
            time.sleep(0.2)
        out["exit"] = d.p.poll()
        if d.p.poll() is None:
            out["health"] = get(d.url + "/healthz")[0]
            with _nobody_guest(name, count=COUNT) as g:
                result = g.wait(60)
            out["want"] = float(result["vcpus"][0]["ops_by_kind"]["pio_out"])
            seen: list[float | None] = []

            def exact() -> bool:
                seen.append(_pio(d.metrics(), name))
                return seen[-1] == out["want"]

            with contextlib.suppress(AssertionError):  # what it shows is the result
                wait_for("the exact count", exact, 10, 0.5)
            out["got"] = seen[-1]
            text = d.metrics()
            out["named"] = f'vm="{name}"' in text
            out["as_pid"] = _pio(text, f"pid-{g.pid}")  # counted, but not named
            out["health_end"] = get(d.url + "/healthz")[0]
            out["stop"] = d.stop()[0]
    finally:
        d.kill()
    out["log"] = d.log.read_text()
    return out


def _summary(r: dict[str, object]) -> str:
    lines = [ln for ln in str(r["log"]).splitlines() if ": WARNING: " in ln or "error" in ln]
    keep = ("exit", "health", "health_end", "want", "got", "named", "as_pid", "stop")
    return (
        f"{r['caps']}: "
        + ", ".join(f"{k}={r.get(k)}" for k in keep)
        + "\n  "
        + ("\n  ".join(lines[:8]))
    )


@pytest.fixture(scope="module")
def caps() -> list[str]:
    """The unit's capabilities this test can grant: a capability missing from
    its own bounding set (CAP_SYS_RESOURCE in some containers) cannot be
    raised, so that run is also the run without it."""
    caps = unit_caps()
    assert set(caps) >= {"bpf", "perfmon", "sys_ptrace", "dac_read_search"}, caps
    grantable = [c for c in caps if c in host_bounding()]
    print(f"\nunit grants {caps}; this host can grant {grantable}")
    return grantable


def _one_line_each(log: str) -> None:
    """No traceback: every line of the log is one of the daemon's own."""
    assert "Traceback" not in log, log[-3000:]
    assert all(ln.startswith("vprof daemon: ") for ln in log.splitlines()), log[-3000:]


def _works(r: dict[str, object], named: bool) -> None:
    assert r["exit"] is None and r["health"] == 200, _summary(r)
    if named:
        assert r["got"] == r["want"] == COUNT and r["named"], _summary(r)
    else:  # counted exactly, under the fallback name: its VMM could not be read
        assert r["as_pid"] == r["want"] == COUNT and not r["named"], _summary(r)
    assert r["stop"] == 0


def test_the_units_capabilities_suffice(caps: list[str], tmp_path: Path) -> None:
    r = run_daemon(tmp_path, caps, f"priv-all-{os.getpid()}")
    print(_summary(r))
    _one_line_each(str(r["log"]))
    _works(r, named=True)


DROPS = ["bpf", "perfmon", "sys_ptrace", "dac_read_search", "sys_resource"]


@pytest.mark.parametrize("drop", DROPS)
def test_one_capability_fewer(caps: list[str], drop: str, tmp_path: Path) -> None:
    r = run_daemon(tmp_path, [c for c in caps if c != drop], f"priv-{drop}-{os.getpid()}")
    print(_summary(r))
    log = str(r["log"])
    _one_line_each(log)
    if drop == "bpf":  # bpf(2) refused: the perf source instead, with the reason
        assert r["exit"] is None, _summary(r)
        assert re.search(r"WARNING: source auto: using the perf source: BPF unavailable .*"
                         r"Operation not permitted", log), log  # fmt: skip
        assert "probe family vmm is off: not available with the perf source" in log
    elif drop == "perfmon":  # neither BPF nor perf may attach: unhealthy, each family says why
        assert r["exit"] is None and r["health_end"] == 503, _summary(r)
        assert "Need super-user privileges" in log
        assert re.search(r"WARNING: probe family io is off: .*Permission denied", log), log
        assert r["got"] is None and r["as_pid"] is None
    elif drop in ("sys_ptrace", "dac_read_search"):  # another user's VMM cannot be read
        _works(r, named=False)
    else:  # CAP_SYS_RESOURCE: memlock for maps before 5.11; this kernel charges memcg
        _works(r, named=True)
