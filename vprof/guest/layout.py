"""Guest-physical memory layout and the x86 tables built into it (pure).

0x00001000  GDT (Linux-like selectors, then one 64-bit TSS per vCPU)
0x00002000  IDT (256 interrupt gates)
0x00004000  PML4, 0x5000 PDPT, 0x6000-0x9fff four PDs: 0-4 GiB identity
            mapped with 2 MiB pages, user-accessible (the toy guest trusts
            its own user code)
0x00010000  code (one program for all vCPUs)
0x00020000  per-vCPU data page i at DATA_BASE + i*0x1000 (counters, TSS)
0x00100000  per-vCPU stacks: STACK_BASE + i*STACK_SIZE
0x40000000  pagetouch region (separate memslot, PAGETOUCH_PER_VCPU each)
0xd0000000  MMIO address: no memslot, so every access exits
0xfee00000  the in-kernel local APIC
"""

from __future__ import annotations

import struct

PAGE = 0x1000
GDT_ADDR = 0x1000
IDT_ADDR = 0x2000
PML4_ADDR = 0x4000
PDPT_ADDR = 0x5000
PD_ADDR = 0x6000
PD_COUNT = 4  # 4 GiB identity map
CODE_ADDR = 0x10000
CODE_MAX = 0x10000
DATA_BASE = 0x20000
STACK_BASE = 0x100000
STACK_SIZE = 0x4000  # user stack in the low half, kernel stack in the high half
MAX_VCPUS = 64  # what this layout has room for (data pages end below 0x60000)
LOW_MEM_SIZE = STACK_BASE + MAX_VCPUS * STACK_SIZE  # 2 MiB: memslot 0
LAPIC_ADDR = 0xFEE00000
LAPIC_EOI = LAPIC_ADDR + 0xB0

# GDT selectors follow the Linux x86-64 layout because kvm_pvm's ABI requires
# the 64-bit user CS to be the host's __USER_CS (0x33) and derives it from
# MSR_STAR[63:48] + 16.
SEL_KERNEL_CS = 0x10
SEL_KERNEL_DS = 0x18
SEL_USER32_CS = 0x23
SEL_USER_DS = 0x2B
SEL_USER_CS = 0x33
SEL_TSS0 = 0x38  # vCPU i uses SEL_TSS0 + 16*i (16-byte system descriptors)

# Offsets inside a vCPU's data page (the guest reaches it through RBP).
D_ITER = 0x00  # completed loop iterations (written by the guest)
D_STOP = 0x08  # nonzero: stop at the next loop boundary (written by the VMM)
D_TARGET = 0x10  # iterations to run; 0 = until stopped
D_CURSOR = 0x18  # pagetouch: next page to touch
D_LIMIT = 0x20  # pagetouch: end of this vCPU's region
D_IRQS = 0x28  # timer interrupts taken
D_TSS = 0x800  # this vCPU's 104-byte TSS
TSS_LIMIT = 0x67

EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11
CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR0_AM = 1 << 18
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG
CR4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
EFER = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE


def data_page(index: int) -> int:
    return DATA_BASE + index * PAGE


def tss_addr(index: int) -> int:
    return data_page(index) + D_TSS


def user_stack_top(index: int) -> int:
    return STACK_BASE + index * STACK_SIZE + STACK_SIZE // 2


def kernel_stack_top(index: int) -> int:
    return STACK_BASE + (index + 1) * STACK_SIZE


def tss_selector(index: int) -> int:
    return SEL_TSS0 + 16 * index


def segment_descriptor(base: int, limit: int, access: int, flags: int) -> bytes:
    """An 8-byte code/data descriptor (Intel SDM vol. 3, 3.4.5)."""
    value = (
        (limit & 0xFFFF)
        | (base & 0xFFFFFF) << 16
        | (access & 0xFF) << 40
        | ((limit >> 16) & 0xF) << 48
        | (flags & 0xF) << 52
        | ((base >> 24) & 0xFF) << 56
    )
    return struct.pack("<Q", value)


def tss_descriptor(base: int, limit: int = TSS_LIMIT) -> bytes:
    """A 16-byte available 64-bit TSS descriptor (type 9, present)."""
    low = segment_descriptor(base & 0xFFFFFFFF, limit, 0x89, 0x0)
    return low + struct.pack("<II", base >> 32, 0)


# access byte: P | DPL | S | type; flags nibble: G | D/B | L | AVL
_GDT_ENTRIES = {
    SEL_KERNEL_CS: (0x9A, 0xA),  # present, DPL0, code exec/read; G, L (64-bit)
    SEL_KERNEL_DS: (0x92, 0xC),  # present, DPL0, data read/write; G, D
    SEL_USER32_CS & ~3: (0xFA, 0xC),  # DPL3 32-bit code (only to match Linux)
    SEL_USER_DS & ~3: (0xF2, 0xC),  # DPL3 data
    SEL_USER_CS & ~3: (0xFA, 0xA),  # DPL3 64-bit code
}


def build_gdt(vcpus: int) -> bytes:
    gdt = bytearray(SEL_TSS0 + 16 * vcpus)
    for sel, (access, flags) in _GDT_ENTRIES.items():
        gdt[sel : sel + 8] = segment_descriptor(0, 0xFFFFF, access, flags)
    for i in range(vcpus):
        sel = tss_selector(i)
        gdt[sel : sel + 16] = tss_descriptor(tss_addr(i))
    return bytes(gdt)


def build_tss(rsp0: int) -> bytes:
    """64-bit TSS: RSP0 at offset 4, I/O map base past the limit (no bitmap)."""
    tss = bytearray(TSS_LIMIT + 1)
    struct.pack_into("<Q", tss, 4, rsp0)
    struct.pack_into("<H", tss, 0x66, TSS_LIMIT + 1)
    return bytes(tss)


def idt_gate(handler: int, dpl: int = 0, selector: int = SEL_KERNEL_CS) -> bytes:
    """A 16-byte 64-bit interrupt gate (type 0xE): IF is cleared on entry."""
    access = 0x80 | (dpl & 3) << 5 | 0xE
    return struct.pack(
        "<HHBBHII",
        handler & 0xFFFF,
        selector,
        0,
        access,
        (handler >> 16) & 0xFFFF,
        handler >> 32,
        0,
    )


def build_idt(handlers: dict[int, int], user_vectors: tuple[int, ...] = ()) -> bytes:
    """IDT of interrupt gates; user_vectors get DPL3 so CPL3 can INT n them."""
    idt = bytearray(256 * 16)
    for vector, handler in handlers.items():
        dpl = 3 if vector in user_vectors else 0
        idt[vector * 16 : vector * 16 + 16] = idt_gate(handler, dpl)
    return bytes(idt)


PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_PS = 1 << 7


def build_page_tables() -> dict[int, bytes]:
    """Identity map 0-4 GiB with 2 MiB pages: {guest-physical address: page}."""
    flags = PTE_P | PTE_RW | PTE_US
    pml4 = struct.pack("<Q", PDPT_ADDR | flags).ljust(PAGE, b"\0")
    pdpt = b"".join(struct.pack("<Q", PD_ADDR + i * PAGE | flags) for i in range(PD_COUNT))
    tables = {PML4_ADDR: pml4, PDPT_ADDR: pdpt.ljust(PAGE, b"\0")}
    for i in range(PD_COUNT):
        entries = (struct.pack("<Q", ((i * 512 + j) << 21) | flags | PTE_PS) for j in range(512))
        tables[PD_ADDR + i * PAGE] = b"".join(entries)
    return tables


def translate(tables: dict[int, bytes], vaddr: int) -> int | None:
    """Walk build_page_tables()' output like the MMU does (for tests)."""
    pml4e = struct.unpack_from("<Q", tables[PML4_ADDR], ((vaddr >> 39) & 511) * 8)[0]
    if not pml4e & PTE_P:
        return None
    pdpte = struct.unpack_from("<Q", tables[pml4e & ~0xFFF], ((vaddr >> 30) & 511) * 8)[0]
    if not pdpte & PTE_P:
        return None
    pde = struct.unpack_from("<Q", tables[pdpte & ~0xFFF], ((vaddr >> 21) & 511) * 8)[0]
    if not pde & PTE_P or not pde & PTE_PS:
        return None
    return int((pde & ~0x1FFFFF & ((1 << 52) - 1)) | (vaddr & 0x1FFFFF))
