/* privileged: trapped CPUID, MSR, CR accesses, hypercalls, and instructions
 * KVM had to emulate. */
#include "shared.h"

VPROF_RAW_PROBE(kvm, kvm_cpuid)
{
	vprof_hot_event(EV_CPUID, VPROF_ARG_kvm_cpuid_function, 0);
	return 0;
}

VPROF_RAW_PROBE(kvm, kvm_msr)
{
	vprof_hot_event(EV_MSR, ((u64)VPROF_ARG_kvm_msr_write << 32) | VPROF_ARG_kvm_msr_ecx, 0);
	return 0;
}

TRACEPOINT_PROBE(kvm, kvm_cr)
{
	vprof_hot_event(EV_CR, ((u64)VPROF_ARG_kvm_cr_rw << 32) | VPROF_ARG_kvm_cr_cr, 0);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvm, kvm_hypercall)
{
	vprof_hot_event(EV_HYPERCALL, VPROF_ARG_kvm_hypercall_nr, 0);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvm, kvm_emulate_insn)
{
	/* detail: failed << 16 | opcode (0x0fXX for two-byte opcodes), so an
	 * emulated HLT (0xf4) or RDMSR (0x0f32) can be told from the rest. */
	u64 op = VPROF_ARG_kvm_emulate_insn_insn[0];
	if (op == 0x0f)
		op = 0x0f00 | VPROF_ARG_kvm_emulate_insn_insn[1];
	vprof_hot_event(EV_EMULATE_INSN, ((u64)VPROF_ARG_kvm_emulate_insn_failed << 16) | op, 0);
	return VPROF_PASS;
}
