"""/healthz while the source's families still compile (no root: a fake source)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_daemon import FakeSource, fake_daemon

from vprof.daemon import config
from vprof.daemon.command import Daemon
from vprof.daemon.core import LOADING
from vprof.model import ProbeStatus

LABELS = {"vm": "fake-vm", "bucket": "io"}


class Compiling(FakeSource):
    """Families come on one by one, as the Profiler's loading thread attaches them."""

    def __init__(
        self, cfg: config.DaemonConfig, stopping: Callable[[], bool] | None = None
    ) -> None:
        super().__init__(cfg, stopping)
        self.ready: list[str] = []

    @property
    def loading(self) -> bool:
        return len(self.ready) < len(self.cfg.families)

    def status(self) -> tuple[ProbeStatus, ...]:
        return tuple(
            ProbeStatus(f, f in self.ready, "" if f in self.ready else LOADING)
            for f in self.cfg.families
        )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with fake_daemon(tmp_path, Compiling) as (d, _):
        yield d


def test_a_family_counts_from_its_attach_not_from_the_next_tick(daemon: Daemon) -> None:
    source = daemon._source
    assert isinstance(source, Compiling)
    daemon.tick()  # the first snapshot, taken before any family is on
    code, doc = daemon.health()
    assert code == 503 and doc["probes_attached"] == []
    assert doc["probes_loading"] == list(daemon.cfg.families)
    source.ready.append("io")  # attached between two ticks
    code, doc = daemon.health()
    assert code == 200 and doc["probes_attached"] == ["io"]
    assert "io" not in doc["probes_loading"] and "io" not in doc["probes_off"]
    source.ready[:] = list(daemon.cfg.families)
    code, doc = daemon.health()
    assert code == 200 and doc["probes_loading"] == [] and doc["probes_off"] == {}


class Auto(Compiling):
    """`--source auto` as vprof/sources/select.py opens it in the daemon: BPF
    families loading, then fallback() says why perf takes over (or None)."""

    kind, why = "bpf", "auto: loading"

    def __init__(
        self, cfg: config.DaemonConfig, stopping: Callable[[], bool] | None = None
    ) -> None:
        super().__init__(cfg, stopping)
        self.deciding, self.done = True, False

    @property
    def loading(self) -> bool:
        return not self.done

    def status(self) -> tuple[ProbeStatus, ...]:
        off = "failed to load: no" if self.done else LOADING
        return tuple(ProbeStatus(f, f in self.ready, "" if f in self.ready else off)
                     for f in self.cfg.families)  # fmt: skip

    def fallback(self) -> str | None:
        if not self.deciding or self.loading:
            return None
        self.deciding = False
        return "BPF probe families off (sched: failed to load: no)"


class Perf(FakeSource):
    kind, why = "perf", "--source perf"


def _auto_or_perf(cfg: config.DaemonConfig, stopping: Callable[[], bool]) -> FakeSource:
    return Perf(cfg, stopping) if cfg.source == "perf" else Auto(cfg, stopping)


def test_auto_hands_over_to_perf_once_loading_ends_and_counters_carry_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with fake_daemon(tmp_path, _auto_or_perf) as (d, _):
        bpf = d._source
        assert isinstance(bpf, Auto) and d.cfg.source == "auto"
        bpf.ready.append("io")
        seen = []
        for _ in range(3):
            d._settle_auto()  # still loading: nothing changes
            d.tick()
            seen.append(d.registry.get_sample_value("vprof_vm_events_total", LABELS))
        assert d._source is bpf and d.health()[1]["source"] == "bpf"
        bpf.ready[:] = [f for f in d.cfg.families if f != "sched"]
        d.tick()  # sched off while auto decides: said once, in the fallback's line
        assert "sched is off" not in caplog.text
        bpf.done = True  # loading ended
        d._settle_auto()
        assert bpf.closed and isinstance(d._source, Perf) and d.cfg.source == "auto"
        d.tick()
        seen.append(d.registry.get_sample_value("vprof_vm_events_total", LABELS))
        # The old source's last snapshot (taken at the swap) is the base: 5 of
        # its snapshots of 10 events each, then the perf source's first.
        assert seen == [10, 20, 30, 60], seen
        _, doc = d.health()
        assert doc["source"] == "perf" and doc["source_why"].startswith("BPF probe families off")
        lines = [r.message for r in caplog.records if "source auto" in r.message]
        assert lines == ["source auto: using the perf source: " + doc["source_why"]]
        assert "probe family sched is off: failed to load: no" not in caplog.text
        d._settle_auto()  # decided once: the perf source stays
        assert isinstance(d._source, Perf)


def test_healthz_names_the_fallback_from_the_moment_perf_serves(tmp_path: Path) -> None:
    """/healthz (another thread) may read while auto swaps in the perf source: from
    the moment the daemon's source is perf, source_why must be auto's reason (it
    once said "--source perf" for an instant, and a scraper saw it)."""
    seen: list[dict[str, object]] = []
    daemons: list[Daemon] = []

    class Watched(Perf):
        def status(self) -> tuple[ProbeStatus, ...]:
            d = daemons[0] if daemons else None
            if d is not None and d._source is self and not seen:  # /healthz sees it now
                seen.append(d.health()[1])
            return super().status()

    def factory(cfg: config.DaemonConfig, stopping: Callable[[], bool]) -> FakeSource:
        return Watched(cfg, stopping) if cfg.source == "perf" else Auto(cfg, stopping)

    with fake_daemon(tmp_path, factory) as (d, _):
        daemons.append(d)
        auto = d._source
        assert isinstance(auto, Auto)
        auto.done = True  # loading ended with sched off
        d._settle_auto()
        assert isinstance(d._source, Watched) and seen, seen
        assert seen[0]["source"] == "perf", seen
        assert str(seen[0]["source_why"]).startswith("BPF probe families off (sched"), seen
