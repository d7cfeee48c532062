"""`vprof guest`: check the arguments, then exec the micro-guest runner."""

from __future__ import annotations

import os
import sys

import click

from vprof.guest import workloads as W
from vprof.guest.args import (
    RUNNER_MODULE,
    ArgError,
    GuestArgs,
    host_hypercall_isa,
    runner_argv,
    validate,
)

_WORKLOAD_LINES = "\n".join(f"  {w:<11} {W.WORKLOAD_HELP[w]}" for w in W.WORKLOADS)

HELP = f"""Run the built-in KVM micro-guest: a real VM driven through /dev/kvm.

\b
The guest is a few hand-encoded x86-64 instructions looping on one kind of
operation.  It reports exactly how many operations each vCPU completed, which
is the ground truth vprof's tests compare against.  The process looks like a
QEMU VM: its command line holds `-name guest=NAME` and its vCPU threads are
named `CPU <n>/KVM`.

\b
Workloads (each loop iteration does the listed operations once):
{_WORKLOAD_LINES}

\b
Modes:
  user    (default) the loop runs at CPL3, natively under kvm_pvm; operations
          that need CPL0 (port I/O, MSRs, HLT) are done by a CPL0 handler
          entered through a #GP trap (a CLI gate), as a trap-and-emulate
          kernel would.  Only the trapping instructions make events, as in a
          real guest: one kvm_cpuid per CPUID, one shadow-MMU fault per
          pagetouch page, PAUSE at native speed.  Each exit costs about
          25-30 us on kvm_pvm.
  kernel  everything at CPL0.  kvm_pvm emulates CPL0 code instruction by
          instruction (one kvm_emulate_insn per instruction), which is
          faster per operation here than user mode's exits, but makes an
          unrealistic event mix; pagetouch writes are emulated and fault in
          no shadow PTE.  (On VMX/SVM hosts both modes run natively; both
          are tested on kvm_pvm, user mode also on nested AMD SVM.)

\b
Events the guest makes besides its workload (subtract or filter them):
  - one OUT to port {W.DONE_PORT:#x} per vCPU at the end (KVM_EXIT_IO);
  - user mode: one #GP (kvm_inj_exception) per CPL0 operation and one at
    the end, plus emulated instructions of the handler;
  - hlt, mixed: one LAPIC EOI write (MMIO at 0xfee000b0, in-kernel) per
    timer interrupt;
  - pagetouch, mixed: one OUT to port {W.REFILL_PORT:#x} each time a vCPU's
    {W.PAGETOUCH_PER_VCPU >> 20} MiB region is used up and recycled.
Constants (ports, addresses, MSR, leaf) are in vprof/guest/workloads.py.

\b
Output: a summary, or with --json one JSON line when the vCPU threads exist
("ready") and one at the end ("result": ops and ops_by_kind per vCPU).
--stats adds KVM's binary statistics of the VM and each vCPU
(KVM_GET_STATS_FD), which only the VM's own process can read.  SIGTERM or
Ctrl-C stops the loop at an iteration boundary; the result is still printed.
Without --count or --duration the guest runs until stopped.

\b
Overhead: each vCPU keeps one host CPU busy (hlt: mostly idle); exits to
the VMM (pio, mmio) cost Python time in this process.  Needs read/write access to /dev/kvm.

\b
Examples:
  vprof guest --name demo --workload pio --count 100000
  vprof guest --name web1 --vcpus 2 --workload mixed --duration 10 --json
  vprof guest --name t --workload hlt --count 1000 --mode kernel --stats
  vprof guest --workload msr --listing   # the guest program, byte by byte
  (--listing shows vmcall's AMD opcode, VMMCALL; an Intel host runs VMCALL.)
"""


def _fail(message: str, status: int) -> None:
    click.echo(f"vprof guest: error: {message}", err=True)
    sys.exit(status)


def _host_max_vcpus() -> int:
    from vprof.guest.vm import KvmUnavailable, max_vcpus, open_kvm

    try:
        fd = open_kvm()
    except KvmUnavailable as exc:
        _fail(str(exc), 1)
        raise  # unreachable: _fail exits
    try:
        return max_vcpus(fd)
    finally:
        os.close(fd)


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--name", default=None, help="VM name, shown as -name guest=NAME (required).")
@click.option("--vcpus", default=1, show_default=True, type=int, help="Number of vCPUs.")
@click.option("--workload", default="pio", show_default=True, help="See the list above.")
@click.option("--count", type=int, default=None, help="Loop iterations per vCPU.")
@click.option("--duration", type=float, default=None, help="Seconds to run.")
@click.option("--mode", default="user", show_default=True, help="user or kernel.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout.")
@click.option("--stats", is_flag=True, help="Add KVM's binary statistics at the end.")
@click.option("--hold", is_flag=True, help="Start the vCPUs only on SIGUSR2 (for tracers).")
@click.option(
    "--keep-stats-fds", is_flag=True, help="Hold KVM stats fds open (readable via pidfd_getfd)."
)
@click.option("--listing", is_flag=True, help="Print the guest program's bytes and exit.")
def guest(
    name: str | None,
    vcpus: int,
    workload: str,
    count: int | None,
    duration: float | None,
    mode: str,
    as_json: bool,
    stats: bool,
    hold: bool,
    keep_stats_fds: bool,
    listing: bool,
) -> None:
    args = GuestArgs(
        name or "listing",
        vcpus,
        workload,
        count,
        duration,
        mode,
        as_json,
        stats,
        hold,
        keep_stats_fds,
    )
    try:
        validate(args)
    except ArgError as exc:
        _fail(str(exc), 2)
    if listing:
        click.echo(W.build_program(workload, mode).listing)
        return
    if name is None:
        _fail("--name is required", 2)
    try:
        if workload in W.HARDWARE_ONLY:
            host_hypercall_isa()
        validate(args, _host_max_vcpus())
    except ArgError as exc:
        _fail(str(exc), 2)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec keeps the PID, so callers that started `vprof guest` watch the VM.
    os.execv(sys.executable, [sys.executable, "-m", RUNNER_MODULE, *runner_argv(args)])
