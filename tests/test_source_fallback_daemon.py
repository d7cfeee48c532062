"""`vprof daemon` with `--source auto` and one family that cannot load.

The daemon runs in a private mount namespace where kvm:kvm_cr's tracefs
directory is an empty tmpfs: the privileged family cannot compile (its
tracepoint has no format), every other family attaches.  auto counts with
the BPF families while they load (they compile in the background), then,
once loading ends with privileged off, re-opens the perf source with ONE log
line naming the family.  The kernel's own list of the daemon's BPF programs
(its /proc/PID/fdinfo, and bpftool once it exits) says BPF was in use, then
that none is left.

Where bcc itself cannot be imported (its package directory an empty tmpfs),
auto falls back at once: the daemon never holds a BPF program.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
from pathlib import Path

import pytest
from conftest import unavailable
from reliability import DaemonProc, left_behind
from test_daemon import get
from test_daemon_e2e import wait_for

pytestmark = [pytest.mark.live]
FALLBACK = "WARNING: source auto: using the perf source: BPF probe families off (privileged: "
HIDDEN = "kvm/kvm_cr"  # only the privileged family needs it


def _hide(dirs: list[str]) -> tuple[str, ...]:
    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed")
    mounts = " && ".join(f"mount -t tmpfs tmpfs {d}" for d in dirs)
    return ("unshare", "-m", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$0" "$@"')


def _health(d: DaemonProc) -> dict[str, object]:
    doc: dict[str, object] = json.loads(get(d.url + "/healthz")[1])
    return doc


def test_a_family_off_hands_over_to_perf_with_one_line(tmp_path: Path) -> None:
    roots = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    tracefs = tuple(t for t in roots if Path(t, "events").is_dir())
    if not tracefs or not Path(tracefs[0], "events", HIDDEN).is_dir():
        unavailable(f"no tracefs with {HIDDEN}")
    # A short interval: the families that attach are reported while the rest load.
    hide = _hide([f"{t}/events/{HIDDEN}" for t in tracefs])
    d = DaemonProc(tmp_path, 'interval = 0.2\nsource = "auto"\n', prefix=hide)
    try:
        held = wait_for("a BPF program of the daemon", d.own_progs, 60, 0.05)
        doc = wait_for("the perf source", lambda: (h := _health(d))["source"] == "perf" and h, 120)
        log = d.log.read_text()
        lines = [ln for ln in log.splitlines() if "source auto:" in ln]
        assert len(lines) == 1 and lines[0].startswith("vprof daemon: " + FALLBACK), log
        # The reason is the BPF family's own, and the only family it names.
        assert "; " not in lines[0] and str(doc["source_why"]) in lines[0], (doc, log)
        # Served with BPF before: the families that loaded counted meanwhile.
        assert log.index("probe family exits attached") < log.index(FALLBACK), log
        assert "probe family privileged is off: failed to load" not in log, log
        # The kernel holds no BPF program of the daemon any more: perf counts.
        wait_for("the BPF programs closed", lambda: not d.own_progs(), 10, 0.1)
        assert 'vprof_source_info{source="perf"} 1.0' in d.metrics()
        rc, _ = d.stop(signal.SIGTERM)
        assert rc == 0, log
        progs, links = left_behind(held | d.progs)
        assert not progs and not links, (progs, links)
        assert "Traceback" not in d.log.read_text()
    finally:
        d.kill()


def test_no_bcc_falls_back_at_once(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.submodule_search_locations:
        unavailable("bcc (python3-bpfcc) is not installed")
    bcc_dir = next(iter(spec.submodule_search_locations))
    d = DaemonProc(tmp_path, 'interval = 0.2\nsource = "auto"\n', prefix=_hide([bcc_dir]))
    try:
        doc = wait_for("the perf source", lambda: (h := _health(d))["source"] == "perf" and h, 60)
        assert str(doc["source_why"]).startswith("BPF unavailable ("), doc
        log = d.log.read_text()
        lines = [ln for ln in log.splitlines() if "source auto:" in ln]
        assert lines == [
            f"vprof daemon: WARNING: source auto: using the perf source: {doc['source_why']}"
        ], log
        assert d.stop(signal.SIGTERM)[0] == 0, d.log.read_text()
        assert not d.progs, f"the daemon held BPF programs {d.progs}"  # its fdinfo, every 20 ms
    finally:
        d.kill()
