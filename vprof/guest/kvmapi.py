"""KVM ioctl numbers, structures and exit codes, mirrored from the kernel UAPI.

Sources: include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (Linux
6.x).  Only what the micro-guest needs.  Calls go through ctypes' libc.ioctl
rather than fcntl.ioctl because a ctypes foreign call releases the GIL, so
several vCPU threads can sit in KVM_RUN at once.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

KVMIO = 0xAE
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, nr: int, size: int) -> int:
    """asm-generic/ioctl.h: dir<<30 | size<<16 | type<<8 | nr."""
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def io(nr: int) -> int:
    return _ioc(0, nr, 0)


def iow(nr: int, size: int) -> int:
    return _ioc(_IOC_WRITE, nr, size)


def ior(nr: int, size: int) -> int:
    return _ioc(_IOC_READ, nr, size)


def iowr(nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, size)


# --- structures (arch/x86/include/uapi/asm/kvm.h) ---------------------------
_REG_NAMES = [
    "rax",
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "rsp",
    "rbp",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rip",
    "rflags",
]


class KvmRegs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in _REG_NAMES]


class KvmSegment(ctypes.Structure):
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("selector", ctypes.c_uint16),
        ("type", ctypes.c_uint8),
        ("present", ctypes.c_uint8),
        ("dpl", ctypes.c_uint8),
        ("db", ctypes.c_uint8),
        ("s", ctypes.c_uint8),
        ("l", ctypes.c_uint8),
        ("g", ctypes.c_uint8),
        ("avl", ctypes.c_uint8),
        ("unusable", ctypes.c_uint8),
        ("padding", ctypes.c_uint8),
    ]


class KvmDtable(ctypes.Structure):
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint16),
        ("padding", ctypes.c_uint16 * 3),
    ]


class KvmSregs(ctypes.Structure):
    _fields_ = [
        *[(n, KvmSegment) for n in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")],
        ("gdt", KvmDtable),
        ("idt", KvmDtable),
        *[(n, ctypes.c_uint64) for n in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")],
        ("interrupt_bitmap", ctypes.c_uint64 * 4),
    ]


class KvmUserspaceMemoryRegion(ctypes.Structure):
    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("guest_phys_addr", ctypes.c_uint64),
        ("memory_size", ctypes.c_uint64),
        ("userspace_addr", ctypes.c_uint64),
    ]


class KvmCpuidEntry2(ctypes.Structure):
    _fields_ = [
        *[(n, ctypes.c_uint32) for n in ("function", "index", "flags", "eax", "ebx", "ecx", "edx")],
        ("padding", ctypes.c_uint32 * 3),
    ]


class KvmIoeventfd(ctypes.Structure):
    _fields_ = [
        ("datamatch", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
        ("len", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("pad", ctypes.c_uint8 * 36),
    ]


class KvmLapicState(ctypes.Structure):
    _fields_ = [("regs", ctypes.c_uint8 * 1024)]


def cpuid2_struct(nent: int) -> Any:
    """struct kvm_cpuid2 with room for nent entries."""

    class KvmCpuid2(ctypes.Structure):
        _fields_ = [
            ("nent", ctypes.c_uint32),
            ("padding", ctypes.c_uint32),
            ("entries", KvmCpuidEntry2 * nent),
        ]

    s = KvmCpuid2()
    s.nent = nent
    return s


# --- ioctl numbers (include/uapi/linux/kvm.h) --------------------------------
KVM_GET_API_VERSION = io(0x00)
KVM_CREATE_VM = io(0x01)
KVM_CHECK_EXTENSION = io(0x03)
KVM_GET_VCPU_MMAP_SIZE = io(0x04)
KVM_GET_SUPPORTED_CPUID = iowr(0x05, 8)
KVM_CREATE_VCPU = io(0x41)
KVM_SET_USER_MEMORY_REGION = iow(0x46, ctypes.sizeof(KvmUserspaceMemoryRegion))
KVM_CREATE_IRQCHIP = io(0x60)
KVM_IOEVENTFD = iow(0x79, ctypes.sizeof(KvmIoeventfd))
KVM_RUN = io(0x80)
KVM_GET_REGS = ior(0x81, ctypes.sizeof(KvmRegs))
KVM_SET_REGS = iow(0x82, ctypes.sizeof(KvmRegs))
KVM_GET_SREGS = ior(0x83, ctypes.sizeof(KvmSregs))
KVM_SET_SREGS = iow(0x84, ctypes.sizeof(KvmSregs))
KVM_GET_LAPIC = ior(0x8E, ctypes.sizeof(KvmLapicState))
KVM_SET_LAPIC = iow(0x8F, ctypes.sizeof(KvmLapicState))
KVM_SET_CPUID2 = iow(0x90, 8)
KVM_SET_MP_STATE = iow(0x99, 4)
KVM_GET_STATS_FD = io(0xCE)

# KVM_CHECK_EXTENSION capabilities
KVM_CAP_IRQCHIP = 0
KVM_CAP_NR_VCPUS = 9
KVM_CAP_IOEVENTFD = 36
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_BINARY_STATS_FD = 203

KVM_IOEVENTFD_FLAG_PIO = 1 << 1
# With an in-kernel LAPIC only vCPU 0 starts runnable; the others wait for
# INIT/SIPI (KVM_RUN returns EAGAIN) unless made runnable explicitly.
KVM_MP_STATE_RUNNABLE = 0

# struct kvm_run: exit_reason at offset 8; the exit union starts at 32.
RUN_EXIT_REASON = 8
RUN_EXIT_UNION = 32

KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

EXIT_NAMES = {
    0: "UNKNOWN",
    1: "EXCEPTION",
    2: "IO",
    5: "HLT",
    6: "MMIO",
    8: "SHUTDOWN",
    9: "FAIL_ENTRY",
    10: "INTR",
    17: "INTERNAL_ERROR",
    24: "SYSTEM_EVENT",
}

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
        lib.ioctl.restype = ctypes.c_int
        _libc = lib
    return _libc


def ioctl(fd: int, request: int, arg: Any = None) -> int:
    """ioctl(2) that releases the GIL; raises OSError on failure.

    arg is None, an int (passed by value) or a ctypes object (passed by reference).
    """
    if arg is None:
        ptr: Any = None
    elif isinstance(arg, int):
        ptr = ctypes.c_void_p(arg)
    else:
        ptr = ctypes.byref(arg)
    ret = libc().ioctl(fd, request, ptr)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ioctl 0x{request:x}: {os.strerror(err)}")
    return int(ret)
