"""Signals on a real daemon process with the fake source (no root needed).

SIGHUP reloads (a new interval takes effect, a bad file keeps the old
config); SIGTERM and SIGINT detach the source and exit 0 within 2 seconds.
tests/test_daemon_e2e.py repeats the SIGTERM check against real BPF probes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon import free_port, get

_RUNNER = """
import sys
sys.path.insert(0, {tests!r})
from test_daemon import FakeSource
from vprof.daemon import command as daemon, config
import logging

class Announcing(FakeSource):
    def close(self):
        super().close()
        print("closed", flush=True)

logging.basicConfig(stream=sys.stderr, format="%(levelname)s: %(message)s")
logging.getLogger("vprof").setLevel("INFO")
cfg = config.load({path!r})
sys.exit(daemon.serve(cfg, Announcing, {path!r}, {{}}))
"""


class Proc:
    def __init__(self, conf: Path) -> None:
        self.conf = conf
        self.port = free_port()
        conf.write_text(f'listen = "127.0.0.1:{self.port}"\ninterval = 0.2\n')
        script = _RUNNER.format(tests=str(Path(__file__).parent), path=str(conf))
        self.p = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def health(self) -> dict[str, object]:
        return dict(json.loads(get(self.url + "/healthz")[1]))

    def wait_healthy(self, timeout: float = 10) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                doc = self.health()
                if doc["status"] == "ok":
                    return doc
            except OSError:
                pass
            assert self.p.poll() is None, self.p.communicate()
            time.sleep(0.05)
        raise AssertionError("daemon never became healthy")

    def events(self) -> float:
        for line in get(self.url + "/metrics")[1].splitlines():
            if line.startswith('vprof_vm_events_total{bucket="io"'):
                return float(line.split()[-1])
        raise AssertionError("no events series")


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[Proc]:
    p = Proc(tmp_path / "vprof.toml")
    try:
        p.wait_healthy()
        yield p
    finally:
        if p.p.poll() is None:
            p.p.kill()
            p.p.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_detaches_and_exits_0_within_2s(proc: Proc, signum: int) -> None:
    start = time.monotonic()
    proc.p.send_signal(signum)
    out, err = proc.p.communicate(timeout=5)
    assert time.monotonic() - start < 2.0
    assert proc.p.returncode == 0, err
    assert "closed" in out and "Traceback" not in err


def test_sighup_applies_a_new_interval_without_losing_counts(proc: Proc) -> None:
    before = proc.events()
    proc.conf.write_text(proc.conf.read_text().replace("interval = 0.2", "interval = 30"))
    proc.p.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while proc.health()["interval_seconds"] != 30:
        assert time.monotonic() < deadline, "reload never applied"
        time.sleep(0.05)
    settled = proc.events()
    assert settled >= before
    time.sleep(1.0)  # at the old 0.2 s interval this would be ~5 more snapshots
    assert proc.events() - settled <= 10  # at most one 10-event tick raced the reload


def test_sighup_with_a_bad_file_keeps_running(proc: Proc) -> None:
    proc.conf.write_text(proc.conf.read_text() + "granularity = 3\n")
    proc.p.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while 'vprof_config_reloads_total{result="error"} 1.0' not in get(proc.url + "/metrics")[1]:
        assert time.monotonic() < deadline, "reload error never counted"
        time.sleep(0.05)
    assert proc.wait_healthy()["interval_seconds"] == 0.2
    proc.p.send_signal(signal.SIGTERM)
    _, err = proc.p.communicate(timeout=5)
    assert "reload failed, keeping the running config" in err and ":3: granularity" in err
