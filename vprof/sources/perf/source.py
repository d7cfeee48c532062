"""PerfSource: the SnapshotSource for hosts without a compiler.

    with PerfSource(PerfConfig()) as src:
        for snap in src.snapshots(interval=1.0):   # cumulative, like the Profiler's
            ...

Each snapshot refreshes the inventory first, so the vCPU threads of a new VM
get their counters at the next interval; events a thread had before that are
not counted (the BPF source counts from a thread's first event).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from vprof.inventory import Inventory
from vprof.inventory.types import VmInfo
from vprof.model import PROBE_FAMILIES, ProbeStatus, Snapshot, VmStat
from vprof.sources.absent import PERF_ABSENT, PERF_WAITING
from vprof.sources.perf import build
from vprof.sources.perf.counters import ThreadCounters, open_thread
from vprof.sources.perf.hiders import hiding_programs
from vprof.sources.perf.perfevent import PerfError, open_counter, raise_nofile
from vprof.sources.perf.plan import DEFAULT_EXIT_BOUND, Plan, build_plan, exit_isa_of

DEAD_GRACE_S = 30.0  # as the Profiler: a dead VM's last figures stay this long
HIDERS_EVERY_S = 10.0  # how often /proc is searched for BPF programs that hide events
# Which BPF family each tracepoint stands in for, so status reads the same.
FAMILY_OF = {
    "kvm:kvm_exit": "exits",
    "kvm:kvm_pio": "io",
    "kvm:kvm_mmio": "io",
    "kvm:kvm_fast_mmio": "io",
    "kvm:kvm_userspace_exit": "io",
    "kvm:kvm_cpuid": "privileged",
    "kvm:kvm_msr": "privileged",
    "kvm:kvm_cr": "privileged",
    "kvm:kvm_hypercall": "privileged",
    "kvm:kvm_emulate_insn": "privileged",
}
_SCHED_EVENTS = (
    "kvm_vcpu_wakeup",
    "kvm_halt_poll_ns",
    "kvm_fpu",
    "kvm_inj_virq",
    "kvm_inj_exception",
)
NO_VMM = "not available with the perf source: the KVM_RUN ioctl boundaries need BPF"


def find_tracefs(sys_root: str = "/sys") -> str:
    for path in (f"{sys_root}/kernel/tracing", f"{sys_root}/kernel/debug/tracing"):
        if Path(f"{path}/events").is_dir():
            return path
    raise OSError("no tracefs: mount it with `mount -t tracefs nodev /sys/kernel/tracing`")


@dataclass(frozen=True)
class PerfConfig:
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    tracefs: str | None = None  # None: under sys_root
    exit_bound: int = DEFAULT_EXIT_BOUND  # exit reasons with a counter each


def family_of(tracepoint: str) -> str:
    if tracepoint in FAMILY_OF:
        return FAMILY_OF[tracepoint]
    return "sched" if tracepoint.split(":")[1] in _SCHED_EVENTS else "memory"


def _candidates(vm: VmInfo) -> list[int]:
    """Threads to count: the vCPU threads, and while the inventory has not
    mapped every vCPU (QEMU without debug-threads=on names none), the
    VMM's unnamed threads too; only vCPU threads ever see a KVM event."""
    roles = ("vcpu",) if len(vm.vcpus) >= vm.vcpu_count else ("vcpu", "other", "main")
    return [tid for tid, info in vm.threads.items() if info.role in roles]


class PerfSource:
    """Opens per-vCPU-thread counters as the inventory finds threads."""

    kind = "perf"

    def __init__(self, config: PerfConfig | None = None) -> None:
        self.config = config or PerfConfig()
        tracefs = self.config.tracefs or find_tracefs(self.config.sys_root)
        self.exit_isa = exit_isa_of(self.config.sys_root)
        self.plan: Plan = build_plan(tracefs, self.exit_isa, self.config.exit_bound)
        self._failed: dict[str, str] = {}  # tracepoint -> why perf refused it
        self._inv = Inventory(proc_root=self.config.proc_root, sys_root=self.config.sys_root)
        self._threads: dict[int, ThreadCounters] = {}
        self._vms: dict[int, VmInfo] = {}
        self._dead_since: dict[int, float] = {}
        self._last_ns = time.monotonic_ns()
        self._closed = False
        self.hidden: dict[str, list[int]] = {}  # tracepoint -> pids with a BPF program on it
        self._hiders_at = -HIDERS_EVERY_S
        self._trial_open()
        self.refresh()

    def _trial_open(self) -> None:
        """Open each counter once on this thread (which has no KVM event), so
        that what perf refuses here (no CAP_PERFMON, a filter it rejects) is
        known before any VM: a family PERF_WAITING then opens on a vCPU."""
        tid = threading.get_native_id()
        for c in self.plan.counters:
            if c.tracepoint in self._failed:
                continue
            try:
                os.close(open_counter(c.tp_id, tid, -1, c.tp_filter))
            except PerfError as exc:
                self._failed.setdefault(c.tracepoint, str(exc))

    @property
    def fds(self) -> int:
        """Perf file descriptors open now."""
        return sum(len(t.fds) for t in self._threads.values())

    def refresh(self) -> None:
        """Counters for every vCPU thread the inventory knows and we lack."""
        view = self._inv.refresh()
        counters = tuple(c for c in self.plan.counters if c.tracepoint not in self._failed)
        for vm in view.vms.values():
            self._vms[vm.pid] = vm
            new = [t for t in _candidates(vm) if t not in self._threads]
            if new:
                raise_nofile(self.fds + len(new) * len(counters) + 256)
            for tid in new:
                opened = open_thread(vm.pid, tid, counters, self.config.proc_root, self._failed)
                if opened is not None:
                    self._threads[tid] = opened
                counters = tuple(c for c in counters if c.tracepoint not in self._failed)
            self._drop_non_vcpus(vm)
        self.unreadable = view.unreadable
        if time.monotonic() - self._hiders_at >= HIDERS_EVERY_S:
            self.find_hiders()

    def _drop_non_vcpus(self, vm: VmInfo) -> None:
        """Once every vCPU is mapped, candidates that saw no KVM event go."""
        if len(vm.vcpus) < vm.vcpu_count:
            return
        for t in [t for t in self._threads.values() if t.pid == vm.pid]:
            if t.tid not in vm.vcpus and not any(t.counts):
                self._threads.pop(t.tid).close()

    def find_hiders(self) -> dict[str, list[int]]:
        """Tracepoints whose events a BPF program may hide from our counters."""
        self._hiders_at = time.monotonic()
        by_name = {tp.split(":")[1]: tp for tp in self.plan.tracepoints()}
        found = hiding_programs(self.config.proc_root, set(by_name))
        self.hidden = {by_name[name]: pids for name, pids in found.items()}
        return self.hidden

    def status(self) -> tuple[ProbeStatus, ...]:
        """A family is attached while some vCPU thread has its events open:
        its tracepoints' counters (sched: /proc schedstat, read per thread)."""
        by_family: dict[str, list[str]] = {f: [] for f in PROBE_FAMILIES}
        for tp in self.plan.tracepoints():
            if tp not in self._failed:
                by_family[family_of(tp)].append(tp)
        open_now = {family_of(c.tracepoint) for t in self._threads.values() for c in t.counters}
        if self._threads:
            open_now.add("sched")
        opens = any(c.tracepoint not in self._failed for c in self.plan.counters)
        out = []
        for fam in PROBE_FAMILIES:
            tps = tuple(by_family[fam]) + (("/proc schedstat",) if fam == "sched" else ())
            hidden = [tp for tp in tps if tp in self.hidden]
            if hidden:
                pids = sorted({p for tp in hidden for p in self.hidden[tp]})
                why = (
                    f"{', '.join(hidden)}: a classic tracepoint BPF program that can return 0 "
                    f"(pid {', '.join(map(str, pids))}) runs first and hides those events"
                )
                out.append(ProbeStatus(fam, False, why, tps))
            elif fam == "vmm":
                out.append(ProbeStatus(fam, False, NO_VMM))
            elif fam in open_now:
                out.append(ProbeStatus(fam, True, "", tps))
            elif by_family[fam] or (fam == "sched" and opens):  # /proc is there to read
                out.append(ProbeStatus(fam, False, PERF_WAITING, tps))
            else:
                why = "; ".join(
                    f"{tp}: {self._failed[tp]}" for tp in self._failed if family_of(tp) == fam
                )
                if fam == "sched" and not opens:
                    why = "no perf counter opens, so no vCPU thread is read" + (why and f"; {why}")
                out.append(ProbeStatus(fam, False, why or "no such tracepoints on this kernel"))
        return tuple(out)

    def snapshot(self) -> Snapshot:
        started = time.process_time()
        self.refresh()
        for t in self._threads.values():
            t.read(self.config.proc_root)
        now = time.monotonic_ns()
        vms, over = self._vm_stats()
        snap = Snapshot(
            timestamp=time.time(),
            monotonic_ns=now,
            interval_ns=now - self._last_ns,
            backend=self._backend(),
            exit_timing=False,
            vms=vms,
            probes=self.status(),
            aggregation_seconds=time.process_time() - started,
            unreadable_proc_entries=self.unreadable,
            source="perf",
            absent=PERF_ABSENT,
            exits_over_bound=over,
            perf_counters=self.fds,
        )
        self._last_ns = now
        self._prune()
        return snap

    def _backend(self) -> str:
        if self.exit_isa is not None:
            return self.exit_isa
        if Path(f"{self.config.sys_root}/module/kvm_pvm").is_dir():
            return "kvm_pvm (no kvm_exit)"
        return "unknown"

    def _vm_stats(self) -> tuple[tuple[VmStat, ...], int]:
        by_pid: dict[int, list[ThreadCounters]] = {}
        for t in self._threads.values():
            # A candidate thread that never had a KVM event is not a vCPU.
            if t.tid in self._vms[t.pid].vcpus or any(t.counts):
                by_pid.setdefault(t.pid, []).append(t)
        out, over = [], 0
        for pid in sorted(by_pid):
            vm = self._vms[pid]
            accs, vcpus = [], []
            for t in sorted(by_pid[pid], key=lambda t: t.tid):
                acc, n = build.thread_reasons(t, self.plan.exit_isa)
                over += n
                accs.append(acc)
                vcpus.append(build.vcpu_stat(t, vm.vcpus.get(t.tid), acc))
            out.append(
                VmStat(
                    key=vm.key,
                    pid=vm.pid,
                    name=vm.name,
                    name_raw=vm.name_raw,
                    name_source=vm.name_source,
                    uuid=vm.uuid,
                    vmm=vm.vmm,
                    vcpu_count=vm.vcpu_count or len(vcpus),
                    vcpus=tuple(vcpus),
                    reasons=build.merge(accs),
                )
            )
        return tuple(out), over

    def _prune(self) -> None:
        now = time.monotonic()
        for pid in {t.pid for t in self._threads.values()}:
            if os.path.exists(f"{self.config.proc_root}/{pid}"):
                self._dead_since.pop(pid, None)
            elif now - self._dead_since.setdefault(pid, now) > DEAD_GRACE_S:
                for tid in [t.tid for t in self._threads.values() if t.pid == pid]:
                    self._threads.pop(tid).close()
                self._vms.pop(pid, None)
                self._dead_since.pop(pid, None)

    def snapshots(self, interval: float) -> Iterator[Snapshot]:
        if interval <= 0:
            raise ValueError("interval must be positive")
        deadline = time.monotonic()
        while not self._closed:
            deadline += interval
            time.sleep(max(0.0, deadline - time.monotonic()))
            yield self.snapshot()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for t in self._threads.values():
            t.close()
        self._threads.clear()

    def __enter__(self) -> PerfSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
