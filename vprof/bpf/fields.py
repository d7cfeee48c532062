"""Every tracepoint field a probe reads, and the kernels that have it.

The C in probes/ never writes `args->X`: it reads VPROF_ARG_<event>_<name>,
which render() defines from this table and the running kernel's tracefs
`format` files.  A field the kernel lacks is defined as its `missing` value
instead, so one figure is "not available" rather than the whole family
failing to compile (a missing field is a clang error, and bcc loads a family
as one object).  tests/test_probe_fields.py renders every family against the
format files of each kernel of the matrix (tests/fixtures/tracefs/<release>).

Kernel history (arch/x86/kvm/trace.h, include/trace/events/kvm.h):
- kvm_exit: `vcpu_id` came in 5.4 ("KVM: X86: Trace vcpu_id for vmexit");
  older layouts have exit_reason, guest_rip, isa, info1, info2 only.  The
  matrix's kernels all have it (their fixtures say so), but without it the
  vCPU index comes from kvm_entry's vcpu_id or from the inventory.
- kvm_inj_virq: the vector was `irq` until 2022 (6.0 renamed it `vector`
  and added soft/reinjected).

Raw tracepoints (VPROF_RAW_PROBE) read TP_PROTO's arguments, not the format's
fields: `raw` is the argument's position and C type.  Each position is the
same on every kernel of the matrix: 5.10 from its source (arch/x86/kvm/trace.h
and include/trace/events/kvm.h of v5.10), 6.1, 6.12 and 6.18 from the
booted kernels' BTF (the btf_trace_<event> typedefs of kvm.ko or vmlinux are
the raw prototypes), and each TP_fast_assign copies the argument unchanged
into the field of the same name (kvm_inj_virq's renamed vector stays the
first argument).  tests/test_realhost_svm.py and tests/test_pipeline_kvm.py
check the values read against the guest's own ports, addresses, leaves and
MSRs on each kernel.  Never a struct field through a raw argument: the bundled
headers do not match the running kernel's layouts, so kvm_exit, kvm_entry
and the sched events stay classic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ALL = "5.10, 6.1, 6.12, 6.18"  # the kernel matrix; every release of it has the field


@dataclass(frozen=True)
class Arg:
    tracepoint: str  # "kvm:kvm_exit"
    name: str  # the macro's last part: VPROF_ARG_<event>_<name>
    fields: tuple[str, ...]  # the format's field names, the first present wins
    kernels: str  # the releases that have one of `fields`, and which
    missing: str  # the C value when none is present
    figure: str  # what is lost without it
    raw: tuple[int, str] | None = None  # (TP_PROTO position, C type) for a raw tracepoint

    @property
    def macro(self) -> str:
        return f"VPROF_ARG_{self.tracepoint.split(':')[1]}_{self.name}"


NO_VCPU = "(~0U)"  # vcpu_state.vcpu_id before it is known

ARGS: tuple[Arg, ...] = (
    Arg("kvm:kvm_exit", "exit_reason", ("exit_reason",), ALL, "0", "exit reasons"),
    Arg("kvm:kvm_exit", "isa", ("isa",), ALL, "0", "VMX or SVM of each exit"),
    Arg(
        "kvm:kvm_exit",
        "vcpu_id",
        ("vcpu_id",),
        f"{ALL} (since 5.4)",
        NO_VCPU,
        "vCPU index at kvm_exit (kvm_entry or the inventory gives it)",
    ),
    Arg("kvm:kvm_entry", "vcpu_id", ("vcpu_id",), ALL, NO_VCPU, "vCPU index at kvm_entry"),
    Arg(
        "kvm:kvm_userspace_exit",
        "reason",
        ("reason",),
        ALL,
        "0",
        "KVM_EXIT_* reasons",
        raw=(0, "u32"),
    ),
    Arg("kvm:kvm_pio", "rw", ("rw",), ALL, "0", "port I/O direction", raw=(0, "u32")),
    Arg("kvm:kvm_pio", "size", ("size",), ALL, "0", "port I/O size", raw=(2, "u32")),
    Arg("kvm:kvm_pio", "port", ("port",), ALL, "0", "busiest ports", raw=(1, "u32")),
    Arg("kvm:kvm_mmio", "type", ("type",), ALL, "0", "MMIO direction", raw=(0, "u32")),
    Arg("kvm:kvm_mmio", "len", ("len",), ALL, "0", "MMIO size", raw=(1, "u32")),
    Arg("kvm:kvm_mmio", "gpa", ("gpa",), ALL, "0", "busiest MMIO addresses", raw=(2, "u64")),
    Arg("kvm:kvm_fast_mmio", "gpa", ("gpa",), ALL, "0", "busiest fast-MMIO addresses"),
    Arg("kvm:kvm_cpuid", "function", ("function",), ALL, "0", "CPUID leaves", raw=(0, "u32")),
    Arg("kvm:kvm_msr", "write", ("write",), ALL, "0", "MSR read or write", raw=(0, "u32")),
    Arg("kvm:kvm_msr", "ecx", ("ecx",), ALL, "0", "MSR indexes", raw=(1, "u32")),
    Arg("kvm:kvm_cr", "rw", ("rw",), ALL, "0", "CR read or write"),
    Arg("kvm:kvm_cr", "cr", ("cr",), ALL, "0", "CR numbers"),
    Arg("kvm:kvm_hypercall", "nr", ("nr",), ALL, "0", "hypercall numbers"),
    # insn is a u8[15] array: the macro is the array, indexed in the C.
    Arg("kvm:kvm_emulate_insn", "insn", ("insn",), ALL, "((u8[2]){0, 0})", "emulated opcodes"),
    Arg("kvm:kvm_emulate_insn", "failed", ("failed",), ALL, "0", "failed emulations"),
    Arg(
        "kvm:kvm_page_fault",
        "fault_address",
        ("fault_address",),
        ALL,
        "0",
        "guest-physical region of page faults",
    ),
    Arg("kvmmmu:kvm_mmu_set_spte", "gfn", ("gfn",), ALL, "0", "region of SPTE updates"),
    Arg("kvmmmu:kvm_mmu_spte_requested", "gfn", ("gfn",), ALL, "0", "region of SPTE requests"),
    Arg("sched:sched_switch", "prev_pid", ("prev_pid",), ALL, "0", "switched-out thread"),
    Arg("sched:sched_switch", "next_pid", ("next_pid",), ALL, "0", "switched-in thread"),
    Arg("sched:sched_switch", "prev_state", ("prev_state",), ALL, "0", "blocked or preempted"),
    Arg("sched:sched_wakeup", "pid", ("pid",), ALL, "0", "woken thread"),
    Arg("kvm:kvm_vcpu_wakeup", "waited", ("waited",), ALL, "0", "halt waited or polled"),
    Arg("kvm:kvm_vcpu_wakeup", "ns", ("ns",), ALL, "0", "halt wake-up time"),
    Arg("kvm:kvm_halt_poll_ns", "grow", ("grow",), ALL, "0", "halt-poll grow or shrink"),
    Arg("kvm:kvm_fpu", "load", ("load",), ALL, "0", "FPU load or put", raw=(0, "u32")),
    Arg(
        "kvm:kvm_inj_virq",
        "vector",
        ("vector", "irq"),
        "vector: 6.1, 6.12, 6.18 (since 6.0); irq: 5.10",
        "0",
        "injected interrupt vectors",
        raw=(0, "u32"),
    ),
    Arg("kvm:kvm_inj_exception", "exception", ("exception",), ALL, "0", "exception vectors"),
    Arg("syscalls:sys_enter_ioctl", "cmd", ("cmd",), ALL, "0", "KVM_RUN boundaries"),
)

BY_MACRO = {a.macro: a for a in ARGS}

# A field line of a tracefs format file: "field:unsigned int vcpu_id;\toffset:..."
_FIELD = re.compile(r"^\s*field:[^;]*?\b(\w+)\s*(?:\[[^\]]*\])?\s*;", re.MULTILINE)

# tracepoint "sys:event" -> its field names, or None when its format is unknown
Fields = Callable[[str], "frozenset[str] | None"]


def parse_format(text: str) -> frozenset[str]:
    """The field names of one tracefs `format` file."""
    return frozenset(_FIELD.findall(text))


def tree_fields(events: Path) -> Fields:
    """Fields of the tracepoints in a tree of <system>/<event>/format files
    (tracefs's events/, or a fixture of it); None where unreadable."""

    def fields(tp: str) -> frozenset[str] | None:
        try:
            return parse_format((events / tp.replace(":", "/") / "format").read_text())
        except OSError:
            return None

    return fields


def tracefs_fields(tracefs: Path) -> Fields:
    """Fields of the running kernel's tracepoints (tracefs mounted at `tracefs`)."""
    return tree_fields(tracefs / "events")


def resolve(arg: Arg, fields: frozenset[str] | None) -> str | None:
    """The field `arg` reads from a layout with `fields`; None when absent.
    An unknown layout (None) gets the newest name (the first)."""
    if fields is None:
        return arg.fields[0]
    return next((f for f in arg.fields if f in fields), None)


def raw_define(arg: Arg) -> str:
    """The C of a raw tracepoint's argument: TP_PROTO's, never the format's."""
    if arg.raw is None:
        raise ValueError(f"{arg.tracepoint} {arg.name} has no proven raw position: keep it classic")
    pos, ctype = arg.raw
    return f"#define {arg.macro} (({ctype})ctx->args[{pos}])\n"


def defines(
    tracepoints: Iterable[str], fields: Fields, raw: Iterable[str] = ()
) -> tuple[str, tuple[str, ...]]:
    """The VPROF_ARG_* lines for a family's tracepoints (`raw` those of them
    attached as raw tracepoints), and what is not available on this layout
    ("kvm:kvm_exit vcpu_id: <figure>")."""
    wanted, raws = set(tracepoints), set(raw)
    lines: list[str] = []
    absent: list[str] = []
    for arg in ARGS:
        if arg.tracepoint not in wanted:
            continue
        if arg.tracepoint in raws:
            lines.append(raw_define(arg))
            continue
        field = resolve(arg, fields(arg.tracepoint))
        if field is None:
            lines.append(f"#define {arg.macro} {arg.missing} /* no {'/'.join(arg.fields)} */\n")
            absent.append(f"{arg.tracepoint} {arg.name}: {arg.figure}")
        else:
            lines.append(f"#define {arg.macro} (args->{field})\n")
    return "".join(lines), tuple(absent)
