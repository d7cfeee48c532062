"""A short-lived VM's final count reaches a Prometheus that scrapes every 15 s (issue 12).

A daemon with the default `dead_vm_grace_seconds` (300 s) and a 1 s interval;
a guest that does port I/O for 3 s; a real Prometheus scraping every 15 s.
Oracle: the guest's own count of port writes.  Before the grace period the
final series left one interval after the guest, so such a Prometheus mostly
stored a partial count or none.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from reliability import DaemonProc
from test_daemon import free_port, get
from test_daemon_e2e import wait_for

from vprof.guest.workloads import PIO_PORT

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.kvm, pytest.mark.reliability]


def _stored(prom: str, expr: str) -> list[float]:
    code, body = get(f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}")
    assert code == 200, body
    return [float(r["value"][1]) for r in json.loads(body)["data"]["result"]]


def test_prometheus_at_15s_stores_a_3s_vms_final_count(tmp_path: Path) -> None:
    from guestproc import start_guest

    d = DaemonProc(tmp_path, "interval = 1.0\n")
    prom = None
    try:
        d.wait_healthy()
        port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 15s, scrape_timeout: 10s}\n"
            "scrape_configs:\n  - job_name: vprof\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{d.port}']}}]\n"
        )
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_for("prometheus scraping", lambda: _stored(url, 'up{job="vprof"}') == [1.0], 60)
        name = f"rel-grace-{os.getpid()}"
        with start_guest(name, "pio", vcpus=1, duration=3.0) as guest:
            result = guest.wait(60)
        want = float(result["vcpus"][0]["ops_by_kind"]["pio_out"])
        expr = (
            f'last_over_time(vprof_vm_io_address_accesses_total{{vm="{name}",kind="pio",'
            f'direction="out",address="{PIO_PORT:#x}"}}[10m])'
        )
        seen: list[list[float]] = []

        def final() -> bool:
            seen.append(_stored(url, expr))
            return seen[-1] == [want]

        try:
            wait_for(f"Prometheus to store {want:.0f}", final, 45, 1.0)
        except AssertionError as e:
            raise AssertionError(f"{e}; stored {seen[-3:]}") from None
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(10)
        d.kill()
