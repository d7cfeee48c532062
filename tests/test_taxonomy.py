"""Taxonomy rules, flag decoding, unknown codes, lookup and `vprof explain`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vprof.model import OVERHEAD_BUCKETS, Bucket
from vprof.taxonomy import (
    Classified,
    classify_arm64,
    classify_event,
    classify_exit,
    decode_vmx_flags,
    npf_bucket,
    remedy,
    resolve_bucket,
    userspace_exit,
)
from vprof.taxonomy.cli import explain
from vprof.taxonomy.lookup import entries, lookup, suggestions
from vprof.taxonomy.rules import TABLES

P, M, IO, C = Bucket.PRIVILEGED, Bucket.MEMORY, Bucket.IO, Bucket.CONTEXT_SWITCH

# The judgements the issue names, plus the ones easiest to get wrong.
EXIT_RULES = [
    ("vmx", 49, "EPT_MISCONFIG", IO),  # KVM's MMIO fast path, not memory
    ("vmx", 48, "EPT_VIOLATION", M),
    ("vmx", 50, "INVEPT", M),
    ("vmx", 62, "PML_FULL", M),
    ("vmx", 12, "HLT", C),
    ("vmx", 40, "PAUSE_INSTRUCTION", C),
    ("vmx", 52, "PREEMPTION_TIMER", C),
    ("vmx", 1, "EXTERNAL_INTERRUPT", C),
    ("vmx", 7, "INTERRUPT_WINDOW", C),
    ("vmx", 8, "NMI_WINDOW", C),
    ("vmx", 30, "IO_INSTRUCTION", IO),
    ("vmx", 10, "CPUID", P),
    ("vmx", 31, "MSR_READ", P),
    ("vmx", 32, "MSR_WRITE", P),
    ("vmx", 28, "CR_ACCESS", P),
    ("vmx", 29, "DR_ACCESS", P),
    ("vmx", 55, "XSETBV", P),
    ("vmx", 18, "VMCALL", P),
    ("vmx", 13, "INVD", P),
    ("vmx", 54, "WBINVD", P),
    ("vmx", 44, "APIC_ACCESS", IO),
    ("vmx", 56, "APIC_WRITE", IO),
    ("vmx", 45, "EOI_INDUCED", IO),
    ("vmx", 43, "TPR_BELOW_THRESHOLD", IO),
    ("vmx", 74, "BUS_LOCK", P),
    ("vmx", 75, "NOTIFY", C),
    ("vmx", 77, "TDCALL", P),
    ("vmx", 84, "MSR_READ_IMM", P),
    ("vmx", 85, "MSR_WRITE_IMM", P),
    ("svm", 0x400, "npf", M),
    ("svm", 0x07B, "io", IO),
    ("svm", 0x072, "cpuid", P),
    ("svm", 0x07C, "msr", P),
    ("svm", 0x081, "hypercall", P),
    ("svm", 0x078, "hlt", C),
    ("svm", 0x077, "pause", C),
    ("svm", 0x060, "interrupt", C),
    ("svm", 0x064, "vintr", C),
    ("svm", 0x074, "iret", C),  # intercepted only as an NMI window
    ("svm", 0x401, "avic_incomplete_ipi", IO),
    ("svm", 0x402, "avic_unaccelerated_access", IO),
    ("svm", 0x403, "vmgexit", P),
    ("svm", 0x80000001, "vmgexit_mmio_read", IO),
    ("svm", 0x80000010, "vmgexit_page_state_change", M),
    ("svm", 0x0A6, "idle-halt", C),
    ("svm", 0x040 + 14, "PF excp", M),
    ("svm", 0x040 + 6, "UD excp", P),
    ("svm", 0x013, "write_cr3", P),
    ("svm", 0x027, "read_dr7", P),
    ("svm", 0xFFFFFFFF, "invalid_guest_state", C),
    ("arm64", 0x01, "WFx", C),
    ("arm64", 0x24, "DABT_LOW", M),
    ("arm64", 0x18, "SYS64", P),
    ("arm64", 0x16, "HVC64", P),
    ("arm64", 0x07, "FP_ASIMD", C),
    ("arm64", 0x100, "IRQ", C),
]


@pytest.mark.parametrize(("isa", "code", "name", "bucket"), EXIT_RULES)
def test_exit_rules(isa: str, code: int, name: str, bucket: Bucket) -> None:
    got = classify_exit(isa, code)
    assert (got.isa, got.code, got.name, got.bucket) == (isa, code, name, bucket)
    assert got.reason and "\n" not in got.reason
    assert got.flags == ()


@pytest.mark.parametrize(
    ("isa", "code", "name"),
    [(1, 30, "IO_INSTRUCTION"), (2, 0x07B, "io"), ("VMX", 10, "CPUID"), ("2", 0x400, "npf")],
)
def test_numeric_and_mixed_case_isa(isa: str | int, code: int, name: str) -> None:
    assert classify_exit(isa, code).name == name


def test_svm_err_is_read_as_u32() -> None:
    assert classify_exit("svm", -1) == classify_exit("svm", 0xFFFFFFFF)
    assert classify_exit("svm", -1).code == 0xFFFFFFFF


@pytest.mark.parametrize(
    ("exit_reason", "basic", "name", "flags"),
    [
        (0x80000021, 33, "INVALID_STATE", ("FAILED_VMENTRY",)),
        (0x80000022, 34, "MSR_LOAD_FAIL", ("FAILED_VMENTRY",)),
        (0x08000000 | 60, 60, "ENCLS", ("ENCLAVE_MODE",)),
        (0x04000000 | 30, 30, "IO_INSTRUCTION", ("BUS_LOCK_DETECTED",)),
        (0x80010000 | 12, 12, "HLT", ("bit16", "FAILED_VMENTRY")),
        (0x80000000 | 99, 99, "unknown:vmx:99", ("FAILED_VMENTRY",)),
    ],
)
def test_vmx_flags_are_decoded_not_mistaken_for_reasons(
    exit_reason: int, basic: int, name: str, flags: tuple[str, ...]
) -> None:
    got = classify_exit("vmx", exit_reason)
    assert (got.code, got.name, got.flags) == (basic, name, flags)
    assert decode_vmx_flags(exit_reason) == flags


@pytest.mark.parametrize(
    ("isa", "code", "name"),
    [
        ("vmx", 99, "unknown:vmx:99"),
        ("vmx", 0xFFFF, "unknown:vmx:65535"),
        ("svm", 0x0A0, "unknown:svm:0x0a0"),
        ("svm", 0x80000099, "unknown:svm:0x80000099"),
        ("arm64", 0x3F, "unknown:arm64:0x3f"),
        (3, 7, "unknown:isa3:7"),
    ],
)
def test_unknown_codes_are_named_and_unclassified(isa: str | int, code: int, name: str) -> None:
    got = classify_exit(isa, code)
    assert got.name == name
    assert got.bucket is Bucket.UNCLASSIFIED
    assert not got.known


def test_unknown_isa_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown ISA"):
        classify_exit("mips", 1)


@pytest.mark.parametrize(
    ("ret", "ec", "name", "flags"),
    [
        (2, 0x24, "DABT_LOW", ()),
        (2, 0x01, "WFx", ()),
        (0, 0x00, "IRQ", ()),
        (1, 0x00, "SERROR", ()),
        (3, 0x00, "ILLEGAL", ()),
        (0xBADCA11, 0, "HYP_GONE", ()),
        (0x80000002, 0x16, "HVC64", ("SERROR_PENDING",)),
        (2, 0x3F, "unknown:arm64:0x3f", ()),
    ],
)
def test_arm64_type_and_class(ret: int, ec: int, name: str, flags: tuple[str, ...]) -> None:
    got = classify_arm64(ret, ec)
    assert (got.isa, got.name, got.flags) == ("arm64", name, flags)


EVENT_RULES = [
    ("kvm_pio", IO),
    ("kvm_mmio", IO),
    ("kvm_fast_mmio", IO),
    ("kvm_userspace_exit", IO),
    ("kvm_cpuid", P),
    ("kvm_msr", P),
    ("kvm_cr", P),
    ("kvm_hypercall", P),
    ("kvm_emulate_insn", P),
    ("kvm_inj_exception", P),
    ("kvm_page_fault", M),
    ("kvmmmu:kvm_mmu_set_spte", M),
    ("kvm_mmu_spte_requested", M),
    ("kvmmmu:fast_page_fault", M),
    ("kvmmmu:mark_mmio_spte", IO),  # MMIO fast path, not memory
    ("kvm_async_pf_not_present", M),
    ("kvm_vcpu_wakeup", C),
    ("kvm_halt_poll_ns", C),
    ("kvm_fpu", C),
    ("kvm_inj_virq", IO),
    ("kvm_apic_accept_irq", IO),
    ("sched:sched_switch", C),
    ("sched_wakeup", C),
    ("sched_waking", C),
]


@pytest.mark.parametrize(("event", "bucket"), EVENT_RULES)
def test_event_rules(event: str, bucket: Bucket) -> None:
    got = classify_event(event)
    assert (got.isa, got.name, got.bucket) == ("event", event.split(":")[-1], bucket)


def test_unknown_event_is_kept() -> None:
    got = classify_event("kvm:kvm_brand_new")
    assert (got.name, got.bucket) == ("unknown:event:kvm_brand_new", Bucket.UNCLASSIFIED)


@pytest.mark.parametrize(
    ("code", "name", "bucket"),
    [
        (2, "KVM_EXIT_IO", IO),
        (6, "KVM_EXIT_MMIO", IO),
        (5, "KVM_EXIT_HLT", C),
        (10, "KVM_EXIT_INTR", C),
        (29, "KVM_EXIT_X86_RDMSR", P),
        (31, "KVM_EXIT_DIRTY_RING_FULL", M),
        (39, "KVM_EXIT_MEMORY_FAULT", M),
        (41, "KVM_EXIT_ARM_SEA", M),
        (200, "unknown:userspace:200", Bucket.UNCLASSIFIED),
    ],
)
def test_userspace_exits(code: int, name: str, bucket: Bucket) -> None:
    got = userspace_exit(code)
    assert (got.isa, got.name, got.bucket) == ("userspace", name, bucket)


def test_stage2_rule() -> None:
    assert npf_bucket(followed_by_mmio=False) is Bucket.MEMORY
    assert npf_bucket(followed_by_mmio=True) is Bucket.IO
    for isa, code in [("svm", 0x400), ("vmx", 48), ("arm64", 0x24)]:
        fault = classify_exit(isa, code)
        assert resolve_bucket(fault, followed_by_mmio=False) == fault
        as_mmio = resolve_bucket(fault, followed_by_mmio=True)
        assert (as_mmio.name, as_mmio.bucket) == (fault.name, Bucket.IO)
    cpuid = classify_exit("vmx", 10)
    assert resolve_bucket(cpuid, followed_by_mmio=True) is cpuid


def test_every_entry_has_bucket_and_one_line_reason() -> None:
    names = set()
    for item in entries():
        entry = item.entry
        assert entry.bucket in OVERHEAD_BUCKETS, entry
        assert 10 < len(entry.reason) <= 110 and "\n" not in entry.reason, entry
        names.add((entry.isa, entry.name, entry.code))
    assert len(names) == len(entries())


def test_tables_are_sparse_where_the_headers_are() -> None:
    assert len(TABLES["vmx"].entries) == 66
    assert {0x401, 0x402, 0x403, 0x8000FFFD, 0xFFFFFFFF} <= set(TABLES["svm"].entries)
    assert all(0x040 + v in TABLES["svm"].entries for v in range(32))


def test_remedy_names_the_technology() -> None:
    assert "huge pages" in remedy(Bucket.MEMORY) and "EPT" in remedy(Bucket.MEMORY)
    for word in ("virtio", "vhost", "VT-d", "SR-IOV"):
        assert word in remedy(Bucket.IO)
    for word in ("Pin", "halt-polling", "PLE", "posted interrupts"):
        assert word in remedy(Bucket.CONTEXT_SWITCH)
    assert "assists" in remedy(Bucket.PRIVILEGED)
    assert remedy(Bucket.UNCLASSIFIED)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("EPT_MISCONFIG", [("vmx", "EPT_MISCONFIG")]),
        ("ept_misconfig", [("vmx", "EPT_MISCONFIG")]),
        ("EXIT_REASON_EPT_MISCONFIG", [("vmx", "EPT_MISCONFIG")]),
        ("npf", [("svm", "npf")]),
        ("SVM_EXIT_NPF", [("svm", "npf")]),
        ("SVM_EXIT_IOIO", [("svm", "io")]),
        ("svm:0x7b", [("svm", "io")]),
        ("vmx:48", [("vmx", "EPT_VIOLATION")]),
        ("1:0x30", [("vmx", "EPT_VIOLATION")]),
        ("arm64:0x24", [("arm64", "DABT_LOW")]),
        ("kvm_pio", [("event", "kvm_pio")]),
        ("kvm:kvm_pio", [("event", "kvm_pio")]),
        ("event:kvm_fpu", [("event", "kvm_fpu")]),
        ("KVM_EXIT_MMIO", [("userspace", "KVM_EXIT_MMIO")]),
        ("userspace:6", [("userspace", "KVM_EXIT_MMIO")]),
        ("CPUID", [("vmx", "CPUID"), ("svm", "cpuid")]),
        ("hlt", [("vmx", "HLT"), ("svm", "hlt"), ("userspace", "KVM_EXIT_HLT")]),
        ("idle halt", [("svm", "idle-halt")]),
        ("vmx:99", [("vmx", "unknown:vmx:99")]),
        ("no_such_thing", []),
    ],
)
def test_lookup(query: str, expected: list[tuple[str, str]]) -> None:
    assert [(m.entry.isa, m.entry.name) for m in lookup(query)] == expected


def test_suggestions() -> None:
    assert suggestions("EPT_MISCONFG")[0] == "EPT_MISCONFIG"
    assert "kvm_pio" in suggestions("kvm_pi0")


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(explain, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_explain_prints_the_entry() -> None:
    code, out, _ = _run("EPT_MISCONFIG")
    assert code == 0
    for text in ("EPT_MISCONFIG", "vmx", "49", "io", "MMIO fast path", "virtio", "vmx.h"):
        assert text in out


def test_explain_shows_all_ambiguous_matches_and_flags() -> None:
    code, out, _ = _run("cpuid")
    assert code == 0 and "0x072" in out and "isa:     vmx" in out
    code, out, _ = _run("vmx:0x80000021")
    assert code == 0 and "FAILED_VMENTRY" in out and "INVALID_STATE" in out


def test_vprof_explain_is_wired_into_the_main_command() -> None:
    from vprof.cli import main

    result = CliRunner().invoke(main, ["explain", "npf"])
    assert result.exit_code == 0 and "0x400" in result.stdout and "memory" in result.stdout


def test_explain_json() -> None:
    code, out, _ = _run("--json", "svm:0x7b")
    assert code == 0
    (item,) = json.loads(out)
    assert (item["name"], item["code"], item["bucket"]) == ("io", 0x7B, "io")


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("EPT_MISCONFG", "did you mean: EPT_MISCONFIG"),
        ("vmx:99", "unknown:vmx:99"),
        ("\x1b[2Jzz", "zz"),
    ],
)
def test_explain_unknown_is_one_line_and_status_2(query: str, needle: str) -> None:
    code, out, err = _run(query)
    assert code == 2 and out == ""
    assert needle in err and err.count("\n") == 1 and "\x1b" not in err


def test_classified_is_frozen() -> None:
    got = classify_exit("vmx", 10)
    assert isinstance(got, Classified)
    with pytest.raises(AttributeError):
        got.name = "x"  # type: ignore[misc]
