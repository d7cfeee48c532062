"""The HTML report in a real browser: Debian's chromium, headless, no network.

The page must draw every chart (its inline check counts the SVG series with
a non-empty bounding box, in the browser's own layout), log nothing to the
console, and show the counts that were recorded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vprof.sinks.recorder import Recorder, base_meta
from vprof.sources.synthetic import SyntheticHost, delta_snapshots

pytestmark = pytest.mark.e2e

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    assert exe is not None
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_html_renders_in_chromium(tmp_path: Path) -> None:
    host = SyntheticHost(vms=2, vcpus=2)
    snaps = list(delta_snapshots(host, 24))
    rec = Recorder(tmp_path / "r", base_meta(5.0, ["io"], "live"), part_intervals=6)
    for s in snaps:
        rec.add(s)
    rec.close()
    html = tmp_path / "report.html"
    out = subprocess.run(
        [sys.executable, "-m", "vprof", "report", str(tmp_path / "r"), "--html", str(html)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    url = html.as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    body = re.search(r'<body[^>]*data-charts="(\d+)"[^>]*data-drawn="(\d+)"', dom.stdout)
    assert body is not None, dom.stdout[:500]
    assert int(body[1]) == int(body[2]) == 2 * host.vms  # overhead + ledger per VM
    # The io and reasons tables hold the recorded counts.
    for i, _ in enumerate(snaps[0].vms):
        out_n = sum(s.count for sn in snaps for s in sn.vms[i].io if s.direction == "out")
        pio = sum(r.count for sn in snaps for r in sn.vms[i].reasons if r.reason == "kvm_pio")
        name = f"vm-{i:03d}"
        assert re.search(
            rf"<td>{name}</td>\s*<td>pio</td>\s*<td>out</td>.*?<td>{out_n}</td>", dom.stdout, re.S
        )
        assert re.search(
            rf"<td>{name}</td>\s*<td>event</td>\s*<td>kvm_pio</td>\s*<td>io</td>\s*<td>{pio}</td>",
            dom.stdout,
        )
    shot = tmp_path / "shot.png"
    taken = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1500", url)
    assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr[-2000:]
