# ruff: noqa: E501  (one table row per line reads better than wrapped rows)
"""Tracepoints other than kvm_exit, each charged to one bucket.

Names: the kvm, kvmmmu and sched trace systems (include/trace/events/kvm.h,
arch/x86/kvm/trace.h, arch/x86/kvm/mmu/mmutrace.h,
include/trace/events/sched.h).  Scheduler events count only for vCPU threads;
the aggregator filters them, the taxonomy only names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from vprof.model import Bucket
from vprof.taxonomy.core import CTX, IO, MEM, PRIV, Classified, unknown

SOURCE = (
    "include/trace/events/kvm.h, arch/x86/kvm/trace.h, arch/x86/kvm/mmu/mmutrace.h, "
    "include/trace/events/sched.h"
)

_MMU = "KVM maintains the guest's shadow/TDP page tables"
_MMIO_SPTE = "MMIO fast path: KVM caches MMIO in special page-table entries"
_INTR = "interrupt delivery through KVM's emulated interrupt controller"
_APF = "asynchronous page fault: host page missing, the guest is told to run something else"
_DIRTY = "dirty-page tracking for live migration"
_NESTED = "nested virtualization: an exit or entry of a guest hypervisor's guest"
_HV = "Hyper-V enlightenment emulated by KVM"

# fmt: off
_ROWS: tuple[tuple[str, str, Bucket, str], ...] = (
    # I/O: device emulation, in KVM or the VMM
    ("kvm", "kvm_pio", IO, "port I/O access emulated by KVM or the VMM"),
    ("kvm", "kvm_mmio", IO, "MMIO access emulated by KVM or the VMM"),
    ("kvm", "kvm_fast_mmio", IO, "MMIO write handled on KVM's fast path (ioeventfd)"),
    ("kvm", "kvm_userspace_exit", IO, "KVM_RUN returned to the VMM; use the KVM_EXIT_* reason for detail"),
    ("kvm", "vcpu_match_mmio", IO, "emulator matched an access to a cached MMIO address"),
    ("kvmmmu", "mark_mmio_spte", IO, _MMIO_SPTE),
    ("kvmmmu", "handle_mmio_page_fault", IO, _MMIO_SPTE),
    ("kvmmmu", "check_mmio_spte", IO, _MMIO_SPTE),
    ("kvm", "kvm_inj_virq", IO, _INTR),
    ("kvm", "kvm_inj_nmi", IO, _INTR),
    ("kvm", "kvm_apic_accept_irq", IO, _INTR),
    ("kvm", "kvm_apicv_accept_irq", IO, _INTR),
    ("kvm", "kvm_apic", IO, "APIC register access emulated by KVM"),
    ("kvm", "kvm_apic_ipi", IO, "inter-processor interrupt sent through the emulated APIC"),
    ("kvm", "kvm_eoi", IO, "end-of-interrupt emulated by KVM's APIC"),
    ("kvm", "kvm_pv_eoi", IO, "paravirtual end-of-interrupt"),
    ("kvm", "kvm_ack_irq", IO, _INTR),
    ("kvm", "kvm_set_irq", IO, _INTR),
    ("kvm", "kvm_msi_set_irq", IO, "MSI from a device delivered to the guest"),
    ("kvm", "kvm_ioapic_set_irq", IO, _INTR),
    ("kvm", "kvm_ioapic_delayed_eoi_inj", IO, _INTR),
    ("kvm", "kvm_pic_set_irq", IO, _INTR),
    ("kvm", "kvm_avic_incomplete_ipi", IO, "AVIC could not deliver an IPI: APIC emulation"),
    ("kvm", "kvm_avic_unaccelerated_access", IO, "APIC access AVIC does not accelerate"),
    ("kvm", "kvm_avic_ga_log", IO, "AVIC guest-APIC log: interrupt for a non-running vCPU"),
    ("kvm", "kvm_avic_doorbell", IO, "AVIC doorbell to a running vCPU"),
    ("kvm", "kvm_avic_kick_vcpu_slowpath", IO, "AVIC IPI delivered on the slow path"),
    ("kvm", "kvm_pi_irte_update", IO, "posted-interrupt remapping entry updated for an assigned device"),
    # privileged instructions emulated by KVM
    ("kvm", "kvm_cpuid", PRIV, "CPUID emulated by KVM"),
    ("kvm", "kvm_msr", PRIV, "RDMSR/WRMSR emulated by KVM"),
    ("kvm", "kvm_cr", PRIV, "control-register access emulated by KVM"),
    ("kvm", "kvm_hypercall", PRIV, "KVM hypercall"),
    ("kvm", "kvm_hv_hypercall", PRIV, "Hyper-V hypercall emulated by KVM"),
    ("kvm", "kvm_xen_hypercall", PRIV, "Xen hypercall emulated by KVM"),
    ("kvm", "kvm_emulate_insn", PRIV, "instruction run through KVM's x86 emulator"),
    ("kvm", "kvm_inj_exception", PRIV, "exception injected into the guest (often the result of emulation)"),
    ("kvm", "kvm_smm_transition", PRIV, "system-management mode entered or left, emulated"),
    ("kvm", "kvm_nested_vmenter", PRIV, _NESTED),
    ("kvm", "kvm_nested_vmexit", PRIV, _NESTED),
    ("kvm", "kvm_nested_vmexit_inject", PRIV, _NESTED),
    ("kvm", "kvm_nested_intr_vmexit", PRIV, _NESTED),
    ("kvm", "kvm_nested_vmenter_failed", PRIV, _NESTED),
    ("kvm", "kvm_hv_synic_set_msr", PRIV, _HV),
    ("kvm", "kvm_hv_stimer_expiration", PRIV, _HV),
    ("kvm", "kvm_vmgexit_enter", PRIV, "SEV-ES guest request through the GHCB"),
    ("kvm", "kvm_vmgexit_msr_protocol_enter", PRIV, "SEV-ES guest request through the GHCB MSR protocol"),
    # memory: two-dimensional paging and its faults
    ("kvm", "kvm_page_fault", MEM, "guest-physical page fault (EPT/NPT violation or shadow #PF)"),
    ("kvm", "kvm_try_async_get_page", MEM, _APF),
    ("kvm", "kvm_async_pf_not_present", MEM, _APF),
    ("kvm", "kvm_async_pf_ready", MEM, _APF),
    ("kvm", "kvm_async_pf_completed", MEM, _APF),
    ("kvm", "kvm_async_pf_repeated_fault", MEM, _APF),
    ("kvm", "kvm_pml_full", MEM, _DIRTY),
    ("kvm", "kvm_dirty_ring_push", MEM, _DIRTY),
    ("kvm", "kvm_dirty_ring_reset", MEM, _DIRTY),
    ("kvm", "kvm_dirty_ring_exit", MEM, _DIRTY),
    ("kvm", "kvm_age_hva", MEM, "host reclaim ages guest memory"),
    ("kvm", "kvm_test_age_hva", MEM, "host reclaim ages guest memory"),
    ("kvm", "kvm_unmap_hva_range", MEM, "host unmapped guest memory (reclaim, migration, KSM)"),
    ("kvm", "kvm_rmp_fault", MEM, "SEV-SNP reverse-map table fault"),
    ("kvmmmu", "kvm_mmu_pagetable_walk", MEM, "software walk of guest page tables"),
    ("kvmmmu", "kvm_mmu_paging_element", MEM, "software walk of guest page tables"),
    ("kvmmmu", "kvm_mmu_set_accessed_bit", MEM, _MMU),
    ("kvmmmu", "kvm_mmu_set_dirty_bit", MEM, _MMU),
    ("kvmmmu", "kvm_mmu_walker_error", MEM, "guest page-table walk failed: a guest page fault"),
    ("kvmmmu", "kvm_mmu_get_page", MEM, _MMU),
    ("kvmmmu", "kvm_mmu_sync_page", MEM, _MMU),
    ("kvmmmu", "kvm_mmu_unsync_page", MEM, _MMU),
    ("kvmmmu", "kvm_mmu_prepare_zap_page", MEM, _MMU),
    ("kvmmmu", "kvm_mmu_zap_all_fast", MEM, _MMU),
    ("kvmmmu", "kvm_mmu_set_spte", MEM, "KVM installed a guest-physical mapping (page fault resolved)"),
    ("kvmmmu", "kvm_mmu_spte_requested", MEM, "KVM is about to map a guest-physical page"),
    ("kvmmmu", "kvm_mmu_split_huge_page", MEM, "huge page split into small pages (dirty logging, NX huge pages)"),
    ("kvmmmu", "fast_page_fault", MEM, "page fault fixed on KVM's lockless fast path"),
    ("kvmmmu", "kvm_tdp_mmu_spte_changed", MEM, _MMU),
    # context switches: exits, entries, halts, wake-ups, scheduling
    ("kvm", "kvm_entry", CTX, "VM entry: the end of every exit round trip"),
    ("kvm", "kvm_exit", CTX, "VM exit: classify it by its exit reason for detail"),
    ("kvm", "kvm_vcpu_wakeup", CTX, "halted vCPU woke up (after polling or sleeping)"),
    ("kvm", "kvm_halt_poll_ns", CTX, "KVM adjusted how long a halted vCPU polls before sleeping"),
    ("kvm", "kvm_fpu", CTX, "guest FPU state loaded or put: part of every entry/exit to userspace"),
    ("kvm", "kvm_ple_window_update", CTX, "pause-loop exiting window adjusted"),
    ("kvm", "kvm_wait_lapic_expire", CTX, "busy-wait before entry so a guest timer fires on time"),
    ("sched", "sched_switch", CTX, "vCPU thread switched out or in by the host scheduler"),
    ("sched", "sched_wakeup", CTX, "vCPU thread made runnable: run-queue wait starts"),
    ("sched", "sched_waking", CTX, "vCPU thread is being woken"),
    ("sched", "sched_wakeup_new", CTX, "new vCPU thread made runnable"),
    ("sched", "sched_migrate_task", CTX, "vCPU thread moved to another host CPU"),
)
# fmt: on

EVENTS: Mapping[str, tuple[str, Bucket, str]] = MappingProxyType(
    {name: (system, bucket, reason) for system, name, bucket, reason in _ROWS}
)


def event_name(name: str) -> str:
    """Drop a `system:` prefix: "kvmmmu:kvm_mmu_set_spte" -> "kvm_mmu_set_spte"."""
    return name.rsplit(":", 1)[-1]


def classify_event(name: str) -> Classified:
    """Classify a tracepoint by name, with or without its system prefix."""
    short = event_name(name)
    row = EVENTS.get(short)
    if row is None:
        return unknown("event", short, 0)
    _system, bucket, reason = row
    return Classified("event", 0, short, bucket, reason)
