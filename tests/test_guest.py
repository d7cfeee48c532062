"""Unit tests of the micro-guest's pure parts: encodings, layout, arguments, stats."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from vprof.guest import layout as L
from vprof.guest import workloads as W
from vprof.guest.args import (
    ArgError,
    GuestArgs,
    host_hypercall_isa,
    hypercall_isa,
    parse_runner_argv,
    runner_argv,
    validate,
)
from vprof.guest.asm import Asm
from vprof.guest.report import ready_text, result_event, result_text, vcpu_entry
from vprof.guest.stats import parse_descriptors, parse_stats

# --- assembler ----------------------------------------------------------------


def test_jump_displacements_are_relative_to_the_next_instruction() -> None:
    a = Asm(0x1000)
    a.label("top")
    a.op(b"\x90", "nop")
    a.jmp("top")  # at 0x1001, ends at 0x1006: rel = 0x1000 - 0x1006
    a.jcc("ne", "end")  # at 0x1006, ends at 0x100c: rel = 0
    a.label("end")
    code = a.assemble()
    assert code[1:6] == b"\xe9" + struct.pack("<i", -6)
    assert code[6:12] == b"\x0f\x85" + struct.pack("<i", 0)


def test_assembler_rejects_bad_labels() -> None:
    a = Asm(0)
    a.label("x")
    with pytest.raises(ValueError, match="twice"):
        a.label("x")
    a.jmp("nowhere")
    with pytest.raises(ValueError, match="undefined"):
        a.assemble()


# --- operation encodings ------------------------------------------------------

ENCODINGS = {
    W.body_pio: "66 ba 50 56 ee ec",
    W.body_pio_kernel: "66 ba 60 56 ee e4 a1",
    W.body_mmio: "bf 00 00 00 d0 89 07 8b 07",
    W.body_cpuid: "b8 00 00 00 40 31 c9 0f a2",
    W.body_msr: "b9 a0 01 00 00 0f 32 0f 30",
    W.body_hlt: "fb f4 fa",
    W.body_pause: "f3 90",
    W.body_done: "66 ba 01 56 ee",
}


@pytest.mark.parametrize("body", list(ENCODINGS), ids=lambda b: b.__name__)
def test_operation_bytes(body: Callable[[Asm], None]) -> None:
    a = Asm(0)
    body(a)
    assert a.assemble() == bytes.fromhex(ENCODINGS[body])


def _instructions(listing: str) -> list[tuple[int, bytes, str]]:
    out = []
    for line in listing.splitlines():
        if line.endswith(":"):
            continue
        addr, rest = line.split(None, 1)
        hexpart, text = rest[:32], rest[33:]
        out.append((int(addr, 16), bytes.fromhex(hexpart), text))
    return out


@pytest.mark.parametrize("mode", W.MODES)
@pytest.mark.parametrize("workload", W.WORKLOADS)
def test_programs_are_well_formed(workload: str, mode: str) -> None:
    prog = W.build_program(workload, mode)
    assert prog.entry == L.CODE_ADDR and len(prog.code) <= L.CODE_MAX
    insns = _instructions(prog.listing)
    starts = {addr for addr, _, _ in insns}
    assert sum(len(b) for _, b, _ in insns) == len(prog.code)
    for addr, raw, text in insns:
        assert prog.code[addr - L.CODE_ADDR : addr - L.CODE_ADDR + len(raw)] == raw
        if text.startswith("j"):  # every jump lands on an instruction
            rel = struct.unpack("<i", raw[-4:])[0]
            assert addr + len(raw) + rel in starts, text
    assert set(range(32)) | {W.TIMER_VECTOR, W.SPURIOUS_VECTOR} <= set(prog.vectors)
    assert prog.vectors[13] == prog.gate_entry


@pytest.mark.parametrize("workload", W.WORKLOADS)
def test_user_mode_loop_has_no_privileged_instruction(workload: str) -> None:
    prog = W.build_program(workload, "user")
    loop = [text for addr, _, text in _instructions(prog.listing) if addr < prog.gate_entry]
    for text in loop:
        assert not text.startswith(("out", "in ", "rdmsr", "wrmsr", "hlt", "sti")), text
    assert any(t.startswith("cli") for t in loop)  # the gate into CPL0


def test_ops_by_kind() -> None:
    assert W.ops_by_kind("pio") == {"pio_out": 1, "pio_in": 1}
    assert W.ops_by_kind("hlt") == {"hlt": 1}
    mixed = W.ops_by_kind("mixed")
    assert len(mixed) == 12 and set(mixed.values()) == {1}
    for w in W.WORKLOADS:
        assert W.ops_by_kind(w) and w in W.WORKLOAD_HELP


@pytest.mark.parametrize(
    ("isa", "insn"), [("svm", "0f 01 d9"), ("vmx", "0f 01 c1")], ids=["vmmcall", "vmcall"]
)
def test_hypercall_bytes_are_the_host_vendors_own(isa: str, insn: str) -> None:
    a = Asm(0)
    W.body_hypercall(a, isa)
    a.label("hypercall_failed")
    # mov eax, 0x5650; the call; cmp rax, -1000 (sign-extended imm32); jne to the report
    want = f"b8 50 56 00 00 {insn} 48 3d 18 fc ff ff 0f 85 00 00 00 00"
    assert a.assemble() == bytes.fromhex(want)


CPUINFO = "processor\t: 0\nvendor_id\t: {v}\nflags\t\t: fpu pae {f} lm\n\nprocessor\t: 1\n"


@pytest.mark.parametrize(
    ("flag", "pvm", "want"),
    [
        ("svm", False, "svm"),
        ("vmx", False, "vmx"),
        ("hypervisor", False, None),
        ("svm", True, None),
        ("vmx", True, None),
    ],
)
def test_vmcall_runs_only_on_svm_or_vmx_never_on_kvm_pvm(
    flag: str, pvm: bool, want: str | None
) -> None:
    text = CPUINFO.format(v="AuthenticAMD" if flag == "svm" else "GenuineIntel", f=flag)
    if want is None:
        with pytest.raises(ArgError, match="vmcall") as exc:
            hypercall_isa(text, pvm)
        assert ("livelocks" in str(exc.value)) == pvm
    else:
        assert hypercall_isa(text, pvm) == want


def test_vmcall_host_check_reads_cpuinfo_and_the_kvm_pvm_module(tmp_path: Path) -> None:
    proc, sys_ = tmp_path / "proc", tmp_path / "sys"
    proc.mkdir()
    (proc / "cpuinfo").write_text(CPUINFO.format(v="AuthenticAMD", f="svm"))
    assert host_hypercall_isa(str(proc), str(sys_)) == "svm"
    (sys_ / "module" / "kvm_pvm").mkdir(parents=True)
    with pytest.raises(ArgError, match="kvm_pvm"):
        host_hypercall_isa(str(proc), str(sys_))
    with pytest.raises(ArgError, match="cpuinfo"):
        host_hypercall_isa(str(tmp_path / "nope"), str(sys_))


def test_unknown_workload_or_mode() -> None:
    with pytest.raises(ValueError):
        W.build_program("nope", "user")
    with pytest.raises(ValueError):
        W.build_program("pio", "ring1")
    with pytest.raises(ValueError):
        W.build_program("vmcall", "user", "arm64")


# --- memory layout and tables -------------------------------------------------


def test_gdt_matches_the_linux_selectors() -> None:
    gdt = L.build_gdt(2)

    def entry(sel: int) -> int:
        return int(struct.unpack_from("<Q", gdt, sel & ~7)[0])

    assert entry(L.SEL_KERNEL_CS) == 0x00AF9A000000FFFF
    assert entry(L.SEL_KERNEL_DS) == 0x00CF92000000FFFF
    assert entry(L.SEL_USER_DS) == 0x00CFF2000000FFFF
    assert entry(L.SEL_USER_CS) == 0x00AFFA000000FFFF
    # MSR_STAR-derived selectors (SYSRET): user CS = user32 CS + 16, SS = + 8
    assert L.SEL_USER32_CS + 16 == L.SEL_USER_CS and L.SEL_USER32_CS + 8 == L.SEL_USER_DS
    tss = entry(L.tss_selector(1))
    assert (tss >> 40) & 0xFF == 0x89 and tss & 0xFFFF == L.TSS_LIMIT
    base = ((tss >> 16) & 0xFFFFFF) | ((tss >> 56) << 24)
    assert base == L.tss_addr(1)
    assert len(gdt) == L.tss_selector(2)


def test_idt_gate_fields() -> None:
    gate = L.idt_gate(0x123456789A, dpl=3)
    low, sel, ist, access, mid, high, _ = struct.unpack("<HHBBHII", gate)
    assert (low | mid << 16 | high << 32) == 0x123456789A
    assert sel == L.SEL_KERNEL_CS and ist == 0 and access == 0xEE
    idt = L.build_idt({13: 0x10000})
    assert len(idt) == 4096 and idt[13 * 16 + 5] == 0x8E and idt[14 * 16 + 5] == 0


def test_tss_holds_rsp0() -> None:
    tss = L.build_tss(0xABCDE000)
    assert struct.unpack_from("<Q", tss, 4)[0] == 0xABCDE000
    assert len(tss) == L.TSS_LIMIT + 1


@pytest.mark.parametrize(
    "addr",
    [0, L.CODE_ADDR, L.data_page(3) + 8, W.MMIO_ADDR, W.PAGETOUCH_BASE + 0x1234, L.LAPIC_EOI],
)
def test_page_tables_identity_map(addr: int) -> None:
    assert L.translate(L.build_page_tables(), addr) == addr


def test_page_tables_stop_at_4_gib_and_are_user_accessible() -> None:
    tables = L.build_page_tables()
    assert L.translate(tables, 1 << 32) is None
    pde = struct.unpack_from("<Q", tables[L.PD_ADDR], 0)[0]
    assert pde & (L.PTE_P | L.PTE_RW | L.PTE_US | L.PTE_PS) == 0x87


def test_regions_do_not_overlap() -> None:
    last = L.MAX_VCPUS - 1
    assert L.PD_ADDR + L.PD_COUNT * L.PAGE <= L.CODE_ADDR
    assert L.CODE_ADDR + L.CODE_MAX <= L.DATA_BASE
    assert L.data_page(last) + L.PAGE <= L.STACK_BASE
    assert L.D_TSS + L.TSS_LIMIT < L.PAGE
    assert L.kernel_stack_top(last) <= L.LOW_MEM_SIZE
    assert L.GDT_ADDR + L.tss_selector(L.MAX_VCPUS) <= L.IDT_ADDR
    end = W.PAGETOUCH_BASE + L.MAX_VCPUS * W.PAGETOUCH_PER_VCPU
    assert L.LOW_MEM_SIZE <= W.PAGETOUCH_BASE and end <= W.MMIO_ADDR < L.LAPIC_ADDR


# --- arguments ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workload": "nope"}, "unknown workload"),
        ({"mode": "ring1"}, "unknown mode"),
        ({"count": 0}, "at least 1"),
        ({"count": -5}, "at least 1"),
        ({"count": None, "duration": 0.0}, "positive"),
        ({"count": None, "duration": float("inf")}, "positive"),
        ({"count": 5, "duration": 1.0}, "not both"),
        ({"vcpus": 0}, "at least 1"),
        ({"name": ""}, "empty"),
        ({"name": "a,b"}, "comma"),
        ({"name": "a\x1bb"}, "printable"),
    ],
)
def test_bad_arguments(changes: dict[str, object], message: str) -> None:
    base = {"name": "t", "workload": "pio", "count": 10}
    with pytest.raises(ArgError, match=message):
        validate(GuestArgs(**{**base, **changes}))  # type: ignore[arg-type]


def test_vcpu_limits_need_the_host_limit() -> None:
    args = GuestArgs("t", vcpus=8, count=1)
    assert validate(args) is args
    assert validate(args, host_max_vcpus=8) is args
    with pytest.raises(ArgError, match="KVM_CAP_MAX_VCPUS"):
        validate(args, host_max_vcpus=4)
    with pytest.raises(ArgError, match="at most 64"):
        validate(GuestArgs("t", vcpus=65, count=1), host_max_vcpus=1024)


def test_runner_argv_is_qemu_style_and_round_trips() -> None:
    args = GuestArgs("web 1", 2, "mixed", None, 2.5, "kernel", json=True, stats=True)
    argv = runner_argv(args)
    assert argv[:2] == ["-name", "guest=web 1"]
    assert parse_runner_argv(argv) == args
    with pytest.raises(ArgError):
        parse_runner_argv(["-name", "web"])
    with pytest.raises(ArgError):
        parse_runner_argv(["--vcpus", "1"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--name", "t", "--workload", "nope", "--count", "1"],
        ["--name", "t", "--count", "0"],
        ["--name", "t,x", "--count", "1"],
        ["--name", "t", "--count", "1", "--duration", "1"],
    ],
)
def test_cli_bad_input_is_one_line_and_status_2(argv: list[str]) -> None:
    from vprof.guest.cli import guest

    result = CliRunner().invoke(guest, argv)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("vprof guest: error:")


def test_cli_help_documents_workloads_and_modes() -> None:
    from vprof.guest.cli import guest

    text = CliRunner().invoke(guest, ["--help"]).output
    for word in (*W.WORKLOADS, "user", "kernel", "Examples", "Overhead", "--stats"):
        assert word in text


def test_missing_or_forbidden_dev_kvm(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from vprof.guest.vm import KvmUnavailable, open_kvm

    with pytest.raises(KvmUnavailable, match=r"does not exist.*modprobe"):
        open_kvm("/nonexistent/kvm")

    def denied(*_: object) -> int:
        raise PermissionError

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(KvmUnavailable, match=r"root.*kvm' group"):
        open_kvm()


# --- output -------------------------------------------------------------------


def test_result_counts_every_kind() -> None:
    v = vcpu_entry(0, 100, 7, {"pio_out": 7, "pio_in": 7}, 0, "pio")
    assert v["ops"] == 7 and v["ops_by_kind"] == {"pio_out": 7, "pio_in": 7}
    args = GuestArgs("evil\x1b[2J", 2, "pio", count=7)
    ev = result_event(1, args, 0.5, [v, {**v, "index": 1, "ops": 3}], ioeventfd_signals=None)
    assert ev["total_ops"] == 10 and ev["event"] == "result" and "kvm_stats" not in ev
    text = result_text(ev)
    assert "\x1b" not in text and "pio_out=7" in text
    assert "\x1b" not in ready_text({"name": "a\x1b", "pid": 1, "vcpus": [{"index": 0, "tid": 2}]})


# --- KVM binary stats (blobs recorded from this host's kvm_pvm) ---------------


def test_parse_recorded_vcpu_stats(fixtures_dir: Path) -> None:
    blob = (fixtures_dir / "guest" / "kvm_stats_vcpu.bin").read_bytes()
    ident, descs = parse_descriptors(blob)
    assert ident.startswith("kvm-") and "/vcpu-0" in ident
    names = {d.name for d in descs}
    assert {"halt_exits", "mmio_exits", "io_exits", "exits"} <= names
    stats = parse_stats(blob)
    # Recorded after 100 iterations of `mixed` in user mode on one vCPU.
    assert stats["mmio_exits"] == 200 and stats["halt_exits"] == 100
    assert stats["io_exits"] == 0  # kvm_pvm does not count port I/O exits
    hist = next(d for d in descs if d.type.endswith("hist"))
    assert isinstance(stats[hist.name], list) and len(stats[hist.name]) == hist.size  # type: ignore[arg-type]


def test_parse_recorded_vm_stats(fixtures_dir: Path) -> None:
    blob = (fixtures_dir / "guest" / "kvm_stats_vm.bin").read_bytes()
    ident, descs = parse_descriptors(blob)
    assert ident.startswith("kvm-") and "/" not in ident
    assert parse_stats(blob)["pages_4k"] == 104
    assert all(d.unit in {"none", "bytes", "seconds", "cycles", "boolean"} for d in descs)


def test_read_blob_reads_exactly_header_descriptors_and_data(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    from vprof.guest.stats import data_end, read_blob

    blob = (fixtures_dir / "guest" / "kvm_stats_vcpu.bin").read_bytes()
    assert data_end(blob) == len(blob)
    path = tmp_path / "stats"
    path.write_bytes(blob + b"\xff" * 64)  # a stats fd has nothing past the data
    fd = os.open(path, os.O_RDONLY)
    try:
        assert read_blob(fd) == blob
    finally:
        os.close(fd)


def test_cli_listing_needs_no_name_and_no_kvm() -> None:
    from vprof.guest.cli import guest

    result = CliRunner().invoke(guest, ["--workload", "cpuid", "--listing"])
    assert result.exit_code == 0 and "0f a2" in result.output and "cpuid" in result.output
    missing = CliRunner().invoke(guest, ["--count", "3"])
    assert missing.exit_code == 2 and "--name is required" in missing.output
