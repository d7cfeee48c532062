/* vmm: the KVM_RUN ioctl's boundaries.  Between its return and the next
 * KVM_RUN the vCPU thread runs the VMM's device emulation: I/O overhead.
 * Every thread's ioctls pass here; the KVM_RUN test comes first so the
 * others cost one compare, and sys_exit only looks at marked vCPU threads. */
#include "shared.h"

#define VPROF_KVM_RUN 0xAE80 /* _IO(KVMIO, 0x80), include/uapi/linux/kvm.h */

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
	if (args->cmd != VPROF_KVM_RUN)
		return 0;
	u64 now = bpf_ktime_get_ns();
	u64 id = bpf_get_current_pid_tgid();
	struct vcpu_state *s = vprof_vcpu(id >> 32, (u32)id, now, L_UNATTRIBUTED);
	if (!s)
		return 0;
	s->in_run = 1;
	s->flags |= F_IOCTL_SEEN;
	vprof_move(s, (s->flags & F_EXITS_SEEN) ? L_KERNEL : L_IN_KVM_RUN, now);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioctl)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct vcpu_state *s = shared_vcpus.lookup(&tid);
	if (!s || !s->in_run)
		return 0;
	s->in_run = 0;
	vprof_move(s, L_VMM_USERSPACE, bpf_ktime_get_ns());
	return 0;
}
