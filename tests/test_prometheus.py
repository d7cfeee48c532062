"""The Prometheus collector against snapshots built here (no root, no BPF)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vprof import model
from vprof.model import Bucket, IoStat, ProbeStatus, ProgStat, ReasonStat, Snapshot, VcpuStat
from vprof.sinks import catalogue
from vprof.sinks.prometheus import ExportOptions, ExportState, SnapshotCollector, top_k

NS = 1_000_000_000


def _hist(*slots: tuple[int, int]) -> tuple[int, ...]:
    h = [0] * model.HIST_SLOTS
    for slot, n in slots:
        h[slot] = n
    return tuple(h)


def make_vm(
    name: str = "web-1", key: str = "100:5", pid: int = 100, vcpus: int = 2
) -> model.VmStat:
    cpus = tuple(
        VcpuStat(
            tid=pid + 1 + i,
            index=i,
            wall_ns=2 * NS,
            ledger={"in_kvm_run": NS, "vmm_userspace": NS // 2, "runqueue": NS // 2},
            events={"io": 30 + i, "privileged": 5},
            runqueue_wait_ns=NS // 2,
            preemptions=3,
            voluntary_switches=7,
            wakeups=2,
        )
        for i in range(vcpus)
    )
    reasons = (
        ReasonStat("event", "kvm_pio", Bucket.IO, 61, 61_000, _hist((10, 60), (20, 1))),
        ReasonStat("event", "kvm_cpuid", Bucket.PRIVILEGED, 10, 5_000, _hist((12, 10))),
    )
    io = (
        IoStat("pio", "out", 0x3F8, 1, 40),
        IoStat("pio", "in", 0x3F8, 1, 21),
        IoStat("mmio", "write", 0xFEB00000, 4, 3),
    )
    return model.VmStat(
        key, pid, name, name, "qemu -name", "uuid-" + name, "qemu", vcpus, cpus, reasons, io
    )


def make_snapshot(*vms: model.VmStat, exit_timing: bool = False, **kw: object) -> Snapshot:
    fields: dict[str, object] = {
        "probes": (
            ProbeStatus("io", True, "", ("kvm:kvm_pio",)),
            ProbeStatus("exits", False, "kvm_exit never fires on kvm_pvm"),
        ),
        "events_lost": 4,
        "map_overflows": {"io_counts": 2},
        "decode_errors": 1,
        "aggregation_seconds": 0.003,
        "unreadable_proc_entries": 6,
    }
    fields.update(kw)
    return Snapshot(1_700_000_000.0, 5 * NS, 2 * NS, "test", exit_timing, vms, **fields)  # type: ignore[arg-type]


def registry_for(snap: Snapshot | None, **opts: object) -> CollectorRegistry:
    state = ExportState(snapshot=snap, options=ExportOptions(**opts), last_success=True)  # type: ignore[arg-type]
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: state))
    return reg


def test_vm_counters_follow_the_snapshot() -> None:
    reg = registry_for(make_snapshot(make_vm()))
    v = reg.get_sample_value
    assert v("vprof_vm_events_total", {"vm": "web-1", "bucket": "io"}) == 61
    assert v("vprof_vm_events_total", {"vm": "web-1", "bucket": "memory"}) == 0
    assert (
        v(
            "vprof_vm_time_seconds_total",
            {"vm": "web-1", "category": "vmm_userspace", "bucket": "io"},
        )
        == 1.0
    )
    assert (
        v("vprof_vm_time_seconds_total", {"vm": "web-1", "category": "halted", "bucket": "none"})
        == 0
    )
    assert v("vprof_vm_wall_seconds_total", {"vm": "web-1"}) == 4.0
    assert v("vprof_vm_io_accesses_total", {"vm": "web-1", "kind": "pio", "direction": "out"}) == 40
    assert v("vprof_vm_io_bytes_total", {"vm": "web-1", "kind": "mmio", "direction": "write"}) == 12
    labels = {"vm": "web-1", "kind": "pio", "direction": "in", "address": "0x3f8"}
    assert v("vprof_vm_io_address_accesses_total", labels) == 21
    assert v("vprof_vm_runqueue_wait_seconds_total", {"vm": "web-1"}) == 1.0
    assert v("vprof_vm_preemptions_total", {"vm": "web-1"}) == 6
    assert v("vprof_vm_wakeups_total", {"vm": "web-1"}) == 4
    info = {"vm": "web-1", "uuid": "uuid-web-1", "vmm": "qemu", "vcpus": "2", "pid": "100"}
    assert v("vprof_vm_info", info) == 1


def test_self_metrics() -> None:
    prog = ProgStat("vprof_pio", 2_500_000, 1000)
    reg = registry_for(make_snapshot(make_vm(), progs=(prog,)))
    v = reg.get_sample_value
    assert v("vprof_probe_attached", {"family": "io", "reason": ""}) == 1
    assert (
        v("vprof_probe_attached", {"family": "exits", "reason": "kvm_exit never fires on kvm_pvm"})
        == 0
    )
    assert v("vprof_events_lost_total") == 4
    assert v("vprof_map_overflows_total", {"map": "io_counts"}) == 2
    assert v("vprof_decode_errors_total") == 1
    assert v("vprof_bpf_prog_run_seconds_total", {"prog": "vprof_pio"}) == 0.0025
    assert v("vprof_bpf_prog_runs_total", {"prog": "vprof_pio"}) == 1000
    assert v("vprof_interval_seconds") == 2.0
    assert v("vprof_vms_tracked") == 1
    assert v("vprof_proc_unreadable_entries") == 6
    assert v("vprof_last_snapshot_success") == 1
    assert v("vprof_host_info", {"backend": "test", "exit_timing": "false"}) == 1


def test_no_bpf_stats_families_without_bpf_stats() -> None:
    text = generate_latest(registry_for(make_snapshot(make_vm()))).decode()
    assert "vprof_bpf_prog" not in text


def test_before_the_first_snapshot_only_daemon_metrics() -> None:
    names = {f.name for f in registry_for(None).collect()}
    assert names == {
        "vprof_build",
        "vprof_last_snapshot_success",
        "vprof_snapshot_failures",
        "vprof_config_reloads",
    }


def test_vanished_vm_leaves_no_series() -> None:
    snap = make_snapshot(make_vm("a", "1:1", 1), make_vm("b", "2:2", 2))
    state = {"s": ExportState(snapshot=snap)}
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: state["s"]))
    assert reg.get_sample_value("vprof_vm_events_total", {"vm": "b", "bucket": "io"}) == 61
    state["s"] = ExportState(snapshot=make_snapshot(make_vm("a", "1:1", 1)))
    assert reg.get_sample_value("vprof_vm_events_total", {"vm": "b", "bucket": "io"}) is None
    assert 'vm="b"' not in generate_latest(reg).decode()


def test_histograms_only_with_exit_timing_and_in_seconds() -> None:
    without = registry_for(make_snapshot(make_vm()))
    assert (
        without.get_sample_value(
            "vprof_vm_exit_handling_seconds_count", {"vm": "web-1", "bucket": "io"}
        )
        is None
    )
    reg = registry_for(make_snapshot(make_vm(), exit_timing=True))
    v = reg.get_sample_value
    base = {"vm": "web-1", "bucket": "io"}
    assert v("vprof_vm_exit_handling_seconds_count", base) == 61
    assert v("vprof_vm_exit_handling_seconds_sum", base) == 61_000 / NS
    # slot 10 is [1024, 2048) ns: below 2**12 ns = 4.096e-06 s, above 2**10 ns.
    assert v("vprof_vm_exit_handling_seconds_bucket", {**base, "le": "1.024e-06"}) == 0
    assert v("vprof_vm_exit_handling_seconds_bucket", {**base, "le": "4.096e-06"}) == 60
    assert v("vprof_vm_exit_handling_seconds_bucket", {**base, "le": "+Inf"}) == 61
    priv = {"vm": "web-1", "bucket": "privileged", "le": "1.6384e-05"}
    assert v("vprof_vm_exit_handling_seconds_bucket", priv) == 10


def _reason_vm(n: int) -> model.VmStat:
    reasons = tuple(
        ReasonStat("vmx", f"R{i}", Bucket.PRIVILEGED if i % 2 else Bucket.MEMORY, 100 - i)
        for i in range(n)
    )
    io = tuple(IoStat("pio", "out", 0x100 + i, 1, 50 - i) for i in range(n))
    return model.VmStat("9:9", 9, "vm9", "vm9", "t", "", "qemu", 1, (), reasons, io)


def test_reasons_capped_at_top_k_with_the_rest_in_other() -> None:
    reg = registry_for(make_snapshot(_reason_vm(10)), top_k=3)
    series = [
        s
        for f in reg.collect()
        if f.name == "vprof_vm_reason_events"
        for s in f.samples
        if s.name.endswith("_total")
    ]
    kept = {s.labels["reason"] for s in series}
    assert kept == {"R0", "R1", "R2", "other"}
    other = {s.labels["bucket"]: s.value for s in series if s.labels["reason"] == "other"}
    # R3..R9: odd i privileged (97+95+93+91), even i memory (96+94+92).
    assert other == {"privileged": 376, "memory": 282}
    assert sum(s.value for s in series) == sum(100 - i for i in range(10))
    addr = reg.get_sample_value(
        "vprof_vm_io_address_accesses_total",
        {"vm": "vm9", "kind": "pio", "direction": "out", "address": "other"},
    )
    assert addr == sum(50 - i for i in range(3, 10))


def test_full_granularity_removes_the_cap() -> None:
    reg = registry_for(make_snapshot(_reason_vm(10)), granularity="full", top_k=3)
    labels = {"vm": "vm9", "bucket": "memory", "isa": "vmx", "reason": "R8"}
    assert reg.get_sample_value("vprof_vm_reason_events_total", labels) == 92
    assert (
        reg.get_sample_value(
            "vprof_vm_reason_events_total", {**labels, "reason": "other", "isa": "other"}
        )
        is None
    )


def test_top_k_keeps_ties_deterministic() -> None:
    counts = {("a",): 5, ("b",): 5, ("c",): 5}
    assert top_k(counts, 2, lambda k: ()) == [(("a",), 5), (("b",), 5), (("other",), 5)]
    assert top_k(counts, None, lambda k: ()) == sorted(counts.items())


def test_per_vcpu_families_are_opt_in() -> None:
    default = registry_for(make_snapshot(make_vm()))
    assert (
        default.get_sample_value("vprof_vcpu_preemptions_total", {"vm": "web-1", "vcpu": "0"})
        is None
    )
    reg = registry_for(make_snapshot(make_vm()), granularity="vcpu")
    v = reg.get_sample_value
    assert v("vprof_vcpu_preemptions_total", {"vm": "web-1", "vcpu": "1"}) == 3
    assert v("vprof_vcpu_events_total", {"vm": "web-1", "vcpu": "1", "bucket": "io"}) == 31
    labels = {"vm": "web-1", "vcpu": "0", "category": "runqueue", "bucket": "context_switch"}
    assert v("vprof_vcpu_time_seconds_total", labels) == 0.5


def test_unmapped_threads_sum_into_one_vcpu_label() -> None:
    threads = tuple(VcpuStat(tid=t, index=None, wall_ns=NS, preemptions=1) for t in (7, 8))
    vm = model.VmStat("5:5", 5, "x", "x", "t", "", "qemu", 2, threads)
    reg = registry_for(make_snapshot(vm), granularity="vcpu")
    assert (
        reg.get_sample_value("vprof_vcpu_preemptions_total", {"vm": "x", "vcpu": "unmapped"}) == 2
    )


def test_same_name_vms_stay_distinct() -> None:
    reg = registry_for(make_snapshot(make_vm("dup", "1:1", 1), make_vm("dup", "2:2", 2)))
    assert reg.get_sample_value("vprof_vm_preemptions_total", {"vm": "dup"}) == 6
    assert reg.get_sample_value("vprof_vm_preemptions_total", {"vm": "dup~2"}) == 6


def test_a_vm_named_like_a_renamed_duplicate_cannot_merge_series() -> None:
    # A VM owner picks "dup~2" before two VMs named "dup" are listed: the second
    # "dup" must not take the same label value (duplicate series break a scrape).
    vms = (make_vm("dup~2", "9:9", 9), make_vm("dup", "1:1", 1), make_vm("dup", "2:2", 2))
    text = generate_latest(registry_for(make_snapshot(*vms))).decode()
    wall = [s for f in text_string_to_metric_families(text) for s in f.samples]
    wall = [s.labels["vm"] for s in wall if s.name == "vprof_vm_wall_seconds_total"]
    assert len(wall) == 3 and len(set(wall)) == 3, wall


def test_hostile_names_are_safe_label_values() -> None:
    raw = 'evil"}\n# TYPE x counter\nx 1'
    from vprof.sanitize import display

    vm = make_vm(display(raw), "3:3", 3)
    text = generate_latest(registry_for(make_snapshot(vm))).decode()
    parsed = list(text_string_to_metric_families(text))  # would raise on broken exposition
    assert "x" not in {f.name for f in parsed}


def test_every_emitted_family_is_catalogued() -> None:
    snap = make_snapshot(make_vm(), _reason_vm(8), exit_timing=True, progs=(ProgStat("p", 1, 1),))
    reg = registry_for(snap, granularity="vcpu")
    text = generate_latest(reg).decode()
    emitted = {f.name: f for f in text_string_to_metric_families(text)}
    for name, fam in emitted.items():
        m = catalogue.BY_NAME.get(name) or catalogue.BY_FAMILY.get(name)
        assert m is not None, f"{name} is emitted but not in vprof/sinks/catalogue.py"
        # The text format has no info type: info families are gauges named *_info.
        assert fam.type == ("gauge" if m.type == "info" else m.type), name
        assert fam.documentation == m.help
        for s in fam.samples:
            assert set(s.labels) - {"le"} == set(m.labels), s
    # And every family but the last-success timestamp and the perf source's
    # own appears with this (BPF) snapshot.
    expected = {
        m.name if m.type == "info" else m.family
        for m in catalogue.METRICS
        if m.name != "vprof_last_snapshot_timestamp_seconds" and m.detail != catalogue.PERF
    }
    assert expected == set(emitted)
