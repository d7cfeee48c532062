# ruff: noqa: E501  (one table row per line reads better than wrapped rows)
"""arm64 exits as kvm_exit reports them: exception type and ESR class.

On arm64, kvm_exit (arch/arm64/kvm/trace_arm.h) carries `ret`, the exception
type (ARM_EXCEPTION_* in arch/arm64/include/asm/kvm_asm.h, printed with
kvm_arm_exception_type), and `esr_ec`, the exception class of a TRAP
(ESR_ELx_EC_* in arch/arm64/include/asm/esr.h, printed with
kvm_arm_exception_class from arch/arm64/include/asm/kvm_arm.h).  Bit 31 of
`ret` (ARM_EXIT_WITH_SERROR_BIT) flags a pending SError.

vprof folds both into one code: a TRAP is its ESR class (0x00-0x3f); any
other exception type n is TYPE_BASE + n (0x100 IRQ, 0x101 SERROR, 0x103
ILLEGAL), except HYP_GONE, which keeps its own value 0xbadca11.
"""

from __future__ import annotations

from vprof.taxonomy.core import CTX, MEM, PRIV, Classified, make_table

SOURCE = (
    "arch/arm64/include/asm/esr.h, arch/arm64/include/asm/kvm_asm.h, "
    "arch/arm64/include/asm/kvm_arm.h"
)
TYPE_BASE = 0x100
EXCEPTION_TRAP = 2  # ARM_EXCEPTION_TRAP
HYP_GONE = 0xBADCA11  # ARM_EXCEPTION_HYP_GONE == HVC_STUB_ERR (arch/arm64/include/asm/virt.h)
SERROR_PENDING_BIT = 1 << 31  # ARM_EXIT_WITH_SERROR_BIT

_AA32 = "AArch32 coprocessor/system-register access trapped"
_DEBUG = "debug exception trapped for guest debugging"
_LAZY = "first use of lazily switched register state: KVM loads it, like an FPU switch"

# fmt: off
_ROWS = (
    (0x00, "UNKNOWN", PRIV, "trap with unknown reason: KVM injects an undefined-instruction exception"),
    (0x01, "WFx", CTX, "guest idles (WFI) or waits for an event (WFE): halt, poll or yield"),
    (0x03, "CP15_32", PRIV, _AA32),
    (0x04, "CP15_64", PRIV, _AA32),
    (0x05, "CP14_MR", PRIV, _AA32),
    (0x06, "CP14_LS", PRIV, _AA32),
    (0x07, "FP_ASIMD", CTX, _LAZY + " (FP/SIMD)"),
    (0x08, "CP10_ID", PRIV, "AArch32 VFP ID register access trapped"),
    (0x09, "PAC", CTX, _LAZY + " (pointer-authentication keys)"),
    (0x0A, "OTHER", PRIV, "other trapped instruction (e.g. LD64B/ST64B)"),
    (0x0C, "CP14_64", PRIV, _AA32),
    (0x0D, "BTI", PRIV, "branch-target exception"),
    (0x0E, "ILL", PRIV, "illegal execution state"),
    (0x11, "SVC32", PRIV, "AArch32 supervisor call trapped"),
    (0x12, "HVC32", PRIV, "AArch32 hypercall (PSCI, KVM services)"),
    (0x13, "SMC32", PRIV, "AArch32 secure-monitor call trapped"),
    (0x15, "SVC64", PRIV, "supervisor call trapped"),
    (0x16, "HVC64", PRIV, "hypercall (PSCI, KVM services)"),
    (0x17, "SMC64", PRIV, "secure-monitor call trapped (PSCI via SMC)"),
    (0x18, "SYS64", PRIV, "system-register access trapped: arm64's MSR/CPUID exit"),
    (0x19, "SVE", CTX, _LAZY + " (SVE)"),
    (0x1A, "ERET", PRIV, "exception return by a guest hypervisor: nested virtualization"),
    (0x1C, "FPAC", PRIV, "pointer-authentication failure"),
    (0x1D, "SME", CTX, _LAZY + " (SME)"),
    (0x1F, "IMP_DEF", PRIV, "implementation-defined exception"),
    (0x20, "IABT_LOW", MEM, "stage-2 instruction abort: guest page not mapped"),
    (0x21, "IABT_CUR", MEM, "instruction abort at the current level"),
    (0x22, "PC_ALIGN", PRIV, "PC alignment fault"),
    (0x24, "DABT_LOW", MEM, "stage-2 data abort: page not mapped (I/O if it turns out MMIO)"),
    (0x25, "DABT_CUR", MEM, "data abort at the current level"),
    (0x26, "SP_ALIGN", PRIV, "stack-pointer alignment fault"),
    (0x27, "MOPS", PRIV, "memory copy/set instruction exception"),
    (0x28, "FP_EXC32", PRIV, "AArch32 floating-point exception trapped"),
    (0x2C, "FP_EXC64", PRIV, "floating-point exception trapped"),
    (0x2D, "GCS", PRIV, "guarded-control-stack exception"),
    (0x2F, "SERROR", PRIV, "SError interrupt (asynchronous abort) routed to EL2"),
    (0x30, "BREAKPT_LOW", PRIV, _DEBUG),
    (0x31, "BREAKPT_CUR", PRIV, _DEBUG),
    (0x32, "SOFTSTP_LOW", PRIV, _DEBUG),
    (0x33, "SOFTSTP_CUR", PRIV, _DEBUG),
    (0x34, "WATCHPT_LOW", PRIV, _DEBUG),
    (0x35, "WATCHPT_CUR", PRIV, _DEBUG),
    (0x38, "BKPT32", PRIV, _DEBUG),
    (0x3A, "VECTOR32", PRIV, "AArch32 vector catch"),
    (0x3C, "BRK64", PRIV, _DEBUG),
    (TYPE_BASE + 0, "IRQ", CTX, "a host interrupt arrived while the guest ran: exit, handle, re-enter"),
    (TYPE_BASE + 1, "SERROR", PRIV, "SError (asynchronous abort) taken while the guest ran"),
    (TYPE_BASE + EXCEPTION_TRAP, "TRAP", PRIV, "synchronous trap to EL2 whose class was not recorded"),
    (TYPE_BASE + 3, "ILLEGAL", PRIV, "illegal exception return to the guest: KVM injects an exception"),
    (HYP_GONE, "HYP_GONE", CTX, "the hypervisor stub answered instead of KVM: no guest ran"),
)
# fmt: on

TABLE = make_table(
    "arm64", "arm64 exception types and ESR classes", SOURCE, _ROWS, code_format="{:#04x}"
)


def code_of(exception_type: int, esr_ec: int) -> int:
    """vprof's arm64 code for kvm_exit's (`ret`, `esr_ec`) pair."""
    kind = exception_type & ~SERROR_PENDING_BIT & 0xFFFFFFFF
    if kind == EXCEPTION_TRAP:
        return esr_ec & 0x3F
    if kind == HYP_GONE:
        return HYP_GONE
    return TYPE_BASE + kind


def classify_arm64(exception_type: int, esr_ec: int) -> Classified:
    """Classify an arm64 kvm_exit from its exception type and ESR class."""
    flags = ("SERROR_PENDING",) if exception_type & SERROR_PENDING_BIT else ()
    return TABLE.classify(code_of(exception_type, esr_ec), flags)


def classify(code: int) -> Classified:
    """Classify a code already folded by `code_of`."""
    return TABLE.classify(code)
