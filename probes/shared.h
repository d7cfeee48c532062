/* shared.h: the maps several families share, and the helpers that keep each
 * vCPU thread's time ledger.  core.bpf.c defines the maps (VPROF_CORE); each
 * family sees them as "extern", so one family failing to load leaves the
 * others and these maps intact.
 */
#ifndef VPROF_SHARED_H
#define VPROF_SHARED_H
#include "vprof.h"

/* bcc keeps shared maps in one registry per process, by name, and refuses
 * macros as map names: the loader gives each Profiler its own names by
 * suffixing shared_vcpus, shared_events and shared_overflow (the only
 * rewrite it makes; vprof/bpf/source.py), or a second Profiler in the same
 * process would count into the first one's maps. */
#ifdef VPROF_CORE
#define VPROF_SHARED_MAP(type, k, v, name, n) BPF_TABLE_SHARED(type, k, v, name, n)
#else
#define VPROF_SHARED_MAP(type, k, v, name, n) BPF_TABLE("extern", k, v, name, n)
#endif

/* Not per-CPU: a thread migrates, and its waker runs on another CPU. */
VPROF_SHARED_MAP("hash", u32, struct vcpu_state, shared_vcpus, VPROF_MAX_VCPUS);
VPROF_SHARED_MAP("percpu_hash", struct event_key, struct event_val, shared_events,
		 VPROF_MAX_EVENTS);
VPROF_SHARED_MAP("percpu_array", u32, u64, shared_overflow, OVF_NSLOTS);

static __always_inline void vprof_overflow(u32 slot)
{
	u64 *v = shared_overflow.lookup(&slot);
	if (v)
		*v += 1;
}

/* Charge the time since the last transition to the current category. */
static __always_inline void vprof_move(struct vcpu_state *s, u32 cat, u64 now)
{
	u32 st = s->state;
	if (st == L_DEAD)
		return;
	u32 slot = st == L_VMM_BLOCKED ? L_DEAD : st; /* see enum vprof_ledger */
	if (slot >= L_NCAT)
		slot = L_UNATTRIBUTED;
	if (now > s->since_ns) {
		s->ns[slot & (L_NCAT - 1)] += now - s->since_ns;
		/* The pending exit's own on-CPU kernel time, so the ledger's
		 * kernel share splits exactly by exit reason (halts excluded). */
		if (st == L_KERNEL && s->exit_ns)
			s->exit_kernel_ns += now - s->since_ns;
		s->since_ns = now;
	}
	/* A program on another CPU (a waker's sched_wakeup, say) may have
	 * stamped a later since_ns after this one read `now`: never move it
	 * back, or the overlap would be charged twice and the ledger would
	 * outgrow the wall clock (seen in L1 under TCG: +5 % in 8 s). */
	s->state = cat;
}

/* A family that can tell userspace about new vCPU threads (vmm.bpf.c: each
 * one's first KVM_RUN) defines this before including this header. */
#ifndef VPROF_ON_NEW_VCPU
#define VPROF_ON_NEW_VCPU(pid, tid, now) ((void)0)
#endif

/* The vCPU state of the current thread; its first KVM event creates it, so a
 * new VM is traced from its first event without waiting for userspace. */
static __always_inline struct vcpu_state *vprof_vcpu(u32 pid, u32 tid, u64 now, u32 cat)
{
	struct vcpu_state *s = shared_vcpus.lookup(&tid);
	if (s)
		return s;
	struct vcpu_state init = {};
	init.pid = pid;
	init.vcpu_id = ~0U;
	init.state = cat;
	init.resume = cat;
	init.in_run = (cat != L_VMM_USERSPACE && cat != L_UNATTRIBUTED);
	init.since_ns = now;
	init.first_ns = now;
	/* insert = BPF_NOEXIST: a racing first event on another CPU wins. */
	if (shared_vcpus.insert(&tid, &init) == 0)
		VPROF_ON_NEW_VCPU(pid, tid, now);
	s = shared_vcpus.lookup(&tid);
	if (!s)
		vprof_overflow(OVF_VCPUS);
	return s;
}

static __always_inline struct vcpu_state *vprof_current(u64 now)
{
	u64 id = bpf_get_current_pid_tgid();
	/* A KVM event outside an ioctl we traced: we are inside KVM_RUN. */
	return vprof_vcpu(id >> 32, (u32)id, now, L_IN_KVM_RUN);
}

#include "count.h"

#endif /* VPROF_SHARED_H */
