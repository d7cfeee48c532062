/* memory: two-dimensional paging faults and the shadow/TDP MMU's work.
 * kvmmmu:kvm_mmu_pagetable_walk is left out on purpose: the instruction
 * emulator walks guest page tables dozens of times per emulated
 * instruction, which made it most of vprof's cost for little insight. */
#include "shared.h"

/* bcc copies the kvmmmu tracepoint structs verbatim; they use KVM's own
 * address types (arch/x86/include/asm/kvm_host.h, include/linux/kvm_types.h). */
typedef u64 gpa_t;
typedef u64 gfn_t;

/* detail: the 1 GiB guest-physical region (gpa >> 30), enough to tell which
 * memory a guest touches without one map entry per page. */
#define VPROF_REGION(gpa) ((gpa) >> 30)

TRACEPOINT_PROBE(kvm, kvm_page_fault)
{
	vprof_hot_event(EV_PAGE_FAULT, VPROF_REGION(VPROF_ARG_kvm_page_fault_fault_address), 0);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvmmmu, kvm_mmu_set_spte)
{
	vprof_hot_event(EV_MMU_SET_SPTE, VPROF_REGION(VPROF_ARG_kvm_mmu_set_spte_gfn << 12), 0);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvmmmu, kvm_mmu_spte_requested)
{
	vprof_hot_event(EV_MMU_SPTE_REQUESTED, VPROF_REGION(VPROF_ARG_kvm_mmu_spte_requested_gfn << 12), 0);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvmmmu, fast_page_fault)
{
	vprof_hot_event(EV_FAST_PAGE_FAULT, 0, 0);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvmmmu, handle_mmio_page_fault)
{
	vprof_hot_event(EV_MMIO_PAGE_FAULT, 0, 0);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvmmmu, mark_mmio_spte)
{
	vprof_hot_event(EV_MARK_MMIO_SPTE, 0, 0);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvm, kvm_async_pf_not_present)
{
	vprof_hot_event(EV_ASYNC_PF_NOT_PRESENT, 0, 0);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvm, kvm_async_pf_ready)
{
	vprof_hot_event(EV_ASYNC_PF_READY, 0, 0);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvm, kvm_async_pf_completed)
{
	vprof_hot_event(EV_ASYNC_PF_COMPLETED, 0, 0);
	return VPROF_PASS;
}
