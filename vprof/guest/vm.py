"""The VMM: a KVM virtual machine with N vCPU threads running one Program.

All KVM calls go through kvmapi.ioctl (ctypes, GIL released), so the vCPU
threads run in the kernel in parallel and Python only runs on exits to
userspace.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal
import struct
import threading
from dataclasses import dataclass, field

from vprof.guest import kvmapi as K
from vprof.guest import layout as L
from vprof.guest import workloads as W

PR_SET_NAME = 15
MAP_NORESERVE = 0x4000  # asm-generic/mman-common.h; Python 3.11's mmap lacks it
RFLAGS_FIXED = 0x2
KICK_SIGNAL = signal.SIGUSR1


class KvmUnavailable(Exception):
    """/dev/kvm is missing or not usable; the message says how to fix it."""


class GuestFault(Exception):
    """The guest did something its program never does (a bug, not bad input)."""


def open_kvm(path: str = "/dev/kvm") -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KvmUnavailable(
            f"{path} does not exist: load the KVM module (modprobe kvm_intel, kvm_amd or "
            "kvm_pvm) or run on a host with virtualization enabled"
        ) from None
    except PermissionError:
        raise KvmUnavailable(
            f"no permission to open {path}: run as root or add this user to the 'kvm' group"
        ) from None
    version = K.ioctl(fd, K.KVM_GET_API_VERSION)
    if version != 12:
        os.close(fd)
        raise KvmUnavailable(f"{path} speaks KVM API version {version}, not 12")
    return fd


def max_vcpus(kvm_fd: int) -> int:
    """KVM_CAP_MAX_VCPUS, falling back to KVM_CAP_NR_VCPUS (api.rst)."""
    n = K.ioctl(kvm_fd, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MAX_VCPUS)
    return n or K.ioctl(kvm_fd, K.KVM_CHECK_EXTENSION, K.KVM_CAP_NR_VCPUS) or 4


def _anon_mmap(size: int, *, noreserve: bool = False) -> tuple[mmap.mmap, int]:
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    if noreserve:
        flags |= MAP_NORESERVE
    mem = mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    return mem, addr


@dataclass
class VcpuResult:
    index: int
    tid: int = 0
    iterations: int = 0
    exits: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class Vcpu:
    def __init__(self, vm: Machine, index: int) -> None:
        self.vm = vm
        self.index = index
        self.fd = K.ioctl(vm.fd, K.KVM_CREATE_VCPU, index)
        size = K.ioctl(vm.kvm_fd, K.KVM_GET_VCPU_MMAP_SIZE)
        self.run = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.result = VcpuResult(index)
        self.thread = threading.Thread(target=self._thread, name=f"CPU {index}/KVM", daemon=True)
        self.started = threading.Event()
        self.go = threading.Event()
        self.finished = threading.Event()

    # --- set-up ------------------------------------------------------------
    def setup(self) -> None:
        K.ioctl(self.fd, K.KVM_SET_CPUID2, self.vm.cpuid)
        self._set_sregs()
        self._set_regs()
        K.ioctl(self.fd, K.KVM_SET_MP_STATE, ctypes.c_uint32(K.KVM_MP_STATE_RUNNABLE))
        if W.needs_timer(self.vm.workload):
            self._start_lapic_timer()

    def _set_sregs(self) -> None:
        s = K.KvmSregs()
        K.ioctl(self.fd, K.KVM_GET_SREGS, s)
        user = self.vm.mode == "user"
        code = (L.SEL_USER_CS, 3) if user else (L.SEL_KERNEL_CS, 0)
        data = (L.SEL_USER_DS, 3) if user else (L.SEL_KERNEL_DS, 0)
        _segment(s.cs, code[0], code[1], type_=0xB, long=1)
        for seg in (s.ds, s.es, s.fs, s.gs, s.ss):
            _segment(seg, data[0], data[1], type_=0x3, long=0)
        s.tr.selector = L.tss_selector(self.index)
        s.tr.base = L.tss_addr(self.index)
        s.tr.limit = L.TSS_LIMIT
        s.tr.type = 0xB  # busy 64-bit TSS
        s.tr.present = 1
        s.tr.s = 0
        s.tr.unusable = 0
        s.gdt.base, s.gdt.limit = L.GDT_ADDR, len(self.vm.gdt) - 1
        s.idt.base, s.idt.limit = L.IDT_ADDR, 256 * 16 - 1
        s.cr0, s.cr3, s.cr4, s.efer = L.CR0, L.PML4_ADDR, L.CR4, L.EFER
        K.ioctl(self.fd, K.KVM_SET_SREGS, s)

    def _set_regs(self) -> None:
        r = K.KvmRegs()
        r.rip = self.vm.program.entry
        r.rbp = L.data_page(self.index)
        user = self.vm.mode == "user"
        r.rsp = L.user_stack_top(self.index) if user else L.kernel_stack_top(self.index)
        r.rflags = RFLAGS_FIXED  # IF=0: timer interrupts are taken only in STI; HLT
        K.ioctl(self.fd, K.KVM_SET_REGS, r)

    def _start_lapic_timer(self) -> None:
        st = K.KvmLapicState()
        K.ioctl(self.fd, K.KVM_GET_LAPIC, st)
        regs = st.regs

        def put(offset: int, value: int) -> None:
            struct.pack_into("<I", regs, offset, value)

        put(0xF0, 0x100 | W.SPURIOUS_VECTOR)  # SVR: APIC software-enabled
        put(0x3E0, 0xB)  # TDCR: divide by 1 (KVM's APIC bus runs at 1 GHz)
        put(0x320, (1 << 17) | W.TIMER_VECTOR)  # LVTT: periodic, unmasked
        put(0x380, W.TIMER_PERIOD_NS)  # TMICT: starts the timer
        K.ioctl(self.fd, K.KVM_SET_LAPIC, st)

    # --- running -------------------------------------------------------------
    def _thread(self) -> None:
        libc = K.libc()
        libc.prctl(PR_SET_NAME, f"CPU {self.index}/KVM".encode(), 0, 0, 0)
        # SIGTERM/SIGINT go to the main thread, which stops the guest cleanly.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        self.result.tid = threading.get_native_id()
        self.started.set()
        self.go.wait()
        try:
            self._loop()
        except (GuestFault, OSError) as exc:
            self.result.error = str(exc)
        except Exception as exc:  # a VMM bug must not pass for a clean stop
            self.result.error = f"vCPU {self.index}: {type(exc).__name__}: {exc}"
        finally:
            self.result.iterations = self.vm.read_u64(L.data_page(self.index) + L.D_ITER)
            self.finished.set()

    def _count(self, key: str) -> None:
        self.result.exits[key] = self.result.exits.get(key, 0) + 1

    def _loop(self) -> None:
        run = self.run
        while True:
            try:
                K.ioctl(self.fd, K.KVM_RUN)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    if self.vm.abandoned:
                        self.result.error = (
                            f"vCPU {self.index} did not reach an iteration boundary in time and "
                            "was stopped from outside; its last iteration may be uncounted"
                        )
                        return
                    continue
                raise
            reason = struct.unpack_from("<I", run, K.RUN_EXIT_REASON)[0]
            if reason == K.KVM_EXIT_IO:
                if self._io():
                    return
            elif reason == K.KVM_EXIT_MMIO:
                self._mmio()
            else:
                raise GuestFault(self._describe(reason))

    def _io(self) -> bool:
        """Handle a port I/O exit; True when the guest reported it is done."""
        direction, size, port, _count, offset = struct.unpack_from(
            "<BBHIQ", self.run, K.RUN_EXIT_UNION
        )
        if port == W.DONE_PORT:
            return True
        if port == W.PIO_PORT:
            if direction == K.KVM_EXIT_IO_IN:
                self.run[offset : offset + size] = b"\x5a" * size
                self._count("pio_in")
            else:
                self._count("pio_out")
            return False
        if port == W.REFILL_PORT:
            self.vm.refill(self.index)
            self._count("refill")
            return False
        if port == W.FAULT_PORT:
            vector = self.run[offset]
            if vector == W.HYPERCALL_FAILED and self.vm.workload == "vmcall":
                raise GuestFault(
                    f"vCPU {self.index}: the hypercall returned RDI, not -KVM_ENOSYS "
                    + self._regs_text()
                )
            raise GuestFault(
                f"vCPU {self.index}: exception {vector} " + self._regs_text() + self._frame()
            )
        raise GuestFault(f"vCPU {self.index}: unexpected port {port:#x} " + self._regs_text())

    def _mmio(self) -> None:
        phys, _data, length, is_write = struct.unpack_from("<Q8sIB", self.run, K.RUN_EXIT_UNION)
        if phys != W.MMIO_ADDR:
            raise GuestFault(f"vCPU {self.index}: MMIO at {phys:#x} " + self._regs_text())
        if is_write:
            self._count("mmio_write")
        else:
            value = struct.pack("<Q", W.MMIO_READ_VALUE)[:length]
            self.run[K.RUN_EXIT_UNION + 8 : K.RUN_EXIT_UNION + 8 + length] = value
            self._count("mmio_read")

    def _regs_text(self) -> str:
        r = K.KvmRegs()
        K.ioctl(self.fd, K.KVM_GET_REGS, r)
        return f"rip={r.rip:#x} rsp={r.rsp:#x} rax={r.rax:#x} rflags={r.rflags:#x}"

    def _frame(self) -> str:
        """The exception frame the CPU pushed (error code first for some vectors)."""
        r = K.KvmRegs()
        K.ioctl(self.fd, K.KVM_GET_REGS, r)
        if not 0 <= r.rsp < L.LOW_MEM_SIZE - 48:
            return ""
        words = struct.unpack_from("<6Q", self.vm.mem, r.rsp)
        return " frame=[" + " ".join(f"{w:#x}" for w in words) + "]"

    def _describe(self, reason: int) -> str:
        name = K.EXIT_NAMES.get(reason, str(reason))
        extra = ""
        if reason == K.KVM_EXIT_INTERNAL_ERROR:
            (suberror,) = struct.unpack_from("<I", self.run, K.RUN_EXIT_UNION)
            extra = f" suberror={suberror}"
        return f"vCPU {self.index}: exit {name}{extra} " + self._regs_text()


def _segment(seg: K.KvmSegment, selector: int, dpl: int, type_: int, long: int) -> None:
    seg.base, seg.limit, seg.selector = 0, 0xFFFFFFFF, selector
    seg.type, seg.present, seg.dpl, seg.s = type_, 1, dpl, 1
    seg.l, seg.db, seg.g, seg.avl, seg.unusable = long, 0 if long else 1, 1, 0, 0


class Machine:
    """One VM: memory, tables, program, irqchip and vCPUs (not yet running)."""

    def __init__(
        self, workload: str, mode: str, vcpus: int, target: int, hypercall: str = "svm"
    ) -> None:
        self.workload, self.mode, self.target = workload, mode, target
        self.kvm_fd = open_kvm()
        self.fd = K.ioctl(self.kvm_fd, K.KVM_CREATE_VM, 0)
        self.program = W.build_program(workload, mode, hypercall)
        self.gdt = L.build_gdt(vcpus)
        self.mem, addr = _anon_mmap(L.LOW_MEM_SIZE)
        self._map(0, 0, L.LOW_MEM_SIZE, addr)
        self.abandoned = False
        self.touch_mem: mmap.mmap | None = None
        if W.needs_pagetouch(workload):
            size = W.PAGETOUCH_PER_VCPU * vcpus
            self.touch_mem, taddr = _anon_mmap(size, noreserve=True)
            self.touch_mem.madvise(mmap.MADV_NOHUGEPAGE)
            self._map(1, W.PAGETOUCH_BASE, size, taddr)
        K.ioctl(self.fd, K.KVM_CREATE_IRQCHIP)
        self.eventfd = -1
        if workload in ("pio-kernel", "mixed"):
            self._ioeventfd()
        self.cpuid = self._supported_cpuid()
        self._load_memory(vcpus)
        self.vcpus = [Vcpu(self, i) for i in range(vcpus)]
        for v in self.vcpus:
            v.setup()

    def _map(self, slot: int, gpa: int, size: int, addr: int) -> None:
        region = K.KvmUserspaceMemoryRegion(slot, 0, gpa, size, addr)
        K.ioctl(self.fd, K.KVM_SET_USER_MEMORY_REGION, region)

    def _ioeventfd(self) -> None:
        self.eventfd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        req = K.KvmIoeventfd(
            addr=W.PIO_KERNEL_PORT, len=1, fd=self.eventfd, flags=K.KVM_IOEVENTFD_FLAG_PIO
        )
        K.ioctl(self.fd, K.KVM_IOEVENTFD, req)

    def _supported_cpuid(self) -> object:
        """The host's supported CPUID, given to every vCPU (long mode needs LM)."""
        nent = 256
        while True:
            cpuid = K.cpuid2_struct(nent)
            try:
                K.ioctl(self.kvm_fd, K.KVM_GET_SUPPORTED_CPUID, cpuid)
                return cpuid
            except OSError as exc:
                if exc.errno != errno.E2BIG or nent >= 4096:
                    raise
                nent *= 2

    def _load_memory(self, vcpus: int) -> None:
        self.write(L.GDT_ADDR, self.gdt)
        self.write(L.IDT_ADDR, L.build_idt(self.program.vectors))
        for gpa, page in L.build_page_tables().items():
            self.write(gpa, page)
        self.write(L.CODE_ADDR, self.program.code)
        for i in range(vcpus):
            base = L.data_page(i)
            self.write_u64(base + L.D_TARGET, self.target)
            self.write(L.tss_addr(i), L.build_tss(L.kernel_stack_top(i)))
            region = W.PAGETOUCH_BASE + i * W.PAGETOUCH_PER_VCPU
            self.write_u64(base + L.D_CURSOR, region)
            self.write_u64(base + L.D_LIMIT, region + W.PAGETOUCH_PER_VCPU)

    def write(self, gpa: int, data: bytes) -> None:
        self.mem[gpa : gpa + len(data)] = data

    def write_u64(self, gpa: int, value: int) -> None:
        struct.pack_into("<Q", self.mem, gpa, value)

    def read_u64(self, gpa: int) -> int:
        return int(struct.unpack_from("<Q", self.mem, gpa)[0])

    def refill(self, index: int) -> None:
        """Discard a vCPU's touched pages so the next touches are first touches."""
        assert self.touch_mem is not None
        off = index * W.PAGETOUCH_PER_VCPU
        self.touch_mem.madvise(mmap.MADV_DONTNEED, off, W.PAGETOUCH_PER_VCPU)
        self.write_u64(L.data_page(index) + L.D_CURSOR, W.PAGETOUCH_BASE + off)

    def ioeventfd_signals(self) -> int | None:
        """Writes KVM signalled on the pio-kernel ioeventfd (None without one)."""
        if self.eventfd < 0:
            return None
        try:
            return os.eventfd_read(self.eventfd)
        except BlockingIOError:
            return 0

    def stop(self) -> None:
        """Ask every vCPU to finish its current iteration and report done."""
        for i in range(len(self.vcpus)):
            self.write_u64(L.data_page(i) + L.D_STOP, 1)

    def close(self) -> None:
        """Release the VM's file descriptors (the vCPU threads must be done)."""
        for fd in [v.fd for v in self.vcpus] + [self.fd, self.kvm_fd, self.eventfd]:
            if fd >= 0:
                os.close(fd)
        self.vcpus = []

    def abandon(self) -> None:
        """Interrupt KVM_RUN in vCPUs that ignored stop() (e.g. blocked in the kernel).

        Needs a no-op handler for KICK_SIGNAL installed by the main thread: the
        signal makes KVM_RUN return EINTR in the target thread.
        """
        self.abandoned = True
        for v in self.vcpus:
            if not v.finished.is_set() and v.thread.ident is not None:
                signal.pthread_kill(v.thread.ident, KICK_SIGNAL)
