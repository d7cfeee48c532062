"""The daemon's state and main loop, behind `vprof daemon` (vprof/daemon.py).

Every interval the main thread takes a snapshot from the source and publishes
it for the collector (vprof/sinks/prometheus.py), which a threaded HTTP server
serves with /healthz beside it.  Signals only set flags that the main loop acts
on: SIGHUP reloads the config (keeping counters), SIGTERM and SIGINT detach
every probe and exit 0.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import Any, Protocol, cast

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer

from vprof import config as cfgmod
from vprof.config import ConfigError, DaemonConfig
from vprof.model import ProbeStatus, Snapshot
from vprof.sinks.carry import carry, remember
from vprof.sinks.exposition import Exposition, bind, routes
from vprof.sinks.prometheus import ExportOptions, ExportState, Granularity, SnapshotCollector

log = logging.getLogger("vprof.daemon")


class DaemonSource(Protocol):
    """What the daemon polls: vprof.profiler.Profiler, or a fake in tests."""

    def snapshot(self) -> Snapshot: ...

    def status(self) -> tuple[ProbeStatus, ...]: ...

    def close(self) -> None: ...


SourceFactory = Callable[[DaemonConfig], DaemonSource]


def _options(cfg: DaemonConfig) -> ExportOptions:
    # vprof.config validated granularity against the same GRANULARITIES.
    return ExportOptions(granularity=cast(Granularity, cfg.granularity), top_k=cfg.top_k)


def alive(vm_key: str, pid: int, proc_root: str) -> bool:
    """Whether the process behind a VmStat still runs (same pid and start time).

    The Profiler keeps a dead VM's figures for 30 s; the exporter drops its
    series one interval after the process is gone.
    """
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    want = vm_key.partition(":")[2]
    # Field 22 (starttime) counts from after the ")" that ends comm.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return not want.isdigit() or (len(fields) > 19 and fields[19].decode() == want)


class Daemon:
    """State and main loop; `run()` returns the exit status."""

    def __init__(
        self,
        cfg: DaemonConfig,
        factory: SourceFactory,
        config_path: str | None = None,
        flags: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self._factory = factory
        self._config_path = config_path
        self._flags = dict(flags or {})
        self.state = ExportState(options=_options(cfg))
        self._source: DaemonSource | None = None
        self._base: Snapshot | None = None  # counters of replaced sources (see carry.py)
        self._probes: tuple[ProbeStatus, ...] = ()
        self._dead: set[str] = set()  # VMs exported once after their process died
        self._wake = threading.Event()
        self._stop = False
        self._hup = False
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(lambda: self.state))
        # The registry is for tests and tools; HTTP serves the same families
        # through the per-snapshot render cache (vprof/sinks/exposition.py).
        self.exposition = Exposition()
        self.app = routes(self.exposition.app(lambda: self.state), self.health)
        self.server: ThreadingWSGIServer | None = None

    def health(self) -> tuple[int, dict[str, Any]]:
        """200 when a probe is attached and the last interval succeeded, else 503."""
        state, probes = self.state, self._probes
        attached = [p.family for p in probes if p.attached]
        age = time.time() - state.last_success_time if state.last_success_time else None
        # Generous: a loaded host delays ticks; this catches a stuck loop, not jitter.
        fresh = age is not None and age <= 3 * self.cfg.interval + 10
        healthy = bool(attached) and state.last_success and fresh
        doc = {
            "status": "ok" if healthy else "unhealthy",
            "probes_attached": attached,
            "probes_off": {p.family: p.reason for p in probes if not p.attached},
            "last_interval_ok": state.last_success,
            "last_snapshot_age_seconds": None if age is None else round(age, 3),
            "interval_seconds": self.cfg.interval,
            "vms_tracked": len(state.snapshot.vms) if state.snapshot else 0,
        }
        return (200 if healthy else 503), doc

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Bind, then attach: a busy port fails before any probe is compiled."""
        self.server = bind(self.cfg.listen, self.app)
        serve = threading.Thread(
            target=self.server.serve_forever, args=(0.1,), name="http", daemon=True
        )
        serve.start()
        host, port = self.server.server_address[:2]
        log.info("serving /metrics and /healthz on %s:%s", host, port)
        self._open_source(self.cfg)

    def _open_source(self, cfg: DaemonConfig) -> None:
        self._source = self._factory(cfg)
        self._probes = self._configured(self._source.status(), cfg)
        for p in self._probes:
            if not p.attached:
                log.warning("probe family %s is off: %s", p.family, p.reason)

    def _close_source(self) -> None:
        if self._source is None:
            return
        source, self._source = self._source, None
        try:
            source.close()
        except Exception as e:  # shutting down must go on
            log.error("detaching probes failed: %s", e)

    def request_stop(self, *_: object) -> None:
        self._stop = True
        self._wake.set()

    def request_reload(self, *_: object) -> None:
        self._hup = True
        self._wake.set()

    def install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        def hup(signum: int, frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def run(self) -> int:
        """Snapshot every interval until stopped; detach and return 0."""
        due = time.monotonic() + self.cfg.interval
        try:
            while not self._stop:
                self._wake.wait(max(0.0, due - time.monotonic()))
                self._wake.clear()
                if self._stop:
                    break
                if self._hup:
                    self._hup = False
                    old = self.cfg.interval
                    self.reload()
                    due += self.cfg.interval - old
                if time.monotonic() >= due:
                    self.tick()
                    due = max(due + self.cfg.interval, time.monotonic() + self.cfg.interval / 2)
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        started = time.monotonic()
        self._close_source()
        detached = time.monotonic() - started
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        log.info("probes detached in %.2f s; exiting", detached)

    def tick(self) -> None:
        """Take one snapshot and publish it (a failure is logged and counted)."""
        if self._source is None:
            return
        try:
            snap = self._live(carry(self._base, self._source.snapshot()))
            self._probes = snap.probes or self._configured(self._source.status(), self.cfg)
        except Exception as e:  # one bad interval must not kill the daemon
            log.error("snapshot failed: %s: %s", type(e).__name__, e)
            self.state = replace(self.state, last_success=False, failures=self.state.failures + 1)
            return
        self._log_slow_exits(self.state.snapshot, snap)
        state = replace(self.state, snapshot=snap, last_success=True, last_success_time=time.time())
        self.exposition.prerender(state)  # render once here, not in every scrape
        self.state = state

    def _live(self, snap: Snapshot) -> Snapshot:
        # A VM found dead is exported once more, with its final figures, so
        # the last events reach Prometheus; one interval later it is gone.
        keep, dead = [], set()
        for vm in snap.vms:
            if alive(vm.key, vm.pid, self.cfg.proc_root):
                keep.append(vm)
                continue
            dead.add(vm.key)
            if vm.key not in self._dead:
                keep.append(vm)
        self._dead = dead
        return replace(snap, vms=tuple(keep), probes=self._configured(snap.probes, self.cfg))

    @staticmethod
    def _configured(probes: tuple[ProbeStatus, ...], cfg: DaemonConfig) -> tuple[ProbeStatus, ...]:
        # Families switched off in the config are not "off" in the alerting
        # sense; only the configured ones are reported (metrics and /healthz).
        return tuple(p for p in probes if p.family in cfg.families)

    def _log_slow_exits(self, prev: Snapshot | None, cur: Snapshot) -> None:
        seen = {s.timestamp_ns for vm in prev.vms for s in vm.slow_exits} if prev else set()
        for vm in cur.vms:
            for s in vm.slow_exits:
                if s.timestamp_ns not in seen:
                    log.info(
                        "slow exit: vm=%s vcpu=%s %s/%s %s took %.1f us",
                        vm.name,
                        s.vcpu,
                        s.isa,
                        s.reason,
                        s.bucket.value,
                        s.duration_ns / 1000,
                    )

    def reload(self) -> None:
        """Re-read the config; keep the old one (and say why) if the new one is bad."""
        try:
            new = cfgmod.load(self._config_path, self._flags)
        except ConfigError as e:
            log.error("reload failed, keeping the running config: %s", e)
            self.state = replace(self.state, reloads_error=self.state.reloads_error + 1)
            return
        if new.listen != self.cfg.listen:
            log.warning(
                "listen address change to %s needs a restart; still on %s",
                new.listen,
                self.cfg.listen,
            )
            new = replace(new, listen=self.cfg.listen)
        if new.source_differs(self.cfg) and not self._swap_source(new):
            self.state = replace(self.state, reloads_error=self.state.reloads_error + 1)
            return
        logging.getLogger("vprof").setLevel(new.log_level.upper())
        changed = [
            f.name
            for f in dataclasses.fields(new)
            if getattr(new, f.name) != getattr(self.cfg, f.name)
        ]
        self.cfg = new
        self.state = replace(
            self.state, options=_options(new), reloads_ok=self.state.reloads_ok + 1
        )
        self.exposition.prerender(self.state)
        log.info("config reloaded; changed: %s", ", ".join(changed) or "nothing")

    def _swap_source(self, new: DaemonConfig) -> bool:
        # Close first: the new Profiler attaches the same tracepoints.  The last
        # snapshot of the old one becomes the base its successor adds to.
        last = self.state.snapshot
        if self._source is not None:
            try:
                last = carry(self._base, self._source.snapshot())
            except Exception as e:  # fall back to the last published one
                log.warning("final snapshot before reload failed: %s", e)
        self._close_source()
        if last is not None:
            self._base = remember(self._base, last)
        try:
            self._open_source(new)
        except Exception as e:  # fall back to the old config
            log.error("reload failed to attach probes (%s); restoring the running config", e)
            try:
                self._open_source(self.cfg)
            except Exception as again:  # /healthz reports the loss
                log.error("re-attaching the running config failed too: %s", again)
                self._probes = ()
            return False
        return True
