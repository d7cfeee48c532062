"""The micro-guest process: `python -m vprof.guest.runner -name guest=NAME ...`.

`vprof guest` checks its arguments and then execs this module, so the PID
stays the same and /proc/PID/cmdline carries QEMU's `-name guest=NAME`, which
is how vprof (and anything else) recognises the process as a VM.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType
from typing import Any

from vprof.guest import layout as L
from vprof.guest import report
from vprof.guest import workloads as W
from vprof.guest.args import ArgError, GuestArgs, host_hypercall_isa, parse_runner_argv, validate
from vprof.guest.kvmapi import libc
from vprof.guest.vm import (
    KICK_SIGNAL,
    PR_SET_NAME,
    GuestFault,
    KvmUnavailable,
    Machine,
    max_vcpus,
    open_kvm,
)

PROCESS_COMM = b"vprof-guest"
# A vCPU reaches its next iteration boundary within a timer tick or one exit;
# one that has not after this long is stuck in the kernel and gets a signal.
STOP_GRACE_SECONDS = 2.0


def _emit(args: GuestArgs, event: dict[str, Any]) -> None:
    text = (
        report.json_line(event)
        if args.json
        else (report.ready_text(event) if event["event"] == "ready" else report.result_text(event))
    )
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # The reader went away (e.g. `| head -1`): keep running, print nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _collect_stats(machine: Machine) -> dict[str, Any]:
    from vprof.guest.stats import read_stats

    return {
        "vm": read_stats(machine.fd),
        "vcpus": [read_stats(v.fd) for v in machine.vcpus],
    }


def _keep_stats_fds(machine: Machine) -> list[int]:
    """Stats fds of the VM and each vCPU, held open for outside readers
    (vprof/sources/kvmstats.py duplicates them with pidfd_getfd)."""
    from vprof.guest import kvmapi as K

    return [K.ioctl(fd, K.KVM_GET_STATS_FD) for fd in (machine.fd, *(v.fd for v in machine.vcpus))]


def _hold(go: list[bool], stop_requested: list[bool]) -> None:
    """Wait for SIGUSR2 (or a stop) before the vCPUs start."""
    while not go[0] and not stop_requested[0]:
        time.sleep(0.01)


def _wait(
    machine: Machine, args: GuestArgs, stop_requested: list[bool], go: list[bool] | None = None
) -> float:
    """Let the vCPUs run until they finish; returns the elapsed seconds."""
    _hold(go if go is not None else [True], stop_requested)
    start = time.monotonic()
    for v in machine.vcpus:
        v.go.set()
    deadline = start + args.duration if args.duration is not None else None
    stopped = 0.0
    while pending := [v for v in machine.vcpus if not v.finished.is_set()]:
        now = time.monotonic()
        failed = any(v.result.error for v in machine.vcpus)
        if not stopped and (stop_requested[0] or failed or (deadline and now >= deadline)):
            machine.stop()
            stopped = now
        elif stopped and not machine.abandoned and now - stopped > STOP_GRACE_SECONDS:
            machine.abandon()
        # Short waits keep SIGTERM/SIGINT handling prompt in the main thread.
        pending[0].finished.wait(0.02)
    return time.monotonic() - start


def run(args: GuestArgs) -> int:
    stop_requested = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(KICK_SIGNAL, lambda signum, frame: None)
    go = [not args.hold]  # installed before "ready", so an early SIGUSR2 is not lost
    signal.signal(signal.SIGUSR2, lambda signum, frame: go.__setitem__(0, True))
    libc().prctl(PR_SET_NAME, PROCESS_COMM, 0, 0, 0)
    target = args.count or 0
    isa = host_hypercall_isa() if args.workload in W.HARDWARE_ONLY else "svm"
    machine = Machine(args.workload, args.mode, args.vcpus, target, isa)
    kept = _keep_stats_fds(machine) if args.keep_stats_fds else []
    for v in machine.vcpus:
        v.thread.start()
    for v in machine.vcpus:
        v.started.wait()
    pid = os.getpid()
    _emit(args, report.ready_event(pid, args.name, [v.result.tid for v in machine.vcpus]))
    seconds = _wait(machine, args, stop_requested, go)
    vcpus = [
        report.vcpu_entry(
            v.index,
            v.result.tid,
            v.result.iterations,
            v.result.exits,
            machine.read_u64(L.data_page(v.index) + L.D_IRQS),
            args.workload,
        )
        for v in machine.vcpus
    ]
    errors = [v.result.error for v in machine.vcpus if v.result.error]
    stats = _collect_stats(machine) if args.stats else None
    signals = machine.ioeventfd_signals()
    _emit(args, report.result_event(pid, args, seconds, vcpus, stats, errors, signals))
    for fd in kept:
        os.close(fd)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_runner_argv(sys.argv[1:] if argv is None else argv)
    except ArgError as exc:
        print(f"vprof guest: error: {exc}", file=sys.stderr)
        return 2
    try:
        kvm_fd = open_kvm()
        try:
            validate(args, max_vcpus(kvm_fd))
        finally:
            os.close(kvm_fd)
        return run(args)
    except ArgError as exc:
        print(f"vprof guest: error: {exc}", file=sys.stderr)
        return 2
    except KvmUnavailable as exc:
        print(f"vprof guest: error: {exc}", file=sys.stderr)
        return 1
    except (GuestFault, OSError) as exc:
        print(f"vprof guest: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
