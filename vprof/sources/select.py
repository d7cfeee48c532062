"""Choosing the snapshot source: `--source auto|bpf|perf`.

    source, why = open_source("auto", families=..., proc_root=...)

`auto` opens the BPF pipeline and keeps it only when every requested family
compiled and attached; otherwise it closes what it got and opens the perf
source, logging ONE line that says why.  Either source comes wrapped so that
its snapshots carry KVM's binary statistics where a route reaches them
(kvmstats.py).  record, advise and doctor open their source here too.

The daemon (`stopping` set) does not wait for the families: `auto` opens
BPF in the background like `bpf`, and once loading ends the daemon asks
`fallback()` whether perf must take over (it re-opens the source itself, so
its counters carry on: vprof/daemon/carry.py).  bcc failing to import, or
the shared maps failing to load, still falls back at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from vprof.model import ProbeStatus, Snapshot
from vprof.sources.kvmstats import KvmStatsReader, enrich

log = logging.getLogger("vprof.sources")
SOURCES: tuple[str, ...] = ("auto", "bpf", "perf")
AUTO_LOADING = "auto: BPF while its families load; perf if one fails"  # the daemon's auto
AUTO_KEPT = "every BPF probe family compiled and attached"


class SourceError(RuntimeError):
    """The requested source cannot run here; the message says why."""


@dataclass(frozen=True)
class SourceOptions:
    families: frozenset[str] | None = None  # BPF families; None: all
    slow_exit_threshold_ns: int = 1_000_000
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    bpf_stats: bool = False
    kvm_stats: bool = True  # add KVM's binary statistics where reachable
    # The daemon: families compile in a thread that stops as soon as this is
    # true, with `bpf` and `auto` alike.  Elsewhere `auto` compiles in the
    # foreground: it must know whether every family attached before it chooses.
    stopping: Callable[[], bool] | None = None


BpfFactory = Callable[[SourceOptions], Any]


def _open_bpf(opts: SourceOptions, background: bool = False) -> Any:
    from vprof.pipeline.profiler import Profiler, ProfilerConfig

    extra: dict[str, Any] = {}
    if background and opts.stopping is not None:
        extra = {"background": True, "cancelled": opts.stopping}
    return Profiler(
        ProfilerConfig(
            families=opts.families,
            slow_exit_threshold_ns=opts.slow_exit_threshold_ns,
            proc_root=opts.proc_root,
            sys_root=opts.sys_root,
            bpf_stats=opts.bpf_stats,
            **extra,
        )
    )


def _open_perf(opts: SourceOptions) -> Any:
    from vprof.sources.perf.source import PerfConfig, PerfSource

    return PerfSource(PerfConfig(proc_root=opts.proc_root, sys_root=opts.sys_root))


def _bpf_gaps(status: tuple[ProbeStatus, ...], wanted: frozenset[str] | None) -> str | None:
    """Why perf replaces a BPF source whose loading ended (None: keep it)."""
    gaps = [
        f"{p.family}: {p.reason}"
        for p in status
        if not p.attached and (wanted is None or p.family in wanted)
    ]
    return "BPF probe families off (" + "; ".join(gaps) + ")" if gaps else None


def _auto(opts: SourceOptions, bpf: BpfFactory, background: bool) -> tuple[Any, str]:
    try:
        src = _open_bpf(opts, background=True) if background else bpf(opts)
    except Exception as exc:  # bcc's import, compile and attach raise anything
        first = (str(exc).splitlines() or [""])[0]
        why = f"BPF unavailable ({type(exc).__name__}: {first})"
    else:
        if background:  # the daemon decides once loading ends (fallback())
            return src, AUTO_LOADING
        gaps = _bpf_gaps(src.status(), opts.families)
        if gaps is None:
            return src, AUTO_KEPT
        src.close()
        why = gaps
    log.warning("source auto: using the perf source: %s", why)
    return _open_perf(opts), why


def open_source(
    kind: str, opts: SourceOptions | None = None, *, bpf_factory: BpfFactory | None = None
) -> tuple[KvmStatsSource, str]:
    """The source `kind` names, and why it is the one in use.

    `bpf_factory` replaces the BPF pipeline's constructor (tests make it
    fail on purpose)."""
    opts = opts or SourceOptions()
    bpf = bpf_factory or _open_bpf
    if kind == "bpf":
        src = bpf_factory(opts) if bpf_factory else _open_bpf(opts, background=True)
        why = "--source bpf"
    elif kind == "perf":
        try:
            src, why = _open_perf(opts), "--source perf"
        except OSError as exc:
            raise SourceError(f"the perf source cannot run: {exc}") from exc
    elif kind == "auto":
        background = bpf_factory is None and opts.stopping is not None
        src, why = _auto(opts, bpf, background)
    else:
        raise SourceError(f"unknown source {kind!r}; choose one of {', '.join(SOURCES)}")
    kind_used = "perf" if getattr(src, "kind", "bpf") == "perf" else "bpf"
    reader = KvmStatsReader(opts.proc_root) if opts.kvm_stats else None
    out = KvmStatsSource(src, kind_used, why, reader)
    out.deciding = why == AUTO_LOADING
    out.families = opts.families
    return out, why


class KvmStatsSource:
    """A source whose snapshots also carry KVM's binary statistics.

    Everything else (status, wait_named, ...) is the wrapped source's."""

    def __init__(self, inner: Any, kind: str, why: str, reader: KvmStatsReader | None) -> None:
        self.inner = inner
        self.kind = kind  # "bpf" or "perf"
        self.why = why
        self._reader = reader
        # `auto` in the daemon: BPF families still load, perf may take over.
        self.deciding = False
        self.families: frozenset[str] | None = None  # the ones `auto` needs

    def fallback(self) -> str | None:
        """Why perf must replace this `auto` source, once its BPF families
        stopped loading (the reason _auto gives); None while they load, once
        every one attached, or if this is no deciding `auto` source."""
        if not self.deciding or getattr(self.inner, "loading", False):
            return None
        self.deciding = False
        why = _bpf_gaps(self.inner.status(), self.families)
        if why is None:
            self.why = AUTO_KEPT
        return why

    def snapshot(self) -> Snapshot:
        return self._enrich(self.inner.snapshot())

    def _enrich(self, snap: Snapshot) -> Snapshot:
        if snap.source != self.kind:
            snap = replace(snap, source=self.kind)
        return enrich(snap, self._reader) if self._reader is not None else snap

    def status(self) -> tuple[ProbeStatus, ...]:
        status: tuple[ProbeStatus, ...] = self.inner.status()
        return status

    def snapshots(self, interval: float) -> Iterator[Snapshot]:
        for snap in self.inner.snapshots(interval):
            yield self._enrich(snap)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self._reader is not None:
                self._reader.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __enter__(self) -> KvmStatsSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
