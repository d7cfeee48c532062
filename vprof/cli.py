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
    "daemon": ("vprof.daemon:daemon", "Serve Prometheus metrics from the live pipeline."),
    "explain": ("vprof.taxonomy.cli:explain", "Explain an exit reason or KVM event."),
    "guest": ("vprof.guest.cli:guest", "Run the built-in KVM micro-guest."),
    "probes": ("vprof.bpf.cli:probes", "Check or dump the BPF probes."),
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
  vprof probes --check           which probe families attach on this kernel
  vprof guest --name demo --workload pio --duration 30   a test VM to watch

\b
`vprof COMMAND --help` gives each command's usage, examples and overhead.
"""


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vprof")
def main() -> None:
    """vprof: where virtualization overhead goes on a KVM host, per VM and per vCPU.

    Overhead is split into four buckets: privileged instructions, memory,
    I/O and context switches.  See `vprof explain` for the taxonomy.
    """
