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
	if (st >= L_NCAT)
		st = L_UNATTRIBUTED;
	if (now > s->since_ns) {
		s->ns[st & (L_NCAT - 1)] += now - s->since_ns;
		/* The pending exit's own on-CPU kernel time, so the ledger's
		 * kernel share splits exactly by exit reason (halts excluded). */
		if (st == L_KERNEL && s->exit_ns)
			s->exit_kernel_ns += now - s->since_ns;
	}
	s->since_ns = now;
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

/* vprof_current() for events that only need their thread marked: the clock
 * (bpf_ktime_get_ns, ~40 ns on a nested microVM, bench/overhead.py) is read
 * only when the thread is new, not on every event. */
static __always_inline struct vcpu_state *vprof_marked(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct vcpu_state *s = shared_vcpus.lookup(&tid);
	return s ? s : vprof_current(bpf_ktime_get_ns());
}

static __always_inline void vprof_event(u32 id, u64 detail, u64 sum)
{
	u64 pt = bpf_get_current_pid_tgid();
	struct event_key k = {};
	k.pid = pt >> 32;
	k.tid = (u32)pt;
	k.id = id;
	k.detail = detail;
	struct event_val zero = {};
	struct event_val *v = shared_events.lookup_or_try_init(&k, &zero);
	if (!v) {
		vprof_overflow(OVF_EVENTS);
		return;
	}
	v->count += 1;
	v->sum += sum;
}

/* The KVM_RUN ioctl (vmm), kvm_userspace_exit, halt wake-ups, port and MMIO
 * accesses and exits mark their thread as a vCPU: on every host one of them
 * comes first in a new vCPU thread (each KVM_RUN ends in kvm_userspace_exit). */
static __always_inline void vprof_kvm_event(u32 id, u64 detail, u64 sum)
{
	vprof_marked();
	vprof_event(id, detail, sum);
}

/* Frequent events inside KVM_RUN (instruction emulation, SPTE updates,
 * MSR/CPUID traps) only count: their thread is already marked, and a
 * second hash lookup per event is measurable (bench/overhead.py). */
static __always_inline void vprof_hot_event(u32 id, u64 detail, u64 sum)
{
	vprof_event(id, detail, sum);
}

#endif /* VPROF_SHARED_H */
