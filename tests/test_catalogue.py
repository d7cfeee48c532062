"""The metric catalogue: conventions, and docs/metrics.md kept in step."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from vprof.sinks import catalogue

DOCS = Path(__file__).parent.parent / "docs" / "metrics.md"
_NAME = re.compile(r"^vprof_[a-z0-9_]+$")
_LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")


def test_docs_match_the_catalogue() -> None:
    assert DOCS.read_text() == catalogue.render_markdown(), (
        "docs/metrics.md is stale: run `python -m vprof.sinks.catalogue > docs/metrics.md`"
    )


def test_module_prints_the_docs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vprof.sinks.catalogue"], capture_output=True, text=True, check=True
    )
    assert out.stdout == catalogue.render_markdown()


def test_module_refuses_arguments_with_one_line_and_status_2() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vprof.sinks.catalogue", "--check"], capture_output=True, text=True
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("usage: ") and out.stderr.count("\n") == 1


def test_names_follow_prometheus_conventions() -> None:
    names = [m.name for m in catalogue.METRICS]
    assert len(names) == len(set(names)), "duplicate metric names"
    for m in catalogue.METRICS:
        assert _NAME.match(m.name), m.name
        assert m.help.strip() and m.help.endswith("."), f"{m.name}: help must be a sentence"
        assert all(_LABEL.match(label) for label in m.labels), m.name
        assert len(set(m.labels)) == len(m.labels), m.name
        assert "le" not in m.labels and "quantile" not in m.labels
        assert m.name.endswith("_total") == (m.type == "counter"), m.name
        assert m.name.endswith("_info") == (m.type == "info"), m.name
        if m.unit:
            assert m.family.endswith("_" + m.unit), f"{m.name}: unit {m.unit} not in the name"
        assert not re.search(r"_(ms|us|ns|milliseconds|microseconds|nanoseconds)\b", m.name)


def test_families_are_unique_and_every_detail_documented() -> None:
    assert len(catalogue.BY_FAMILY) == len(catalogue.METRICS)
    for m in catalogue.METRICS:
        assert m.detail in catalogue._DETAIL_TEXT


def test_catalogue_covers_what_the_issue_asks_for() -> None:
    required = {
        "vprof_vm_info",
        "vprof_vm_events_total",
        "vprof_vm_reason_events_total",
        "vprof_vm_time_seconds_total",
        "vprof_vm_exit_handling_seconds",
        "vprof_vm_io_accesses_total",
        "vprof_vm_runqueue_wait_seconds_total",
        "vprof_vm_preemptions_total",
        "vprof_probe_attached",
        "vprof_events_lost_total",
        "vprof_map_overflows_total",
        "vprof_bpf_prog_run_seconds_total",
        "vprof_bpf_prog_runs_total",
        "vprof_interval_seconds",
        "vprof_vms_tracked",
        "vprof_build_info",
    }
    assert required <= set(catalogue.BY_NAME)
    assert catalogue.BY_NAME["vprof_vm_info"].labels[:4] == ("vm", "uuid", "vmm", "vcpus")
