/* sched: run-queue waits, preemptions and blocking of vCPU threads, halt
 * wake-ups, FPU switches and interrupt injection.
 *
 * sched_switch and sched_wakeup fire for every thread on the host; the vcpus
 * map (filled by the first KVM event of a thread, and from the inventory for
 * threads already inside KVM_RUN when vprof attached: vprof/seed.py)
 * filters them in-kernel.
 */
#include "shared.h"

/* sched_switch prev_state: low bits are the task state, TASK_REPORT_MAX
 * (0x100 on 6.x, shown as "R+") marks preemption; 0 is runnable. */
#define VPROF_TASK_STATE_MASK 0xff

TRACEPOINT_PROBE(sched, sched_switch)
{
	u64 now = bpf_ktime_get_ns();
	u32 prev = VPROF_ARG_sched_switch_prev_pid, next = VPROF_ARG_sched_switch_next_pid;
	struct vcpu_state *s = shared_vcpus.lookup(&prev);
	if (s && s->state != L_DEAD) {
		if (s->state != L_RUNQUEUE && s->state != L_HALTED && s->state != L_VMM_BLOCKED &&
		    !(s->flags & F_BLOCKED))
			s->resume = s->state;
		if (VPROF_ARG_sched_switch_prev_state & VPROF_TASK_STATE_MASK) {
			s->voluntary += 1;
			s->flags |= F_BLOCKED;
			/* Blocked inside KVM_RUN: the guest halted.  Outside it: the
			 * VMM's userspace waits, still device emulation, but not
			 * CPU time (vmm_userspace is only the running part). */
			vprof_move(s, s->in_run ? L_HALTED : L_VMM_BLOCKED, now);
		} else {
			s->preemptions += 1;
			vprof_move(s, L_RUNQUEUE, now);
		}
	}
	s = shared_vcpus.lookup(&next);
	if (s && s->state != L_DEAD) {
		if (s->state == L_RUNQUEUE && now > s->since_ns)
			s->runq_wait_ns += now - s->since_ns;
		if (s->state == L_RUNQUEUE || s->state == L_HALTED || s->state == L_VMM_BLOCKED ||
		    (s->flags & F_BLOCKED))
			vprof_move(s, s->resume, now);
		s->flags &= ~F_BLOCKED;
	}
	return VPROF_PASS;
}

TRACEPOINT_PROBE(sched, sched_wakeup)
{
	u32 tid = VPROF_ARG_sched_wakeup_pid;
	struct vcpu_state *s = shared_vcpus.lookup(&tid);
	if (!s || !(s->flags & F_BLOCKED))
		return VPROF_PASS;
	s->flags &= ~F_BLOCKED;
	s->wakeups += 1;
	vprof_move(s, L_RUNQUEUE, bpf_ktime_get_ns());
	return VPROF_PASS;
}

/* A dead vCPU thread stops accruing time. */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct vcpu_state *s = shared_vcpus.lookup(&tid);
	if (s)
		vprof_move(s, L_DEAD, bpf_ktime_get_ns());
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvm, kvm_vcpu_wakeup)
{
	vprof_kvm_event(EV_VCPU_WAKEUP, VPROF_ARG_kvm_vcpu_wakeup_waited, VPROF_ARG_kvm_vcpu_wakeup_ns);
	return VPROF_PASS;
}

TRACEPOINT_PROBE(kvm, kvm_halt_poll_ns)
{
	vprof_hot_event(EV_HALT_POLL_NS, VPROF_ARG_kvm_halt_poll_ns_grow, 0);
	return VPROF_PASS;
}

VPROF_RAW_PROBE(kvm, kvm_fpu)
{
	vprof_hot_event(EV_FPU, VPROF_ARG_kvm_fpu_load, 0);
	return 0;
}

VPROF_RAW_PROBE(kvm, kvm_inj_virq)
{
	vprof_hot_event(EV_INJ_VIRQ, VPROF_ARG_kvm_inj_virq_vector, 0);
	return 0;
}

TRACEPOINT_PROBE(kvm, kvm_inj_exception)
{
	vprof_hot_event(EV_INJ_EXCEPTION, VPROF_ARG_kvm_inj_exception_exception, 0);
	return VPROF_PASS;
}
