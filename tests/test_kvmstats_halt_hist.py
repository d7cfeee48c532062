"""KVM's halt histograms, decoded and exported as vprof_vm_kvm_halt_seconds.

Oracles: raw durations bucketed by hand with the kernel's rule (fls64 of the
value, kvm_stats_log_hist_update), the descriptors of a recorded vCPU stats
file, and, live, what the micro-guest reads of its own statistics inside its
process (pidfd_getfd of its held stats fds reads them from outside).  The
exposition is checked by promtool.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import unavailable
from guestproc import start_guest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from vprof.guest.stats import parse_descriptors
from vprof.model import Snapshot, VmStat, diff
from vprof.sinks.kvmstats import HALT_BOUNDS_LOG2, halt_buckets
from vprof.sinks.prometheus import ExportOptions, snapshot_families
from vprof.sources.kvmstats import HALT_HISTS, KvmStatsReader, decode, enrich_vm

FIXTURE = Path(__file__).parent / "fixtures" / "guest" / "kvm_stats_vcpu.bin"


def _kernel_hist(durations: list[int], size: int = 32) -> tuple[int, ...]:
    out = [0] * size
    for d in durations:
        out[min(d.bit_length(), size - 1)] += 1  # fls64(d) == d.bit_length()
    return tuple(out)


def _vm(hists: dict[str, tuple[int, ...]], stats: dict[str, int]) -> VmStat:
    return VmStat(
        key="1:1",
        pid=1,
        name="h",
        name_raw="h",
        name_source="test",
        uuid="",
        vmm="qemu",
        vcpu_count=1,
        kvm_stats=stats,
        kvm_hists=hists,
        kvm_stats_route="pidfd",
    )


def _snap(vm: VmStat) -> Snapshot:
    return Snapshot(
        timestamp=0.0, monotonic_ns=1, interval_ns=1, backend="vmx", exit_timing=False, vms=(vm,)
    )


def _halt(snap: Snapshot) -> HistogramMetricFamily:
    (fam,) = (
        f for f in snapshot_families(snap, ExportOptions()) if f.name == "vprof_vm_kvm_halt_seconds"
    )
    assert isinstance(fam, HistogramMetricFamily)
    return fam


@pytest.mark.unit
def test_buckets_count_the_durations_below_each_bound() -> None:
    rng = random.Random(7)
    durations = [int(2 ** rng.uniform(0, 34)) for _ in range(5000)] + [0, 1, 1024, 2**30]
    got = dict(halt_buckets(_kernel_hist(durations)))
    by_bound = {float(le): n for le, n in got.items() if le != "+Inf"}
    assert sorted(by_bound) == [2**k / 1e9 for k in HALT_BOUNDS_LOG2]
    for k in HALT_BOUNDS_LOG2:
        assert by_bound[2**k / 1e9] == sum(1 for d in durations if d < 2**k), k
    assert got["+Inf"] == len(durations)


@pytest.mark.unit
def test_decode_keeps_the_halt_histograms_as_the_descriptors_lay_them_out() -> None:
    blob = FIXTURE.read_bytes()
    _, descs = parse_descriptors(blob)
    want = {d.name: d.size for d in descs if d.name in HALT_HISTS}
    values = decode(blob)
    assert {k: len(v) for k, v in values.hists.items()} == want and want
    assert not set(values.hists) & set(values.cumulative)  # not also a counter


@pytest.mark.unit
def test_export_has_a_sum_only_where_kvm_gives_one_and_diff_subtracts() -> None:
    before = _vm({"halt_wait_hist": _kernel_hist([100, 5000])}, {"halt_wait_ns": 5100})
    after = _vm({"halt_wait_hist": _kernel_hist([100, 5000, 70_000])}, {"halt_wait_ns": 75_100})
    fam = _halt(_snap(after))
    s = {(x.name, x.labels.get("le")): x.value for x in fam.samples if x.labels["phase"] == "wait"}
    assert s[("vprof_vm_kvm_halt_seconds_sum", None)] == pytest.approx(75_100 / 1e9)
    assert s[("vprof_vm_kvm_halt_seconds_count", None)] == 3
    delta = diff(_snap(before), _snap(after)).vms[0]
    assert delta.kvm_hists["halt_wait_hist"] == _kernel_hist([70_000])
    no_sum = _halt(_snap(_vm({"halt_poll_fail_hist": _kernel_hist([300])}, {})))
    assert {x.name for x in no_sum.samples} == {"vprof_vm_kvm_halt_seconds_bucket"}


class _Families(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self):  # type: ignore[no-untyped-def]
        yield from snapshot_families(self.snap, ExportOptions())


@pytest.mark.live
@pytest.mark.kvm
def test_guest_halt_histograms_read_from_outside_equal_its_own() -> None:
    reader = KvmStatsReader()
    with start_guest(
        "hh-guest", "hlt", vcpus=2, count=200, stats=True, hold=True, keep_stats_fds=True
    ) as g:
        assert reader.read(g.pid).route == "pidfd"  # duplicated before the first halt
        g.go()
        result = g.wait(60)
    try:
        stats = reader.read(g.pid)  # the duplicated fds outlive the guest: its final figures
    finally:
        reader.close()
    index_of = {int(v["tid"]): int(v["index"]) for v in g.ready["vcpus"]}
    vm = enrich_vm(_vm({}, {}), stats, index_of)
    inside = result["kvm_stats"]["vcpus"]
    for name in HALT_HISTS:
        own = [sum(col) for col in zip(*(v[name] for v in inside), strict=True)]
        assert list(vm.kvm_hists[name]) == own, name
    assert sum(vm.kvm_hists["halt_wait_hist"]) > 0  # the guest did block in its halts
    body = generate_latest(_registry(_snap(vm)))
    if shutil.which("promtool") is None:
        unavailable("promtool is not installed (run `make setup`)")
    # promtool lints the halt family clean, and the whole scrape of a VM with
    # KVM's statistics too (it once named a gauge vprof_vm_kvm_gauge: "metric
    # name should not include type 'gauge'").
    ours = b"".join(
        line + b"\n" for line in body.splitlines() if b"vprof_vm_kvm_halt_seconds" in line
    )
    check = subprocess.run(["promtool", "check", "metrics"], input=ours, capture_output=True)
    assert check.returncode == 0 and not check.stdout + check.stderr, check.stderr
    whole = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert whole.returncode == 0 and not whole.stdout + whole.stderr, whole.stdout
    assert vm.kvm_gauges and b"vprof_vm_kvm_stat_value{" in body  # the gauges were in it
    scraped = {
        (s.labels["phase"], s.labels["le"]): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
        if s.name == "vprof_vm_kvm_halt_seconds_bucket"
    }
    for phase, name in (("poll_success", "halt_poll_success_hist"), ("wait", "halt_wait_hist")):
        assert scraped[(phase, "+Inf")] == sum(sum(v[name]) for v in inside)


def _registry(snap: Snapshot) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(_Families(snap))
    return reg
