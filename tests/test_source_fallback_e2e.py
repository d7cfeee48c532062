"""`--source auto` falls back to perf when bcc cannot compile, and says why once.

The daemon runs in a private mount namespace where /lib/modules/$(uname -r)
is an empty tmpfs: bcc finds no kernel headers, every family fails to
compile, and auto must open the perf source with ONE log line.  The daemon
then serves a micro-guest's metrics under the same names (promtool finds the
text clean), and a real Prometheus answers the host dashboard's queries: the
source panel says "perf", and the ledger panel's query finds only the
categories the perf source measures, never a fake 0 for the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unavailable
from guestproc import start_guest
from perf_fixtures import foreign_hiders
from test_daemon import free_port, get
from test_daemon_e2e import VPROF, _start_prometheus, query, wait_for

from dashboards import host, queries
from vprof.sources.absent import PERF_LEDGER

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.kvm]
FALLBACK = "source auto: using the perf source"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed")
    hidden = foreign_hiders(("kvm:kvm_pio", "kvm:kvm_userspace_exit"))
    if hidden:
        unavailable(f"BPF programs of other processes hide events from perf: {hidden}")
    tmp = tmp_path_factory.mktemp("fallback")
    port = free_port()
    conf = tmp / "vprof.toml"
    conf.write_text(f'listen = "127.0.0.1:{port}"\ninterval = 0.5\ntop_k = 20\nsource = "auto"\n')
    log = tmp / "daemon.log"
    hide = f"mount -t tmpfs tmpfs /lib/modules/{os.uname().release}"
    script = f'{hide} && exec "$0" daemon --config "$1"'
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(VPROF), str(conf)],
        stdout=subprocess.DEVNULL, stderr=log.open("w"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        ok = lambda: proc.poll() is None and get(url + "/healthz")[0] == 200  # noqa: E731
        try:
            wait_for("daemon healthy on the perf source", ok, 60, 0.3)
        except AssertionError:
            raise AssertionError(log.read_text()[-2000:]) from None
        yield url, log
    finally:
        proc.terminate()
        proc.wait(20)


def _metrics(url: str) -> str:
    code, body = get(url + "/metrics")
    assert code == 200
    return body.decode() if isinstance(body, bytes) else str(body)


def _sample(text: str, name: str, **labels: str) -> float | None:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_auto_falls_back_with_one_line_and_healthz_says_why(daemon: tuple[str, Path]) -> None:
    url, log = daemon
    _, body = get(url + "/healthz")
    doc: dict[str, Any] = json.loads(body)
    assert doc["source"] == "perf"
    assert "BPF unavailable" in doc["source_why"], doc
    lines = [ln for ln in log.read_text().splitlines() if FALLBACK in ln]
    assert len(lines) == 1, log.read_text()[-2000:]


def test_perf_metrics_same_names_exact_counts_promtool_clean(daemon: tuple[str, Path]) -> None:
    url, _ = daemon
    name = f"fb-pio-{os.getpid()}"
    with start_guest(name, "pio", count=1500, hold=True) as g:
        # The VM appears (its counters open) before its vCPU runs: exact counts.
        wait_for("the guest in /metrics", lambda: f'vm="{name}"' in _metrics(url), 30, 0.2)
        g.go()
        result = g.wait(60)
    ops = result["vcpus"][0]["ops_by_kind"]
    expect = ops["pio_in"] + ops["pio_out"] + 1  # + the final DONE port write

    def io_exits() -> float | None:
        got = _sample(_metrics(url), "vprof_vm_reason_events_total", vm=name, reason="KVM_EXIT_IO")
        return got if got == expect else None

    wait_for(f"KVM_EXIT_IO == {expect}", io_exits, 20, 0.3)
    text = _metrics(url)
    assert _sample(text, "vprof_source_info", source="perf") == 1.0
    assert (
        _sample(text, "vprof_vm_io_accesses_total", vm=name, kind="pio", direction="in")
        == (ops["pio_in"])
    )
    # What perf cannot measure is absent, not 0.
    assert _sample(text, "vprof_vm_time_seconds_total", vm=name, category="guest") is None
    assert "vprof_vm_wakeups_total{" not in text
    assert "vprof_vm_io_bytes_total{" not in text
    assert _sample(text, "vprof_vm_time_seconds_total", vm=name, category="runqueue") is not None
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr


def test_dashboard_queries_against_prometheus(daemon: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = daemon
    prom, purl = _start_prometheus(tmp_path, url.removeprefix("http://"))
    try:
        values = {"instance": ".*", "vm": ".*", "bucket": ".*", "__rate_interval": "10s"}
        source = queries.substitute(host.SOURCE.queries[0].expr, values)
        answer = wait_for("the source panel's answer", lambda: query(purl, source), 30)
        assert [r["metric"]["source"] for r in answer] == ["perf"]
        ledger = queries.substitute(host.LEDGER.queries[0].expr, values)
        got = wait_for("the ledger panel's answer", lambda: query(purl, ledger), 30)
        assert {r["metric"]["category"] for r in got} <= PERF_LEDGER
        assert host.LEDGER.lacks_with_perf and not host.RUNQUEUE.lacks_with_perf
    finally:
        prom.kill()
        prom.wait()
