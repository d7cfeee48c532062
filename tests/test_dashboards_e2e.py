"""Every dashboard query against a real Prometheus scraping a real daemon.

A Prometheus server (Debian's, on a free loopback port, scraping every second)
scrapes `vprof daemon`, which watches two micro-guests of this test: one
doing port I/O, one halting.  Each query of each panel of each dashboard runs
through Prometheus's HTTP API with the template variables substituted, as
Grafana would: it must parse and return data, except the panels documented as
needing kvm_exit timing (tests/test_dashboards.py EXIT_TIMING_PANELS), which
must parse.  The daemon runs with granularity "vcpu" so that the VM
dashboard's per-vCPU panels have series.  Key panels must show the expected
answer.  Other guests may run
on this host at the same time: $vm names only ours.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import alerts, build, queries

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.kvm]

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/alerts/vprof-alerts.yml"
GUEST_SECONDS = 90  # outlives the queries; the guests are stopped at teardown
SETTLE_SECONDS = 8  # after both VMs appear: rate() windows fill with 1 s scrapes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _all_attached(code: int, body: bytes) -> bool:
    return code == 200 and json.loads(body).get("probes_loading") == []


def _wait(what: str, ok: Any, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what}: exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if ok():
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what}: not ready after {timeout} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Stack:
    prometheus: str  # base URL
    instance: str  # the daemon's instance label
    pio: str  # guest names = vm label values
    hlt: str

    def query(self, expr: str) -> dict[str, Any]:
        """Prometheus's JSON answer to an instant query (status "error" on bad PromQL)."""
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        _, body = _get(url)
        answer: dict[str, Any] = json.loads(body)
        return answer

    def query_range(self, expr: str, seconds: int = 20) -> dict[str, Any]:
        end = time.time()
        params = {"query": expr, "start": end - seconds, "end": end, "step": 2}
        url = f"{self.prometheus}/api/v1/query_range?" + urllib.parse.urlencode(params)
        _, body = _get(url)
        answer: dict[str, Any] = json.loads(body)
        return answer

    def values(self) -> dict[str, str]:
        """Template variable values, as Grafana would substitute them."""
        return {
            "instance": self.instance,
            "vm": f"{self.pio}|{self.hlt}",
            "bucket": ".*",
            "__rate_interval": "10s",
            "__interval": "2s",
            "__range": "1m",
        }


def _start_daemon(tmp: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp / "daemon.log"
    cmd = [sys.executable, "-m", "vprof", "daemon", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--interval", "1", "--granularity", "vcpu"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    healthz = f"http://127.0.0.1:{port}/healthz"
    # Every family attached, not only the first (/healthz is 200 from the first on).
    _wait("vprof daemon /healthz", lambda: _all_attached(*_get(healthz)), 120, proc, log)
    return proc, log


def _start_prometheus(tmp: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "vprof", "static_configs": [{"targets": [target]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = tmp / "prometheus.log"
    cmd = [
        "prometheus",
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait("prometheus", lambda: _get(f"{url}/-/ready")[0] == 200, 60, proc, log)
    return proc, url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from guestproc import start_guest

    tmp = tmp_path_factory.mktemp("dashboards-e2e")
    port = _free_port()
    daemon, daemon_log = _start_daemon(tmp, port)
    prometheus, url = _start_prometheus(tmp, f"127.0.0.1:{port}")
    tag = os.getpid()
    stack = Stack(url, f"127.0.0.1:{port}", f"dash-pio-{tag}", f"dash-hlt-{tag}")
    try:
        with (
            start_guest(stack.pio, "pio", duration=GUEST_SECONDS),
            start_guest(stack.hlt, "hlt", duration=GUEST_SECONDS),
        ):
            both = f'count(vprof_vm_info{{vm=~"{stack.pio}|{stack.hlt}"}})'
            seen = lambda: [r["value"][1] for r in stack.query(both)["data"]["result"]] == ["2"]  # noqa: E731
            _wait("both guests in Prometheus", seen, 60, daemon, daemon_log)
            time.sleep(SETTLE_SECONDS)
            yield stack
    finally:
        _stop(prometheus)
        _stop(daemon)


def _has_data(answer: dict[str, Any]) -> bool:
    """At least one series with at least one number (NaN is no data)."""
    for series in answer["data"]["result"]:
        points = series.get("values") or [series["value"]]
        if any(not math.isnan(float(v)) for _, v in points):
            return True
    return False


def _dashboards() -> list[dict[str, Any]]:
    return [json.loads((ROOT / "dashboards" / s.filename).read_text()) for s in build.DASHBOARDS]


def test_every_panel_query_parses_and_returns_data(stack: Stack) -> None:
    problems, checked = [], 0
    for dashboard in _dashboards():
        for target in queries.targets(dashboard):
            expr = queries.substitute(target.expr, stack.values())
            answer = stack.query(expr) if target.instant else stack.query_range(expr)
            where = f"{target.dashboard} / {target.panel}"
            checked += 1
            if answer["status"] != "success":
                problems.append(f"{where}: {answer.get('error')}: {expr}")
            elif not target.needs_exit_timing and not _has_data(answer):
                problems.append(f"{where}: no data: {expr}")
    assert checked >= 40
    assert not problems, "\n".join(problems)


def _instant(stack: Stack, uid: str, title: str) -> dict[str, float]:
    """vm label -> value of a panel's (first) query, run as an instant query."""
    dashboard = next(d for d in _dashboards() if d["uid"] == uid)
    target = next(t for t in queries.targets(dashboard) if t.panel == title)
    answer = stack.query(queries.substitute(target.expr, stack.values()))
    assert answer["status"] == "success", answer
    return {r["metric"]["vm"]: float(r["value"][1]) for r in answer["data"]["result"]}


def test_pio_guest_leads_the_io_panel(stack: Stack) -> None:
    io = _instant(stack, "vprof-host", "I/O accesses by VM")
    assert io.get(stack.pio, 0) > 0, io
    assert max(io, key=lambda vm: io[vm]) == stack.pio, io


def test_hlt_guest_shows_halted_time(stack: Stack) -> None:
    halted = _instant(stack, "vprof-host", "Halted time per VM")
    assert halted.get(stack.hlt, 0) > 0, halted
    assert halted[stack.hlt] > halted.get(stack.pio, 0), halted


def test_alert_rules_evaluate_cleanly_on_real_series(stack: Stack) -> None:
    _, body = _get(f"{stack.prometheus}/api/v1/rules")
    groups = json.loads(body)["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == sum(1 for _ in alerts.rule_exprs(alerts.load_rules(RULES)))
    for rule in rules:
        assert rule["health"] in ("ok", "unknown"), rule
        assert not rule.get("lastError"), rule
