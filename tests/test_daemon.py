"""The daemon's wiring with a fake source: HTTP, /healthz, reload, bad input.

No root or BPF: the source factory is injected, as the real daemon injects the
Profiler.  tests/test_daemon_signals.py drives the same fake through signals
in a subprocess; tests/test_daemon_e2e.py runs the real thing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from vprof.daemon.command import Daemon, StartupError, alive, daemon
from vprof.daemon.config import DaemonConfig
from vprof.daemon.core import SourceFactory
from vprof.model import Bucket, ProbeStatus, ReasonStat, Snapshot, VcpuStat, VmStat
from vprof.sources.absent import PERF_WAITING

NS = 1_000_000_000


def own_key() -> tuple[int, str]:
    """This process as a "VM": the daemon exports only VMs whose process lives."""
    pid = os.getpid()
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    start = stat[stat.rfind(b")") + 2 :].split()[19].decode()
    return pid, f"{pid}:{start}"


class FakeSource:
    """Counts up by `step` pio events per snapshot for one VM; records close()."""

    instances: ClassVar[list[FakeSource]] = []

    def __init__(
        self, cfg: DaemonConfig, stopping: Callable[[], bool] | None = None, step: int = 10
    ) -> None:
        self.cfg = cfg
        self.step = step
        self.calls = 0
        self.closed = False
        self.fail_next = False
        self.forgot_vm = False  # the source dropped the VM (the Profiler: once it is dead)
        self.vm_identity = own_key()
        FakeSource.instances.append(self)

    def status(self) -> tuple[ProbeStatus, ...]:
        return tuple(ProbeStatus(f, True, "") for f in self.cfg.families)

    def snapshot(self) -> Snapshot:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("map read failed")
        self.calls += 1
        n = self.calls * self.step
        pid, key = self.vm_identity
        vcpu = VcpuStat(tid=pid + 1, index=0, wall_ns=n * 1000, ledger={"vmm_userspace": n * 1000})
        vm = VmStat(
            key, pid, "fake-vm", "fake-vm", "test", "u-1", "vprof-guest", 1, (vcpu,),
            (ReasonStat("event", "kvm_pio", Bucket.IO, n),),
        )  # fmt: skip
        vms = () if self.forgot_vm else (vm,)
        return Snapshot(0.0, self.calls * NS, NS, "fake", False, vms, self.status())

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    # The CLI installs the daemon's handlers; pytest's own must come back.
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@contextlib.contextmanager
def fake_daemon(
    tmp_path: Path, source: SourceFactory | None = None
) -> Iterator[tuple[Daemon, Path]]:
    """A started Daemon on a free local port (interval 60: ticks are the test's) over
    `source` (FakeSource by default), with its config file; shut down on leaving."""
    from vprof.daemon import config

    conf = tmp_path / "vprof.toml"
    conf.write_text(f'listen = "127.0.0.1:{free_port()}"\ninterval = 60\n')
    d = Daemon(config.load(str(conf)), source or FakeSource, str(conf), {})
    d.start()
    try:
        yield d, conf
    finally:
        d.shutdown()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[Daemon, str, Path]]:
    with fake_daemon(tmp_path) as (d, conf):
        assert d.server is not None
        host, port = d.server.server_address[:2]
        yield d, f"http://{host}:{port}", conf


def test_metrics_and_healthz_over_http(started: tuple[Daemon, str, Path]) -> None:
    d, url, _ = started
    code, body = get(url + "/healthz")
    assert code == 503 and json.loads(body)["last_interval_ok"] is False
    d.tick()
    code, body = get(url + "/healthz")
    doc = json.loads(body)
    assert code == 200 and doc["status"] == "ok" and "io" in doc["probes_attached"]
    code, text = get(url + "/metrics")
    assert code == 200
    assert 'vprof_vm_events_total{bucket="io",vm="fake-vm"} 10.0' in text
    assert get(url + "/nope")[0] == 404


def test_failed_interval_is_counted_and_unhealthy(started: tuple[Daemon, str, Path]) -> None:
    d, url, _ = started
    d.tick()
    FakeSource.instances[-1].fail_next = True
    d.tick()
    assert d.state.failures == 1 and not d.state.last_success
    code, body = get(url + "/healthz")
    assert code == 503 and json.loads(body)["last_interval_ok"] is False
    d.tick()
    assert get(url + "/healthz")[0] == 200


def test_no_probe_attached_is_unhealthy(started: tuple[Daemon, str, Path]) -> None:
    d, _, _ = started
    d.tick()
    d._probes = (ProbeStatus("io", False, "tracepoint missing"),)
    code, doc = d.health()
    assert code == 503 and doc["probes_off"] == {"io": "tracepoint missing"}


def test_perf_families_waiting_for_a_vcpu_thread_are_healthy(
    started: tuple[Daemon, str, Path],
) -> None:
    """The perf source on a host with no VM yet: nothing attached, nothing wrong."""
    d, _, _ = started
    d.tick()
    d._probes = (
        ProbeStatus("io", False, PERF_WAITING),
        ProbeStatus("vmm", False, "not available with the perf source"),
    )
    code, doc = d.health()
    assert code == 200 and doc["probes_attached"] == [] and doc["probes_waiting"] == ["io"]
    assert doc["probes_off"]["io"] == PERF_WAITING


def test_reload_live_keys_keeps_the_source(started: tuple[Daemon, str, Path]) -> None:
    d, _, conf = started
    d.tick()
    source = d._source
    conf.write_text(conf.read_text().replace("interval = 60", 'interval = 2\ngranularity = "vcpu"'))
    d.reload()
    assert d.cfg.interval == 2 and d.state.options.per_vcpu
    assert d._source is source and d.state.reloads_ok == 1


def test_reload_with_new_families_carries_counters(started: tuple[Daemon, str, Path]) -> None:
    d, _, conf = started
    d.tick()
    d.tick()  # 20 events so far
    before = d.registry.get_sample_value("vprof_vm_events_total", {"vm": "fake-vm", "bucket": "io"})
    conf.write_text(conf.read_text() + 'families = ["io", "sched"]\n')
    d.reload()
    old = FakeSource.instances[-2]
    assert old.closed and d.cfg.families == ("io", "sched")
    d.tick()
    after = d.registry.get_sample_value("vprof_vm_events_total", {"vm": "fake-vm", "bucket": "io"})
    # The old source's final snapshot (30) plus the new one's first (10).
    assert before == 20 and after == 40


def test_bad_config_at_reload_keeps_the_old_one(
    started: tuple[Daemon, str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    d, _, conf = started
    conf.write_text(conf.read_text() + "intervall = 3\n")
    d.reload()
    assert d.cfg.interval == 60 and d.state.reloads_error == 1
    assert "unknown key 'intervall'" in caplog.text and ":3:" in caplog.text


def test_busy_port_is_a_startup_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        d = Daemon(DaemonConfig(listen=f"127.0.0.1:{port}"), FakeSource)
        with pytest.raises(StartupError, match=r"cannot listen on 127\.0\.0\.1"):
            d.start()
    assert not FakeSource.instances or FakeSource.instances[-1].cfg.listen != f"127.0.0.1:{port}"


def _one_line_exit_2(args: list[str]) -> str:
    result = CliRunner().invoke(daemon, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_cli_port_in_use_exits_2_in_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = _one_line_exit_2(["--listen", f"127.0.0.1:{port}"])
    assert "Address already in use" in line


def test_cli_unbindable_address_exits_2() -> None:
    line = _one_line_exit_2(["--listen", "192.0.2.1:9477"])  # TEST-NET-1: never local
    assert "cannot listen on 192.0.2.1:9477" in line


def test_cli_bad_flag_value_exits_2() -> None:
    assert "--interval" in _one_line_exit_2(["--interval", "0"])
    assert "unknown family 'bogus'" in _one_line_exit_2(["--families", "io,bogus"])
    assert "not HOST:PORT" in _one_line_exit_2(["--listen", "nonsense"])


def test_check_config(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('interval = 2.5\nfamilies = ["io"]\n')
    result = CliRunner().invoke(daemon, ["--check-config", str(good)])
    assert result.exit_code == 0 and result.output == f"{good}: ok\n"
    bad = tmp_path / "bad.toml"
    bad.write_text('interval = 2.5\n\ngranularity = "per-thread"\n')
    line = _one_line_exit_2(["--check-config", str(bad)])
    assert line.startswith(f"vprof daemon: error: {bad}:3: granularity: must be one of")


def test_concurrent_scrapes_see_whole_snapshots(started: tuple[Daemon, str, Path]) -> None:
    d, url, _ = started
    d.tick()
    errors: list[str] = []

    def scrape() -> None:
        for _ in range(5):
            code, text = get(url + "/metrics")
            if code != 200 or "vprof_vm_events_total" not in text:
                errors.append(str(code))

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(5):
        d.tick()
    for t in threads:
        t.join()
    assert errors == []


def test_alive_checks_pid_and_start_time(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    fields = " ".join(["S"] + ["0"] * 18 + ["777"] + ["0"] * 10)
    (tmp_path / "42" / "stat").write_text(f"42 (qemu) x) {fields}\n")
    assert alive("42:777", 42, str(tmp_path))
    assert not alive("42:778", 42, str(tmp_path))  # pid reused by another process
    assert not alive("43:777", 43, str(tmp_path))  # gone


def test_dead_vm_keeps_its_final_series_for_the_grace_period(
    started: tuple[Daemon, str, Path],
) -> None:
    d, url, _ = started
    d.cfg = replace(d.cfg, dead_vm_grace_seconds=1.0)
    d.tick()
    assert 'vm="fake-vm"' in get(url + "/metrics")[1]
    source = FakeSource.instances[-1]
    source.vm_identity = (source.vm_identity[0], f"{source.vm_identity[0]}:1")  # not us any more
    d.tick()
    died = time.monotonic()
    final = 'vprof_vm_events_total{bucket="io",vm="fake-vm"} 20.0'
    assert final in get(url + "/metrics")[1]
    source.forgot_vm = True  # the source no longer reports it: the daemon still does
    d.tick()
    assert final in get(url + "/metrics")[1]
    time.sleep(max(0.0, died + 1.05 - time.monotonic()))
    d.tick()
    text = get(url + "/metrics")[1]
    assert 'vm="fake-vm"' not in text and "vprof_vms_tracked 0.0" in text


def test_an_expired_dead_vm_stays_gone_while_the_source_reports_it(
    started: tuple[Daemon, str, Path],
) -> None:
    # The perf source reports a dead VM for 30 s; its grace must not restart
    # at each snapshot after it expired (the churn soak saw ~30 s, not 3 s).
    d, url, _ = started
    d.cfg = replace(d.cfg, dead_vm_grace_seconds=0.2)
    d.tick()
    source = FakeSource.instances[-1]
    source.vm_identity = (source.vm_identity[0], f"{source.vm_identity[0]}:1")
    d.tick()
    assert 'vm="fake-vm"' in get(url + "/metrics")[1]
    time.sleep(0.25)
    for _ in range(3):
        d.tick()
        assert 'vm="fake-vm"' not in get(url + "/metrics")[1]


def test_grace_0_exports_a_dead_vm_once(started: tuple[Daemon, str, Path]) -> None:
    d, url, _ = started
    d.cfg = replace(d.cfg, dead_vm_grace_seconds=0.0)
    d.tick()
    source = FakeSource.instances[-1]
    source.vm_identity = (source.vm_identity[0], f"{source.vm_identity[0]}:1")
    d.tick()
    assert 'vprof_vm_events_total{bucket="io",vm="fake-vm"} 20.0' in get(url + "/metrics")[1]
    time.sleep(0.01)
    d.tick()
    assert 'vm="fake-vm"' not in get(url + "/metrics")[1]


def test_a_live_vm_keeps_the_plain_name_beside_a_dead_namesake(
    started: tuple[Daemon, str, Path],
) -> None:
    d, url, _ = started
    d.tick()
    old = FakeSource.instances[-1]
    pid, key = old.vm_identity
    old.vm_identity = (pid, f"{pid}:1")  # the old VM died ...
    d.tick()
    old.vm_identity = (pid, key)  # ... and a VM of the same name (reused pid) runs
    d.tick()
    text = get(url + "/metrics")[1]
    # The live one (30 events) keeps "fake-vm"; the dead one's final 20 is renamed.
    assert 'vprof_vm_events_total{bucket="io",vm="fake-vm"} 30.0' in text
    assert f'vprof_vm_events_total{{bucket="io",vm="fake-vm~{pid}"}} 20.0' in text


def test_only_configured_families_are_reported(tmp_path: Path) -> None:
    class AllFamilies(FakeSource):
        def status(self) -> tuple[ProbeStatus, ...]:
            return tuple(
                ProbeStatus(
                    f, f in self.cfg.families, "" if f in self.cfg.families else "not selected"
                )
                for f in ("io", "sched", "exits")
            )

    cfg = DaemonConfig(listen="127.0.0.1:0", families=("io", "sched"))
    d = Daemon(cfg, AllFamilies)
    d.start()
    try:
        d.tick()
        assert d.health()[1]["probes_off"] == {}
        assert (
            d.registry.get_sample_value(
                "vprof_probe_attached", {"family": "exits", "reason": "not selected"}
            )
            is None
        )
        assert (
            d.registry.get_sample_value("vprof_probe_attached", {"family": "sched", "reason": ""})
            == 1
        )
    finally:
        d.shutdown()
