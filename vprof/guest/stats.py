"""KVM binary statistics (KVM_GET_STATS_FD): read the fd, parse the blob.

Layout from include/uapi/linux/kvm.h (struct kvm_stats_header, struct
kvm_stats_desc) and Documentation/virt/kvm/api.rst 4.133: a header, an id
string, descriptors of 16 bytes + name_size each, then u64 data.  The kernel
serves this fd only to the process that owns the VM, so the micro-guest reads
its own statistics at the end of a run.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from vprof.guest import kvmapi as K

HEADER = struct.Struct("<6I")  # flags, name_size, num_desc, id_offset, desc_offset, data_offset
DESC = struct.Struct("<IhHII")  # flags, exponent, size, offset, bucket_size

STAT_TYPES = {0: "cumulative", 1: "instant", 2: "peak", 3: "linear_hist", 4: "log_hist"}
STAT_UNITS = {0: "none", 1: "bytes", 2: "seconds", 3: "cycles", 4: "boolean"}


@dataclass(frozen=True)
class StatDesc:
    name: str
    type: str
    unit: str
    exponent: int
    size: int
    offset: int
    bucket_size: int


def parse_header(blob: bytes) -> tuple[int, int, int, int, int, int]:
    flags, name_size, num_desc, id_off, desc_off, data_off = HEADER.unpack_from(blob, 0)
    return flags, name_size, num_desc, id_off, desc_off, data_off


def parse_descriptors(blob: bytes) -> tuple[str, list[StatDesc]]:
    """The stats id (e.g. "kvm-1234") and every descriptor."""
    _, name_size, num_desc, id_off, desc_off, _ = parse_header(blob)
    ident = blob[id_off : id_off + name_size].split(b"\0", 1)[0].decode()
    descs = []
    step = DESC.size + name_size
    for i in range(num_desc):
        pos = desc_off + i * step
        flags, exponent, size, offset, bucket = DESC.unpack_from(blob, pos)
        raw = blob[pos + DESC.size : pos + step].split(b"\0", 1)[0]
        descs.append(
            StatDesc(
                name=raw.decode(errors="replace"),
                type=STAT_TYPES.get(flags & 0xF, f"type{flags & 0xF}"),
                unit=STAT_UNITS.get((flags >> 4) & 0xF, f"unit{(flags >> 4) & 0xF}"),
                exponent=exponent,
                size=size,
                offset=offset,
                bucket_size=bucket,
            )
        )
    return ident, descs


def data_end(blob: bytes) -> int:
    """Bytes needed to hold the header, descriptors and all data."""
    data_off = parse_header(blob)[5]
    _, descs = parse_descriptors(blob)
    return data_off + max((d.offset + 8 * d.size for d in descs), default=0)


def parse_stats(blob: bytes) -> dict[str, int | list[int]]:
    """name -> value (a list for histograms and other multi-value stats)."""
    data_off = parse_header(blob)[5]
    _, descs = parse_descriptors(blob)
    out: dict[str, int | list[int]] = {}
    for d in descs:
        values = list(struct.unpack_from(f"<{d.size}Q", blob, data_off + d.offset))
        out[d.name] = values[0] if d.size == 1 else values
    return out


def read_blob(stats_fd: int) -> bytes:
    """Header and descriptors first (they say how long the data is), then all."""
    data_off = parse_header(os.pread(stats_fd, HEADER.size, 0))[5]
    end = data_end(os.pread(stats_fd, data_off, 0))
    blob = os.pread(stats_fd, end, 0)
    if len(blob) < end:
        raise OSError(f"short read of KVM stats: {len(blob)} of {end} bytes")
    return blob


def read_stats(fd: int) -> dict[str, int | list[int]]:
    """Statistics of a VM or vCPU fd; they exist only in this process."""
    stats_fd = K.ioctl(fd, K.KVM_GET_STATS_FD)
    try:
        return parse_stats(read_blob(stats_fd))
    finally:
        os.close(stats_fd)
