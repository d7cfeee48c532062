"""`vprof daemon`: the live pipeline behind a Prometheus /metrics endpoint.

Wiring only: the click command, the config it loads, and the source factory
(the Profiler in production, a fake in tests).  The state and main loop (HTTP,
signals, snapshots, reload) are in vprof/daemon/core.py.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

import click

from vprof.daemon import config as cfgmod
from vprof.daemon.config import ConfigError, DaemonConfig
from vprof.daemon.core import Daemon, DaemonSource, SourceFactory
from vprof.daemon.http import StartupError
from vprof.inventory.procfs import alive
from vprof.model import GRANULARITIES

__all__ = ["Daemon", "DaemonSource", "SourceFactory", "StartupError", "alive", "daemon", "serve"]


def profiler_source(cfg: DaemonConfig, stopping: Callable[[], bool]) -> DaemonSource:
    """The real source: BPF (the configured families, compiled in a thread of
    their own that stops as soon as `stopping()` is true) or perf, as
    `source` says (vprof/sources/select.py), with each VM's advice added."""
    from vprof.advice.annotate import AdvisingSource, Advisor
    from vprof.sources.select import SourceOptions, open_source

    inner, _why = open_source(
        cfg.source,
        SourceOptions(
            families=frozenset(cfg.families),
            slow_exit_threshold_ns=cfg.slow_exit_threshold_ns,
            proc_root=cfg.proc_root,
            bpf_stats=cfg.bpf_stats,
            stopping=stopping,
        ),
    )
    # vprof_vm_advice_info: the rules that match each VM, from the same snapshots.
    source: DaemonSource = AdvisingSource(inner, Advisor(cfg.proc_root))
    return source


def _fail(message: str) -> NoReturn:
    click.echo(f"vprof daemon: error: {message}", err=True)
    sys.exit(2)


_EPILOG = """\b
Examples:
  vprof daemon                                   # all probe families, port 9477
  vprof daemon --config /etc/vprof/vprof.toml    # settings from a file
  vprof daemon --listen 127.0.0.1:9477 --interval 2 --granularity vcpu
  vprof daemon --check-config /etc/vprof/vprof.toml
  vprof daemon --web.config.file /etc/vprof/web.yml  # TLS + basic auth
  curl -s localhost:9477/metrics; curl -s localhost:9477/healthz
\b
Overhead: the BPF probes aggregate in kernel maps; user space wakes once per
interval, reads them and renders the text once (~130 ms of CPU for 500 VMs),
so a scrape only copies bytes (~2.5 ms).  Metrics: docs/metrics.md.
"""


@click.command(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option(
    "--check-config", "check_path", type=click.Path(dir_okay=False), help="Validate FILE and exit."
)
@click.option("--listen", help=f"HOST:PORT to serve on [default: 0.0.0.0:{cfgmod.DEFAULT_PORT}].")
@click.option("--interval", type=float, help="Seconds between snapshots [default: 5].")
@click.option("--granularity", type=click.Choice(GRANULARITIES), help="Label detail [default: vm].")
@click.option(
    "--top-k", type=int, help="Reasons/addresses kept per VM before 'other' [default: 5]."
)
@click.option(
    "--slow-exit-threshold-us", type=float, help="Log exits slower than this [default: 1000]."
)
@click.option("--families", help="Comma-separated probe families [default: all].")
@click.option("--bpf-stats/--no-bpf-stats", default=None, help="Export BPF program run time.")
@click.option("--proc-root", help="Where /proc is mounted [default: /proc].")
@click.option("--log-level", type=click.Choice(cfgmod.LOG_LEVELS), help="[default: info].")
@click.option(
    "--source",
    type=click.Choice(cfgmod.SOURCES),
    help="bpf, perf (no compiler needed), or auto: BPF where it compiles [default: auto].",
)
@click.option(
    "--web.config.file",
    "web_config_file",
    help="exporter-toolkit web config: TLS and basic auth [default: plain HTTP].",
)
def daemon(config_path: str | None, check_path: str | None, **flags: Any) -> None:
    """Serve Prometheus metrics of per-VM virtualization overhead.

    Runs the live pipeline (BPF, or the perf source where bcc cannot compile:
    --source) continuously and serves /metrics (Prometheus
    text format) and /healthz (JSON; 200 when probes are attached and the last
    interval succeeded, else 503).  Flags override the config file.  SIGHUP
    reloads the config without resetting counters; SIGTERM or SIGINT detach
    every probe and exit 0.  Needs root (BPF); --check-config does not.
    """
    if check_path is not None:
        try:
            cfgmod.load(check_path, flags)
        except ConfigError as e:
            _fail(str(e))
        click.echo(f"{check_path}: ok")
        return
    try:
        cfg = cfgmod.load(config_path, flags)
    except ConfigError as e:
        _fail(str(e))
    logging.basicConfig(stream=_log_stream(), format="vprof daemon: %(levelname)s: %(message)s")
    logging.getLogger("vprof").setLevel(cfg.log_level.upper())
    sys.exit(serve(cfg, profiler_source, config_path, flags))


def _log_stream() -> TextIO:
    # A copy of stderr of its own: while a family compiles, the loader points
    # fd 2 at a capture (vprof/bpf/loader.py _compile), and a stop during it
    # exits before the capture is replayed: "probes detached" was lost.
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (OSError, ValueError):  # no file descriptor (click's test runner)
        return sys.stderr


def serve(
    cfg: DaemonConfig, factory: SourceFactory, config_path: str | None, flags: dict[str, Any]
) -> int:
    """Run a daemon until a stop signal; its exit status."""
    d = Daemon(cfg, factory, config_path, flags)
    d.install_signals()
    try:
        d.start()
    except StartupError as e:
        _fail(str(e))
    except Exception as e:  # e.g. no root or no bcc: one line, not a traceback
        d.shutdown()
        if not d.stopping:  # else a stop signal while the probes compiled: a clean stop
            click.echo(
                f"vprof daemon: error: cannot attach probes: {type(e).__name__}: {e}", err=True
            )
            return 1
        code = 0
    else:
        code = d.run()
    if d.compiling_at_exit:
        # exit() would run LLVM's static destructors under the compile still
        # in flight and abort (vprof.profiler.Profiler.loading); the kernel
        # detaches whatever that compile attached when the process ends.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code
