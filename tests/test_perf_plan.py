"""The perf source's plan and arithmetic, against tracefs fixture trees (unit)."""

from __future__ import annotations

import re
from pathlib import Path

from vprof.model import Bucket, Ledger
from vprof.sources.perf import build
from vprof.sources.perf.counters import ThreadCounters
from vprof.sources.perf.plan import (
    DEFAULT_EXIT_BOUND,
    EXIT_REASONS,
    USERSPACE_REASONS,
    Counter,
    build_plan,
    fields,
)
from vprof.sources.perf.procstat import SchedFigures, read_sched

OLD = Path(__file__).parent / "fixtures" / "perf-tracefs" / "4.19-minimal"
PROBE = r"^(?:TRACEPOINT_PROBE|VPROF_RAW_PROBE)\((\w+),\s*(\w+)\)"  # classic and raw


def _events(tree: Path) -> set[str]:
    return {f"{d.parent.name}:{d.name}" for d in (tree / "events").glob("*/*") if d.is_dir()}


def bpf_kvm_events() -> set[str]:
    """Every KVM tracepoint the BPF families attach to (probes/*.bpf.c);
    kvm_entry only times exits, which counting mode cannot do."""
    found = set()
    for src in (Path(__file__).parent.parent / "probes").glob("*.bpf.c"):
        for sys_, name in re.findall(PROBE, src.read_text(), re.MULTILINE):
            if sys_ in ("kvm", "kvmmmu") and name != "kvm_entry":
                found.add(f"{sys_}:{name}")
    return found


def test_every_kvm_event_of_the_bpf_families_is_planned() -> None:
    plan = build_plan(str(Path(__file__).parent / "fixtures" / "tracefs" / "none"), None)
    assert set(plan.missing) == bpf_kvm_events()


def test_old_kernel_every_existing_event_is_opened() -> None:
    plan = build_plan(str(OLD), "vmx")
    present = _events(OLD)
    # Every event of the BPF families that this kernel has gets a counter ...
    assert {c.tracepoint for c in plan.counters} == bpf_kvm_events() & present
    # ... and what it lacks is named, not silently dropped.
    assert "kvmmmu:kvm_mmu_spte_requested" in plan.missing
    assert all(tp not in present for tp in plan.missing)
    # kvm_inj_virq carries `irq` there, not `vector`: counted whole, no filter on it.
    assert [c.tp_filter for c in plan.counters if c.event == "kvm_inj_virq"] == [""]
    # kvm_exit has no vcpu_id there; it is filtered by exit_reason only.
    exits = [c for c in plan.counters if c.event == "kvm_exit"]
    assert "vcpu_id" not in fields(str(OLD), "kvm", "kvm_exit")
    assert sum(c.total for c in exits) == 1
    assert [c.code for c in exits if not c.total] == list(EXIT_REASONS["vmx"][:DEFAULT_EXIT_BOUND])
    assert all(c.tp_filter == f"exit_reason=={c.code}" for c in exits if not c.total)


def test_filters_use_only_fields_the_format_has(tmp_path: Path) -> None:
    # A kernel whose kvm_pio lacks `rw`: one unfiltered counter, flagged unsplit.
    d = tmp_path / "events" / "kvm" / "kvm_pio"
    d.mkdir(parents=True)
    (d / "id").write_text("7\n")
    (d / "format").write_text(
        "format:\n\tfield:unsigned int port;\toffset:8;\tsize:4;\tsigned:0;\n"
    )
    plan = build_plan(str(tmp_path), None)
    assert [(c.event, c.tp_filter) for c in plan.counters] == [("kvm_pio", "")]
    assert plan.unsplit == ("kvm:kvm_pio",)
    assert "kvm:kvm_exit" in plan.missing and plan.exit_reasons_left_out == ()


def test_exit_bound_leaves_the_rest_counted() -> None:
    plan = build_plan(str(OLD), "svm", exit_bound=3)
    kept = [c.code for c in plan.counters if c.event == "kvm_exit" and not c.total]
    assert kept == list(EXIT_REASONS["svm"][:3])
    assert plan.exit_reasons_left_out == EXIT_REASONS["svm"][3:]


def _thread(counters: list[Counter], counts: list[int]) -> ThreadCounters:
    base = SchedFigures(on_cpu_ns=100, runqueue_ns=1_000, voluntary=5, involuntary=2)
    last = SchedFigures(on_cpu_ns=900, runqueue_ns=4_000, voluntary=9, involuntary=3)
    return ThreadCounters(
        pid=1, tid=2, counters=tuple(counters), leader=-1, fds=[], opened_ns=10_000,
        base=base, last=last, last_ns=20_000, counts=counts,
    )  # fmt: skip


def test_reasons_over_bound_and_userspace_other() -> None:
    c = [
        Counter("kvm", "kvm_exit", 1, total=True),
        Counter("kvm", "kvm_exit", 1, "exit_reason==30", code=30),
        Counter("kvm", "kvm_exit", 1, "exit_reason==48", code=48),
        Counter("kvm", "kvm_userspace_exit", 2, total=True),
        Counter("kvm", "kvm_userspace_exit", 2, "reason==2", code=2),
        Counter("kvm", "kvm_pio", 3, "rw==0", "in"),
        Counter("kvm", "kvm_pio", 3, "rw==1", "out"),
    ]
    t = _thread(c, [100, 30, 50, 12, 10, 4, 6])
    accs, over = build.thread_reasons(t, "vmx")
    stats = {r.reason: r for r in build.merge([accs])}
    assert over == 20  # 100 exits, 80 of them with a counter of their own
    assert stats[build.OVER_BOUND].count == 20
    assert stats[build.OVER_BOUND].bucket is Bucket.UNCLASSIFIED
    assert stats["IO_INSTRUCTION"].count == 30 and stats["EPT_VIOLATION"].count == 50
    assert stats["KVM_EXIT_IO"].count == 10 and stats["other"].count == 2
    assert stats["kvm_pio"].count == 10 and dict(stats["kvm_pio"].details) == {"in": 4, "out": 6}
    v = build.vcpu_stat(t, 0, accs)
    assert v.wall_ns == 10_000 and v.runqueue_wait_ns == 3_000
    assert dict(v.ledger) == {Ledger.RUNQUEUE: 3_000, Ledger.UNATTRIBUTED: 7_000}
    assert (v.preemptions, v.voluntary_switches) == (1, 4)
    assert sum(v.events.values()) == 20 + 30 + 50 + 10 + 2 + 10


def test_read_sched_parses_proc(tmp_path: Path) -> None:
    task = tmp_path / "10" / "task" / "11"
    task.mkdir(parents=True)
    (task / "schedstat").write_text("123 456 7\n")
    (task / "status").write_text(
        "Name:\tx\nvoluntary_ctxt_switches:\t8\nnonvoluntary_ctxt_switches:\t9\n"
    )
    assert read_sched(str(tmp_path), 10, 11) == SchedFigures(123, 456, 8, 9)
    assert read_sched(str(tmp_path), 10, 12) is None


def test_userspace_reasons_are_kvm_exit_codes() -> None:
    from vprof.taxonomy import userspace_exit

    names = {userspace_exit(code).name for code in USERSPACE_REASONS}
    assert {"KVM_EXIT_IO", "KVM_EXIT_MMIO", "KVM_EXIT_HLT"} <= names
    assert not any(n.startswith("unknown") for n in names)
