"""Which counters the perf source opens per vCPU thread (pure, fixture-testable).

Every KVM event the BPF families count, one counter each; where the BPF
pipeline splits an event by a small-range field (direction, exit reason),
one counter per value with a tracepoint filter, as kvm_stat does.  Filters
are used only on fields this kernel's format file has: on an old kernel a
counter without its field falls back to one unfiltered counter, so every
event that exists is still opened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vprof.sources.perf.perfevent import tracepoint_id

# Exit reasons opened one counter each, most frequent first (kvm_stat opens
# all of them; we bound the fds).  Codes: arch/x86/include/uapi/asm/vmx.h,
# arch/x86/include/uapi/asm/svm.h.  What the bound leaves out is counted as
# the unfiltered total minus the filtered counters ("over_bound").
EXIT_REASONS: Mapping[str, tuple[int, ...]] = {
    "vmx": (1, 48, 49, 30, 12, 32, 31, 10, 7, 40, 52, 44, 56, 45, 28, 0, 18, 55, 43, 8, 2),
    "svm": (
        0x60,
        0x400,
        0x7B,
        0x78,
        0x7C,
        0x72,
        0x64,
        0x77,
        0x401,
        0x402,
        0x81,
        0x4E,
        0x8D,
        0x61,
        0x13,
        0x10,
        0x18,
        0x403,
        0x7F,
    ),
}
DEFAULT_EXIT_BOUND = 16
# KVM_EXIT_* reasons (include/uapi/linux/kvm.h) opened one counter each.
USERSPACE_REASONS: tuple[int, ...] = (2, 6, 5, 8, 10, 9, 17, 24, 29, 30, 3, 4, 7, 0)

# (system, event, field, {value: detail}) -- one filtered counter per value,
# and the values cover the field's whole range, so no total is needed.
_SPLIT: tuple[tuple[str, str, str, Mapping[int, str]], ...] = (
    ("kvm", "kvm_pio", "rw", {0: "in", 1: "out"}),
    ("kvm", "kvm_mmio", "type", {0: "unsatisfied_read", 1: "read", 2: "write"}),
    ("kvm", "kvm_msr", "write", {0: "read", 1: "write"}),
    ("kvm", "kvm_cr", "rw", {0: "read", 1: "write"}),
    ("kvm", "kvm_vcpu_wakeup", "waited", {0: "polled", 1: "waited"}),
)
# One unfiltered counter each: what the io, privileged, memory and sched
# families count besides the split events above (probes/*.bpf.c).
_PLAIN: tuple[tuple[str, str], ...] = (
    ("kvm", "kvm_fast_mmio"),
    ("kvm", "kvm_cpuid"),
    ("kvm", "kvm_hypercall"),
    ("kvm", "kvm_emulate_insn"),
    ("kvm", "kvm_page_fault"),
    ("kvmmmu", "kvm_mmu_set_spte"),
    ("kvmmmu", "kvm_mmu_spte_requested"),
    ("kvmmmu", "fast_page_fault"),
    ("kvmmmu", "handle_mmio_page_fault"),
    ("kvmmmu", "mark_mmio_spte"),
    ("kvm", "kvm_async_pf_not_present"),
    ("kvm", "kvm_async_pf_ready"),
    ("kvm", "kvm_async_pf_completed"),
    ("kvm", "kvm_halt_poll_ns"),
    ("kvm", "kvm_fpu"),
    ("kvm", "kvm_inj_virq"),
    ("kvm", "kvm_inj_exception"),
)


@dataclass(frozen=True)
class Counter:
    """One perf counter per vCPU thread."""

    system: str
    event: str
    tp_id: int
    tp_filter: str = ""  # "" counts every event
    detail: str | None = None  # the split value's name ("in", "write", ...)
    code: int | None = None  # exit reason / KVM_EXIT_* of a reason counter
    total: bool = False  # the unfiltered total beside reason counters

    @property
    def tracepoint(self) -> str:
        return f"{self.system}:{self.event}"


@dataclass(frozen=True)
class Plan:
    counters: tuple[Counter, ...]
    missing: tuple[str, ...]  # tracepoints this kernel lacks
    unsplit: tuple[str, ...]  # events counted whole: their split field is missing
    exit_isa: str | None  # "vmx"/"svm" where kvm_exit is split by reason
    exit_reasons_left_out: tuple[int, ...]  # over the bound: counted as over_bound

    def tracepoints(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.tracepoint for c in self.counters))


def fields(tracefs: str, system: str, event: str) -> set[str]:
    """Field names in the event's format file (empty if unreadable)."""
    try:
        text = Path(f"{tracefs}/events/{system}/{event}/format").read_text()
    except OSError:
        return set()
    out = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("field:") and ";" in line:
            decl = line[len("field:") : line.index(";")].split("[", 1)[0]
            out.add(decl.split()[-1])
    return out


class _Builder:
    def __init__(self, tracefs: str) -> None:
        self.tracefs = tracefs
        self.counters: list[Counter] = []
        self.missing: list[str] = []
        self.unsplit: list[str] = []

    def tp(self, system: str, event: str) -> int | None:
        tp_id = tracepoint_id(self.tracefs, system, event)
        if tp_id is None:
            self.missing.append(f"{system}:{event}")
        return tp_id

    def split(self, system: str, event: str, field: str, values: Mapping[int, str]) -> None:
        tp_id = self.tp(system, event)
        if tp_id is None:
            return
        if field not in fields(self.tracefs, system, event):
            self.unsplit.append(f"{system}:{event}")
            self.counters.append(Counter(system, event, tp_id))
            return
        for value, detail in values.items():
            self.counters.append(Counter(system, event, tp_id, f"{field}=={value}", detail))

    def reasons(self, system: str, event: str, field: str, codes: Sequence[int]) -> bool:
        tp_id = self.tp(system, event)
        if tp_id is None:
            return False
        self.counters.append(Counter(system, event, tp_id, total=True))
        if field not in fields(self.tracefs, system, event):
            self.unsplit.append(f"{system}:{event}")
            return True
        for code in codes:
            self.counters.append(Counter(system, event, tp_id, f"{field}=={code}", code=code))
        return True


def build_plan(tracefs: str, exit_isa: str | None, exit_bound: int = DEFAULT_EXIT_BOUND) -> Plan:
    """The counters to open per vCPU thread on this kernel.

    `exit_isa` is "vmx"/"svm" where kvm_exit fires (kvm_intel/kvm_amd), None
    where it never does (kvm_pvm): then kvm_exit gets only its total."""
    b = _Builder(tracefs)
    for system, event, field, values in _SPLIT:
        b.split(system, event, field, values)
    b.reasons("kvm", "kvm_userspace_exit", "reason", USERSPACE_REASONS)
    codes = EXIT_REASONS.get(exit_isa or "", ())
    kept, left = codes[: max(0, exit_bound)], codes[max(0, exit_bound) :]
    if not b.reasons("kvm", "kvm_exit", "exit_reason", kept):
        left = ()
    for system, event in _PLAIN:
        if (tp_id := b.tp(system, event)) is not None:
            b.counters.append(Counter(system, event, tp_id))
    return Plan(
        counters=tuple(b.counters),
        missing=tuple(b.missing),
        unsplit=tuple(b.unsplit),
        exit_isa=exit_isa if codes else None,
        exit_reasons_left_out=tuple(left),
    )


def exit_isa_of(sys_root: str) -> str | None:
    """Which exit reasons kvm_exit carries here, by the loaded KVM module."""
    mod = Path(sys_root) / "module"
    if (mod / "kvm_intel").is_dir():
        return "vmx"
    if (mod / "kvm_amd").is_dir():
        return "svm"
    return None


def by_tracepoint(counters: Iterable[Counter]) -> dict[str, list[Counter]]:
    out: dict[str, list[Counter]] = {}
    for c in counters:
        out.setdefault(c.tracepoint, []).append(c)
    return out
