"""The micro-guest's arguments: checks and the runner's QEMU-style argv (pure)."""

from __future__ import annotations

import argparse
import math
import os
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
    # Hold the vCPUs until SIGUSR2, so a tracer can attach first (tests).
    hold: bool = False
    # Keep KVM stats fds open: readable from outside through pidfd_getfd.
    keep_stats_fds: bool = False


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


def hypercall_isa(cpuinfo: str, kvm_pvm_loaded: bool) -> str:
    """The host's hypercall flavour for the vmcall workload: "svm" or "vmx", else ArgError.

    kvm_pvm runs on hardware without (or hiding) SVM/VMX and emulates the guest's CPL0
    code; a VMCALL there livelocks in KVM's emulator, so the workload is refused.
    """
    if kvm_pvm_loaded:
        raise ArgError(
            "--workload vmcall cannot run on kvm_pvm (a hypercall livelocks in its "
            "emulator); it needs kvm_amd (SVM) or kvm_intel (VMX)"
        )
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    for flag in ("svm", "vmx"):
        if flag in flags:
            return flag
    raise ArgError(
        "--workload vmcall needs hardware virtualization: no svm or vmx flag in "
        "/proc/cpuinfo (kvm_pvm or nested without SVM/VMX exposed)"
    )


def host_hypercall_isa(proc: str = "/proc", sys: str = "/sys") -> str:
    """hypercall_isa() for this host: /proc/cpuinfo and whether kvm_pvm is loaded."""
    try:
        with open(f"{proc}/cpuinfo") as f:
            cpuinfo = f.read()
    except OSError as exc:
        raise ArgError(f"--workload vmcall: cannot read {proc}/cpuinfo: {exc}") from exc
    return hypercall_isa(cpuinfo, os.path.isdir(f"{sys}/module/kvm_pvm"))


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
    argv += ["--hold"] if args.hold else []
    argv += ["--keep-stats-fds"] if args.keep_stats_fds else []
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
    p.add_argument("--hold", action="store_true")
    p.add_argument("--keep-stats-fds", action="store_true")
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
            hold=ns.hold,
            keep_stats_fds=ns.keep_stats_fds,
        )
    )
