"""KVM's binary statistics of a real QEMU VM, read from outside through QMP.

QEMU (7.1+) reads its own stats fds in its own process when asked
`query-stats`; vprof asks over the VM's monitor socket and maps each vCPU to
its thread with `query-cpus-fast`.  The VM is stopped while both read, so
the figures hold still: vprof's (through the perf source's snapshot) must
equal the test's own raw query, vCPU by vCPU.  Over a window of running, the
growth of mmio_exits must equal the KVM_EXIT_MMIO userspace exits the perf
counters saw: the kernel's two counts of one thing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unavailable

from vprof.model import VmStat
from vprof.sources import qmp
from vprof.sources.kvmstats import HALT_HISTS
from vprof.sources.select import KvmStatsSource, open_source

pytestmark = [pytest.mark.live, pytest.mark.kvm]
STATS = ("exits", "halt_exits", "mmio_exits", "io_exits")


def _raw(path: str, command: str, **arguments: Any) -> Any:
    """The test's own QMP client: plain JSON lines on the socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        f = s.makefile("rw")
        json.loads(f.readline())
        for msg in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments}):
            f.write(json.dumps(msg) + "\n")
            f.flush()
            while "event" in (reply := json.loads(f.readline())):
                pass
        return reply["return"]


def _inside(path: str) -> dict[int, dict[str, int]]:
    """Per vCPU thread: what QEMU read from its own stats fds."""
    threads = {c["qom-path"]: c["thread-id"] for c in _raw(path, "query-cpus-fast")}
    out = {}
    for entry in _raw(path, "query-stats", target="vcpu", providers=[{"provider": "kvm"}]):
        values = {s["name"]: s["value"] for s in entry["stats"]}
        out[threads[entry["qom-path"]]] = {k: values[k] for k in STATS}
    return out


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        unavailable("qemu-system-x86_64 is not installed (deploy/setup.sh installs it)")
    sock = str(tmp_path / "qmp.sock")
    # No disk: SeaBIOS runs, finds nothing to boot and halts; -S holds the vCPUs
    # until `cont`, so the counters are open before the first instruction.
    argv = [str(binary), "-accel", "kvm", "-m", "64", "-smp", "2", "-display", "none"]
    argv += ["-nodefaults", "-S", "-name", "guest=kvmstats-qemu,debug-threads=on"]
    argv += ["-qmp", f"unix:{sock},server=on,wait=off"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not Path(sock).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield proc, sock
    finally:
        proc.terminate()
        proc.wait(20)


def _vm(src: KvmStatsSource, pid: int, vcpus: int) -> VmStat:
    deadline = time.monotonic() + 20
    while True:
        vm = next((v for v in src.snapshot().vms if v.pid == pid), None)
        if vm is not None and len(vm.vcpus) == vcpus:
            return vm
        assert time.monotonic() < deadline, f"QEMU pid {pid} never showed its vCPUs: {vm}"
        time.sleep(0.1)


def test_qmp_route_equals_qemus_own_read(qemu: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, sock = qemu
    assert qmp.socket_of(["-qmp", f"unix:{sock},server=on,wait=off"]) == sock
    src, _ = open_source("perf")
    with src:
        before = _vm(src, proc.pid, 2)
        assert before.kvm_stats_route == "qmp", before.kvm_stats_why
        _raw(sock, "cont")
        time.sleep(2)
        _raw(sock, "stop")
        after = _vm(src, proc.pid, 2)
        inside = _inside(sock)
        raw = _raw(sock, "query-stats", target="vcpu", providers=[{"provider": "kvm"}])
    assert after.kvm_stats_route == "qmp"
    assert set(inside) == {v.tid for v in after.vcpus}
    for v in after.vcpus:
        assert {k: v.kvm_stats[k] for k in STATS} == inside[v.tid], v.tid
    assert after.kvm_stats["exits"] == sum(s["exits"] for s in inside.values()) > 0
    assert after.kvm_stats["halt_exits"] == sum(s["halt_exits"] for s in inside.values())
    # The halt histograms come through QMP as lists: summed over the vCPUs, as QEMU read them.
    for name in HALT_HISTS:
        lists = [next(s["value"] for s in e["stats"] if s["name"] == name) for e in raw]
        assert list(after.kvm_hists[name]) == [sum(col) for col in zip(*lists, strict=True)], name
    mmio = [
        sum(r.count for r in vm.reasons if r.reason == "KVM_EXIT_MMIO") for vm in (before, after)
    ]
    grown = after.kvm_stats["mmio_exits"] - before.kvm_stats.get("mmio_exits", 0)
    assert grown == mmio[1] - mmio[0]
