"""KVM stats decoding, QMP socket discovery, and every sink's "n/a" (unit).

The stats blob is encoded here from the uapi layout (include/uapi/linux/
kvm.h: struct kvm_stats_header, struct kvm_stats_desc), with its parts in an
order and at offsets the decoder must read from the header, not assume.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from dataclasses import replace

from prometheus_client import generate_latest
from test_prometheus import make_snapshot, make_vm, registry_for
from test_top_support import FakeSource, Load

from vprof.model import Snapshot, VcpuStat, VmStat
from vprof.sinks.top.cli import TopOptions, run_top
from vprof.sources import kvmstats, qmp
from vprof.sources.absent import PERF_ABSENT, PERF_LEDGER

NAME_SIZE = 48
# type (low 4 bits) | unit << 4 | base << 8: cumulative 0, instant 1, peak 2,
# linear hist 3; seconds 2 with exponent -9.
STATS = [
    ("halt_exits", 0, 0, 1, [17]),
    ("halt_wait_ns", 0 | 2 << 4, -9, 1, [123456]),
    ("pages_4k", 1, 0, 1, [512]),
    ("halt_wait_hist", 3 | 2 << 4, -9, 4, [1, 2, 3, 4]),
    ("mmio_exits", 0, 0, 1, [99]),
]


def encode(stats: list[tuple[str, int, int, int, list[int]]], ident: str) -> bytes:
    """id string, then data, then descriptors last: offsets from the header."""
    id_off = 64
    data_off = id_off + NAME_SIZE + 8
    data = b"".join(struct.pack(f"<{len(v)}Q", *v) for *_, v in stats)
    desc_off = data_off + len(data) + 16
    descs, offset = b"", 0
    for name, flags, exponent, size, values in stats:
        descs += struct.pack("<IhHII", flags, exponent, size, offset, 0)
        descs += name.encode().ljust(NAME_SIZE, b"\0")
        offset += 8 * len(values)
    header = struct.pack("<6I", 0, NAME_SIZE, len(stats), id_off, desc_off, data_off)
    blob = bytearray(desc_off + len(descs))
    blob[: len(header)] = header
    blob[id_off : id_off + len(ident)] = ident.encode()
    blob[data_off : data_off + len(data)] = data
    blob[desc_off:] = descs
    return bytes(blob)


def test_decode_reads_the_layout_from_the_header() -> None:
    got = kvmstats.decode(encode(STATS, "kvm-123/vcpu-0"))
    assert dict(got.cumulative) == {"halt_exits": 17, "halt_wait_ns": 123456, "mmio_exits": 99}
    assert dict(got.gauges) == {"pages_4k": 512}  # histograms are left out


def test_qmp_socket_of_command_lines() -> None:
    assert qmp.socket_of(["qemu", "-qmp", "unix:/run/q.sock,server=on,wait=off"]) == "/run/q.sock"
    libvirt = ["qemu", "-chardev", "socket,id=charmonitor,fd=30,server=on,wait=off"]
    monitor = ["-mon", "chardev=charmonitor,id=monitor,mode=control"]
    assert qmp.socket_of([*libvirt, *monitor]) is None  # libvirt passes the socket as an fd
    chardev = [
        "-chardev",
        "socket,id=mon0,path=/tmp/m.sock,server=on",
        "-mon",
        "chardev=mon0,mode=control",
    ]
    assert qmp.socket_of(["qemu", *chardev]) == "/tmp/m.sock"
    assert qmp.socket_of(["qemu", "-qmp", "tcp:localhost:4444"]) is None


def test_enrich_maps_vcpus_by_index_and_sums_the_vm() -> None:
    vm = make_vm(vcpus=2)
    per = {i: kvmstats.StatsValues({"halt_exits": 10 + i}, {"blocking": i}) for i in range(2)}
    stats = kvmstats.VmStats("pidfd", vm=kvmstats.StatsValues({"remote_tlb_flush": 3}), vcpus=per)
    got = kvmstats.enrich_vm(vm, stats, {v.tid: v.index for v in vm.vcpus if v.index is not None})
    assert [v.kvm_stats["halt_exits"] for v in got.vcpus] == [10, 11]
    assert dict(got.kvm_stats) == {"remote_tlb_flush": 3, "halt_exits": 21}
    assert got.kvm_stats_route == "pidfd"
    none = kvmstats.enrich_vm(vm, kvmstats.VmStats("", "no QMP socket"), {})
    assert (none.kvm_stats_route, none.kvm_stats_why, dict(none.kvm_stats)) == (
        "",
        "no QMP socket",
        {},
    )


def _perf_vm(vm: VmStat) -> VmStat:
    def only_measured(v: VcpuStat) -> VcpuStat:
        return replace(v, ledger={k: n for k, n in v.ledger.items() if k in PERF_LEDGER})

    return replace(vm, io=(), vcpus=tuple(only_measured(v) for v in vm.vcpus))


def _as_perf(snap: Snapshot) -> Snapshot:
    vms = tuple(_perf_vm(vm) for vm in snap.vms)
    return replace(snap, source="perf", absent=PERF_ABSENT, vms=vms, exit_timing=False)


def test_prometheus_omits_what_perf_lacks() -> None:
    bpf = make_snapshot(make_vm())
    perf = _as_perf(bpf)
    text = generate_latest(registry_for(perf, granularity="vcpu")).decode()
    assert 'vprof_source_info{source="perf"} 1.0' in text
    for series in ("vprof_vm_wakeups_total{", "vprof_vm_io_bytes_total{", 'category="in_kvm_run"'):
        assert series not in text, series
    assert 'category="runqueue"' in text and "vprof_perf_counters " in text
    bpf_text = generate_latest(registry_for(bpf)).decode()
    assert 'vprof_source_info{source="bpf"} 1.0' in bpf_text
    assert "vprof_vm_wakeups_total{" in bpf_text and "vprof_perf_counters" not in bpf_text


class PerfFake(FakeSource):
    def snapshots(self, interval: float) -> Iterator[Snapshot]:
        for snap in super().snapshots(interval):
            yield _as_perf(snap)


VMS = [("pio-vm", "1:1", Load(pio=5000, vmm=0.2, vcpus=2))]


def _top(fmt: str, vm: str | None = None) -> str:
    out = io.StringIO()
    opts = TopOptions(interval=0.5, count=2, fmt=fmt, vm=vm)
    run_top(PerfFake(VMS), opts, out, interactive=False, host_cpus=2)
    return out.getvalue()


def test_top_json_says_na_never_zero() -> None:
    recs = [json.loads(line) for line in _top("json", "pio-vm").splitlines()]
    for rec in recs:
        assert rec["host"]["source"] == "perf"
        assert set(rec["host"]["not_available"]) == set(PERF_ABSENT)
        assert rec["host"]["guest_cpu_pct"] == "n/a"
        row = rec["vms"][0]
        for field in ("guest_pct", "io_pct", "halted_pct", "context_switch_pct"):
            assert row[field] == "n/a", field
        assert isinstance(row["runqueue_pct"], float)
        assert row["io"] == "n/a"
        assert all(v["wakeups"] == "n/a" for v in row["vcpu_stats"])
        assert row["io_events"] > 0  # counts are measured


def test_top_batch_and_drill_say_not_available() -> None:
    plain = _top("plain")
    table = plain.split("\n\n")[0]
    assert "perf source: n/a = not measured" in table
    row = next(line for line in table.splitlines() if line.startswith("pio-vm"))
    # GUEST% PRIV% MEM% IO% CSW% HALT% are n/a; RUNQ% is measured (schedstat).
    assert row.split().count("n/a") == 6, row
    drill = _top("plain", "pio-vm")
    assert "not available with the perf source" in drill
    csv_rows = _top("csv").splitlines()
    assert "n/a" in csv_rows[1]
