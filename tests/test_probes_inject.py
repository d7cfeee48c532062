"""The kvm_exit/kvm_entry path, through the real BPF code, on any host.

kvm_exit never fires on kvm_pvm, so a tiny C program (built here with gcc)
replays exit/entry sequences with known isa, reasons, vCPU and timestamps.
uprobes on its vprof_inject_* functions call the same in-kernel functions
(vprof_on_exit/vprof_on_entry in probes/exits.bpf.c) as the tracepoints.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vprof.model import Bucket, Ledger, ReasonStat, VmStat
from vprof.pipeline.profiler import Profiler, ProfilerConfig
from vprof.taxonomy import classify_exit

pytestmark = pytest.mark.live

INJECTOR_C = r"""
#include <stdio.h>
#include <stdint.h>
#include <time.h>

/* noinline + used: the uprobes need real functions to attach to. */
__attribute__((noinline, used)) void vprof_inject_exit(uint32_t isa, uint32_t reason,
                                                      uint32_t vcpu, uint64_t ts)
{ __asm__ volatile("" ::: "memory"); }
__attribute__((noinline, used)) void vprof_inject_entry(uint32_t vcpu, uint64_t ts)
{ __asm__ volatile("" ::: "memory"); }
__attribute__((noinline, used)) void vprof_inject_userspace(uint64_t ts)
{ __asm__ volatile("" ::: "memory"); }
__attribute__((noinline, used)) void vprof_inject_mmio(uint64_t gpa)
{ __asm__ volatile("" ::: "memory"); }

/* stdin: "x ISA REASON VCPU DT", "e VCPU DT", "u DT", "m GPA";
 * DT in ns after start; "q" prints "done START" (CLOCK_MONOTONIC ns). */
int main(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t base = (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
    char op;
    unsigned a, b, c;
    unsigned long long dt;
    while (scanf(" %c", &op) == 1) {
        if (op == 'x' && scanf("%u %u %u %llu", &a, &b, &c, &dt) == 4)
            vprof_inject_exit(a, b, c, base + dt);
        else if (op == 'e' && scanf("%u %llu", &a, &dt) == 2)
            vprof_inject_entry(a, base + dt);
        else if (op == 'u' && scanf("%llu", &dt) == 1)
            vprof_inject_userspace(base + dt);
        else if (op == 'm' && scanf("%llu", &dt) == 1)
            vprof_inject_mmio(dt);
        else if (op == 'q') {
            printf("done %llu\n", (unsigned long long)base);
            fflush(stdout);
        }
    }
    return 0;
}
"""

VMX, SVM = 1, 2
# (isa, reason, handling ns); each exit is followed by an entry `handling` later
# and the next exit 1000 ns after that entry.
SEQUENCE = [
    (VMX, 30, 1500),  # IO_INSTRUCTION: slot 10 (1024 <= 1500 < 2048)
    (VMX, 30, 1500),
    (VMX, 48, 100),  # EPT_VIOLATION: slot 6
    (VMX, 0x80000021, 3000),  # INVALID_STATE with FAILED_VMENTRY: slot 11
    (VMX, 9999, 1),  # unknown code: slot 0
    (VMX, 12, 5_000_000),  # HLT, over the 1 ms slow threshold: slot 22
    (SVM, 0x400, 70_000),  # NPF: slot 16
    (SVM, 0x7B, 0),  # IOIO: slot 0
    (SVM, 0x12345, 9),  # unknown SVM code: slot 3
]
GAP = 1000


def _script(seq: list[tuple[int, int, int]]) -> tuple[str, int]:
    lines, t = [], 0
    for isa, reason, handling in seq:
        lines.append(f"x {isa} {reason} 3 {t}")
        lines.append(f"e 3 {t + handling}")
        t += handling + GAP
    return "\n".join(lines) + "\nq\n", t


@pytest.fixture(scope="module")
def injector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("injector")
    (d / "inject.c").write_text(INJECTOR_C)
    subprocess.run(["gcc", "-O0", "-o", str(d / "inject"), str(d / "inject.c")], check=True)
    return d / "inject"


@pytest.fixture(scope="module")
def prof(injector: Path) -> Iterator[Profiler]:
    config = ProfilerConfig(
        families=frozenset({"exits", "io"}),
        injector=str(injector),
        slow_exit_threshold_ns=1_000_000,
    )
    with Profiler(config) as p:
        yield p


def _replay(prof: Profiler, injector: Path, script: str, clock: list[int] | None = None) -> VmStat:
    """Run `script` through the injector; vprof's view of it while it still lives.

    `clock` gets three CLOCK_MONOTONIC stamps: the injector's start (its timestamps'
    base), and this process's reads just before and just after the snapshot.
    """
    proc = subprocess.Popen(
        [str(injector)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(script)
        proc.stdin.flush()
        word, _, base = proc.stdout.readline().partition(" ")
        assert word == "done", word
        if clock is not None:
            time.sleep(0.05)  # real time past the script's last stamp, for the ledger to run on
        before = time.monotonic_ns()
        snap = prof.snapshot()  # while it lives: its thread is still in "guest"
        after = time.monotonic_ns()
    finally:
        proc.communicate(timeout=10)
    if clock is not None:
        clock.extend((int(base), before, after))
    vm = snap.vm(f"pid-{proc.pid}") or next(v for v in snap.vms if v.pid == proc.pid)
    return vm


def _name(isa: int, code: int) -> str:
    c = classify_exit("vmx" if isa == VMX else "svm", code)
    return c.name + "".join(f"+{f}" for f in c.flags)


def _by_reason(vm: VmStat) -> dict[tuple[str, str], ReasonStat]:
    return {(r.isa, r.reason): r for r in vm.reasons}


def test_counts_times_and_histograms(prof: Profiler, injector: Path) -> None:
    script, _ = _script(SEQUENCE)
    vm = _replay(prof, injector, script)
    got = _by_reason(vm)
    expect: dict[tuple[str, str], list[int]] = {}
    for isa, code, handling in SEQUENCE:
        expect.setdefault(("vmx" if isa == VMX else "svm", _name(isa, code)), []).append(handling)
    assert set(got) == set(expect)
    for key, times in expect.items():
        r = got[key]
        assert r.count == len(times), key
        assert r.handling_ns == sum(times), key
        hist = [0] * len(r.hist or ())
        for t in times:
            hist[max(t, 1).bit_length() - 1] += 1
        assert list(r.hist or ()) == hist, key


def test_buckets_flags_and_unknown_codes(prof: Profiler, injector: Path) -> None:
    vm = _replay(prof, injector, _script(SEQUENCE)[0])
    got = _by_reason(vm)
    assert got[("vmx", _name(VMX, 30))].bucket is Bucket.IO
    assert got[("vmx", _name(VMX, 48))].bucket is Bucket.MEMORY
    assert got[("vmx", _name(VMX, 12))].bucket is Bucket.CONTEXT_SWITCH
    assert got[("svm", _name(SVM, 0x400))].bucket is Bucket.MEMORY
    flagged = got[("vmx", _name(VMX, 0x80000021))]
    assert flagged.reason.endswith("+FAILED_VMENTRY")
    assert got[("vmx", "unknown:vmx:9999")].bucket is Bucket.UNCLASSIFIED
    assert any(r.reason.startswith("unknown:svm:") for r in vm.reasons)


def test_slow_exits_through_the_ring_buffer(prof: Profiler, injector: Path) -> None:
    vm = _replay(prof, injector, _script(SEQUENCE)[0])
    slow = [s for s in vm.slow_exits if s.duration_ns >= 1_000_000]
    assert [(s.reason, s.duration_ns, s.vcpu, s.bucket) for s in slow] == [
        (_name(VMX, 12), 5_000_000, 3, Bucket.CONTEXT_SWITCH)
    ]


def test_ledger_splits_guest_and_kernel_time(prof: Profiler, injector: Path) -> None:
    script, span = _script(SEQUENCE)
    clock: list[int] = []
    vm = _replay(prof, injector, script, clock)
    (v,) = vm.vcpus
    assert v.index == 3  # vcpu_id from the exit
    kernel = {b: 0 for b in Bucket}
    for isa, code, handling in SEQUENCE:
        kernel[classify_exit("vmx" if isa == VMX else "svm", code).bucket] += handling
    for b, ns in kernel.items():
        cat = f"kernel_{b.value}"
        assert v.ledger[cat] == ns, cat
    # Guest time: the gaps between entries and exits, plus the time since the
    # last entry (the thread is "in the guest" until it exits).
    assert v.ledger[Ledger.GUEST] >= GAP * (len(SEQUENCE) - 1)
    # The ledger runs from the first exit (at the injector's start) to the moment the
    # snapshot closes it, which the clock brackets; the script's stamps end by `span`.
    start, before, after = clock
    assert before - start <= sum(v.ledger.values()) <= max(after, start + span) - start, clock


def test_exit_closed_by_return_to_userspace(prof: Profiler, injector: Path) -> None:
    vm = _replay(prof, injector, "x 1 30 0 0\nu 7000\nq\n")
    r = _by_reason(vm)[("vmx", _name(VMX, 30))]
    assert (r.count, r.handling_ns) == (1, 7000)
    assert r.hist is not None and r.hist[12] == 1  # 4096 <= 7000 < 8192


def test_stage2_fault_that_continues_as_mmio_is_io(prof: Profiler, injector: Path) -> None:
    """SVM NPF / VMX EPT_VIOLATION followed by kvm_mmio before the entry: I/O."""
    script = "x 2 1024 0 0\nm 3489660928\ne 0 500\n"  # NPF, MMIO write, entry
    script += "x 2 1024 0 1500\ne 0 1600\n"  # NPF, plain memory
    script += "x 1 48 0 2600\nm 4096\ne 0 2700\nq\n"  # EPT_VIOLATION as MMIO
    vm = _replay(prof, injector, script)
    got = {
        (r.isa, r.reason): (r.bucket, r.count, r.handling_ns)
        for r in vm.reasons
        if r.isa != "event"
    }
    npf, ept = _name(SVM, 0x400), _name(VMX, 48)
    assert got[("svm", npf + "+MMIO")] == (Bucket.IO, 1, 500)
    assert got[("svm", npf)] == (Bucket.MEMORY, 1, 100)
    assert got[("vmx", ept + "+MMIO")] == (Bucket.IO, 1, 100)
    mmio = {(s.kind, s.direction, s.address): s.count for s in vm.io}
    assert mmio == {("mmio", "write", 0xD0000000): 1, ("mmio", "write", 4096): 1}
