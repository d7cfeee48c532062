/* privileged: trapped CPUID, MSR, CR accesses, hypercalls, and instructions
 * KVM had to emulate. */
#include "shared.h"

TRACEPOINT_PROBE(kvm, kvm_cpuid)
{
	vprof_hot_event(EV_CPUID, args->function, 0);
	return 0;
}

TRACEPOINT_PROBE(kvm, kvm_msr)
{
	vprof_hot_event(EV_MSR, ((u64)args->write << 32) | args->ecx, 0);
	return 0;
}

TRACEPOINT_PROBE(kvm, kvm_cr)
{
	vprof_hot_event(EV_CR, ((u64)args->rw << 32) | args->cr, 0);
	return 0;
}

TRACEPOINT_PROBE(kvm, kvm_hypercall)
{
	vprof_hot_event(EV_HYPERCALL, args->nr, 0);
	return 0;
}

TRACEPOINT_PROBE(kvm, kvm_emulate_insn)
{
	/* detail: failed << 16 | opcode (0x0fXX for two-byte opcodes), so an
	 * emulated HLT (0xf4) or RDMSR (0x0f32) can be told from the rest. */
	u64 op = args->insn[0];
	if (op == 0x0f)
		op = 0x0f00 | args->insn[1];
	vprof_hot_event(EV_EMULATE_INSN, ((u64)args->failed << 16) | op, 0);
	return 0;
}
