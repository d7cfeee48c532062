"""End to end: a real Prometheus scrapes a real `vprof daemon` watching a micro-guest.

One daemon and one Prometheus serve every test here, in file order:
counts through Prometheus's HTTP API, the guest's series leaving, promtool on a
live scrape, SIGHUP with a new interval, and SIGTERM leaving no BPF program of
the daemon's attached.  Other helpers' tests may run guests and BPF programs at
the same time, so everything keys on our guest's name and the daemon's pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_daemon import free_port, get

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.kvm]

VPROF = Path(sys.executable).parent / "vprof"
GUEST = f"vprof-e2e-{os.getpid()}"
INTERVAL = 1.0
# Long enough that snapshots see the guest alive (and name it) before it exits.
GUEST_SECONDS = 3.0
GRACE = 8.0  # dead_vm_grace_seconds: short here; the default is minutes


@dataclass
class Stack:
    daemon: subprocess.Popen[str]
    daemon_url: str
    prom_url: str
    conf: Path
    progs_before: set[int]
    result: dict[str, Any] | None = None
    ended: float = 0.0  # monotonic time the guest exited


def wait_for(what: str, check: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def bpf_progs() -> list[dict[str, Any]]:
    out = subprocess.run(
        ["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True
    )
    return list(json.loads(out.stdout or "[]"))


def progs_of(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds now (bpftool here lists no owner pids);
    none once it is gone."""
    ids: set[int] = set()
    try:
        entries = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except OSError:
        return ids
    for fdinfo in entries:
        try:
            text = fdinfo.read_text()
        except OSError:  # closed meanwhile
            continue
        ids.update(int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("prog_id:"))
    return ids


def query(prom_url: str, promql: str) -> list[dict[str, Any]]:
    code, body = get(f"{prom_url}/api/v1/query?query={urllib.parse.quote(promql)}")
    assert code == 200, body
    return list(json.loads(body)["data"]["result"])


def _start_prometheus(tmp: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(
        "global: {scrape_interval: 500ms, scrape_timeout: 400ms}\n"
        f"scrape_configs:\n  - job_name: vprof\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for("prometheus ready", lambda: get(url + "/-/ready")[0] == 200, 30)
    # Discovery hands targets to the scraper ~5 s after start; count from the first scrape.
    up = lambda: [r["value"][1] for r in query(url, 'up{job="vprof"}')] == ["1"]  # noqa: E731
    wait_for("prometheus scraping the daemon", up, 30)
    return prom, url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for tool in ("bpftool", "prometheus", "promtool"):
        assert shutil.which(tool), f"{tool} missing"
    tmp = tmp_path_factory.mktemp("e2e")
    dport = free_port()
    conf = tmp / "vprof.toml"
    conf.write_text(
        f'listen = "127.0.0.1:{dport}"\ninterval = {INTERVAL}\ntop_k = 5\n'
        f"dead_vm_grace_seconds = {GRACE}\n"
    )
    before = {int(p["id"]) for p in bpf_progs()}
    daemon = subprocess.Popen(
        [str(VPROF), "daemon", "--config", str(conf)],
        stdout=subprocess.DEVNULL, stderr=(tmp / "daemon.log").open("w"), text=True,
    )  # fmt: skip
    prom = None
    try:
        durl = f"http://127.0.0.1:{dport}"

        def healthy() -> bool:  # every family attached, not only the first
            code, body = get(durl + "/healthz")
            return daemon.poll() is None and code == 200 and not json.loads(body)["probes_loading"]

        try:
            wait_for("daemon healthy", healthy, 120, 0.5)
        except AssertionError:
            raise AssertionError((tmp / "daemon.log").read_text()[-2000:]) from None
        prom, purl = _start_prometheus(tmp, f"127.0.0.1:{dport}")
        yield Stack(daemon, durl, purl, conf, before)
    finally:
        for p in (daemon, prom):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_guest_pio_counts_reach_prometheus_in_the_io_bucket(stack: Stack) -> None:
    from guestproc import start_guest

    with start_guest(GUEST, "pio", vcpus=1, duration=GUEST_SECONDS) as guest:
        stack.result = guest.wait(timeout=60)
    stack.ended = time.monotonic()
    ops = stack.result["vcpus"][0]["ops_by_kind"]
    from vprof.guest.workloads import PIO_PORT

    for direction, kind in (("out", "pio_out"), ("in", "pio_in")):
        expr = (
            f'max_over_time(vprof_vm_io_address_accesses_total{{vm="{GUEST}",kind="pio",'
            f'direction="{direction}",address="{PIO_PORT:#x}"}}[5m])'
        )
        want = float(ops[kind])
        got: list[float] = []

        def matches(e: str = expr, w: float = want, seen: list[float] = got) -> bool:
            seen[:] = [float(r["value"][1]) for r in query(stack.prom_url, e)]
            return seen == [w]

        try:
            wait_for(f"{expr} == {want}", matches, 20)
        except AssertionError as err:
            raise AssertionError(f"{err}; Prometheus has {got}") from None
    io = query(
        stack.prom_url, f'max_over_time(vprof_vm_events_total{{vm="{GUEST}",bucket="io"}}[5m])'
    )
    assert io and float(io[0]["value"][1]) >= ops["pio_out"] + ops["pio_in"]
    pio = query(
        stack.prom_url,
        f'max_over_time(vprof_vm_reason_events_total{{vm="{GUEST}",reason="kvm_pio"}}[5m])',
    )
    assert pio and pio[0]["metric"]["bucket"] == "io"


def test_the_stopped_guest_leaves_after_the_grace_period(stack: Stack) -> None:
    assert stack.result is not None, "needs the counting test first"
    seen: list[float] = []

    def gone() -> bool:
        text = get(stack.daemon_url + "/metrics")[1]
        if f'vm="{GUEST}"' in text:
            seen.append(time.monotonic())
            return False
        return True

    wait_for("the guest's series to leave", gone, GRACE + 4 * INTERVAL + 5, 0.1)
    left = time.monotonic() - stack.ended
    # Kept GRACE seconds after it was found dead, then dropped at a snapshot:
    # found dead within an interval, dropped within another (+1 s of slack).
    assert left >= GRACE, f"left {left:.1f} s after the guest exited"
    if seen:  # we watched it leave (the counting test may outlast the grace)
        assert left <= GRACE + 2 * INTERVAL + 1.0, f"left only {left:.1f} s after exit"


def test_promtool_finds_nothing_on_a_live_scrape(stack: Stack) -> None:
    text = get(stack.daemon_url + "/metrics")[1]
    assert "vprof_probe_attached" in text
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "" and out.stderr.strip() == "", out


def test_sighup_with_a_new_interval_takes_effect(stack: Stack) -> None:
    stack.conf.write_text(
        stack.conf.read_text().replace(f"interval = {INTERVAL}", "interval = 2.5")
    )
    stack.daemon.send_signal(signal.SIGHUP)
    wait_for(
        "interval 2.5 in /healthz",
        lambda: json.loads(get(stack.daemon_url + "/healthz")[1])["interval_seconds"] == 2.5,
        10,
    )

    def interval() -> float:
        for line in get(stack.daemon_url + "/metrics")[1].splitlines():
            if line.startswith("vprof_interval_seconds "):
                return float(line.split()[1])
        return 0.0

    assert wait_for("snapshots 2.5 s apart", lambda: interval() > 2.0, 15, 0.5)
    assert stack.daemon.poll() is None


def test_sigterm_detaches_every_probe_and_exits_0(stack: Stack) -> None:
    pid = stack.daemon.pid
    ours = progs_of(pid)
    assert ours, "the daemon should own BPF programs while it runs"
    start = time.monotonic()
    stack.daemon.send_signal(signal.SIGTERM)
    assert stack.daemon.wait(timeout=10) == 0
    elapsed = time.monotonic() - start
    left = {int(p["id"]) for p in bpf_progs()}
    assert not ours & left, f"programs {ours & left} of the daemon are still loaded"
    # The bound is 2 s.  Detaching ~30 programs is kernel work that a
    # saturated 2-core host (other helpers' tests) can stretch, so past 2 s
    # only fail when the host was not overloaded; never past 5 s.
    assert elapsed < 5.0, f"took {elapsed:.2f} s to stop"
    overloaded = os.getloadavg()[0] > 2 * (os.cpu_count() or 1)
    assert elapsed < 2.0 or overloaded, f"took {elapsed:.2f} s to stop on an idle host"
