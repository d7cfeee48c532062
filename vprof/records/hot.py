"""Decode shared_hot, the per-thread counter blocks of probes/count.h.

The busiest small-range events (kvm_emulate_insn by opcode, kvm_fpu,
kvm_inj_exception by vector, kvm_userspace_exit by reason) are counted in
one block of counters per vCPU thread; the rest, and threads without a
block, in the events hash.  This module turns each owned block into the same
EventRecords the hash gives, so nothing downstream knows which store
counted an event.  Pure: no bcc.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from vprof.records.events import EventRecord

# probes/count.h: counter index ranges within a block.
HOT_EMULATE, HOT_FPU, HOT_INJ_EXC, HOT_USERSPACE_EXIT, HOT_N = 0, 1024, 1026, 1058, 1122
BLOCK_SIZE = HOT_N * 8 + 8  # struct hot_block: u64 n[HOT_N]; u32 pid; u32 tid
_COUNTS = struct.Struct(f"<{HOT_N}Q")
_OWNER = struct.Struct("<II")


def index_event(i: int) -> tuple[str, int]:
    """(tracepoint name, detail as vprof/records/events.py decodes it) of counter `i`.

    The detail is the one the events hash would carry, so the aggregator
    names both alike: emulate_insn is failed << 16 | opcode (0x0fXX for a
    two-byte opcode), kvm_fpu the load flag, kvm_inj_exception the vector,
    kvm_userspace_exit the KVM_EXIT_* reason.
    """
    if HOT_EMULATE <= i < HOT_FPU:
        failed, two_byte, op = i >> 9 & 1, i >> 8 & 1, i & 0xFF
        return "kvm_emulate_insn", failed << 16 | (0x0F00 if two_byte else 0) | op
    if i < HOT_INJ_EXC:
        return "kvm_fpu", i - HOT_FPU
    if i < HOT_USERSPACE_EXIT:
        return "kvm_inj_exception", i - HOT_INJ_EXC
    if i < HOT_N:
        return "kvm_userspace_exit", i - HOT_USERSPACE_EXIT
    raise ValueError(f"hot counter {i} out of range")


def owner(value: bytes) -> tuple[int, int]:
    """(pid, tid) owning a block; (0, 0) when it is free."""
    if len(value) != BLOCK_SIZE:
        raise ValueError(f"hot_block: {len(value)} bytes, want {BLOCK_SIZE}")
    pid, tid = _OWNER.unpack_from(value, HOT_N * 8)
    return pid, tid


def owner_bytes(value: bytes) -> bytes:
    """The little-endian pid field of a block, as stored."""
    return value[HOT_N * 8 : HOT_N * 8 + 4]


def decode_block(value: bytes) -> list[EventRecord]:
    """The non-zero counters of one block, as event records."""
    pid, tid = owner(value)
    if pid == 0:
        return []
    counts = _COUNTS.unpack_from(value)
    return [EventRecord(pid, tid, *index_event(i), n, 0) for i, n in enumerate(counts) if n]


def decode_hot(raw: Sequence[tuple[bytes, Sequence[bytes]]]) -> tuple[list[EventRecord], int]:
    """Every owned block's records, and the number of entries that did not decode."""
    out: list[EventRecord] = []
    errors = 0
    for _key, values in raw:
        try:
            out.extend(decode_block(values[0]))
        except (ValueError, IndexError, struct.error):
            errors += 1
    return out, errors
