"""perf_event_open(2) in counting mode for tracepoints, through ctypes.

No bcc, no compiler, no headers: the attribute struct is packed by hand
(include/uapi/linux/perf_event.h, PERF_ATTR_SIZE_VER5 = 112 bytes is enough
for what we set), tracepoint ids come from tracefs `events/<sys>/<name>/id`.
Counters of one thread form one group, so one read(2) returns them all.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct

# Syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl, arm64 unistd.h).
_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
PERF_TYPE_TRACEPOINT = 2
PERF_FORMAT_GROUP = 1 << 3
ATTR_SIZE = 112
_ATTR = struct.Struct(
    "<IIQQQQQ"
)  # type, size, config, sample_period, sample_type, read_format, flags
# ioctls: _IO('$', 0), _IO('$', 1), _IOW('$', 6, char *)
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_FILTER = 0x40082406
_FLAG_DISABLED = 1 << 0

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


class PerfError(OSError):
    """perf_event_open or one of its ioctls failed."""


def tracepoint_id(tracefs: str, system: str, name: str) -> int | None:
    """The tracepoint's id, or None where this kernel has no such event."""
    try:
        with open(f"{tracefs}/events/{system}/{name}/id") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def open_counter(tp_id: int, tid: int, group_fd: int = -1, tp_filter: str = "") -> int:
    """A counting-mode counter of tracepoint `tp_id` in thread `tid` (any CPU)."""
    nr = _NR_PERF_EVENT_OPEN.get(platform.machine())
    if nr is None:
        raise PerfError(errno.ENOSYS, f"perf_event_open: unknown arch {platform.machine()}")
    leader = group_fd < 0
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    fmt = PERF_FORMAT_GROUP if leader else 0
    # Disabled until the filter is set, so no event counts without it.
    _ATTR.pack_into(attr, 0, PERF_TYPE_TRACEPOINT, ATTR_SIZE, tp_id, 0, 0, fmt, _FLAG_DISABLED)
    lib = _lib()
    fd = int(lib.syscall(nr, attr, tid, -1, group_fd, 0))
    if fd < 0:
        err = ctypes.get_errno()
        raise PerfError(err, f"perf_event_open(tracepoint {tp_id}, tid {tid}): {os.strerror(err)}")
    try:
        if tp_filter:
            buf = ctypes.create_string_buffer(tp_filter.encode())
            if lib.ioctl(fd, PERF_EVENT_IOC_SET_FILTER, buf) != 0:
                err = ctypes.get_errno()
                raise PerfError(err, f"filter {tp_filter!r}: {os.strerror(err)}")
        if lib.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) != 0:
            err = ctypes.get_errno()
            raise PerfError(err, f"enable: {os.strerror(err)}")
    except PerfError:
        os.close(fd)
        raise
    return fd


def read_group(leader_fd: int, members: int) -> list[int]:
    """The counts of a group, leader first (PERF_FORMAT_GROUP: nr, then values)."""
    raw = os.read(leader_fd, 8 * (members + 1))
    nr = struct.unpack_from("<Q", raw, 0)[0]
    return list(struct.unpack_from(f"<{nr}Q", raw, 8))


def raise_nofile(needed: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to at least `needed` (up to the hard
    limit, or beyond it with CAP_SYS_RESOURCE); the limits in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed <= soft:
        return soft, hard
    want_hard = hard if hard == resource.RLIM_INFINITY or needed <= hard else needed
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, want_hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)
