"""The daemon's state and main loop, behind `vprof daemon` (vprof/daemon/command.py).

Every interval the main thread takes a snapshot from the source and publishes
it for the collector (vprof/sinks/prometheus.py), which a threaded HTTP server
serves with /healthz beside it.  Signals only set flags that the main loop acts
on: SIGHUP reloads the config (keeping counters), SIGTERM and SIGINT detach
every probe and exit 0.  With `--source auto` the BPF families count as
they attach; once loading ends with one off, the perf source takes over the
way a reload re-opens a source (counters carry on).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import Any, Protocol, cast

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer

from vprof.daemon import config as cfgmod
from vprof.daemon import webconfig
from vprof.daemon.carry import carry, remember
from vprof.daemon.config import ConfigError, DaemonConfig
from vprof.daemon.gcpolicy import GcPolicy
from vprof.daemon.http import StartupError, bind, metrics_app, routes
from vprof.daemon.slowlog import log_slow_exits
from vprof.inventory.procfs import alive
from vprof.model import ProbeStatus, Snapshot, VmStat
from vprof.sinks.exposition import Exposition
from vprof.sinks.prometheus import ExportOptions, ExportState, Granularity, SnapshotCollector
from vprof.sources.absent import PERF_WAITING

log = logging.getLogger("vprof.daemon")
LOADING = "compiling"  # a family's reason while it compiles (vprof.bpf.loader.PENDING)


class DaemonSource(Protocol):
    """What the daemon polls: vprof.pipeline.profiler.Profiler, or a fake in tests."""

    def snapshot(self) -> Snapshot: ...

    def status(self) -> tuple[ProbeStatus, ...]: ...

    def close(self) -> None: ...


# Called with the config and a `stopping()` to poll while it attaches: a
# factory that takes seconds (bcc compiles) gives up when it turns true.
SourceFactory = Callable[[DaemonConfig, Callable[[], bool]], DaemonSource]


def _options(cfg: DaemonConfig) -> ExportOptions:
    # vprof.daemon.config validated granularity against vprof.model.GRANULARITIES.
    return ExportOptions(granularity=cast(Granularity, cfg.granularity), top_k=cfg.top_k)


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
        self._fell_back = ""  # why `auto` gave way to perf, once it did
        # Dead VMs' final figures, by key: (VmStat, monotonic time found dead).
        self._dead: dict[str, tuple[VmStat, float]] = {}
        self._expired: set[str] = set()  # dead past the grace, still reported
        self._reported: dict[str, str] = {}  # family -> the state last logged
        self._wake = threading.Event()
        self._stop = False
        self._hup = False
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(lambda: self.state))
        # The registry is for tests and tools; HTTP serves the same families
        # through the per-snapshot render cache (vprof/sinks/exposition.py).
        self.exposition = Exposition()
        self.app = routes(metrics_app(self.exposition, lambda: self.state), self.health)
        self.server: ThreadingWSGIServer | None = None
        self.compiling_at_exit = False  # the source still compiled when closed
        self.gc = GcPolicy()  # see vprof/daemon/gcpolicy.py

    def health(self) -> tuple[int, dict[str, Any]]:
        """200 when a probe is attached or waits (perf) and the last tick succeeded, else 503."""
        state, probes = self.state, self._probes
        source = self._source
        # A source that loads in the background (the Profiler) is asked live:
        # a family counts from its attach, not from the next tick.
        if hasattr(source, "loading"):
            probes = self._configured(source.status(), self.cfg)  # type: ignore[union-attr]
        attached = [p.family for p in probes if p.attached]
        loading = [p.family for p in probes if not p.attached and p.reason == LOADING]
        waiting = [p.family for p in probes if not p.attached and p.reason == PERF_WAITING]
        age = time.time() - state.last_success_time if state.last_success_time else None
        # Generous: a loaded host delays ticks; this catches a stuck loop, not jitter.
        fresh = age is not None and age <= 3 * self.cfg.interval + 10
        healthy = bool(attached or waiting) and state.last_success and fresh
        doc = {
            "status": "ok" if healthy else "unhealthy",
            "probes_attached": attached,
            "probes_off": {p.family: p.reason for p in probes if not p.attached},
            "probes_loading": loading,  # still compiling: counted once attached
            "probes_waiting": waiting,  # perf: opened on the first vCPU thread
            "last_interval_ok": state.last_success,
            "last_snapshot_age_seconds": None if age is None else round(age, 3),
            "interval_seconds": self.cfg.interval,
            "vms_tracked": len(state.snapshot.vms) if state.snapshot else 0,
            "source": getattr(self._source, "kind", "bpf"),
            "source_why": self._fell_back or getattr(self._source, "why", ""),
        }
        return (200 if healthy else 503), doc

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Bind, then attach: a busy port fails before any probe is compiled."""
        # Scrape threads wait for the GIL behind the snapshot thread many times
        # per scrape; at the default 5 ms slice wrk's p99 was 208 ms at 500
        # VMs, at 0.5 ms 79 ms (tests/test_reliability_load.py).
        sys.setswitchinterval(0.0005)
        app, web = self.app, None
        if self.cfg.web_config_file:
            try:
                web = webconfig.load(self.cfg.web_config_file)
            except ConfigError as e:
                raise StartupError(str(e)) from None
            if web.users:
                app = webconfig.BasicAuth(app, web.users)
        self.server = bind(self.cfg.listen, app)
        if web is not None and web.tls:
            webconfig.wrap_tls(self.server, web)
        serve = threading.Thread(
            target=self.server.serve_forever, args=(0.1,), name="http", daemon=True
        )
        serve.start()
        host, port = self.server.server_address[:2]
        log.info("serving /metrics and /healthz on %s:%s", host, port)
        self._open_first(self.cfg)

    def _open_first(self, cfg: DaemonConfig, why: str = "") -> None:
        # Importing bcc and compiling the shared maps take 1-3 s on a loaded
        # host, inside C calls that hold back signal handlers (they run in
        # the main thread, between bytecodes).  Opened in a thread, while the
        # main thread waits on an event (a wait lets handlers run), a stop
        # signal ends start-up at once (measured: 3.4 s -> 0.3 s).
        done, failed = threading.Event(), []

        def opener() -> None:
            try:
                self._open_source(cfg, why)
            except BaseException as e:  # re-raised in the main thread
                failed.append(e)
            finally:
                done.set()
                self._wake.set()

        threading.Thread(target=opener, name="vprof-open", daemon=True).start()
        while not done.is_set() and not self._stop:
            self._wake.wait()
            self._wake.clear()
        if failed:
            raise failed[0]
        if not done.is_set():  # stopped: bcc may be compiling (see compiling_at_exit)
            self.compiling_at_exit = True

    def _open_source(self, cfg: DaemonConfig, why: str = "") -> None:
        # `why` (auto's fallback) first: /healthz never shows the new source without it.
        self._reported, self._fell_back = {}, why
        self._source = self._factory(cfg, lambda: self._stop)
        self._probes = self._configured(self._source.status(), cfg)
        self._report_probes()

    def _report_probes(self) -> None:
        # Once per family and state: families compiled in the background
        # come on (or fail) after the source is open.  A family off while
        # `auto` decides is said once, in the fallback's line.
        deciding = self._deciding
        for p in self._probes:
            if p.reason == LOADING or self._reported.get(p.family) == p.reason:
                continue
            if deciding and not p.attached:
                continue
            self._reported[p.family] = p.reason
            if p.attached:
                log.info("probe family %s attached", p.family)
            else:  # perf with no vCPU thread yet: nothing counts, nothing is wrong
                level = logging.INFO if p.reason == PERF_WAITING else logging.WARNING
                log.log(level, "probe family %s is off: %s", p.family, p.reason)

    def _close_source(self) -> None:
        if self._source is None:
            return
        source, self._source = self._source, None
        self.compiling_at_exit = bool(getattr(source, "loading", False))
        try:
            source.close()
        except Exception as e:  # shutting down must go on
            log.error("detaching probes failed: %s", e)

    @property
    def stopping(self) -> bool:
        return self._stop

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
        # The first snapshot at once: /healthz is 200 as soon as a family is
        # attached (the others may still compile), not one interval later.
        due = time.monotonic()
        try:
            while not self._stop:
                wait = max(0.0, due - time.monotonic())
                self._wake.wait(min(wait, 0.1) if self._deciding else wait)
                self._wake.clear()
                if self._stop:
                    break
                self._settle_auto()
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

    @property
    def _deciding(self) -> bool:
        return bool(getattr(self._source, "deciding", False))

    def _settle_auto(self) -> None:
        # vprof/sources/select.py: `auto` keeps BPF only if every family attached.
        fallback = getattr(self._source, "fallback", None)
        why = fallback() if fallback is not None else None
        if why is None:
            return
        log.warning("source auto: using the perf source: %s", why)
        self._swap_source(replace(self.cfg, source="perf"), restore=False, why=why)

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
        with self.gc.building():
            self._tick()

    def _tick(self) -> None:
        if self._source is None:
            return
        try:
            snap = self._live(carry(self._base, self._source.snapshot()))
            self._probes = snap.probes or self._configured(self._source.status(), self.cfg)
            self._report_probes()
        except Exception as e:  # one bad interval must not kill the daemon
            log.error("snapshot failed: %s: %s", type(e).__name__, e)
            self.state = replace(self.state, last_success=False, failures=self.state.failures + 1)
            return
        log_slow_exits(self.state.snapshot, snap)
        state = replace(self.state, snapshot=snap, last_success=True, last_success_time=time.time())
        self.exposition.prerender(state)  # render once here, not in every scrape
        self.state = state

    def _live(self, snap: Snapshot) -> Snapshot:
        # A dead VM's final figures stay for the grace period, even after the
        # source forgets it (the Profiler frees its map entries once it is dead),
        # so Prometheus stores its final counts.  Live VMs come first: a
        # restarted VM of the same name keeps the plain name (sanitize.unique_names).
        # An expired key never comes back: a source that still reports the
        # dead VM (a perf source keeps it 30 s) must not restart its grace.
        now = time.monotonic()
        keep = []
        for vm in snap.vms:
            if alive(vm.key, vm.pid, self.cfg.proc_root):
                keep.append(vm)
            elif vm.key not in self._expired:
                died = self._dead[vm.key][1] if vm.key in self._dead else now
                self._dead[vm.key] = (vm, died)
        grace = self.cfg.dead_vm_grace_seconds
        self._expired &= {vm.key for vm in snap.vms}
        self._expired |= {k for k, d in self._dead.items() if now - d[1] > grace}
        self._dead = {k: d for k, d in self._dead.items() if k not in self._expired}
        final = [vm for vm, _ in self._dead.values()]
        return replace(snap, vms=(*keep, *final), probes=self._configured(snap.probes, self.cfg))

    @staticmethod
    def _configured(probes: tuple[ProbeStatus, ...], cfg: DaemonConfig) -> tuple[ProbeStatus, ...]:
        # Families switched off in the config are not "off" in the alerting
        # sense; only the configured ones are reported (metrics and /healthz).
        return tuple(p for p in probes if p.family in cfg.families)

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
        if new.web_config_file != self.cfg.web_config_file:
            log.warning("web_config_file change needs a restart; still on the running one")
            new = replace(new, web_config_file=self.cfg.web_config_file)
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

    def _swap_source(self, new: DaemonConfig, restore: bool = True, why: str = "") -> bool:
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
            self._open_first(new, why)  # a stop signal need not wait for bcc
        except Exception as e:  # fall back to the old config
            if self._stop:  # a stop signal cancelled the attach: nothing to restore
                return False
            if not restore:  # auto's perf fallback: BPF already failed
                log.error("the perf source cannot run either: %s", e)
                self._probes = ()
                return False
            log.error("reload failed to attach probes (%s); restoring the running config", e)
            try:
                self._open_source(self.cfg)
            except Exception as again:  # /healthz reports the loss
                log.error("re-attaching the running config failed too: %s", again)
                self._probes = ()
            return False
        return True
