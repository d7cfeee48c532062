"""Every probe family renders against the tracefs layouts of each kernel of
the matrix (tests/fixtures/tracefs/<release>, copied from the booted
kernels), and its C reads only fields that layout has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vprof.bpf.fields import ARGS, BY_MACRO, parse_format, tree_fields
from vprof.bpf.source import PROBES_DIR, render
from vprof.model import PROBE_FAMILIES

FIXTURES = Path(__file__).parent / "fixtures" / "tracefs"
RELEASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
_DEFINE = re.compile(r"^#define (VPROF_ARG_\w+) \(args->(\w+)\)$", re.MULTILINE)
_PROBE = re.compile(
    r"^(TRACEPOINT_PROBE|VPROF_RAW_PROBE)\((\w+),\s*(\w+)\)\n\{(.*?)\n\}", re.MULTILINE | re.DOTALL
)
_RAW = re.compile(r"^#define (VPROF_ARG_\w+) \(\((u32|u64)\)ctx->args\[(\d)\]\)$", re.MULTILINE)


def test_the_matrix_is_there() -> None:
    majors = {".".join(r.split(".")[:2]) for r in RELEASES}
    assert {"5.10", "6.1", "6.12", "6.18"} <= majors


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("family", PROBE_FAMILIES)
def test_family_reads_only_fields_the_kernel_has(release: str, family: str) -> None:
    src = render(family, {"VPROF_SLOW_NS": 1}, fields=tree_fields(FIXTURES / release))
    # every args-> of the rendered C is in a VPROF_ARG define, of a field
    # the format file of that release has
    reads = _DEFINE.findall(src.text)
    assert len(reads) == src.text.count("args->")
    for macro, field in reads:
        tp = BY_MACRO[macro].tracepoint
        fmt = (FIXTURES / release / tp.replace(":", "/") / "format").read_text()
        assert field in parse_format(fmt), (release, tp, field)
    # every VPROF_ARG a probe body uses is one of its own tracepoint's, and defined
    defined = set(re.findall(r"^#define (VPROF_ARG_\w+) ", src.text, re.MULTILINE))
    raw_reads = dict((m, pos) for m, _type, pos in _RAW.findall(src.text))
    assert len(reads) + len(raw_reads) == len(defined)
    for kind, system, event, body in _PROBE.findall(src.text):
        for macro in re.findall(r"\bVPROF_ARG_\w+", body):
            assert BY_MACRO[macro].tracepoint == f"{system}:{event}"
            assert macro in defined
            # a raw tracepoint reads TP_PROTO's arguments, a classic one the format's
            assert (macro in raw_reads) == (kind == "VPROF_RAW_PROBE"), macro


def test_probes_read_fields_only_through_the_table() -> None:
    for path in PROBES_DIR.glob("*.bpf.c"):
        assert "args->" not in path.read_text(), path.name
    used = {m for p in PROBES_DIR.glob("*") for m in re.findall(r"\bVPROF_ARG_\w+", p.read_text())}
    assert used == set(BY_MACRO)  # no dead rows, no undeclared reads


def test_inj_virq_is_renamed_in_6_0_but_stays_the_first_argument() -> None:
    for release in RELEASES:
        fmt = (FIXTURES / release / "kvm" / "kvm_inj_virq" / "format").read_text()
        assert ("irq" if release.startswith("5.10") else "vector") in parse_format(fmt)
        src = render("sched", fields=tree_fields(FIXTURES / release))
        assert "#define VPROF_ARG_kvm_inj_virq_vector ((u32)ctx->args[0])" in src.text


def test_raw_tracepoints_read_only_proven_plain_arguments() -> None:
    raw = {tp for f in PROBE_FAMILIES for tp in render(f).raw}
    assert raw == {
        "kvm:kvm_pio",
        "kvm:kvm_mmio",
        "kvm:kvm_userspace_exit",
        "kvm:kvm_msr",
        "kvm:kvm_cpuid",
        "kvm:kvm_fpu",
        "kvm:kvm_inj_virq",
    }
    for arg in ARGS:
        assert (arg.raw is not None) == (arg.tracepoint in raw), arg
    # struct fields (exit reason, task pointers) stay with the classic format
    classic = {tp for f in PROBE_FAMILIES for tp in render(f).tracepoints} - raw
    assert {"kvm:kvm_exit", "kvm:kvm_entry", "sched:sched_switch", "sched:sched_wakeup"} <= classic


def test_an_absent_field_is_one_figure_not_available(tmp_path: Path) -> None:
    # 6.1's layouts with kvm_exit's vcpu_id taken out (as before 5.4)
    release = next(r for r in RELEASES if r.startswith("6.1."))
    fmt = (FIXTURES / release / "kvm" / "kvm_exit" / "format").read_text()
    old = tmp_path / "kvm" / "kvm_exit"
    old.mkdir(parents=True)
    (old / "format").write_text(
        "".join(ln + "\n" for ln in fmt.splitlines() if " vcpu_id;" not in ln)
    )
    real = tree_fields(FIXTURES / release)

    def fields(tp: str) -> frozenset[str] | None:
        return tree_fields(tmp_path)(tp) if tp == "kvm:kvm_exit" else real(tp)

    src = render("exits", fields=fields)
    assert src.unavailable == (
        "kvm:kvm_exit vcpu_id: vCPU index at kvm_exit (kvm_entry or the inventory gives it)",
    )
    assert "#define VPROF_ARG_kvm_exit_vcpu_id (~0U)" in src.text
    assert "#define VPROF_ARG_kvm_entry_vcpu_id (args->vcpu_id)" in src.text


def test_parse_format_reads_arrays_and_types() -> None:
    text = (
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        "\tfield:__u8 insn[15];\toffset:26;\tsize:15;\tsigned:0;\n"
        "\tfield:unsigned long guest_rip;\toffset:16;\tsize:8;\tsigned:0;\n"
    )
    assert parse_format(text) == {"common_type", "insn", "guest_rip"}


def test_table_rows_are_unique() -> None:
    assert len({a.macro for a in ARGS}) == len(ARGS)
