"""vprof/records/hot.py: decoding the per-thread counter blocks of probes/count.h."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from vprof.records import events as ev
from vprof.records import hot
from vprof.records import maps as records

PROBES = Path(__file__).resolve().parents[1] / "probes"


def _block(pid: int, tid: int, counts: dict[int, int]) -> bytes:
    n = [0] * hot.HOT_N
    for i, c in counts.items():
        n[i] = c
    return struct.pack(f"<{hot.HOT_N}Q", *n) + struct.pack("<II", pid, tid)


def test_layout_matches_count_h() -> None:
    text = (PROBES / "count.h").read_text()
    for name in ("HOT_EMULATE", "HOT_FPU", "HOT_INJ_EXC", "HOT_USERSPACE_EXIT", "HOT_N"):
        assert re.search(rf"#define {name} {getattr(hot, name)}\b", text), name


@pytest.mark.parametrize(
    ("index", "name", "detail"),
    [
        (0xF4, "kvm_emulate_insn", 0xF4),  # hlt
        (256 | 0x32, "kvm_emulate_insn", 0x0F32),  # rdmsr, two-byte opcode
        (512 | 0x48, "kvm_emulate_insn", 0x10048),  # failed
        (512 | 256 | 0x01, "kvm_emulate_insn", 0x10F01),
        (hot.HOT_FPU + 1, "kvm_fpu", 1),
        (hot.HOT_INJ_EXC + 14, "kvm_inj_exception", 14),
        (hot.HOT_USERSPACE_EXIT + 2, "kvm_userspace_exit", 2),  # KVM_EXIT_IO
        (hot.HOT_N - 1, "kvm_userspace_exit", 63),
    ],
)
def test_index_event(index: int, name: str, detail: int) -> None:
    assert hot.index_event(index) == (name, detail)


def test_index_out_of_range() -> None:
    with pytest.raises(ValueError):
        hot.index_event(hot.HOT_N)


def test_decode_owned_and_free_blocks() -> None:
    raw = [
        (b"\0\0\0\0", [_block(100, 101, {0xF4: 7, hot.HOT_FPU: 3})]),
        (b"\1\0\0\0", [_block(0, 0, {})]),  # free
        (b"\2\0\0\0", [b"short"]),  # does not decode: counted
    ]
    recs, errors = hot.decode_hot(raw)
    assert errors == 1
    assert sorted(recs, key=lambda r: r.name) == [
        ev.EventRecord(100, 101, "kvm_emulate_insn", 0xF4, 7, 0),
        ev.EventRecord(100, 101, "kvm_fpu", 0, 3, 0),
    ]


def test_decode_merges_with_the_hash() -> None:
    """Hot records join the events hash's records in one Decoded."""
    key = ev.CEventKey(100, 101, 6, 0, 0xF4)
    val = ev.CEventVal(2, 0)
    maps = {
        "events": [(bytes(key), [bytes(val)])],
        "hot": [(b"\0\0\0\0", [_block(100, 101, {0xF4: 5})])],
    }
    d = records.decode(maps)
    assert d.errors == 0
    assert sum(e.count for e in d.events if e.detail == 0xF4) == 7


def test_stale_keys_find_a_dead_vms_blocks() -> None:
    from vprof.records.maps import stale_keys

    raw = {"hot": [(b"\0\0\0\0", [_block(77, 78, {1: 1})]), (b"\1\0\0\0", [_block(88, 89, {})])]}
    assert stale_keys(raw, {77}) == {"hot": [b"\0\0\0\0"]}
