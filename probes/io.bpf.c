/* io: port I/O, MMIO and exits to the VMM's userspace.  The io map keeps
 * exact counts per (pid, tid, kind, direction, size, address); Python ranks
 * the busiest ports and addresses from it. */
#include "shared.h"

BPF_PERCPU_HASH(io, struct io_key, u64, VPROF_MAX_IO);

static __always_inline int vprof_io(u32 kind, u32 dir, u32 size, u64 addr)
{
	u64 id = bpf_get_current_pid_tgid();
	/* Port I/O skips the vCPU lookup (~40 ns): only MMIO can continue a
	 * pending stage-2 fault, and the same KVM_RUN's ioctl or its
	 * kvm_userspace_exit marks the thread anyway. */
	if (kind != IO_PIO) {
		struct vcpu_state *s = vprof_marked();
		if (s && s->exit_ns)
			s->flags |= F_EXIT_MMIO; /* the pending exit (NPF, EPT_VIOLATION) is MMIO */
	}
	struct io_key k = {};
	k.pid = id >> 32;
	k.tid = (u32)id;
	k.kind = kind;
	k.dir = dir;
	k.size = size;
	k.addr = addr;
	u64 zero = 0;
	u64 *v = io.lookup_or_try_init(&k, &zero);
	if (!v) {
		vprof_overflow(OVF_IO);
		return 0;
	}
	*v += 1;
	return 0;
}

VPROF_RAW_PROBE(kvm, kvm_pio)
{
	vprof_io(IO_PIO, VPROF_ARG_kvm_pio_rw, VPROF_ARG_kvm_pio_size, VPROF_ARG_kvm_pio_port);
	return 0; /* ignored: raw tracepoints are not on perf's path */
}

VPROF_RAW_PROBE(kvm, kvm_mmio)
{
	vprof_io(IO_MMIO, VPROF_ARG_kvm_mmio_type, VPROF_ARG_kvm_mmio_len, VPROF_ARG_kvm_mmio_gpa);
	return 0;
}

TRACEPOINT_PROBE(kvm, kvm_fast_mmio)
{
	vprof_io(IO_FAST_MMIO, 2, 0, VPROF_ARG_kvm_fast_mmio_gpa);
	return VPROF_PASS;
}

#ifdef VPROF_INJECTOR
#include <uapi/linux/ptrace.h>
/* uprobe on the test injector's vprof_inject_mmio(gpa): an MMIO write. */
int vprof_injected_mmio(struct pt_regs *ctx)
{
	return vprof_io(IO_MMIO, 2, 4, PT_REGS_PARM1(ctx));
}
#endif

/* One program per tracepoint: with the exits family attached, its own
 * kvm_userspace_exit program counts this too (exits.bpf.c), and the loader
 * renders io without this one. */
#ifndef VPROF_WITHOUT_kvm_userspace_exit
VPROF_RAW_PROBE(kvm, kvm_userspace_exit)
{
	vprof_kvm_event(EV_USERSPACE_EXIT, VPROF_ARG_kvm_userspace_exit_reason, 0);
	return 0;
}
#endif
