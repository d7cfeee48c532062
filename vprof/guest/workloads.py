"""Workloads: the distinctive constants and the guest program for each.

Tests match host-side events to workloads by these constants, so they are
chosen to appear nowhere else: the guest's own setup touches none of them.

Every program is one loop per vCPU:

    loop:  if data.stop: goto done
           <the workload's operations>      # ops_by_kind(workload) per pass
           data.iter += 1
           if data.iter != data.target: goto loop
    done:  report "done" to the VMM

In `user` mode the loop runs at CPL3 and the operations that need CPL0
(port I/O, MSRs, HLT, the pagetouch refill) are done by a CPL0 handler; in
`kernel` mode the loop itself runs at CPL0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vprof.guest import layout as L
from vprof.guest.asm import Asm, imm8, imm16, imm32

# --- constants that identify each workload's events --------------------------
PIO_PORT = 0x5650  # pio: OUT and IN, both exit to the VMM (KVM_EXIT_IO)
PIO_KERNEL_PORT = 0x5660  # pio-kernel: OUT to an ioeventfd, handled in the kernel
PIO_KERNEL_IN_PORT = 0xA1  # pio-kernel: IN from the in-kernel slave PIC's mask register
MMIO_ADDR = 0xD0000000  # mmio: no memslot here, so each access is a KVM_EXIT_MMIO
MMIO_READ_VALUE = 0x56504D4D  # what the VMM answers to an MMIO read
CPUID_LEAF = 0x40000000  # cpuid: the hypervisor-signature leaf
# msr: IA32_MISC_ENABLE, intercepted and handled in-kernel, written back
# unchanged.  Not a SYSENTER MSR: KVM lets VMX (and partly SVM) guests access
# those without an exit, so they would make no event on Intel/AMD hosts.
MSR_INDEX = 0x1A0
PAGETOUCH_BASE = 0x40000000  # pagetouch: region of guest-physical pages to touch
PAGETOUCH_PER_VCPU = 32 << 20  # each vCPU touches its own 32 MiB, then it is recycled
TIMER_VECTOR = 0x40  # hlt: the local APIC timer's vector
SPURIOUS_VECTOR = 0xFF
# User mode enters its CPL0 handler with a CLI, which raises #GP(0) at CPL3.
# Found by experiment under kvm_pvm: SYSCALL jumps to MSR_LSTAR but stays at
# CPL3, and INT n raises #UD, while a #GP is delivered through the guest's IDT
# with the usual stack switch to TSS.RSP0, and IRETQ returns to CPL3.
GATE_OPCODE = 0xFA  # CLI
# hlt: periodic LAPIC timer.  1 ms, as an idle guest ticks (HZ=1000); KVM
# allows down to 200 us, but each wake-up costs ~50 us of emulation here, so
# a faster tick would make a halting guest look busy.
TIMER_PERIOD_NS = 1_000_000

# vmcall: a hypercall number KVM does not know (KVM_HC_* are 1-12, include/uapi/linux/
# kvm_para.h), so kvm_emulate_hypercall traces it (kvm:kvm_hypercall), returns
# -KVM_ENOSYS in RAX and skips the instruction: one exit per call, no VMM involvement.
HYPERCALL_NR = 0x5650
KVM_ENOSYS = 1000  # include/uapi/linux/kvm_para.h
# The opcode is the host CPU's own: KVM intercepts the other vendor's as #UD and
# emulates it (patching the guest's code), which would add a `UD excp` exit.
HYPERCALL_OPCODES = {"svm": (b"\x0f\x01\xd9", "vmmcall"), "vmx": (b"\x0f\x01\xc1", "vmcall")}
HYPERCALL_FAILED = 0xFE  # AL on the fault port: RAX was not -KVM_ENOSYS after the call

# Control ports: the guest's protocol with the VMM, not workload events.
DONE_PORT = 0x5601  # the vCPU's loop finished: one KVM_EXIT_IO per vCPU at the end
FAULT_PORT = 0x5602  # an unexpected exception (vector in AL): a bug, reported as such
REFILL_PORT = 0x5603  # pagetouch region used up: the VMM discards it (MADV_DONTNEED)

# Gate function numbers: RAX when user mode enters the CPL0 handler.
FN_DONE, FN_PIO, FN_PIO_KERNEL, FN_MSR, FN_HLT, FN_REFILL, FN_CPUID, FN_VMCALL = range(1, 9)

WORKLOADS = (
    *("pio", "pio-kernel", "mmio", "cpuid", "msr", "hlt", "pause", "pagetouch", "mixed"),
    "vmcall",
)
# Workloads that need a hardware-virtualization host (svm or vmx in /proc/cpuinfo):
# under kvm_pvm a hypercall from guest CPL0 livelocks in KVM's emulator.
HARDWARE_ONLY = ("vmcall",)
MODES = ("user", "kernel")

_KINDS: dict[str, tuple[str, ...]] = {
    "pio": ("pio_out", "pio_in"),
    "pio-kernel": ("pio_kernel_out", "pio_kernel_in"),
    "mmio": ("mmio_write", "mmio_read"),
    "cpuid": ("cpuid",),
    "msr": ("msr_read", "msr_write"),
    "hlt": ("hlt",),
    "pause": ("pause",),
    "pagetouch": ("pagetouch",),
    "vmcall": ("vmcall",),
}
MIXED = ("pio", "pio-kernel", "mmio", "cpuid", "msr", "hlt", "pause", "pagetouch")

WORKLOAD_HELP = {
    "pio": f"OUT then IN on port {PIO_PORT:#x}; both exit to the VMM",
    "pio-kernel": f"OUT to ioeventfd port {PIO_KERNEL_PORT:#x}, IN from PIC port "
    f"{PIO_KERNEL_IN_PORT:#x}; both handled in the kernel",
    "mmio": f"write then read guest-physical {MMIO_ADDR:#x} (no memslot): exits to the VMM",
    "cpuid": f"CPUID leaf {CPUID_LEAF:#x}",
    "msr": f"RDMSR then WRMSR (same value) of MSR {MSR_INDEX:#x} (IA32_MISC_ENABLE)",
    "hlt": f"STI; HLT until the LAPIC timer (every {TIMER_PERIOD_NS // 1000} us) wakes it",
    "pause": "PAUSE",
    "pagetouch": f"write the first byte of the next new 4 KiB page at {PAGETOUCH_BASE:#x}+",
    "mixed": "one of each of pio through pagetouch per iteration",
    "vmcall": f"VMMCALL (AMD) or VMCALL (Intel) at CPL0, unknown hypercall {HYPERCALL_NR:#x} "
    "(-KVM_ENOSYS); SVM/VMX hosts only, refused on kvm_pvm",
}


def ops_by_kind(workload: str) -> dict[str, int]:
    """Operations of each kind that one loop iteration performs."""
    parts = MIXED if workload == "mixed" else (workload,)
    return {kind: 1 for part in parts for kind in _KINDS[part]}


def needs_timer(workload: str) -> bool:
    return workload in ("hlt", "mixed")


def needs_pagetouch(workload: str) -> bool:
    return workload in ("pagetouch", "mixed")


# --- operation bodies --------------------------------------------------------
# Contract: RBP holds the vCPU's data page and is preserved; RAX, RCX, RDX and
# RDI are scratch.


def _out_dx(a: Asm, port: int, what: str) -> None:
    a.op(b"\x66\xba" + imm16(port), f"mov dx, {port:#x}  ; {what}")
    a.op(b"\xee", "out dx, al")


def body_pio(a: Asm) -> None:
    _out_dx(a, PIO_PORT, "pio port")
    a.op(b"\xec", "in al, dx")


def body_pio_kernel(a: Asm) -> None:
    _out_dx(a, PIO_KERNEL_PORT, "ioeventfd port")
    a.op(b"\xe4" + imm8(PIO_KERNEL_IN_PORT), f"in al, {PIO_KERNEL_IN_PORT:#x}  ; PIC2 mask")


def body_mmio(a: Asm) -> None:
    # MOV r32, imm32 zero-extends, so the address stays below 4 GiB.
    a.op(b"\xbf" + imm32(MMIO_ADDR), f"mov edi, {MMIO_ADDR:#x}")
    a.op(b"\x89\x07", "mov [rdi], eax  ; MMIO write")
    a.op(b"\x8b\x07", "mov eax, [rdi]  ; MMIO read")


def body_cpuid(a: Asm) -> None:
    a.op(b"\xb8" + imm32(CPUID_LEAF), f"mov eax, {CPUID_LEAF:#x}")
    a.op(b"\x31\xc9", "xor ecx, ecx")
    a.op(b"\x0f\xa2", "cpuid  ; clobbers rbx, which the programs do not use")


def body_msr(a: Asm) -> None:
    a.op(b"\xb9" + imm32(MSR_INDEX), f"mov ecx, {MSR_INDEX:#x}")
    a.op(b"\x0f\x32", "rdmsr  ; edx:eax = MSR")
    a.op(b"\x0f\x30", "wrmsr  ; write the same value back")


def body_hlt(a: Asm) -> None:
    # STI's one-instruction shadow guarantees the HLT is reached before the
    # interrupt is taken, so every HLT blocks or sees a pending tick.
    a.op(b"\xfb", "sti")
    a.op(b"\xf4", "hlt  ; until the timer interrupt")
    a.op(b"\xfa", "cli")


def body_pause(a: Asm) -> None:
    a.op(b"\xf3\x90", "pause")


def body_hypercall(a: Asm, isa: str) -> None:
    opcode, name = HYPERCALL_OPCODES[isa]
    a.op(b"\xb8" + imm32(HYPERCALL_NR), f"mov eax, {HYPERCALL_NR:#x}  ; hypercall number")
    a.op(opcode, f"{name}  ; KVM: RAX = -KVM_ENOSYS, RIP past the call")
    a.op(b"\x48\x3d" + imm32(-KVM_ENOSYS & 0xFFFFFFFF), "cmp rax, -KVM_ENOSYS")
    a.jcc("ne", "hypercall_failed")


def body_refill(a: Asm) -> None:
    _out_dx(a, REFILL_PORT, "VMM discards the region and rewinds D_CURSOR")


def body_done(a: Asm) -> None:
    _out_dx(a, DONE_PORT, "tell the VMM this vCPU is done")


# --- assembling a whole program ---------------------------------------------
_CPL0_BODIES: dict[str, tuple[int, Callable[[Asm], None]]] = {
    "pio": (FN_PIO, body_pio),
    "pio-kernel": (FN_PIO_KERNEL, body_pio_kernel),
    "msr": (FN_MSR, body_msr),
    "hlt": (FN_HLT, body_hlt),
    # CPUID exits on VMX and SVM at any CPL, but at CPL3 under kvm_pvm it runs
    # natively unless the host CPU has CPUID faulting (no `cpuid_fault` flag on
    # the test host): the hypervisor would never see it.  Through the gate it
    # runs at CPL0, where every backend sees it.
    "cpuid": (FN_CPUID, body_cpuid),
}


def _cpl0_bodies(isa: str) -> dict[str, tuple[int, Callable[[Asm], None]]]:
    return _CPL0_BODIES | {"vmcall": (FN_VMCALL, lambda a: body_hypercall(a, isa))}


_ANY_CPL_BODIES: dict[str, Callable[[Asm], None]] = {
    "mmio": body_mmio,
    "pause": body_pause,
}


_Bodies = dict[str, tuple[int, Callable[[Asm], None]]]


@dataclass(frozen=True)
class Program:
    code: bytes
    entry: int  # where every vCPU starts
    gate_entry: int  # the #GP handler that serves the CLI gate
    vectors: dict[int, int]  # IDT: vector -> handler address
    listing: str


def _privileged(a: Asm, mode: str, fn: int, body: Callable[[Asm], None], name: str) -> None:
    if mode == "kernel":
        body(a)
    else:
        a.op(b"\xb8" + imm32(fn), f"mov eax, {fn}  ; gate function: {name}")
        a.op(b"\xfa", "cli  ; #GP into the CPL0 handler, which does the work")


def _body_pagetouch(a: Asm, mode: str, n: int) -> None:
    a.op(b"\x48\x8b\x45" + imm8(L.D_CURSOR), "mov rax, [rbp+D_CURSOR]")
    a.op(b"\x48\x3b\x45" + imm8(L.D_LIMIT), "cmp rax, [rbp+D_LIMIT]")
    a.jcc("b", f"touch{n}")
    _privileged(a, mode, FN_REFILL, body_refill, "refill")
    a.op(b"\x48\x8b\x45" + imm8(L.D_CURSOR), "mov rax, [rbp+D_CURSOR]  ; rewound")
    a.label(f"touch{n}")
    a.op(b"\xc6\x00\x01", "mov byte [rax], 1  ; first touch of a new page")
    a.op(b"\x48\x05" + imm32(L.PAGE), "add rax, 4096")
    a.op(b"\x48\x89\x45" + imm8(L.D_CURSOR), "mov [rbp+D_CURSOR], rax")


def _loop(a: Asm, workload: str, mode: str, cpl0: _Bodies) -> None:
    a.label("entry")
    a.label("loop")
    a.op(b"\x48\x83\x7d" + imm8(L.D_STOP) + b"\x00", "cmp qword [rbp+D_STOP], 0")
    a.jcc("ne", "done")
    for n, part in enumerate(MIXED if workload == "mixed" else (workload,)):
        if part == "pagetouch":
            _body_pagetouch(a, mode, n)
        elif part in cpl0:
            fn, body = cpl0[part]
            _privileged(a, mode, fn, body, part)
        else:
            _ANY_CPL_BODIES[part](a)
    a.op(b"\x48\xff\x45" + imm8(L.D_ITER), "inc qword [rbp+D_ITER]  ; one iteration done")
    a.op(b"\x48\x8b\x45" + imm8(L.D_ITER), "mov rax, [rbp+D_ITER]")
    a.op(b"\x48\x3b\x45" + imm8(L.D_TARGET), "cmp rax, [rbp+D_TARGET]  ; 0 never matches")
    a.jcc("ne", "loop")
    a.label("done")
    _privileged(a, mode, FN_DONE, body_done, "done")
    a.jmp("done")


def _gate_handler(a: Asm, workload: str, cpl0: _Bodies) -> None:
    # The #GP handler.  A CLI at CPL3 (our gate, RAX = function) arrives with
    # error code 0 and RIP at the CLI, on the TSS.RSP0 stack, IF cleared by the
    # interrupt gate.  Any other #GP is a bug and is reported as exception 13.
    a.label("gate")
    a.op(b"\x48\x83\x3c\x24\x00", "cmp qword [rsp], 0  ; error code")
    a.jcc("ne", "exc13")
    a.op(b"\x48\x8b\x7c\x24\x08", "mov rdi, [rsp+8]  ; faulting RIP")
    a.op(b"\x80\x3f" + imm8(GATE_OPCODE), "cmp byte [rdi], 0xfa  ; our CLI gate?")
    a.jcc("ne", "exc13")
    a.op(b"\x48\x83\x44\x24\x08\x01", "add qword [rsp+8], 1  ; return past the CLI")
    parts = [p for p in (MIXED if workload == "mixed" else (workload,)) if p in cpl0]
    table = [*(cpl0[p] for p in parts), (FN_DONE, body_done)]
    if needs_pagetouch(workload):
        table.append((FN_REFILL, body_refill))
    for fn, body in table:
        a.op(b"\x3d" + imm32(fn), f"cmp eax, {fn}")
        a.jcc("ne", f"not{fn}")
        body(a)
        a.jmp("gate_return")
        a.label(f"not{fn}")
    a.label("gate_return")
    a.op(b"\x48\x83\xc4\x08", "add rsp, 8  ; drop the error code")
    a.op(b"\x48\xcf", "iretq")


def _interrupt_handlers(a: Asm) -> dict[int, int]:
    vectors = {}
    a.label("timer")
    vectors[TIMER_VECTOR] = a.here
    a.op(b"\x57", "push rdi")
    a.op(b"\x48\xff\x45" + imm8(L.D_IRQS), "inc qword [rbp+D_IRQS]")
    a.op(b"\xbf" + imm32(L.LAPIC_EOI), "mov edi, LAPIC_EOI")
    a.op(b"\x89\x3f", "mov [rdi], edi  ; EOI (an in-kernel MMIO write)")
    a.op(b"\x5f", "pop rdi")
    a.op(b"\x48\xcf", "iretq")
    vectors[SPURIOUS_VECTOR] = a.here
    a.op(b"\x48\xcf", "iretq  ; spurious: no EOI")
    for vector in range(32):
        vectors[vector] = a.here
        a.label(f"exc{vector}")
        a.op(b"\xb0" + imm8(vector), f"mov al, {vector}")
        _out_dx(a, FAULT_PORT, "report the exception")
        a.jmp(f"exc{vector}")
    return vectors


def _hypercall_failed(a: Asm) -> None:
    a.label("hypercall_failed")
    a.op(b"\x48\x89\xc7", "mov rdi, rax  ; the result, kept for the VMM's report")
    a.op(b"\xb0" + imm8(HYPERCALL_FAILED), f"mov al, {HYPERCALL_FAILED:#x}")
    _out_dx(a, FAULT_PORT, "report the wrong result (in RDI)")
    a.jmp("hypercall_failed")


def build_program(workload: str, mode: str, hypercall: str = "svm") -> Program:
    """The guest program; `hypercall` ("svm" or "vmx") picks the vmcall workload's opcode."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    if hypercall not in HYPERCALL_OPCODES:
        raise ValueError(f"unknown hypercall ISA {hypercall!r}")
    cpl0 = _cpl0_bodies(hypercall)
    a = Asm(L.CODE_ADDR)
    _loop(a, workload, mode, cpl0)
    _gate_handler(a, workload, cpl0)
    if workload == "vmcall":
        _hypercall_failed(a)
    vectors = _interrupt_handlers(a)
    vectors[13] = a.addr("gate")
    code = a.assemble()
    if len(code) > L.CODE_MAX:
        raise ValueError("program too large")
    return Program(code, a.addr("entry"), a.addr("gate"), vectors, a.text())
