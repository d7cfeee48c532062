"""vprof names every code the kernel's own tables name, with the same name.

The kernel prints exit reasons with symbol tables in each tracepoint's
`print fmt`.  Copies of this host's format files live in
tests/fixtures/tracefs/ so the check runs anywhere; the live variant reads
the machine's own tracefs.  A last check reads the kernel headers that
deploy/setup.sh installs and checks that every code defined there is known.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import pytest

from vprof.model import Bucket
from vprof.taxonomy import classify_exit, decode_vmx_flags, userspace_exit
from vprof.taxonomy.rules import TABLES
from vprof.taxonomy.tracefmt import kvm_exit_tables, print_fmt, symbol_tables

TRACEFS = Path("/sys/kernel/tracing/events/kvm")
EXIT_FORMATS = ["kvm_exit", "kvm_nested_vmexit", "kvm_nested_vmexit_inject"]


def _check_exit_tables(text: str) -> int:
    tables = kvm_exit_tables(text)
    for code, name in tables.vmx.items():
        assert classify_exit("vmx", code).name == name, (code, name)
    for code, name in tables.svm.items():
        assert classify_exit("svm", code).name == name, (hex(code), name)
    for mask, name in tables.vmx_flags.items():
        assert decode_vmx_flags(mask) == (name,)
        assert classify_exit("vmx", mask | 10).flags == (name,)
    return len(tables.vmx) + len(tables.svm)


def _check_userspace(text: str) -> int:
    (table,) = [t for t in symbol_tables(print_fmt(text)) if "reason" in t.expr]
    for code, name in table.entries:
        assert userspace_exit(code).name == name, (code, name)
    return len(table.entries)


@pytest.mark.parametrize("event", EXIT_FORMATS)
def test_fixture_exit_tables_match(fixtures_dir: Path, event: str) -> None:
    text = (fixtures_dir / "tracefs" / f"{event}.format").read_text()
    # 65 VMX + 110 SVM names on the 6.18 kernel the fixtures were copied from.
    assert _check_exit_tables(text) == 175


def test_fixture_userspace_exit_table_matches(fixtures_dir: Path) -> None:
    text = (fixtures_dir / "tracefs" / "kvm_userspace_exit.format").read_text()
    assert _check_userspace(text) == 31


@pytest.mark.live
@pytest.mark.parametrize("event", EXIT_FORMATS)
def test_live_exit_tables_match(event: str) -> None:
    path = TRACEFS / event / "format"
    if not path.exists():
        pytest.skip(f"{path} absent on this kernel")
    assert _check_exit_tables(path.read_text()) > 0


@pytest.mark.live
def test_live_userspace_exit_table_matches() -> None:
    assert _check_userspace((TRACEFS / "kvm_userspace_exit" / "format").read_text()) > 0


def test_parser_handles_expressions_concatenation_and_empty_tables() -> None:
    fmt = (
        '"%s %s %s", __print_symbolic(REC->a & 0xffff, { 0x040 + 13, "GP" "x" }, { -1, "err" }), '
        '__print_flags(REC->b & ~0xffff, "|", { 0x80000000, "F" }), '
        "__print_symbolic(REC->c, { })"
    )
    a, b, c = symbol_tables(fmt)
    assert (a.kind, a.expr, a.entries) == (
        "symbolic",
        "REC->a & 0xffff",
        ((0x4D, "GPx"), (-1, "err")),
    )
    assert (b.kind, b.expr, b.entries) == ("flags", "REC->b & ~0xffff", ((0x80000000, "F"),))
    assert c.entries == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0x040 + 0", 0x40),
        ("-1", -1),
        ("(1ULL << 3)", 8),
        ("0x80000000UL", 0x80000000),
        ("1 | 4", 5),
    ],
)
def test_parser_evaluates_table_values(value: str, expected: int) -> None:
    (table,) = symbol_tables(f'__print_symbolic(REC->x, {{ {value}, "n" }})')
    assert table.entries == ((expected, "n"),)


def test_parser_refuses_what_it_cannot_evaluate() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        symbol_tables('__print_symbolic(REC->x, { SOME_MACRO, "n" })')


def test_parser_rejects_text_without_print_fmt() -> None:
    with pytest.raises(ValueError):
        print_fmt("name: x\nformat:\n")


# Kernel headers (deploy/setup.sh installs linux-headers-*): every define is known.
def _header(relative: str) -> str | None:
    found = sorted(glob.glob(f"/usr/src/linux-headers-*/{relative}")) + sorted(
        glob.glob(f"/usr/include/{relative.removeprefix('include/uapi/')}")
    )
    return Path(found[-1]).read_text() if found else None


def _defines(text: str, prefix: str) -> dict[str, int]:
    pattern = rf"^#define\s+{prefix}(\w+)\s+\(?(-?(?:0x[0-9a-fA-F]+|\d+))(?:ULL|UL|ull|ul)?\)?"
    return {m[1]: int(m[2], 0) for m in re.finditer(pattern, text, re.MULTILINE)}


@pytest.mark.parametrize(
    ("relative", "prefix", "isa", "same_name"),
    [
        ("arch/x86/include/uapi/asm/vmx.h", "EXIT_REASON_", "vmx", True),
        ("arch/x86/include/uapi/asm/svm.h", "SVM_EXIT_", "svm", False),
        ("arch/x86/include/uapi/asm/svm.h", "SVM_VMGEXIT_", "svm", False),
        ("arch/arm64/include/asm/esr.h", "ESR_ELx_EC_", "arm64", True),
        ("include/uapi/linux/kvm.h", "KVM_EXIT_", "userspace", True),
    ],
)
def test_every_header_code_is_known(relative: str, prefix: str, isa: str, same_name: bool) -> None:
    text = _header(relative)
    if text is None:
        pytest.skip(f"{relative} not installed (run `make setup`)")
    defines = _defines(text, prefix)
    # Not exit codes: ranges, masks and sub-function arguments sharing the prefix.
    for skip in ("EXCP_BASE", "LAST_EXCP", "MAX", "SET_AP_JUMP_TABLE", "GET_AP_JUMP_TABLE",
                 "AP_CREATE_ON_INIT", "AP_CREATE", "AP_DESTROY", "IO_IN", "IO_OUT",
                 "HYPERV_SYNIC", "HYPERV_HCALL", "HYPERV_SYNDBG", "XEN_HCALL", "SHIFT", "MASK",
                 "WIDTH"):  # fmt: skip
        defines.pop(skip, None)
    assert defines, f"no {prefix} defines parsed from {relative}"
    table = TABLES[isa].entries
    for name, code in defines.items():
        code &= 0xFFFFFFFF
        assert code in table, f"{prefix}{name} = {code:#x} missing from the {isa} table"
        if same_name:
            assert table[code].name in (name, f"{prefix}{name}"), (name, table[code].name)
        assert table[code].bucket is not Bucket.UNCLASSIFIED
