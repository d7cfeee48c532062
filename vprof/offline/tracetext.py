"""Text dumps of trace events: one line -> (comm, pid, tid, time, event, payload).

Three dialects write the same events with different heads:

    perf script      "  CPU 0/KVM  4120/4123 [001]  5120.123456: kvm:kvm_exit: vcpu 0 ..."
                     (pid/ only with -F +pid; comm may hold spaces)
    trace-cmd report "  CPU 0/KVM-4123  [001]  5120.123456: kvm_exit: ..." (after a
                     "version = N" / "cpus=N" header; latency flags optional)
    ftrace trace     "  CPU 0/KVM-4123  (4120) [001] d..2.  5120.123456: kvm_exit: ..."
                     (after "# tracer:" comments; "(tgid)" with options/record-tgid)

The payloads are the kernel's TP_printk text (arch/x86/kvm/trace.h,
include/trace/events/kvm.h, include/trace/events/sched.h); trace-cmd's kvm
plugin prints kvm_exit reasons with its own names (e.g. EXIT_NPF).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIALECTS = ("perf", "trace-cmd", "ftrace")

_PERF = re.compile(
    r"^\s*(?P<comm>.*?)\s+(?:(?P<pid>-?\d+)/)?(?P<tid>-?\d+)\s+\[(?P<cpu>\d+)\]\s+"
    r"(?P<ts>\d+\.\d+):\s+(?:\d+\s+)?(?P<sys>\w+):(?P<event>\w+):\s?(?P<rest>.*)$"
)
_FTRACE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<tid>\d+)\s+(?:\(\s*(?P<pid>\d+|-+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:[\w.]{4,6}\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s?(?P<rest>.*)$"
)


@dataclass(frozen=True)
class TraceLine:
    number: int  # 1-based line number in the file
    comm: str
    pid: int | None  # the process (VM) where the dump has it
    tid: int
    ts_ns: int
    event: str  # without its system: "kvm_exit", "sched_switch"
    payload: str


def detect(lines: list[str]) -> str | None:
    """The dialect of a dump from its first lines, or None if none fits."""
    for line in lines[:200]:
        s = line.strip()
        if s.startswith("# tracer:"):
            return "ftrace"
        if re.match(r"^(version = \d+|cpus=\d+)", s):
            return "trace-cmd"
    for line in lines[:2000]:
        if _PERF.match(line):
            return "perf"
        if _FTRACE.match(line):
            return "ftrace"
    return None


def _ns(ts: str) -> int:
    sec, _, frac = ts.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def parse_line(number: int, line: str, dialect: str) -> TraceLine | None:
    """One event line, or None if it is not one (a comment, a header, junk)."""
    m = (_PERF if dialect == "perf" else _FTRACE).match(line)
    if m is None:
        return None
    pid = m["pid"]
    return TraceLine(
        number=number,
        comm=m["comm"].strip(),
        # perf prints -1 for a task that had exited by the time it looked.
        pid=int(pid) if pid and pid.isdigit() else None,
        tid=int(m["tid"]),
        ts_ns=_ns(m["ts"]),
        event=m["event"],
        payload=m["rest"].strip(),
    )


def is_skippable(line: str) -> bool:
    """Lines every dialect has that are not events: blanks, comments, headers."""
    s = line.strip()
    return (
        not s
        or s.startswith("#")
        or bool(re.match(r"^(version = \d+|cpus=\d+|CPU \d+ is empty|cpu\d+ data)", s))
    )


# --- payloads ---------------------------------------------------------------

# 5.11+: "vcpu 0 reason EPT_VIOLATION rip 0x... info1 0x... info2 ... intr_info ..."
# before: "reason EPT_VIOLATION rip 0x... info 181 0"; VMX flags follow the name.
_EXIT = re.compile(
    r"^(?:vcpu (?P<vcpu>\d+) )?reason (?P<reason>\S+)(?P<flags>(?: [A-Z][A-Z_]+)*)"
    r"(?: \(\d+\))? rip"
)
_PIO = re.compile(r"^pio_(?P<rw>read|write) at 0x(?P<port>[0-9a-fA-F]+) size (?P<size>\d+)")
_MMIO = re.compile(r"^mmio (?P<type>\S+) len (?P<len>\d+) gpa 0x(?P<gpa>[0-9a-fA-F]+)")
_USER = re.compile(r"^reason (?P<name>\S+)(?: \((?P<code>-?\d+)\))?")
_CPUID = re.compile(r"^func (?P<func>[0-9a-fA-F]+)")
_MSR = re.compile(r"^msr_(?P<rw>read|write) (?P<ecx>[0-9a-fA-F]+)")
_INSN = re.compile(r"^[0-9a-fA-F]+:[0-9a-fA-F]+:(?P<insn>[0-9a-fA-F ]+?)\s*\(")
_SWITCH = re.compile(
    r"prev_pid=(?P<prev>\d+) .*?prev_state=(?P<state>\S+) ==> next_comm=.*? next_pid=(?P<next>\d+)"
)
_WAKE = re.compile(r"pid=(?P<pid>\d+)")


@dataclass(frozen=True)
class Exit:
    vcpu: int | None
    reason: str
    flags: tuple[str, ...]


def parse_exit(payload: str) -> Exit | None:
    m = _EXIT.match(payload)
    if m is None:
        return None
    flags = tuple(m["flags"].split())
    return Exit(int(m["vcpu"]) if m["vcpu"] else None, m["reason"], flags)


def parse_pio(payload: str) -> tuple[str, int, int] | None:
    """("out"/"in", port, size) of a kvm_pio line."""
    m = _PIO.match(payload)
    if m is None:
        return None
    return ("out" if m["rw"] == "write" else "in", int(m["port"], 16), int(m["size"]))


def parse_mmio(payload: str) -> tuple[str, int, int] | None:
    """(direction as the live pipeline names it, gpa, len) of a kvm_mmio line."""
    m = _MMIO.match(payload)
    if m is None:
        return None
    return (m["type"].replace("-", "_"), int(m["gpa"], 16), int(m["len"]))


def parse_userspace(payload: str) -> tuple[str, int | None] | None:
    m = _USER.match(payload)
    if m is None:
        return None
    return m["name"], int(m["code"]) if m["code"] else None


def event_detail(event: str, payload: str) -> str | None:
    """The argument the live pipeline counts for `event` (vprof/aggregate.py)."""
    if event == "kvm_cpuid" and (m := _CPUID.match(payload)):
        return f"cpuid {int(m['func'], 16):#x}"
    if event == "kvm_msr" and (m := _MSR.match(payload)):
        return f"msr {int(m['ecx'], 16):#x} {m['rw']}"
    if event == "kvm_emulate_insn" and (m := _INSN.match(payload)):
        raw = bytes.fromhex(m["insn"].replace(" ", ""))
        if not raw:
            return None
        shown = f"0x0f 0x{raw[1]:02x}" if raw[0] == 0x0F and len(raw) > 1 else f"0x{raw[0]:02x}"
        return f"opcode {shown}{' failed' if 'failed' in payload else ''}"
    if event == "kvm_vcpu_wakeup":
        return "waited" if payload.startswith("wait") else "polled"
    return None


def parse_switch(payload: str) -> tuple[int, str, int] | None:
    """(prev tid, prev state, next tid) of a sched_switch line."""
    m = _SWITCH.search(payload)
    if m is None:
        return None
    return int(m["prev"]), m["state"], int(m["next"])


def parse_wakeup(payload: str) -> int | None:
    m = _WAKE.search(payload)
    return int(m["pid"]) if m else None
