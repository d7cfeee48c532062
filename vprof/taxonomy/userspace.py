# ruff: noqa: E501  (one table row per line reads better than wrapped rows)
"""KVM_EXIT_* reasons: why KVM_RUN returned to the VMM (kvm_userspace_exit).

Codes and names: include/uapi/linux/kvm.h (KVM_EXIT_*), up to
KVM_EXIT_ARM_SEA (41); kvm_userspace_exit prints them with kvm_trace_exit_reason
(include/trace/events/kvm.h).  Each of these is a round trip through the VMM's
userspace on top of the hardware exit; the bucket says what the VMM does.
"""

from __future__ import annotations

from vprof.taxonomy.core import CTX, IO, MEM, PRIV, Classified, make_table

SOURCE = "include/uapi/linux/kvm.h"

# fmt: off
_ROWS = (
    (0, "KVM_EXIT_UNKNOWN", PRIV, "KVM could not handle a hardware exit; the VMM gets the raw reason"),
    (1, "KVM_EXIT_EXCEPTION", PRIV, "guest exception handed to the VMM"),
    (2, "KVM_EXIT_IO", IO, "port I/O emulated by the VMM's device model"),
    (3, "KVM_EXIT_HYPERCALL", PRIV, "hypercall forwarded to the VMM"),
    (4, "KVM_EXIT_DEBUG", PRIV, "debug trap handed to the VMM (gdbstub)"),
    (5, "KVM_EXIT_HLT", CTX, "guest halted and the VMM waits for it (userspace irqchip)"),
    (6, "KVM_EXIT_MMIO", IO, "MMIO emulated by the VMM's device model"),
    (7, "KVM_EXIT_IRQ_WINDOW_OPEN", CTX, "interrupt window for a userspace interrupt controller"),
    (8, "KVM_EXIT_SHUTDOWN", CTX, "guest shut down (triple fault): the VMM resets it"),
    (9, "KVM_EXIT_FAIL_ENTRY", CTX, "VM entry failed; the VMM gets the hardware reason"),
    (10, "KVM_EXIT_INTR", CTX, "a signal interrupted KVM_RUN (VMM kicks the vCPU thread)"),
    (11, "KVM_EXIT_SET_TPR", IO, "task-priority change for a userspace APIC"),
    (12, "KVM_EXIT_TPR_ACCESS", IO, "TPR access reported to the VMM (APIC emulation)"),
    (13, "KVM_EXIT_S390_SIEIC", PRIV, "s390 instruction intercept handled by the VMM"),
    (14, "KVM_EXIT_S390_RESET", CTX, "s390 vCPU reset requested"),
    (15, "KVM_EXIT_DCR", IO, "PowerPC device-control register access (deprecated)"),
    (16, "KVM_EXIT_NMI", CTX, "NMI exit to the VMM"),
    (17, "KVM_EXIT_INTERNAL_ERROR", PRIV, "KVM failed to emulate an instruction or deliver an event"),
    (18, "KVM_EXIT_OSI", PRIV, "PowerPC OS-interface call handled by the VMM"),
    (19, "KVM_EXIT_PAPR_HCALL", PRIV, "PowerPC PAPR hypercall handled by the VMM"),
    (20, "KVM_EXIT_S390_UCONTROL", MEM, "s390 user-controlled VM page fault"),
    (21, "KVM_EXIT_WATCHDOG", IO, "PowerPC watchdog device expired"),
    (22, "KVM_EXIT_S390_TSCH", IO, "s390 channel-subsystem I/O"),
    (23, "KVM_EXIT_EPR", IO, "PowerPC external proxy interrupt controller"),
    (24, "KVM_EXIT_SYSTEM_EVENT", CTX, "guest asked for shutdown, reset, suspend or crash handling"),
    (25, "KVM_EXIT_S390_STSI", PRIV, "s390 STSI (store system information) handled by the VMM"),
    (26, "KVM_EXIT_IOAPIC_EOI", IO, "EOI for a userspace IOAPIC (split irqchip)"),
    (27, "KVM_EXIT_HYPERV", PRIV, "Hyper-V hypercall or SynIC MSR handled by the VMM"),
    (28, "KVM_EXIT_ARM_NISV", IO, "arm64 MMIO access without a decodable syndrome, emulated by the VMM"),
    (29, "KVM_EXIT_X86_RDMSR", PRIV, "RDMSR handed to the VMM (MSR filter or unknown MSR)"),
    (30, "KVM_EXIT_X86_WRMSR", PRIV, "WRMSR handed to the VMM (MSR filter or unknown MSR)"),
    (31, "KVM_EXIT_DIRTY_RING_FULL", MEM, "dirty-page ring full: migration bookkeeping"),
    (32, "KVM_EXIT_AP_RESET_HOLD", CTX, "SEV-ES application processor parked until reset"),
    (33, "KVM_EXIT_X86_BUS_LOCK", PRIV, "guest bus lock reported to the VMM for throttling"),
    (34, "KVM_EXIT_XEN", PRIV, "Xen hypercall handled by the VMM"),
    (35, "KVM_EXIT_RISCV_SBI", PRIV, "RISC-V SBI call handled by the VMM"),
    (36, "KVM_EXIT_RISCV_CSR", PRIV, "RISC-V CSR access handled by the VMM"),
    (37, "KVM_EXIT_NOTIFY", CTX, "guest ran too long without an interrupt window (VMX notify)"),
    (38, "KVM_EXIT_LOONGARCH_IOCSR", IO, "LoongArch IOCSR access emulated by the VMM"),
    (39, "KVM_EXIT_MEMORY_FAULT", MEM, "guest_memfd fault the VMM resolves (private/shared conversion)"),
    (40, "KVM_EXIT_TDX", PRIV, "TDX guest TDVMCALL handled by the VMM"),
    (41, "KVM_EXIT_ARM_SEA", MEM, "arm64 synchronous external abort (memory error) handed to the VMM"),
)
# fmt: on

TABLE = make_table("userspace", "KVM_EXIT_* userspace exit reasons", SOURCE, _ROWS)


def classify(reason: int) -> Classified:
    return TABLE.classify(reason)
