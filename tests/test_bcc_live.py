"""vprof/bpf/_bcc.py against the kernel.

- Whole maps are read in chunks: every entry, once, whatever the chunk (the
  oracle: what the test itself wrote into the maps, from Python).
- A classic tracepoint program whose perf event vprof disabled still runs on
  every hit (the oracle: the micro-guest's own count), and perf's own
  counting of the same event beside it still sees every hit."""

from __future__ import annotations

import ctypes
import os
import re
import struct
import subprocess
import time

import pytest
from guestproc import start_guest
from pipeline_fixtures import ops

from vprof.bpf import _bcc

pytestmark = pytest.mark.live

N = 1000  # about four chunks of _Batch.CHUNK


@pytest.fixture(scope="module")
def bpf():  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF)")
    return _bcc.compile_text(
        "BPF_HASH(plain, u32, u64, 2048);\nBPF_PERCPU_HASH(percpu, u32, u64, 2048);\n",
        ("plain", "percpu"),
    )


def test_a_hash_of_several_chunks_is_read_whole(bpf) -> None:  # type: ignore[no-untyped-def]
    table = bpf[b"plain"]
    for i in range(N):
        table[table.Key(i)] = table.Leaf(i * 7 + 1)
    got = {
        int.from_bytes(k, "little"): int.from_bytes(v[0], "little")
        for k, v in _bcc.dump_table(bpf, "plain")
    }
    assert got == {i: i * 7 + 1 for i in range(N)}


def test_a_percpu_hash_gives_every_cpus_value(bpf) -> None:  # type: ignore[no-untyped-def]
    table = bpf[b"percpu"]
    ncpu = table.total_cpu
    for i in range(N):
        vals = (table.sLeaf * ncpu)(*[i * 10 + c for c in range(ncpu)])
        table[table.Key(i)] = vals
    rows = _bcc.dump_table(bpf, "percpu")
    assert len(rows) == N
    for k, v in rows:
        i = int.from_bytes(k, "little")
        assert [int.from_bytes(x, "little") for x in v] == [i * 10 + c for c in range(ncpu)]
        assert all(len(x) == ctypes.sizeof(table.sLeaf) for x in v)


def test_a_new_module_on_a_reused_map_fd_is_read_with_its_own_sizes() -> None:
    # Closing a module frees its map fds; the next module's maps get them
    # back, with other key and value sizes.
    small = _bcc.compile_text("BPF_HASH(t, u32, u64, 16);", ("t",))
    table = small[b"t"]
    table[table.Key(1)] = table.Leaf(7)
    one = ((1).to_bytes(4, "little"), ((7).to_bytes(8, "little"),))
    assert _bcc.dump_table(small, "t") == [one]
    fd = table.map_fd
    small.cleanup()
    big = _bcc.compile_text("struct v { u64 a[32]; };\nBPF_HASH(t, u64, struct v, 1024);", ("t",))
    try:
        table = big[b"t"]
        assert table.map_fd == fd  # the case under test: the same fd, another map
        for i in range(300):
            v = table.Leaf()
            v.a[31] = i * 3
            table[table.Key(i)] = v
        got = {
            int.from_bytes(k, "little"): int.from_bytes(v[0][31 * 8 :], "little")
            for k, v in _bcc.dump_table(big, "t")
        }
        assert got == {i: i * 3 for i in range(300)}
    finally:
        big.cleanup()


# Counts one thread's kvm_pio: other guests on the host make their own.
PIO_COUNTER = """
BPF_ARRAY(hits, u64, 1);
TRACEPOINT_PROBE(kvm, kvm_pio) {
    int k = 0;
    u64 *v = hits.lookup(&k);
    if (v && (u32)bpf_get_current_pid_tgid() == TID)
        __sync_fetch_and_add(v, 1);
    return 1;
}
"""


def _wait_for_counter(pid: int) -> None:
    """Until perf holds its perf event open (it counts from then on)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]":
                    return
            except OSError:
                continue
        time.sleep(0.02)
    raise AssertionError("perf stat never opened its counter")


@pytest.mark.kvm
def test_a_disabled_tracepoint_event_still_runs_its_program() -> None:
    n = 3000
    with start_guest("bcc-disabled", "pio", count=n, hold=True) as g:
        tid = g.ready["vcpus"][0]["tid"]
        bpf = _bcc.compile_text(PIO_COUNTER.replace("TID", str(tid)), ("hits",))
        try:
            (fd,) = bpf.tracepoint_fds.values()
            perf = subprocess.Popen(
                ["perf", "stat", "-x,", "-e", "kvm:kvm_pio", "-p", str(tid)],
                stderr=subprocess.PIPE,
                text=True,
            )
            # The vCPU on CPU 0, where bcc's perf event sat in the sample list.
            os.sched_setaffinity(tid, {0})
            _wait_for_counter(perf.pid)
            g.go()
            result = g.wait(60)
            perf.send_signal(2)
            perf_out = perf.communicate(timeout=30)[1]
            hits = bpf[b"hits"][bpf[b"hits"].Key(0)].value
            disabled_count = struct.unpack("Q", os.read(fd, 8))[0]
        finally:
            bpf.cleanup()
    # Every kvm_pio of the vCPU thread: the guest's own, plus its final DONE write.
    own = ops(result, "pio_out") + ops(result, "pio_in") + 1
    assert own == 2 * n + 1
    assert hits == own
    counted = re.search(r"^(\d+),+kvm:kvm_pio", perf_out, re.M)
    assert counted is not None, perf_out
    assert int(counted.group(1)) == own
    # The event itself, disabled, took no sample and counted nothing.
    assert disabled_count == 0
