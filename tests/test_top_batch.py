"""Batch output (plain, --json, --csv) and bad input, with a fake source (no root)."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from click.testing import CliRunner
from test_top_support import FakeSource, Load

from vprof.cli import main
from vprof.sinks.top import batch
from vprof.sinks.top.cli import BadInput, TopOptions, run_top

VMS = [
    ("pio-vm", "1:1", Load(pio=5000, vmm=0.2, vcpus=2)),
    ("hlt-vm", "2:2", Load(wakeups=100, halted=0.9)),
    ("cpu-vm", "3:3", Load(cpuid=800)),
]


def run(opts: TopOptions, vms=VMS) -> str:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    run_top(FakeSource(vms), opts, out, interactive=False, host_cpus=2)
    return out.getvalue()


def test_plain_prints_count_tables() -> None:
    text = run(TopOptions(interval=0.5, count=3))
    assert text.count("vprof top ") == 3
    assert text.count("pio-vm") == 3
    assert "h: help" not in text  # no key hints outside the live view
    first = text.split("\n\n")[0].splitlines()
    assert [ln.split()[0] for ln in first[6:]] == ["pio-vm", "cpu-vm", "hlt-vm"]


def test_json_rows_have_stable_fields_and_counts() -> None:
    lines = run(TopOptions(interval=0.5, count=4, fmt="json")).splitlines()
    assert len(lines) == 4
    recs = [json.loads(ln) for ln in lines]
    for rec in recs:
        assert set(rec) == {"timestamp", "host", "vms"}
        assert rec["host"]["backend"] == "kvm_pvm (no kvm_exit)"
        for row in rec["vms"]:
            assert list(row)[: len(batch.VM_FIELDS)] == list(batch.VM_FIELDS)
    pio = [next(r for r in rec["vms"] if r["vm"] == "pio-vm") for rec in recs]
    # Every interval is 0.5 s of 5000 pio/s: counts add up over the run.
    assert sum(r["io_events"] for r in pio) == 4 * 2500
    assert all(r["io_per_s"] == pytest.approx(5000) for r in pio)
    assert pio[0]["reasons"][0] == {
        "isa": "event",
        "reason": "kvm_pio",
        "bucket": "io",
        "count": 2500,
        "handling_ns": None,
    }
    assert pio[0]["io"][0]["address"] == 0x3F8


def test_json_with_filter_and_vm() -> None:
    rec = json.loads(run(TopOptions(count=1, fmt="json", name_filter="^(hlt|cpu)")))
    assert [r["vm"] for r in rec["vms"]] == ["cpu-vm", "hlt-vm"]
    rec = json.loads(run(TopOptions(count=1, fmt="json", vm="pio-vm")))
    assert [r["vm"] for r in rec["vms"]] == ["pio-vm"]
    assert [v["vcpu"] for v in rec["vms"][0]["vcpu_stats"]] == ["0", "1"]


def test_csv_has_a_header_and_one_row_per_vm_per_interval() -> None:
    rows = list(csv.DictReader(io.StringIO(run(TopOptions(count=2, fmt="csv", sort="vm")))))
    assert list(rows[0]) == list(batch.CSV_FIELDS)
    assert [r["vm"] for r in rows] == ["cpu-vm", "hlt-vm", "pio-vm"] * 2
    assert float(rows[1]["halted_pct"]) == pytest.approx(90.0)


def test_no_vms_is_an_empty_table_not_an_error() -> None:
    text = run(TopOptions(count=1), vms=[])
    assert "no VMs on this host" in text
    assert json.loads(run(TopOptions(count=1, fmt="json"), vms=[]))["vms"] == []


def test_unknown_vm_is_a_usage_error() -> None:
    with pytest.raises(BadInput, match="no VM named 'nope'"):
        run(TopOptions(count=1, vm="nope"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "0"], "interval must be a positive number"),
        (["-d", "-1"], "interval must be a positive number"),
        (["-d", "nan"], "interval must be a positive number"),
        (["-f", "("], "bad --filter regex '('"),
        (["-n", "0"], "iteration count must be at least 1"),
        (["--families", "exits,bogus"], "unknown probe families ['bogus']"),
        (["--families", ","], "--families must name at least one probe family"),
        (["--families", ""], "--families must name at least one probe family"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["top", "-b", *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.output


def test_help_states_purpose_and_examples() -> None:
    result = CliRunner().invoke(main, ["top", "--help"])
    assert result.exit_code == 0
    for text in ("Live per-VM view", "Examples:", "vprof top -b -n 5", "--json", "Overhead"):
        assert text in result.output


def test_docs_list_every_field_and_the_drop_order() -> None:
    from pathlib import Path

    from vprof.sinks.top.view import VM_COLUMNS

    doc = (Path(__file__).parents[1] / "docs" / "top.md").read_text()
    for f in batch.VM_FIELDS:
        assert f in doc, f
    order = [c.title for c in sorted(VM_COLUMNS, key=lambda c: -c.priority)][:-1]
    documented = re.findall(
        r"[A-Z]+[%/s]*(?:/s)?(?: REASON)?", doc.split("(last\nfirst): ")[1].split(";")[0]
    )
    assert documented == order
