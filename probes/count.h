/* count.h: per-event counting (included by shared.h after the shared maps).
 *
 * Every non-exit event is counted per (pid, tid, event, detail).  The general
 * store is the shared_events per-CPU hash.  The busiest events whose detail
 * has a small range (kvm_emulate_insn by opcode, kvm_fpu, kvm_inj_exception
 * by vector, kvm_userspace_exit by reason) go instead to a per-thread block of counters in shared_hot, an
 * array indexed by tid: an array lookup is inlined by the JIT and costs about
 * a third of a hash lookup here (bench/overhead.py).  A thread whose slot
 * another thread owns falls back to the hash, so every event still lands in
 * exactly one counter and nothing is lost; Python sums both (vprof/hot.py).
 *
 * struct hot_block crosses into Python: vprof/hot.py mirrors it.
 */
#ifndef VPROF_COUNT_H
#define VPROF_COUNT_H

#ifndef VPROF_MAX_HOT
#define VPROF_MAX_HOT 128 /* threads with a block; a power of two (slot = tid & mask) */
#endif
/* Counter index within a block (vprof/hot.py decodes them). */
#define HOT_EMULATE 0      /* 1024: failed << 9 | two-byte << 8 | opcode byte */
#define HOT_FPU 1024       /* 2: load */
#define HOT_INJ_EXC 1026   /* 32: exception vector */
#define HOT_USERSPACE_EXIT 1058 /* 64: KVM_EXIT_* reason */
#define HOT_N 1122

/* Not per-CPU: only its owner thread writes a block, and a thread runs on one
 * CPU at a time, so plain increments are exact.  The owner comes last: the
 * loader frees a dead VM's block by writing zeros (bcc zeroes array entries
 * on delete), which a forward copy does counters first, owner last, so no
 * new thread can claim the slot before its counters are clear. */
struct hot_block {
	__u64 n[HOT_N];
	__u32 pid; /* owner: 0 when free */
	__u32 tid;
};

VPROF_SHARED_MAP("array", u32, struct hot_block, shared_hot, VPROF_MAX_HOT);

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

/* `x & mask`, kept in the program.  The verifiers of 5.10 and 6.1 reject an
 * index they cannot bound ("R6 unbounded memory access", "makes map_value
 * pointer be out of bounds"): clang drops an AND it can prove redundant after
 * the range checks below, and those verifiers lose the checks' bounds through
 * 32-bit moves and OR.  The AND on a 64-bit register, right before the access,
 * is a bound every verifier proves; it never changes an in-range value. */
static __always_inline u64 vprof_bounded(u64 x, const u64 mask)
{
	asm volatile("%0 &= %1" : "+r"(x) : "i"(mask));
	return x;
}

/* The block counter of (id, detail), or HOT_N when it has none.  Each range
 * is a power of two at a constant base, so the index is base + bounded. */
static __always_inline u64 vprof_hot_index(u32 id, u64 detail)
{
	if (id == EV_EMULATE_INSN) {
		u64 op = detail & 0xffff;
		if (op >> 8 != 0 && op >> 8 != 0x0f)
			return HOT_N;
		u64 i = ((detail >> 16) ? 512 : 0) | ((op >> 8) ? 256 : 0) | (op & 0xff);
		return HOT_EMULATE + vprof_bounded(i, 1023);
	}
	if (id == EV_FPU && detail < 2)
		return HOT_FPU + vprof_bounded(detail, 1);
	if (id == EV_INJ_EXCEPTION && detail < 32)
		return HOT_INJ_EXC + vprof_bounded(detail, 31);
	if (id == EV_USERSPACE_EXIT && detail < 64)
		return HOT_USERSPACE_EXIT + vprof_bounded(detail, 63);
	return HOT_N;
}

/* The current thread's block: its own, or a free one it claims now. */
static __always_inline struct hot_block *vprof_hot_block(u64 pt)
{
#ifdef VPROF_NO_CMPXCHG
	/* Before 5.12 BPF has no atomic compare-and-swap ("BPF_STX uses
	 * reserved fields" on 5.10) to claim a block: every event goes to the
	 * events hash instead, as exact, a little slower. */
	return 0;
#endif
	u32 slot = (u32)pt & (VPROF_MAX_HOT - 1);
	struct hot_block *b = shared_hot.lookup(&slot);
	if (!b)
		return 0;
	u64 me = (pt << 32) | (pt >> 32); /* pid in the low half: memory order pid, tid */
	u64 *owner = (u64 *)&b->pid;
	if (*owner == me)
		return b;
	if (*owner == 0 && __sync_val_compare_and_swap(owner, 0, me) == 0) {
		/* Once per thread: register it.  A thread already inside KVM_RUN
		 * when vprof attached passes no marking probe while it stays
		 * there; every event with a block fires inside KVM_RUN, in the
		 * vCPU thread.  (Userspace also registers the inventory's vCPU
		 * threads: vprof/seed.py.) */
		vprof_marked();
		return b;
	}
	return 0;
}

/* Frequent events inside KVM_RUN (instruction emulation, SPTE updates,
 * MSR/CPUID traps) only count: their thread is already marked (else at its
 * block's claim, or from userspace), and a second lookup per event is
 * measurable (bench/overhead.py).  Small-range
 * ones go to the thread's block, the rest (and sums) to the events hash. */
static __always_inline void vprof_hot_event(u32 id, u64 detail, u64 sum)
{
	u64 i = vprof_hot_index(id, detail);
	if (i < HOT_N && !sum) {
		struct hot_block *b = vprof_hot_block(bpf_get_current_pid_tgid());
		if (b) {
			b->n[i] += 1;
			return;
		}
	}
	vprof_event(id, detail, sum);
}

/* The KVM_RUN ioctl (vmm), kvm_userspace_exit, halt wake-ups, port and MMIO
 * accesses and exits mark their thread as a vCPU: on every host one of them
 * comes first in a new vCPU thread (each KVM_RUN ends in kvm_userspace_exit). */
static __always_inline void vprof_kvm_event(u32 id, u64 detail, u64 sum)
{
	vprof_marked();
	vprof_hot_event(id, detail, sum);
}

#endif /* VPROF_COUNT_H */
