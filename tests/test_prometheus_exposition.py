"""The HTTP exposition: same families as the collector, rendered once per snapshot."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from test_prometheus import make_snapshot, make_vm

from vprof.sinks import exposition
from vprof.sinks.prometheus import ExportOptions, ExportState, SnapshotCollector


def families(text: bytes) -> dict[str, list[tuple[str, tuple[tuple[str, str], ...], float]]]:
    out = {}
    for f in text_string_to_metric_families(text.decode()):
        out[f.name] = sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples)
    return out


def state() -> ExportState:
    snap = make_snapshot(make_vm("a", "1:1", 1), make_vm("b", "2:2", 2), exit_timing=True)
    return ExportState(snapshot=snap, options=ExportOptions(granularity="vcpu"), last_success=True)


def test_http_body_equals_the_collector_output() -> None:
    st = state()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: st))
    body = exposition.Exposition().body(st, use_gzip=False)
    assert families(body) == families(generate_latest(reg))


def test_gzip_body_is_the_same_text() -> None:
    exp, st = exposition.Exposition(), state()
    assert gzip.decompress(exp.body(st, use_gzip=True)) == exp.body(st, use_gzip=False)


def test_snapshot_rendered_once_daemon_state_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = exposition.render

    def counting(fams: Iterable[Metric]) -> bytes:
        calls.append(1)
        return real(fams)

    monkeypatch.setattr(exposition, "render", counting)
    exp, st = exposition.Exposition(), state()
    exp.prerender(st)
    assert len(calls) == 1
    exp.body(st, use_gzip=False)
    later = replace(st, failures=3)  # daemon state changed, snapshot did not
    text = exp.body(later, use_gzip=False)
    assert len(calls) == 3  # two daemon-state renders, no new snapshot render
    assert b"vprof_snapshot_failures_total 3.0" in text
    exp.body(replace(st, options=ExportOptions(granularity="vm")), use_gzip=False)
    assert len(calls) == 5  # new options: the snapshot part is rendered again
