"""`vprof top` view model and renderer, from snapshots built here (no root)."""

from __future__ import annotations

import re

import pytest
from test_top_support import Load, delta, snap, vm

from vprof.sinks.top import drill, host, render, render_drill, screen, state, view
from vprof.sinks.top.stream import Stream

PIO = ("pio-vm", "1:1", Load(pio=50_000, vmm=0.3, vcpus=2))
HLT = ("hlt-vm", "2:2", Load(wakeups=900, halted=0.9))
CPU = ("cpuid-vm", "3:3", Load(cpuid=20_000, runq=0.1))


def frame(d, ui=None, width=120, height=40) -> str:
    ui = ui or state.UiState()
    text, _ = screen.compose(d, Stream(), ui, width, height, host_cpus=2)
    return text


def table_names(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(r"VM[▲▼]? ", ln))
    return [ln.split()[0] for ln in lines[start + 1 :] if ln.strip()]


def test_rows_carry_rates_shares_and_top_reason() -> None:
    rows = {r.name: r.values for r in view.vm_rows(delta(PIO, HLT, CPU))}
    assert rows["pio-vm"]["io_per_s"] == 50_000
    assert rows["pio-vm"]["top_reason"] == "kvm_pio"
    assert rows["pio-vm"]["io_pct"] == pytest.approx(30.0)
    assert rows["hlt-vm"]["halted_pct"] == pytest.approx(90.0)
    assert rows["cpuid-vm"]["runqueue_pct"] == pytest.approx(10.0)
    # Run-queue wait is context-switch overhead, so CSW% includes it.
    assert rows["cpuid-vm"]["context_switch_pct"] == pytest.approx(10.0)
    assert rows["cpuid-vm"]["guest_pct"] == pytest.approx(90.0)


def test_default_sort_is_events_per_second_descending() -> None:
    assert table_names(frame(delta(HLT, CPU, PIO))) == ["pio-vm", "cpuid-vm", "hlt-vm"]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("halted_pct", ["hlt-vm", "cpuid-vm", "pio-vm"]),
        ("privileged_per_s", ["cpuid-vm", "hlt-vm", "pio-vm"]),
        ("vm", ["cpuid-vm", "hlt-vm", "pio-vm"]),
        ("vcpus", ["pio-vm", "cpuid-vm", "hlt-vm"]),
    ],
)
def test_sort_by_any_column(sort: str, expected: list[str]) -> None:
    ui = state.UiState()
    ui.set_sort(sort)
    text = frame(delta(HLT, CPU, PIO), ui)
    assert table_names(text) == expected
    assert f"{view.column(sort).title}{render.ARROW[ui.descending]}" in text


def test_sort_keys_cycle_and_reverse() -> None:
    ui = state.UiState()
    state.handle_key(ui, ">", [])
    assert ui.sort_key == view.COLUMN_KEYS[view.COLUMN_KEYS.index("events_per_s") + 1]
    state.handle_key(ui, "<", [])
    state.handle_key(ui, "<", [])
    state.handle_key(ui, "<", [])
    assert ui.sort_key == "vm" and not ui.descending
    state.handle_key(ui, "R", [])
    assert table_names(frame(delta(HLT, CPU, PIO), ui)) == ["pio-vm", "hlt-vm", "cpuid-vm"]


def test_filter_by_regex_and_empty_result_says_so() -> None:
    ui = state.UiState()
    for key in ["/", *"^(pio|hlt)", "ENTER"]:
        state.handle_key(ui, key, [])
    text = frame(delta(PIO, HLT, CPU), ui)
    assert table_names(text) == ["pio-vm", "hlt-vm"]
    assert "filter /^(pio|hlt)/ (2 of 3 VMs)" in text
    # The prompt starts with the current filter, for editing.
    for key in ["/", *["BACKSPACE"] * 20, *"nomatch", "ENTER"]:
        state.handle_key(ui, key, [])
    text = frame(delta(PIO, HLT, CPU), ui)
    assert "no VM matches /nomatch/ (3 hidden)" in text


def test_bad_regex_keeps_the_old_filter_and_says_why() -> None:
    ui = state.UiState()
    for key in ["/", *"pio", "ENTER", "/", "BACKSPACE", "BACKSPACE", "BACKSPACE", *"(", "ENTER"]:
        state.handle_key(ui, key, [])
    assert ui.filter_text == "pio"
    assert ui.message.startswith("bad regex '('")
    assert "bad regex" in frame(delta(PIO), ui)


def test_no_vms_shows_an_empty_table_that_says_so() -> None:
    text = frame(snap())
    assert "VM " in text and "EV/s" in text
    assert "no VMs on this host" in text


def test_hostile_names_are_sanitised_and_truncated() -> None:
    evil = "\x1b]0;owned\x07\x1b[2J" + "x" * 100 + "\nrm -rf /"
    d = delta((evil, "9:9", Load(pio=10)), (" [bold]markup[/bold] ", "8:8", Load(pio=5)))
    for width, height in ((80, 24), (120, 40)):
        text = frame(d, width=width, height=height)
        assert "\x1b" not in text and "\x07" not in text
        assert "owned" not in text
        assert "[bold]marku" in text  # shown literally: rich markup is never interpreted
        row = next(ln for ln in text.splitlines() if ln.startswith("xxx"))
        assert "…" in row.split()[0]
        assert "rm -rf" not in row


def test_names_equal_once_sanitised_stay_two_rows() -> None:
    d = delta(("web\x1b[1m", "7:7", Load(pio=10)), ("web\x1b[2m", "8:8", Load(pio=5)))
    assert sorted(r.name for r in view.vm_rows(d)) == ["web", "web~8"]
    rows = [ln.split()[0] for ln in frame(d).splitlines() if ln.startswith("web")]
    assert sorted(rows) == ["web", "web~8"]


@pytest.mark.parametrize(("width", "height"), [(80, 24), (100, 30), (120, 40), (60, 10)])
def test_frames_fit_the_terminal_and_columns_drop_by_priority(width: int, height: int) -> None:
    d = delta(*((f"vm-{i:02d}", f"{i}:{i}", Load(pio=i * 100, cpuid=i)) for i in range(1, 40)))
    text = frame(d, width=width, height=height)
    lines = text.splitlines()
    assert len(lines) == height  # 39 VMs overflow every size here
    assert max(len(ln) for ln in lines) <= width
    head = next(ln for ln in lines if ln.startswith("VM "))
    shown = {
        c.title
        for c in view.VM_COLUMNS
        if re.search(rf"(^| ){re.escape(c.title)}(?=[ ▲▼]|$)", head)
    }
    assert {"VM", "EV/s"} <= shown
    if width >= 120:
        assert shown == {c.title for c in view.VM_COLUMNS}
    if width == 80:
        assert {"GUEST%", "TOP REASON", "IO%", "PRIV%", "MEM%", "CSW%", "HALT%"} <= shown
        assert not shown & {"PRIV/s", "MEM/s", "IO/s", "CSW/s"}  # lowest priority go first
    assert "more (Up/Down to scroll)" in lines[-1]
    assert lines[-2].startswith("vm-")  # the last VM row is whole, not cut


def test_fit_never_exceeds_width_and_widening_only_adds_columns() -> None:
    kept_before: set[str] = set()
    for width in range(20, 200):
        cols = view.fit_columns(view.VM_COLUMNS, width)
        assert sum(w for _, w in cols) + len(cols) - 1 <= width
        assert [c.key for c, _ in cols] == [c.key for c in view.VM_COLUMNS if c in dict(cols)]
        kept = {c.key for c, _ in cols}
        assert kept_before <= kept
        kept_before = kept
    assert kept_before == set(view.COLUMN_KEYS)


def test_cursor_moves_and_enter_drills_down_and_esc_returns() -> None:
    d = delta(PIO, HLT, CPU)
    ui = state.UiState()
    _, visible = screen.compose(d, Stream(), ui, 120, 40, 2)
    state.handle_key(ui, "DOWN", visible)
    state.handle_key(ui, "DOWN", visible)
    state.handle_key(ui, "ENTER", visible)
    assert ui.drill == "2:2"
    text, _ = screen.compose(d, Stream(), ui, 120, 40, 2)
    assert "VM hlt-vm" in text and "kvm_vcpu_wakeup" in text
    assert "HALT%" in text and "90.0" in text
    state.handle_key(ui, "ESC", visible)
    assert ui.drill is None and ui.selected == "2:2"


def test_drill_down_shows_vcpus_reasons_io_slow_exits() -> None:
    pio = ("pio-vm", "1:1", Load(pio=50_000, cpuid=100, vmm=0.3, vcpus=2, slow_ns=2_500_000))
    d = snap(vm(*pio, seconds=3), seconds=3, interval=3, exit_timing=True)
    ui = state.UiState(drill="1:1")
    text, _ = screen.compose(d, Stream(), ui, 120, 40, 2)
    lines = text.splitlines()
    vcpu_rows = [ln for ln in lines if re.match(r"^[01]\s+1[01]\s", ln)]
    assert len(vcpu_rows) == 2
    assert "0x3f8" in text and "pio" in text
    reason = next(ln for ln in lines if ln.startswith("CPUID"))
    assert "1.5" in reason  # mean handling time, µs
    assert "32.8" in reason  # p99 bound: log2 slot 14 is [16384, 32768) ns
    assert "EPT_VIOLATION" in text and "2.500" in text
    assert "Slowest exits" in text


def test_drill_down_without_exit_timing_shows_dashes_and_says_so() -> None:
    d = delta(("pio-vm", "1:1", Load(pio=100)))
    text = render_drill.render_drill(
        host.host_summary(d, 2), drill.drill(d.vms[0], 1.0), state.UiState(drill="1:1"), 80, 24
    )
    assert "no exit timing" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("kvm_pio"))
    assert " - " in row or row.rstrip().endswith("-")


def test_drill_down_of_a_vm_that_went_away() -> None:
    ui = state.UiState(drill="7:7", drill_name="gone-vm")
    text, _ = screen.compose(delta(PIO), Stream(), ui, 80, 24, 2)
    assert "VM gone-vm is gone" in text


def test_drill_down_fits_80x24() -> None:
    many = Load(pio=50_000, mmio=10, cpuid=9, wakeups=3, vcpus=8, slow_ns=1)
    d = delta(("big", "1:1", many))
    text, _ = screen.compose(d, Stream(), state.UiState(drill="1:1"), 80, 24, 2)
    assert len(text.splitlines()) <= 24
    assert max(map(len, text.splitlines())) <= 80
    small = Load(pio=50_000, mmio=10, cpuid=9, wakeups=3, vcpus=2, slow_ns=1_000_000)
    d = snap(vm("two", "1:1", small, seconds=5), seconds=5, interval=5)
    text, _ = screen.compose(d, Stream(), state.UiState(drill="1:1"), 80, 24, 2)
    assert "EPT_VIOLATION" in text.splitlines()[-1]  # every section shows at 80x24


def test_header_shows_rates_cpu_shares_probes_and_backend() -> None:
    text = frame(delta(PIO, HLT, CPU))
    assert "kvm_pvm (no kvm_exit), no exit timing" in text
    assert "IO 50.0k" in text and "PRIV 20.0k" in text
    assert "off: exits (kvm_exit never fires" in text
    assert "on: io sched" in text
    h = host.host_summary(delta(PIO), 2)
    # 2 vCPUs x 30% of a second in the VMM on 2 host CPUs: 30% of the host.
    assert h.cpu_pct[view.Bucket.IO] == pytest.approx(30.0)


def test_help_lists_every_key() -> None:
    ui = state.UiState()
    state.handle_key(ui, "?", [])
    text = frame(delta(PIO), ui, 80, 40)
    for keys in ("Enter", "Esc", "space or p", "/", " d ", " r ", " q ", "R", "s or >"):
        assert keys in text
    state.handle_key(ui, "x", [])
    assert not ui.help


def test_pause_interval_and_reset_keys() -> None:
    ui = state.UiState()
    state.handle_key(ui, " ", [])
    assert ui.paused and "PAUSED" in frame(delta(PIO), ui)
    state.handle_key(ui, "p", [])
    assert not ui.paused
    for key in ["d", *"2.5", "ENTER"]:
        state.handle_key(ui, key, [])
    assert ui.interval == 2.5
    for key in ["d", *"-1", "ENTER"]:
        state.handle_key(ui, key, [])
    assert ui.interval == 2.5 and "positive" in ui.message
    state.handle_key(ui, "r", [])
    assert ui.reset_requested
    state.handle_key(ui, "q", [])
    assert ui.quit


def test_decode_keys() -> None:
    assert state.decode_keys("\x1b[A\x1b[Bq\r\x7f\x1b") == [
        "UP",
        "DOWN",
        "q",
        "ENTER",
        "BACKSPACE",
        "ESC",
    ]
    assert state.decode_keys("\x1b[5~\x1b[6~\x1b[99X/") == ["PGUP", "PGDN", "/"]


def test_drill_down_explains_the_top_reason_from_the_taxonomy() -> None:
    from vprof import taxonomy

    d = delta(("pio-vm", "1:1", Load(pio=100)))
    text, _ = screen.compose(d, Stream(), state.UiState(drill="1:1"), 200, 40, 2)
    why = taxonomy.classify_event("kvm_pio").reason
    assert f"why: kvm_pio: {why}" in text
    assert "remedy: " + taxonomy.remedy(view.Bucket.IO)[:40] in text


def test_drill_down_without_a_taxonomy_shows_no_explanation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vprof.sinks.top import explain

    monkeypatch.setattr(explain, "_taxonomy", lambda: None)
    explain.reason_line.cache_clear()
    explain.remedy_line.cache_clear()
    try:
        d = delta(("pio-vm", "1:1", Load(pio=100)))
        text, _ = screen.compose(d, Stream(), state.UiState(drill="1:1"), 120, 40, 2)
        assert "why:" not in text and "remedy:" not in text
        assert "kvm_pio" in text
    finally:
        explain.reason_line.cache_clear()
        explain.remedy_line.cache_clear()


def test_host_cpu_share_counts_a_new_vcpu_only_within_the_interval() -> None:
    # First seen this interval, with 3 s of ledger behind it: counted as 1 s.
    d = snap(vm("new-vm", "1:1", Load(vmm=0.5), seconds=3.0), seconds=3.0, interval=1.0)
    h = host.host_summary(d, 2)
    assert h.cpu_pct[view.Bucket.IO] == pytest.approx(25.0)
    assert h.guest_cpu_pct == pytest.approx(25.0)


def test_drill_down_explains_every_taxonomy_entry_by_the_name_snapshots_carry() -> None:
    from collections import Counter

    from vprof import sanitize
    from vprof.sinks.top import explain
    from vprof.taxonomy.lookup import entries

    items = [item.entry for item in entries()]
    names = Counter((e.isa, e.name) for e in items)
    for e in items:
        line = explain.reason_line(e.isa, e.name)
        assert line is not None, (e.isa, hex(e.code), e.name)
        if names[e.isa, e.name] == 1:  # arm64 names SERROR twice (EC 0x2F, type 0x101)
            assert line == sanitize.display(e.reason, 200)
    # Beyond the first 0x410 codes: SEV-ES VMGEXIT codes and SVM_EXIT_ERR.
    assert explain.reason_line("svm", "vmgexit_mmio_read") is not None
    assert explain.reason_line("svm", "invalid_guest_state") is not None
    # Flag and MMIO suffixes (vprof/pipeline/reasons.py) explain as their base reason.
    npf = explain.reason_line("svm", "npf")
    assert npf is not None and explain.reason_line("svm", "npf+MMIO") == npf
    assert explain.reason_line("userspace", "KVM_EXIT_IO") is not None
    assert explain.reason_line("vmx", "unknown:vmx:999") is None
    assert explain.reason_line("event", "no_such_event") is None
