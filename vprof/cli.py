"""The `vprof` command: wiring only.

Each subcommand lives beside the code it drives and is imported only when it is
run, so `vprof explain` never pays for bcc, and a missing optional part breaks
only its own subcommand.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from vprof import __version__

# name -> "module:attribute" of a click command.  Keep sorted by name.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "advise": ("vprof.advice.cli:advise", "What would cut each VM's overhead, and why."),
    "daemon": ("vprof.daemon.command:daemon", "Serve Prometheus metrics from the live pipeline."),
    "diff": ("vprof.offline.cli:diff", "Compare two recordings, per VM and bucket."),
    "doctor": ("vprof.advice.doctor_cli:doctor_cmd", "Can this host be profiled, and how well."),
    "explain": ("vprof.taxonomy.cli:explain", "Explain an exit reason or KVM event."),
    "guest": ("vprof.guest.cli:guest", "Run the built-in KVM micro-guest."),
    "import": (
        "vprof.offline.cli:import_",
        "Turn a perf/trace-cmd/ftrace text dump into a recording.",
    ),
    "probes": ("vprof.pipeline.probes_cli:probes", "Check or dump the BPF probes."),
    "record": ("vprof.offline.cli:record", "Record the live pipeline to a Parquet recording."),
    "report": ("vprof.offline.cli:report", "Tables, JSON, CSV or HTML from a recording."),
    "top": ("vprof.sinks.top.cli:top", "Live per-VM view of virtualization overhead."),
    "vms": ("vprof.inventory.cli:vms", "List the VMs on this host."),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{entry[0]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        # Help text from the table, so `vprof --help` imports nothing heavy.
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


EPILOG = """\b
Examples:
  vprof vms                      the VMs on this host and their vCPU threads
  vprof top                      live per-VM view (root: loads BPF probes)
  vprof top -b -n 3 --json       three intervals as JSON Lines, for a script
  vprof daemon --config /etc/vprof/vprof.toml    Prometheus metrics on :9477
  vprof explain EPT_VIOLATION    what an exit reason costs and what reduces it
  vprof record -o rec --duration 600    ten minutes to Parquet, for later
  vprof report rec --html r.html  overhead per VM, ledger, reasons, remedies
  vprof diff before after        what a change did, beyond interval noise
  vprof import perf.txt -o rec   a `perf script` dump of kvm:* events
  vprof probes --check           which probe families attach on this kernel
  vprof guest --name demo --workload pio --duration 30   a test VM to watch
  vprof advise web-1 --seconds 10   what would cut a VM's overhead, with evidence
  vprof doctor                   can this host be profiled, and how to fix what is missing

\b
`vprof COMMAND --help` gives each command's usage, examples and overhead.
"""


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vprof")
@click.pass_context
def main(ctx: click.Context) -> None:
    """vprof: where virtualization overhead goes on a KVM host, per VM and per vCPU.

    Overhead is split into four buckets: privileged instructions, memory,
    I/O and context switches.  See `vprof explain` for the taxonomy.
    """
    ctx.obj = {"wrap_source": _advising}


def _advising(source: Any) -> Any:
    """`vprof top`'s source with advice attached (its drill-down shows the top rule)."""
    from vprof.advice.annotate import AdvisingSource

    return AdvisingSource(source)
