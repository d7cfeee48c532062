/* exits: kvm:kvm_exit + kvm:kvm_entry (and kvm_userspace_exit, below).
 * Count per (pid, tid, isa, reason), handling time exit -> entry as total and log2 histogram, guest time
 * entry -> exit in the ledger, slow exits to the ring buffer.
 *
 * vprof_on_exit/vprof_on_entry hold all the logic.  The tracepoints call
 * them, and so do uprobes on the test injector (tests/test_probes_inject.py),
 * which replays known sequences: the only way to test this path on hosts
 * where kvm_exit never fires (kvm_pvm).
 */
#ifdef VPROF_INJECTOR
#include <uapi/linux/ptrace.h>
#endif
#include "shared.h"

#ifndef VPROF_SLOW_NS
#define VPROF_SLOW_NS 1000000
#endif

BPF_PERCPU_HASH(exits, struct exit_key, struct exit_val, VPROF_MAX_EXITS);
BPF_RINGBUF_OUTPUT(slow, VPROF_RINGBUF_BYTES / 4096);
/* [SEEN_EXITS] != 0 once any kvm_exit or kvm_entry ran on this host: until
 * then kvm_userspace_exit has no exit to close and skips the vCPU hash lookup
 * (an array lookup is inlined by the JIT: kvm_pvm hosts never set it).
 * [SEEN_IO] != 0 once the loader attached the io family: from then on this
 * family's kvm_userspace_exit program counts the event for io as well. */
#define SEEN_EXITS 0
#define SEEN_IO 1 /* = vprof.bpf.source.SEEN_IO */
BPF_ARRAY(exits_seen, u32, 2);

/* Histogram slot: floor(log2(d)), d <= 1 in slot 0 (vprof.model.HIST_SLOTS). */
static __always_inline u32 vprof_slot(u64 d)
{
	u32 r = 0;
	if (d >> 32) { d >>= 32; r += 32; }
	if (d >> 16) { d >>= 16; r += 16; }
	if (d >> 8) { d >>= 8; r += 8; }
	if (d >> 4) { d >>= 4; r += 4; }
	if (d >> 2) { d >>= 2; r += 2; }
	if (d >> 1) { r += 1; }
	return r < VPROF_HIST_SLOTS ? r : VPROF_HIST_SLOTS - 1;
}

static __always_inline struct exit_val *vprof_exit_val(u32 pid, u32 tid, u32 isa, u32 reason)
{
	struct exit_key k = {.pid = pid, .tid = tid, .isa = isa, .reason = reason};
	struct exit_val zero = {};
	struct exit_val *v = exits.lookup_or_try_init(&k, &zero);
	if (!v)
		vprof_overflow(OVF_EXITS);
	return v;
}

/* Close the pending exit at `now` (kvm_entry, or the return to userspace). */
static __always_inline void vprof_close_exit(struct vcpu_state *s, u32 tid, u64 now)
{
	if (!s->exit_ns)
		return;
	u64 d = now > s->exit_ns ? now - s->exit_ns : 0;
	u32 isa = s->exit_isa | ((s->flags & F_EXIT_MMIO) ? VPROF_ISA_MMIO : 0);
	/* Counted when closed, so an NPF that continued as MMIO is counted as
	 * such; an exit still in progress shows in the next snapshot. */
	struct exit_val *v = vprof_exit_val(s->pid, tid, isa, s->exit_reason);
	if (v) {
		v->count += 1;
		v->timed += 1;
		v->total_ns += d;
		v->kernel_ns += s->exit_kernel_ns;
		u32 slot = vprof_slot(d);
		if (slot < VPROF_HIST_SLOTS)
			v->hist[slot] += 1;
	}
	if (d >= VPROF_SLOW_NS) {
		struct slow_exit r = {.pid = s->pid, .tid = tid, .isa = isa,
				      .reason = s->exit_reason, .vcpu_id = s->vcpu_id,
				      .exit_ns = s->exit_ns, .duration_ns = d};
		if (slow.ringbuf_output(&r, sizeof(r), 0) != 0)
			vprof_overflow(OVF_RINGBUF);
	}
	s->exit_ns = 0;
	s->exit_kernel_ns = 0;
	s->flags &= ~F_EXIT_MMIO;
}

static __always_inline void vprof_exits_seen(void)
{
	u32 slot = SEEN_EXITS;
	u32 *seen = exits_seen.lookup(&slot);
	if (seen && !*seen)
		*seen = 1;
}

static __always_inline int vprof_on_exit(u32 isa, u32 reason, u32 vcpu, u64 now)
{
	vprof_exits_seen();
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	struct vcpu_state *s = vprof_vcpu(id >> 32, tid, now, L_GUEST);
	if (!s)
		return 0;
	/* Charge the stretch so far first: it belongs to the previous exit if
	 * that one never saw its entry, which is then closed, never lost. */
	vprof_move(s, L_KERNEL, now);
	vprof_close_exit(s, tid, now);
	s->flags |= F_EXITS_SEEN;
	/* ~0U: this kernel's kvm_exit has no vcpu_id (5.10); kvm_entry's or the
	 * inventory's index stands. */
	if (vcpu != ~0U)
		s->vcpu_id = vcpu;
	s->exit_ns = now ? now : 1;
	s->exit_isa = isa;
	s->exit_reason = reason;
	return 0;
}

static __always_inline int vprof_on_entry(u32 vcpu, u64 now)
{
	vprof_exits_seen();
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	struct vcpu_state *s = vprof_vcpu(id >> 32, tid, now, L_KERNEL);
	if (!s)
		return 0;
	vprof_move(s, L_GUEST, now); /* charges the exit's last kernel stretch */
	vprof_close_exit(s, tid, now);
	s->flags |= F_EXITS_SEEN;
	if (vcpu != ~0U)
		s->vcpu_id = vcpu;
	return 0;
}

static __always_inline int vprof_on_userspace(struct vcpu_state *s, u64 now)
{
	if (s && s->exit_ns) {
		vprof_move(s, s->state, now); /* charge the stretch, same state */
		vprof_close_exit(s, (u32)bpf_get_current_pid_tgid(), now);
	}
	return 0;
}

TRACEPOINT_PROBE(kvm, kvm_exit)
{
	vprof_on_exit(VPROF_ARG_kvm_exit_isa, VPROF_ARG_kvm_exit_exit_reason,
		      VPROF_ARG_kvm_exit_vcpu_id, bpf_ktime_get_ns());
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvm, kvm_entry)
{
	vprof_on_entry(VPROF_ARG_kvm_entry_vcpu_id, bpf_ktime_get_ns());
	return VPROF_PASS;
}

/* The one program on kvm_userspace_exit, for two families.  exits: an exit
 * handled in userspace ends when KVM_RUN returns, not at the next entry (the
 * VMM's time is the vmm family's, not the exit's).  io: the KVM_EXIT_*
 * reason is counted here once the io family is attached (SEEN_IO), and the
 * loader renders io without a program of its own on this tracepoint; with
 * exits off, io attaches its own (io.bpf.c). */
VPROF_RAW_PROBE(kvm, kvm_userspace_exit)
{
	u32 slot = SEEN_IO;
	u32 *io = exits_seen.lookup(&slot);
	struct vcpu_state *s = 0;
	if (io && *io) {
		s = vprof_marked(); /* io's vprof_kvm_event, its one vCPU lookup shared */
		vprof_hot_event(EV_USERSPACE_EXIT, VPROF_ARG_kvm_userspace_exit_reason, 0);
	}
	/* Most hosts' exits are closed by kvm_entry before this, and kvm_pvm
	 * has none: read the clock only for a pending exit. */
	slot = SEEN_EXITS;
	u32 *seen = exits_seen.lookup(&slot);
	if (!seen || !*seen)
		return 0;
	if (!s) {
		u32 tid = (u32)bpf_get_current_pid_tgid();
		s = shared_vcpus.lookup(&tid);
	}
	if (s && s->exit_ns)
		vprof_on_userspace(s, bpf_ktime_get_ns());
	return 0;
}

#ifdef VPROF_INJECTOR
/* uprobes on the test injector: vprof_inject_exit(isa, reason, vcpu, ts)
 * and vprof_inject_entry(vcpu, ts), ts in CLOCK_MONOTONIC ns. */
int vprof_injected_exit(struct pt_regs *ctx)
{
	return vprof_on_exit(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx),
			     PT_REGS_PARM4(ctx));
}

int vprof_injected_entry(struct pt_regs *ctx)
{
	return vprof_on_entry(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx));
}

int vprof_injected_userspace(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	return vprof_on_userspace(shared_vcpus.lookup(&tid), PT_REGS_PARM1(ctx));
}
#endif
