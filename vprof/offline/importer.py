"""`vprof import`: a text dump of kvm:* and sched events -> a recording.

Reasons are named and bucketed by the same taxonomy as the live pipeline;
exit handling time is the kvm_exit -> kvm_entry gap of each thread.  Each
vCPU thread's wall time (its first to its last event) is split into a
ledger by a small state machine: guest (entry -> exit), in-kernel handling
by the exit's bucket, the VMM after kvm_userspace_exit, run-queue wait
(woken or preempted -> switched in) and halted (switched out asleep).
Without kvm_exit/kvm_entry in the dump (hosts such as kvm_pvm) the time in
KVM_RUN is `in_kvm_run`, as live.

VMs: by pid where the dump has one (perf -F +pid, ftrace record-tgid), else
one VM per comm family: QEMU's "CPU n/KVM" threads form one VM, any other
comm its own.  Lines that do not parse are counted and the first few shown;
the import never stops on one.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vprof.offline import tracetext as tt
from vprof.offline.timeline import Timeline
from vprof.sinks.recorder import Recorder, base_meta
from vprof.sources.replay import COLUMNS, DTYPES
from vprof.taxonomy import classify_event, userspace_exit
from vprof.taxonomy.core import Classified, unknown
from vprof.taxonomy.lookup import lookup

SHOWN_BAD = 5
_EXIT_ISAS = ("vmx", "svm", "arm64")
_VCPU_COMM = re.compile(r"^CPU (\d+)/KVM$")


class DumpError(Exception):
    """A dump that cannot become a recording: one line for the user."""


@dataclass
class ImportStats:
    dialect: str
    lines: int = 0
    events: int = 0
    kvm_events: int = 0
    bad: int = 0
    bad_shown: list[tuple[int, str]] = field(default_factory=list)
    vms: int = 0
    parts: int = 0

    def summary(self) -> list[str]:
        out = [
            f"{self.dialect}: {self.lines} lines, {self.kvm_events} KVM events, "
            f"{self.events - self.kvm_events} other events, {self.vms} VMs, {self.parts} parts"
        ]
        if self.bad:
            out.append(f"{self.bad} lines not understood, first ones:")
            out += [f"  line {n}: {text[:160]}" for n, text in self.bad_shown]
        return out


def classify_exit_name(reason: str) -> Classified:
    """A kvm_exit reason as printed (VMX upper case, SVM lower case, trace-cmd
    plugin EXIT_* names, or a bare number) -> its taxonomy entry."""
    name = reason[5:] if reason.upper().startswith("EXIT_") else reason
    found = [e.entry for e in lookup(name) if e.entry.isa in _EXIT_ISAS]
    if not found:
        return unknown("exit", reason, int(reason) if reason.isdigit() else 0)
    # SVM names are lower case; trace-cmd's plugin writes them EXIT_*.
    prefer = "svm" if (reason.islower() or reason != name) else "vmx"
    return next((c for c in found if c.isa == prefer), found[0])


@dataclass
class _Vm:
    key: str
    name: str
    pid: int
    tids: set[int] = field(default_factory=set)


def _vm_of(line: tt.TraceLine, vms: dict[str, _Vm], by_tid: dict[int, _Vm]) -> _Vm:
    vm = by_tid.get(line.tid)
    if vm is not None:
        return vm
    if line.pid is not None:
        key, name, pid = f"{line.pid}:0", f"pid-{line.pid}", line.pid
    elif _VCPU_COMM.match(line.comm):
        key, name, pid = "comm:CPU/KVM", "qemu (CPU n/KVM threads)", -1
    else:
        key, name, pid = f"comm:{line.comm}", line.comm or f"tid-{line.tid}", -1
    vm = vms.setdefault(key, _Vm(key, name, pid))
    vm.tids.add(line.tid)
    by_tid[line.tid] = vm
    return vm


class _Builder:
    """Counts per (interval, VM, reason ...) and the ledger per thread."""

    def __init__(self, interval_ns: int) -> None:
        self.interval_ns = interval_ns
        self.t0 = 0  # the dump's first timestamp (set before any event)
        self.counts: dict[tuple[Any, ...], int] = defaultdict(int)
        self.vms: dict[str, _Vm] = {}
        self.by_tid: dict[int, _Vm] = {}
        self.timelines: dict[int, Timeline] = {}
        self.vcpu_ids: dict[int, int] = {}  # from kvm_exit's vcpu field
        self.comm_index: dict[int, int] = {}  # from a "CPU n/KVM" comm
        self.exit_timing = False
        self.isa = ""

    def seq(self, ts: int) -> int:
        return (ts - self.t0) // self.interval_ns

    def count(
        self,
        ts: int,
        vm: _Vm,
        kind: str,
        isa: str,
        bucket: str,
        reason: str,
        detail: str = "",
        n: int = 1,
    ) -> None:
        self.counts[(self.seq(ts), vm.key, kind, isa, bucket, reason, detail)] += n

    def timeline(self, tid: int, ts: int) -> Timeline:
        tl = self.timelines.get(tid)
        if tl is None:
            tl = self.timelines[tid] = Timeline(self, ts)
        return tl

    def kvm(self, line: tt.TraceLine) -> bool:
        """Count one kvm/kvmmmu event; False if its payload did not parse."""
        vm = _vm_of(line, self.vms, self.by_tid)
        if m := _VCPU_COMM.match(line.comm):
            self.comm_index[line.tid] = int(m[1])
        ev, ts, tl = line.event, line.ts_ns, self.timeline(line.tid, line.ts_ns)
        if ev == "kvm_exit":
            ex = tt.parse_exit(line.payload)
            if ex is None:
                return False
            if ex.vcpu is not None:
                self.vcpu_ids[line.tid] = ex.vcpu
            self.exit_timing = True
            tl.exit(ts, classify_exit_name(ex.reason), ex.flags, vm)
            return True
        if ev == "kvm_entry":
            self.exit_timing = True
            tl.entry(ts)
            return True
        if ev == "kvm_fpu":
            tl.fpu(ts, line.payload.startswith("load"))
        else:
            tl.kvm_event(ts)
        if ev == "kvm_userspace_exit":
            parsed = tt.parse_userspace(line.payload)
            if parsed is None:
                return False
            c = userspace_exit(parsed[1]) if parsed[1] is not None else _userspace(parsed[0])
            self.count(ts, vm, "event", c.isa, c.bucket.value, c.name)
            tl.userspace(ts)
            return True
        c = classify_event(ev)
        self.count(ts, vm, "event", c.isa, c.bucket.value, c.name)
        if ev in ("kvm_mmio", "kvm_fast_mmio"):
            tl.mmio()
        return self._detail(line, vm, c)

    def _detail(self, line: tt.TraceLine, vm: _Vm, c: Classified) -> bool:
        ts = line.ts_ns
        if line.event == "kvm_pio":
            pio = tt.parse_pio(line.payload)
            if pio is None:
                return False
            self.count(ts, vm, "io", "pio", "io", f"pio {pio[0]}", f"{pio[1]:#x}/{pio[2]}")
        elif line.event == "kvm_mmio":
            mmio = tt.parse_mmio(line.payload)
            if mmio is None:
                return False
            self.count(ts, vm, "io", "mmio", "io", f"mmio {mmio[0]}", f"{mmio[1]:#x}/{mmio[2]}")
        detail = tt.event_detail(line.event, line.payload)
        if detail is not None:
            self.count(ts, vm, "detail", c.isa, c.bucket.value, c.name, detail)
        return True

    def sched(self, line: tt.TraceLine) -> bool:
        if line.event == "sched_switch":
            sw = tt.parse_switch(line.payload)
            if sw is None:
                return False
            prev, state, nxt = sw
            if prev in self.timelines:
                self.timelines[prev].switch_out(line.ts_ns, state.startswith("R"))
            if nxt in self.timelines:
                self.timelines[nxt].switch_in(line.ts_ns)
            return True
        if line.event in ("sched_wakeup", "sched_wakeup_new"):
            tid = tt.parse_wakeup(line.payload)
            if tid is None:
                return False
            if tid in self.timelines:
                self.timelines[tid].wakeup(line.ts_ns)
            return True
        return True  # other sched events carry nothing vprof counts


def _userspace(name: str) -> Classified:
    found = [e.entry for e in lookup(name) if e.entry.isa == "userspace"]
    return found[0] if found else unknown("userspace", name, 0)


# The columns of _frame's rows: the recording's own columns (COLUMNS, in its
# order) less those joined on afterwards, per VM and per interval.
_JOINED = frozenset({"host", "time", "interval_s", "vm_name", "vm_pid", "vmm", "vcpu_count"})
_ROW_COLUMNS = [c for c in COLUMNS if c not in _JOINED]


def _frame(b: _Builder, host: str) -> pd.DataFrame:
    # Closing each thread's pending exit counts it: before the counts are read.
    ledgers = {tid: tl.rows() for tid, tl in b.timelines.items()}
    rows = []
    for (seq, key, kind, isa, bucket, reason, detail), n in b.counts.items():
        rows.append((seq, key, -1, -1, kind, isa, bucket, reason, detail, n))
    for tid, tl in b.timelines.items():
        if not tl.is_vcpu:
            continue
        vcpu = b.vcpu_ids.get(tid, b.comm_index.get(tid, -1))
        for (seq, kind, bucket, reason), n in ledgers[tid].items():
            rows.append((seq, b.by_tid[tid].key, vcpu, tid, kind, "", bucket, reason, "", n))
    df = pd.DataFrame(rows, columns=_ROW_COLUMNS)
    vms = pd.DataFrame(
        [
            (v.key, v.name, v.pid, sum(b.timelines[t].is_vcpu for t in v.tids if t in b.timelines))
            for v in b.vms.values()
        ],
        columns=["vm_key", "vm_name", "vm_pid", "vcpu_count"],
    )
    df = df.merge(vms, on="vm_key", how="left")
    seqs = pd.DataFrame({"seq": range(int(df["seq"].max()) + 1 if len(df) else 0)})
    interval_s = b.interval_ns / 1e9
    seqs = seqs.assign(
        kind="interval",
        reason="events_lost",
        value=0,
        vm_key="",
        vm_name="",
        vm_pid=-1,
        vcpu_count=0,
        vcpu=-1,
        tid=-1,
        isa="",
        bucket="",
        detail="",
    )
    df = pd.concat([seqs, df], ignore_index=True)
    df["time"] = b.t0 / 1e9 + (df["seq"] + 1) * interval_s
    df = df.assign(host=host, interval_s=interval_s, vmm="unknown")
    return df[list(COLUMNS)].astype(DTYPES)


def _read_lines(path: Path) -> list[str]:
    try:
        with path.open(errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise DumpError(f"{path}: no such file") from None
    except OSError as e:
        raise DumpError(f"{path}: {e.strerror}") from None


def _feed(b: _Builder, lines: list[str], dialect: str, stats: ImportStats) -> None:
    first = True
    for number, text in enumerate(lines, 1):
        line = tt.parse_line(number, text, dialect)
        if line is None:
            if not tt.is_skippable(text):
                stats.bad += 1
                if len(stats.bad_shown) < SHOWN_BAD:
                    stats.bad_shown.append((number, text))
            continue
        if first:
            b.t0, first = line.ts_ns, False
        stats.events += 1
        if line.event.startswith("kvm") or line.event in _MMU_EVENTS:
            ok = b.kvm(line)
            stats.kvm_events += 1
        elif line.event.startswith("sched_"):
            ok = b.sched(line)
        else:
            continue
        if not ok:
            stats.bad += 1
            if len(stats.bad_shown) < SHOWN_BAD:
                stats.bad_shown.append((number, text))


# kvmmmu events carry no "kvm" prefix of their own in ftrace dumps.
_MMU_EVENTS = frozenset(
    {"mark_mmio_spte", "handle_mmio_page_fault", "check_mmio_spte", "fast_page_fault"}
)


def import_file(path: Path, out: Path, interval_s: float, dialect: str = "auto") -> ImportStats:
    """Parse `path` and write the recording `out`; raises DumpError (one line)."""
    lines = _read_lines(path)
    found = tt.detect(lines) if dialect == "auto" else dialect
    if found is None:
        raise DumpError(
            f"{path}: unknown dialect: not `perf script`, `trace-cmd report` or ftrace text"
        )
    stats = ImportStats(found, lines=len(lines))
    b = _Builder(max(1, int(interval_s * 1e9)))
    # trace-cmd and ftrace share a line format; only the header tells them apart.
    _feed(b, lines, "perf" if found == "perf" else "ftrace", stats)
    if stats.kvm_events == 0:
        raise DumpError(f"{path}: no KVM events (kvm:*) in {stats.lines} lines")
    frame = _frame(b, host=f"import:{path.name}")
    stats.vms = len(b.vms)
    meta = base_meta(interval_s, ["import"], f"import:{found}")
    meta.update(
        host=f"import:{path.name}",
        kernel="unknown",
        backend="imported",
        exit_timing=b.exit_timing,
        imported_from=str(path),
        unparsed_lines=stats.bad,
    )
    rec = Recorder(out, meta)
    rec.add_frame(frame)
    stats.parts = rec.parts
    return stats
