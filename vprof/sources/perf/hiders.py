"""Classic-tracepoint BPF programs that can hide events from perf counters.

The kernel runs a tracepoint's BPF programs before its perf events, and an
event a program returns 0 for never reaches perf (kernel/trace/
trace_event_perf.c, perf_trace_run_bpf_submit).  So a perf counter can read
less than happened while another tool's (or vprof's own BPF source's)
program is attached.  This finds them as bpftool does: each process's
perf_event fds, asked with BPF_TASK_FD_QUERY what is attached.

A program hides nothing when it returns 1 on every path (trace_call_bpf ANDs
the returns of a tracepoint's programs), as vprof's own classic tracepoint
programs do (VPROF_PASS).  That is read from the program's own code, not its
name: the kernel's translated instructions (BPF_OBJ_GET_INFO_BY_FD) pass
when every exit is reached only from `r0 = 1` right before it, with no tail
call; anything else (or code the kernel will not show) counts as hiding.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

_NR_BPF = {"x86_64": 321, "aarch64": 280}
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_TASK_FD_QUERY = 20
BPF_FD_TYPE_TRACEPOINT = 1  # raw tracepoints (type 0) do not hide events
_QUERY = struct.Struct("<IIIIQIIQQ")  # pid, fd, flags, buf_len, buf, prog_id, fd_type, off, addr
PERF_LINK = "anon_inode:[perf_event]"
_INSN = struct.Struct("<BBhi")  # code, dst:4|src:4, off, imm
_INFO_LEN = 80  # struct bpf_prog_info up to name[16]
_XLATED_LEN, _XLATED_PTR = 20, 32  # its xlated_prog_len, xlated_prog_insns
_MOV_R0_1 = {(0xB7, 1), (0xB4, 1)}  # r0 = 1, w0 = 1 (zero-extends)
_TAIL_CALL_HELPER = 12


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        return -1
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.syscall(nr, cmd, attr, len(attr)))


def returns_one(insns: bytes) -> bool:
    """Whether BPF code returns 1 on every path: each exit is reached only
    by falling through from `r0 = 1`, and nothing tail-calls away."""
    code = [_INSN.unpack_from(insns, i) for i in range(0, len(insns) - 7, 8)]
    targets, exits = set(), []
    for i, (op, regs, off, imm) in enumerate(code):
        if op & 0x07 not in (0x05, 0x06):  # not a JMP or JMP32 instruction
            continue
        if op == 0x95:
            exits.append(i)
        elif op & 0xF0 == 0xF0 or (op == 0x85 and regs >> 4 == 0 and imm == _TAIL_CALL_HELPER):
            return False  # a tail call: another program's return stands
        elif op == 0x85 and regs >> 4 == 1:  # a call of a subprogram: its entry
            targets.add(i + 1 + imm)
        elif op & 0xF0 not in (0x80, 0x90):  # a jump (helper calls and exit are not)
            targets.add(i + 1 + (imm if op == 0x06 else off))  # JMP32|JA is gotol
    for i in exits:
        if i == 0 or i in targets:
            return False
        op, regs, _, imm = code[i - 1]
        if regs & 0x0F != 0 or (op, imm) not in _MOV_R0_1:
            return False
    return bool(exits)


def _xlated(prog_id: int) -> bytes | None:
    """The kernel's translated instructions of program `prog_id`."""
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<I", attr, 0, prog_id)
    fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
    if fd < 0:
        return None
    try:
        info = ctypes.create_string_buffer(_INFO_LEN)
        attr = ctypes.create_string_buffer(16)
        struct.pack_into("<IIQ", attr, 0, fd, _INFO_LEN, ctypes.addressof(info))
        if _bpf(BPF_OBJ_GET_INFO_BY_FD, attr) != 0:
            return None
        size = struct.unpack_from("<I", info, _XLATED_LEN)[0]
        if size == 0:
            return None  # not shown without CAP_BPF / CAP_SYS_ADMIN
        insns = ctypes.create_string_buffer(size)
        info = ctypes.create_string_buffer(_INFO_LEN)
        struct.pack_into("<I", info, _XLATED_LEN, size)
        struct.pack_into("<Q", info, _XLATED_PTR, ctypes.addressof(insns))
        struct.pack_into("<IIQ", attr, 0, fd, _INFO_LEN, ctypes.addressof(info))
        if _bpf(BPF_OBJ_GET_INFO_BY_FD, attr) != 0:
            return None
        return insns.raw[:size]
    finally:
        os.close(fd)


def may_hide(prog_id: int) -> bool:
    """Whether program `prog_id` can return other than 1 (or we cannot tell)."""
    insns = _xlated(prog_id)
    return insns is None or not returns_one(insns)


def _query(pid: int, fd: int) -> tuple[int, str, int] | None:
    """(fd_type, tracepoint name, program id) of what is attached to fd `fd` of `pid`."""
    buf = ctypes.create_string_buffer(256)
    attr = ctypes.create_string_buffer(128)
    _QUERY.pack_into(attr, 0, pid, fd, 0, len(buf), ctypes.addressof(buf), 0, 0, 0, 0)
    if _bpf(BPF_TASK_FD_QUERY, attr) != 0:
        return None  # no program attached, or not ours to ask
    prog_id, fd_type = _QUERY.unpack_from(attr, 0)[5:7]
    return fd_type, buf.value.decode(errors="replace"), prog_id


def hiding_programs(
    proc_root: str, events: set[str], skip_pid: int | None = None
) -> dict[str, list[int]]:
    """{event name: pids} of classic tracepoint BPF programs on `events`
    (bare names such as "kvm_pio") that may hide events (`may_hide`), in
    every process but `skip_pid`."""
    out: dict[str, list[int]] = {}
    hides: dict[int, bool] = {}  # program id -> may hide (one look each)
    for entry in os.listdir(proc_root):
        if not entry.isdigit() or int(entry) == skip_pid:
            continue
        base = f"{proc_root}/{entry}/fd"
        try:
            fds = os.listdir(base)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{base}/{fd}") != PERF_LINK:
                    continue
            except OSError:
                continue
            found = _query(int(entry), int(fd))
            if found is None or found[0] != BPF_FD_TYPE_TRACEPOINT or found[1] not in events:
                continue
            if found[2] not in hides:
                hides[found[2]] = may_hide(found[2])
            if hides[found[2]]:
                pids = out.setdefault(found[1], [])
                if int(entry) not in pids:
                    pids.append(int(entry))
    return out
