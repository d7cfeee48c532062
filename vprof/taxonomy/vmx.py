# ruff: noqa: E501  (one table row per line reads better than wrapped rows)
"""Intel VMX basic exit reasons and exit-reason flag bits.

Codes and names: arch/x86/include/uapi/asm/vmx.h (EXIT_REASON_*, and
VMX_EXIT_REASONS, the names the kvm_exit tracepoint prints), up to
MSR_READ_IMM/MSR_WRITE_IMM (Linux 6.17) and SEAMCALL (6.18).  Flag bits:
VMX_EXIT_REASONS_FAILED_VMENTRY in the same header, the others from
`union vmx_exit_reason` in arch/x86/kvm/vmx/vmx.h (Intel SDM vol. 3C, 28.2.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from vprof.taxonomy.core import CTX, IO, MEM, PRIV, Classified, make_table

SOURCE = "arch/x86/include/uapi/asm/vmx.h"
FLAGS_SOURCE = "arch/x86/include/uapi/asm/vmx.h, arch/x86/kvm/vmx/vmx.h (union vmx_exit_reason)"

BASIC_MASK = 0xFFFF  # the basic exit reason is the low 16 bits

# Exit-reason bits above the basic reason (bit -> name).
FLAGS: Mapping[int, str] = MappingProxyType(
    {
        1 << 26: "BUS_LOCK_DETECTED",
        1 << 27: "ENCLAVE_MODE",
        1 << 28: "SMI_PENDING_MTF",
        1 << 29: "SMI_FROM_VMX_ROOT",
        1 << 31: "FAILED_VMENTRY",
    }
)

_NESTED = "VMX instruction by a guest hypervisor: KVM emulates it for nested virtualization"

# fmt: off
_ROWS = (
    (0, "EXCEPTION_NMI", PRIV, "guest exception or NMI intercepted (#UD/#GP emulation, #DB/#AC, #PF under shadow paging)"),
    (1, "EXTERNAL_INTERRUPT", CTX, "a host interrupt arrived while the guest ran: exit, handle, re-enter"),
    (2, "TRIPLE_FAULT", CTX, "guest triple-faulted: the vCPU stops and the VMM resets the VM"),
    (3, "INIT_SIGNAL", CTX, "INIT signal to the vCPU (start-up or reset by another vCPU)"),
    (4, "SIPI_SIGNAL", CTX, "start-up IPI wakes a vCPU waiting for SIPI"),
    (7, "INTERRUPT_WINDOW", CTX, "exit as soon as the guest can take an interrupt, to inject one", ("PENDING_INTERRUPT",)),
    (8, "NMI_WINDOW", CTX, "exit as soon as the guest can take an NMI, to inject one"),
    (9, "TASK_SWITCH", PRIV, "hardware task switch, emulated by KVM"),
    (10, "CPUID", PRIV, "CPUID always traps on VMX; KVM answers from the vCPU's CPUID table"),
    (12, "HLT", CTX, "guest idles with HLT: the vCPU halts (or polls) until an interrupt"),
    (13, "INVD", PRIV, "INVD always traps; KVM emulates it"),
    (14, "INVLPG", MEM, "TLB invalidation trapped (shadow paging only)"),
    (15, "RDPMC", PRIV, "performance-counter read trapped for the virtual PMU"),
    (16, "RDTSC", PRIV, "time-stamp counter read trapped (TSC offsetting/scaling not usable)"),
    (18, "VMCALL", PRIV, "hypercall from the guest"),
    (19, "VMCLEAR", PRIV, _NESTED),
    (20, "VMLAUNCH", PRIV, _NESTED),
    (21, "VMPTRLD", PRIV, _NESTED),
    (22, "VMPTRST", PRIV, _NESTED),
    (23, "VMREAD", PRIV, _NESTED + " (without VMCS shadowing)"),
    (24, "VMRESUME", PRIV, _NESTED),
    (25, "VMWRITE", PRIV, _NESTED + " (without VMCS shadowing)"),
    (26, "VMOFF", PRIV, _NESTED),
    (27, "VMON", PRIV, _NESTED),
    (28, "CR_ACCESS", PRIV, "control-register access trapped (CR0/CR3/CR4/CR8)"),
    (29, "DR_ACCESS", PRIV, "debug-register access trapped"),
    (30, "IO_INSTRUCTION", IO, "port I/O (IN/OUT): emulated device access, often completed in the VMM"),
    (31, "MSR_READ", PRIV, "RDMSR of an MSR not passed through in the MSR bitmap"),
    (32, "MSR_WRITE", PRIV, "WRMSR of an MSR not passed through (includes x2APIC timer/ICR writes)"),
    (33, "INVALID_STATE", PRIV, "guest state VMX cannot run (e.g. real mode without unrestricted guest): KVM emulates"),
    (34, "MSR_LOAD_FAIL", CTX, "VM entry failed while loading guest MSRs"),
    (36, "MWAIT_INSTRUCTION", CTX, "guest idles with MWAIT; KVM treats it like a NOP/HLT"),
    (37, "MONITOR_TRAP_FLAG", PRIV, "single-step trap set by a debugger or introspection"),
    (39, "MONITOR_INSTRUCTION", PRIV, "MONITOR trapped; KVM treats it as a NOP"),
    (40, "PAUSE_INSTRUCTION", CTX, "pause-loop exit: a spinning vCPU yields to the lock holder"),
    (41, "MCE_DURING_VMENTRY", CTX, "machine check during VM entry; the host handles it"),
    (43, "TPR_BELOW_THRESHOLD", IO, "guest lowered its task priority below a pending interrupt: APIC emulation"),
    (44, "APIC_ACCESS", IO, "guest touched the APIC page: interrupt-controller emulation"),
    (45, "EOI_INDUCED", IO, "end-of-interrupt for a level-triggered vector: APIC/IOAPIC emulation"),
    (46, "GDTR_IDTR", PRIV, "descriptor-table register access trapped (UMIP emulation)"),
    (47, "LDTR_TR", PRIV, "LDTR/TR access trapped (UMIP emulation)"),
    (48, "EPT_VIOLATION", MEM, "guest-physical page not mapped in EPT: KVM faults it in (I/O if it turns out MMIO)"),
    (49, "EPT_MISCONFIG", IO, "KVM's MMIO fast path: EPT entries for MMIO are made invalid on purpose"),
    (50, "INVEPT", MEM, "EPT invalidation by a guest hypervisor (nested paging)"),
    (51, "RDTSCP", PRIV, "RDTSCP trapped"),
    (52, "PREEMPTION_TIMER", CTX, "VMX preemption timer fired: guest timer deadline or forced exit"),
    (53, "INVVPID", MEM, "TLB invalidation by VPID from a guest hypervisor"),
    (54, "WBINVD", PRIV, "cache write-back/invalidate trapped (assigned devices without snooping)"),
    (55, "XSETBV", PRIV, "XCR0 write trapped; KVM validates the extended-state mask"),
    (56, "APIC_WRITE", IO, "trap-like APIC register write (APICv): interrupt-controller emulation"),
    (57, "RDRAND", PRIV, "RDRAND trapped"),
    (58, "INVPCID", MEM, "TLB invalidation by PCID trapped (shadow paging)"),
    (59, "VMFUNC", PRIV, "VM function not enabled for the guest: KVM emulates or injects #UD"),
    (60, "ENCLS", PRIV, "SGX ENCLS leaf trapped for SGX virtualization"),
    (61, "RDSEED", PRIV, "RDSEED trapped"),
    (62, "PML_FULL", MEM, "page-modification log full: dirty-page tracking for live migration"),
    (63, "XSAVES", PRIV, "XSAVES trapped"),
    (64, "XRSTORS", PRIV, "XRSTORS trapped"),
    (67, "UMWAIT", CTX, "user-level wait (UMWAIT) trapped: an idle/spin wait"),
    (68, "TPAUSE", CTX, "timed pause (TPAUSE) trapped: an idle/spin wait"),
    (74, "BUS_LOCK", PRIV, "guest instruction took a bus lock; reported to the VMM for throttling"),
    (75, "NOTIFY", CTX, "guest ran too long without an interrupt window: forced exit (anti-DoS)"),
    (76, "SEAMCALL", PRIV, "SEAMCALL from a guest: KVM injects #UD"),
    (77, "TDCALL", PRIV, "TDCALL from a TDX guest: hypercall to the host"),
    (84, "MSR_READ_IMM", PRIV, "RDMSR with immediate MSR index, not passed through"),
    (85, "MSR_WRITE_IMM", PRIV, "WRMSRNS with immediate MSR index, not passed through"),
)
# fmt: on

TABLE = make_table("vmx", "Intel VMX basic exit reasons", SOURCE, _ROWS)


def decode_flags(exit_reason: int) -> tuple[str, ...]:
    """Names of the flag bits above the basic reason, lowest bit first."""
    high = exit_reason & 0xFFFFFFFF & ~BASIC_MASK
    names = []
    for bit in range(16, 32):
        mask = 1 << bit
        if high & mask:
            names.append(FLAGS.get(mask, f"bit{bit}"))
    return tuple(names)


def classify(exit_reason: int) -> Classified:
    """Split a VMX exit reason into basic reason and flags, and classify it."""
    return TABLE.classify(exit_reason & BASIC_MASK, decode_flags(exit_reason))
