# ruff: noqa: E501  (one table row per line reads better than wrapped rows)
"""AMD SVM exit codes.

Codes and names: arch/x86/include/uapi/asm/svm.h (SVM_EXIT_*, SVM_VMGEXIT_*
and SVM_EXIT_REASONS, the names the kvm_exit tracepoint prints), up to
BUS_LOCK/IDLE_HLT and the SEV-SNP VMGEXIT sub-codes of Linux 6.18.  Exception
vector names: arch/x86/include/asm/trapnr.h.  The codes are sparse: control
and debug registers 0x000-0x03f, exceptions 0x040 + vector, instructions and
events 0x060-0x0a6, NPF/AVIC/VMGEXIT 0x400-0x403, the SEV-ES guest's own
VMGEXIT reasons 0x8000_00xx, and SVM_EXIT_ERR (-1) which the tracepoint's
u32 field shows as 0xffffffff.
"""

from __future__ import annotations

from vprof.model import Bucket
from vprof.taxonomy.core import CTX, IO, MEM, PRIV, Classified, make_table

SOURCE = "arch/x86/include/uapi/asm/svm.h"
CODE_MASK = 0xFFFFFFFF  # kvm_exit's exit_reason is a u32
EXCP_BASE = 0x040
ERR = 0xFFFFFFFF  # SVM_EXIT_ERR (-1)

# Vector -> name; those the kernel prints use its spelling ("XF" for #XM).
_VECTORS = {
    0: "DE", 1: "DB", 2: "NMI", 3: "BP", 4: "OF", 5: "BR", 6: "UD", 7: "NM", 8: "DF",
    9: "OLD_MF", 10: "TS", 11: "NP", 12: "SS", 13: "GP", 14: "PF", 15: "SPURIOUS",
    16: "MF", 17: "AC", 18: "MC", 19: "XF", 20: "VE", 21: "CP", 28: "HV", 29: "VC", 30: "SX",
}  # fmt: skip
_EXCP_BUCKET = {14: MEM, 7: CTX}
_EXCP_REASON = {
    14: "guest #PF intercepted: shadow paging (no NPT) or a nested guest's page fault",
    7: "guest #NM intercepted: lazy FPU/extended-state switching",
}
_CR_RW = "control-register access trapped"
_DR_RW = "debug-register access trapped (guest debugging)"
_CR_TRAP = "SEV-ES: CR or EFER write reported after the fact, for KVM's bookkeeping"
_DT = "descriptor-table register access trapped (UMIP emulation)"
_NESTED = "SVM instruction by a guest hypervisor: KVM emulates it for nested virtualization"


def _register_rows() -> list[tuple[int, str, Bucket, str]]:
    rows = []
    for n in (0, 2, 3, 4, 8):
        rows.append((0x000 + n, f"read_cr{n}", PRIV, _CR_RW))
        rows.append((0x010 + n, f"write_cr{n}", PRIV, _CR_RW))
    for n in range(8):
        rows.append((0x020 + n, f"read_dr{n}", PRIV, _DR_RW))
        rows.append((0x030 + n, f"write_dr{n}", PRIV, _DR_RW))
    return rows


def _exception_rows() -> list[tuple[int, str, Bucket, str]]:
    rows = []
    for vector in range(32):
        name = _VECTORS.get(vector, f"VECTOR{vector}")
        reason = _EXCP_REASON.get(vector, f"guest #{name} intercepted; KVM emulates or reflects it")
        rows.append((EXCP_BASE + vector, f"{name} excp", _EXCP_BUCKET.get(vector, PRIV), reason))
    return rows


def _cr_trap_rows() -> list[tuple[int, str, Bucket, str, tuple[str, ...]]]:
    rows: list[tuple[int, str, Bucket, str, tuple[str, ...]]] = [
        (0x08F, "write_efer_trap", PRIV, _CR_TRAP, ("EFER_WRITE_TRAP",))
    ]
    for n in range(16):
        rows.append((0x090 + n, f"write_cr{n}_trap", PRIV, _CR_TRAP, (f"CR{n}_WRITE_TRAP",)))
    return rows


_VMG = "SEV-ES/SNP guest request through the GHCB: "

# fmt: off
_ROWS = (
    (0x060, "interrupt", CTX, "a host interrupt arrived while the guest ran: exit, handle, re-enter", ("INTR",)),
    (0x061, "nmi", CTX, "a host NMI arrived while the guest ran"),
    (0x062, "smi", CTX, "a system-management interrupt arrived while the guest ran"),
    (0x063, "init", CTX, "INIT signal to the vCPU (start-up or reset)"),
    (0x064, "vintr", CTX, "interrupt window: exit as soon as the guest can take an interrupt"),
    (0x065, "cr0_sel_write", PRIV, "selective CR0 write trapped"),
    (0x066, "read_idtr", PRIV, _DT, ("IDTR_READ",)),
    (0x067, "read_gdtr", PRIV, _DT, ("GDTR_READ",)),
    (0x068, "read_ldtr", PRIV, _DT, ("LDTR_READ",)),
    (0x069, "read_rt", PRIV, _DT, ("TR_READ",)),
    (0x06A, "write_idtr", PRIV, _DT, ("IDTR_WRITE",)),
    (0x06B, "write_gdtr", PRIV, _DT, ("GDTR_WRITE",)),
    (0x06C, "write_ldtr", PRIV, _DT, ("LDTR_WRITE",)),
    (0x06D, "write_rt", PRIV, _DT, ("TR_WRITE",)),
    (0x06E, "rdtsc", PRIV, "time-stamp counter read trapped"),
    (0x06F, "rdpmc", PRIV, "performance-counter read trapped for the virtual PMU"),
    (0x070, "pushf", PRIV, "PUSHF trapped"),
    (0x071, "popf", PRIV, "POPF trapped"),
    (0x072, "cpuid", PRIV, "CPUID trapped; KVM answers from the vCPU's CPUID table"),
    (0x073, "rsm", PRIV, "return from system-management mode, emulated"),
    (0x074, "iret", CTX, "IRET trapped only to see NMI blocking end: an NMI window"),
    (0x075, "swint", PRIV, "software interrupt (INTn) trapped"),
    (0x076, "invd", PRIV, "INVD trapped; KVM emulates it"),
    (0x077, "pause", CTX, "pause filter exit: a spinning vCPU yields to the lock holder"),
    (0x078, "hlt", CTX, "guest idles with HLT: the vCPU halts (or polls) until an interrupt"),
    (0x079, "invlpg", MEM, "TLB invalidation trapped (shadow paging only)"),
    (0x07A, "invlpga", MEM, "TLB invalidation by ASID from a guest hypervisor"),
    (0x07B, "io", IO, "port I/O (IN/OUT): emulated device access, often completed in the VMM", ("IOIO",)),
    (0x07C, "msr", PRIV, "RDMSR/WRMSR of an MSR not passed through in the MSR bitmap"),
    (0x07D, "task_switch", PRIV, "hardware task switch, emulated by KVM"),
    (0x07E, "ferr_freeze", PRIV, "legacy FPU error (FERR) freeze"),
    (0x07F, "shutdown", CTX, "guest shut down (triple fault): the VMM resets the VM"),
    (0x080, "vmrun", PRIV, _NESTED),
    (0x081, "hypercall", PRIV, "hypercall (VMMCALL) from the guest", ("VMMCALL",)),
    (0x082, "vmload", PRIV, _NESTED),
    (0x083, "vmsave", PRIV, _NESTED),
    (0x084, "stgi", PRIV, _NESTED),
    (0x085, "clgi", PRIV, _NESTED),
    (0x086, "skinit", PRIV, "SKINIT (secure launch) trapped"),
    (0x087, "rdtscp", PRIV, "RDTSCP trapped"),
    (0x088, "icebp", PRIV, "ICEBP (INT1) trapped for guest debugging"),
    (0x089, "wbinvd", PRIV, "cache write-back/invalidate trapped"),
    (0x08A, "monitor", PRIV, "MONITOR trapped; KVM treats it as a NOP"),
    (0x08B, "mwait", CTX, "guest idles with MWAIT; KVM treats it like a NOP/HLT"),
    (0x08C, "mwait_cond", CTX, "conditional MWAIT: an idle wait"),
    (0x08D, "xsetbv", PRIV, "XCR0 write trapped; KVM validates the extended-state mask"),
    (0x08E, "rdpru", PRIV, "RDPRU (read processor register) trapped"),
    (0x0A2, "invpcid", MEM, "TLB invalidation by PCID trapped (shadow paging)"),
    (0x0A5, "buslock", PRIV, "guest instruction took a bus lock; reported to the VMM for throttling", ("BUS_LOCK",)),
    (0x0A6, "idle-halt", CTX, "HLT with no pending interrupt: the vCPU really idles", ("IDLE_HLT",)),
    (0x400, "npf", MEM, "nested page fault: guest-physical page not mapped in NPT (I/O if it turns out MMIO)"),
    (0x401, "avic_incomplete_ipi", IO, "AVIC could not deliver an IPI (target not running): APIC emulation"),
    (0x402, "avic_unaccelerated_access", IO, "APIC register access AVIC does not accelerate: APIC emulation"),
    (0x403, "vmgexit", PRIV, _VMG + "a hypercall-like exit"),
    (0x80000001, "vmgexit_mmio_read", IO, _VMG + "MMIO read emulation", ("VMGEXIT_MMIO_READ",)),
    (0x80000002, "vmgexit_mmio_write", IO, _VMG + "MMIO write emulation", ("VMGEXIT_MMIO_WRITE",)),
    (0x80000003, "vmgexit_nmi_complete", CTX, _VMG + "NMI handled: an NMI window"),
    (0x80000004, "vmgexit_ap_hlt_loop", CTX, _VMG + "an application processor parks (halts)"),
    (0x80000005, "vmgexit_ap_jump_table", PRIV, _VMG + "set or get the AP jump table"),
    (0x80000010, "vmgexit_page_state_change", MEM, _VMG + "convert pages between private and shared", ("VMGEXIT_PSC",)),
    (0x80000011, "vmgexit_guest_request", PRIV, _VMG + "message to the SEV firmware (attestation)"),
    (0x80000012, "vmgexit_ext_guest_request", PRIV, _VMG + "extended firmware message (attestation certificates)"),
    (0x80000013, "vmgexit_ap_creation", CTX, _VMG + "create, start or destroy a vCPU's state"),
    (0x80000018, "vmgexit_snp_run_vmpl", CTX, _VMG + "switch to another VM privilege level"),
    (0x8000001A, "vmgexit_savic", IO, _VMG + "register the Secure AVIC backing page: interrupt controller"),
    (0x8000FFFD, "vmgexit_hypervisor_feature", PRIV, _VMG + "query hypervisor features", ("VMGEXIT_HV_FEATURES",)),
    (0x8000FFFE, "vmgexit_term_request", CTX, _VMG + "the guest asks to be terminated"),
    (0x8000FFFF, "vmgexit_unsupported_event", PRIV, _VMG + "reply code for an unsupported request"),
    (0xF0000000, "sw", CTX, "exit code reserved for software use (no hardware cause)"),
    (ERR, "invalid_guest_state", CTX, "VMRUN failed: the VMCB's guest state is invalid", ("ERR",)),
)
# fmt: on

TABLE = make_table(
    "svm",
    "AMD SVM exit codes",
    SOURCE,
    [*_register_rows(), *_exception_rows(), *_cr_trap_rows(), *_ROWS],
    code_format="{:#05x}",
)


def classify(exit_code: int) -> Classified:
    """Classify an SVM exit code (a negative code is read as its u32 value)."""
    return TABLE.classify(exit_code & CODE_MASK)
