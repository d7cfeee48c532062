"""The micro-guest's arguments: checks and the runner's QEMU-style argv (pure)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from vprof.guest import layout as L
from vprof.guest import workloads as W

RUNNER_MODULE = "vprof.guest.runner"
NAME_MAX = 64


class ArgError(ValueError):
    """Bad input: shown as one line, exit status 2."""


@dataclass(frozen=True)
class GuestArgs:
    name: str
    vcpus: int = 1
    workload: str = "pio"
    count: int | None = None
    duration: float | None = None
    mode: str = "user"
    json: bool = False
    stats: bool = False


def check_name(name: str) -> str:
    if not name:
        raise ArgError("--name must not be empty")
    if len(name) > NAME_MAX:
        raise ArgError(f"--name is longer than {NAME_MAX} characters")
    # QEMU separates -name sub-options with commas; keep the name one token.
    if "," in name or any(not ch.isprintable() for ch in name):
        raise ArgError("--name must be printable and contain no comma")
    return name


def validate(args: GuestArgs, host_max_vcpus: int | None = None) -> GuestArgs:
    """Return args unchanged if usable, else raise ArgError with one line."""
    check_name(args.name)
    if args.workload not in W.WORKLOADS:
        raise ArgError(
            f"unknown workload {args.workload!r}; choose one of {', '.join(W.WORKLOADS)}"
        )
    if args.mode not in W.MODES:
        raise ArgError(f"unknown mode {args.mode!r}; choose user or kernel")
    if args.count is not None and args.duration is not None:
        raise ArgError("give --count or --duration, not both")
    if args.count is not None and args.count <= 0:
        raise ArgError(f"--count must be at least 1, not {args.count}")
    if args.duration is not None and not (args.duration > 0 and math.isfinite(args.duration)):
        raise ArgError(f"--duration must be a positive number of seconds, not {args.duration}")
    if args.vcpus < 1:
        raise ArgError(f"--vcpus must be at least 1, not {args.vcpus}")
    if host_max_vcpus is None:
        return args  # the vCPU limits are checked once /dev/kvm is open
    if args.vcpus > host_max_vcpus:
        raise ArgError(
            f"--vcpus {args.vcpus}: this host allows at most {host_max_vcpus} vCPUs per VM "
            "(KVM_CAP_MAX_VCPUS)"
        )
    if args.vcpus > L.MAX_VCPUS:
        raise ArgError(f"--vcpus {args.vcpus}: the micro-guest supports at most {L.MAX_VCPUS}")
    return args


def runner_argv(args: GuestArgs) -> list[str]:
    """Arguments after `python -m vprof.guest.runner`; QEMU's `-name guest=NAME` first."""
    argv = ["-name", f"guest={args.name}", "--vcpus", str(args.vcpus)]
    argv += ["--workload", args.workload, "--mode", args.mode]
    if args.count is not None:
        argv += ["--count", str(args.count)]
    if args.duration is not None:
        argv += ["--duration", repr(args.duration)]
    argv += ["--json"] if args.json else []
    argv += ["--stats"] if args.stats else []
    return argv


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArgError(message)


def parse_runner_argv(argv: list[str]) -> GuestArgs:
    p = _Parser(prog=RUNNER_MODULE, add_help=False)
    p.add_argument("-name", dest="qemu_name", required=True)
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--workload", default="pio")
    p.add_argument("--mode", default="user")
    p.add_argument("--count", type=int)
    p.add_argument("--duration", type=float)
    p.add_argument("--json", action="store_true")
    p.add_argument("--stats", action="store_true")
    ns = p.parse_args(argv)
    if not ns.qemu_name.startswith("guest="):
        raise ArgError("-name must be guest=NAME")
    return validate(
        GuestArgs(
            name=ns.qemu_name[len("guest=") :],
            vcpus=ns.vcpus,
            workload=ns.workload,
            count=ns.count,
            duration=ns.duration,
            mode=ns.mode,
            json=ns.json,
            stats=ns.stats,
        )
    )
