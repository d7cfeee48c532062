/* vmm: the KVM_RUN ioctl's boundaries.  Between its return and the next
 * KVM_RUN the vCPU thread runs the VMM's device emulation: I/O overhead.
 * Every thread's ioctls pass here; the KVM_RUN test comes first so the
 * others cost one compare, and sys_exit only looks at marked vCPU threads. */
#include "vprof.h"

/* One record per new vCPU thread (not per event): 256 fit; a full buffer is
 * counted (OVF_NEW_VCPUS) and the VM is still named at the next snapshot. */
BPF_RINGBUF_OUTPUT(new_vcpus, 1);

static __always_inline void vprof_new_vcpu(u32 pid, u32 tid, u64 now);
#define VPROF_ON_NEW_VCPU(pid, tid, now) vprof_new_vcpu(pid, tid, now)
#include "shared.h"

static __always_inline void vprof_new_vcpu(u32 pid, u32 tid, u64 now)
{
	struct new_vcpu r = {.pid = pid, .tid = tid, .first_ns = now};
	if (new_vcpus.ringbuf_output(&r, sizeof(r), 0) != 0)
		vprof_overflow(OVF_NEW_VCPUS);
}

#define VPROF_KVM_RUN 0xAE80 /* _IO(KVMIO, 0x80), include/uapi/linux/kvm.h */

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
	if (VPROF_ARG_sys_enter_ioctl_cmd != VPROF_KVM_RUN)
		return VPROF_PASS;
	u64 now = bpf_ktime_get_ns();
	u64 id = bpf_get_current_pid_tgid();
	struct vcpu_state *s = vprof_vcpu(id >> 32, (u32)id, now, L_UNATTRIBUTED);
	if (!s)
		return VPROF_PASS;
	s->in_run = 1;
	s->flags |= F_IOCTL_SEEN;
	vprof_move(s, (s->flags & F_EXITS_SEEN) ? L_KERNEL : L_IN_KVM_RUN, now);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioctl)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct vcpu_state *s = shared_vcpus.lookup(&tid);
	if (!s || !s->in_run)
		return VPROF_PASS;
	s->in_run = 0;
	vprof_move(s, L_VMM_USERSPACE, bpf_ktime_get_ns());
	return VPROF_PASS;
}
