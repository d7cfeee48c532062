/* vprof.h: every struct and constant that crosses from the BPF programs into
 * Python.  vprof/events.py mirrors these with ctypes; change both together
 * (tests/test_aggregate.py checks the sizes).
 *
 * The loader compiles probes/core.bpf.c first: it owns the maps that several
 * families share (VPROF_CORE defined).  Every family file includes this
 * header without VPROF_CORE and sees the same maps as "extern".
 */
#ifndef VPROF_H
#define VPROF_H

#define VPROF_HIST_SLOTS 40 /* = vprof.model.HIST_SLOTS */
/* Map bounds; the loader may override them (tests make them tiny to check
 * that a full map is counted in overflow[], never silently lost). */
#ifndef VPROF_MAX_VCPUS
#define VPROF_MAX_VCPUS 4096
#endif
#ifndef VPROF_MAX_EVENTS
#define VPROF_MAX_EVENTS 16384
#endif
#ifndef VPROF_MAX_EXITS
#define VPROF_MAX_EXITS 16384
#endif
#ifndef VPROF_MAX_IO
#define VPROF_MAX_IO 4096
#endif
#ifndef VPROF_MAX_SLOW_PAGES
#define VPROF_MAX_SLOW_PAGES 64 /* slow-exit ring buffer, in pages (a power of two) */
#endif
#define VPROF_RINGBUF_BYTES (VPROF_MAX_SLOW_PAGES * 4096)

/* What every (classic) TRACEPOINT_PROBE returns.  A classic tracepoint
 * program's return value decides whether the event still goes to the perf
 * events attached to it (perf_trace_run_bpf_submit: 0 drops it), so returning 0 hid these events
 * from perf stat, perf kvm stat and perf trace on the whole host
 * (tests/test_probes_perf.py).  1 passes it on; with no perf user on the
 * tracepoint the kernel still stops right there. */
#define VPROF_PASS 1

/* A raw tracepoint (bcc's RAW_TRACEPOINT_PROBE) for events whose arguments are
 * plain values: it skips the perf trace buffer the classic one fills before
 * any program runs, and it is not on perf's path at all, so no return value
 * of it can hide the event from perf users.  The arguments are TP_PROTO's, in
 * order, each in a u64 (ctx->args[i]); vprof/bpf/fields.py holds their
 * positions, proven on every kernel of the matrix, and render() defines each
 * VPROF_ARG_* of such a tracepoint from them.  `cat` names the tracefs
 * system (raw tracepoint names have none), so the loader can check that the
 * kernel has the event. */
#define VPROF_RAW_PROBE(cat, event) RAW_TRACEPOINT_PROBE(event)

/* Where a vCPU thread's time goes (vprof.model.Ledger); KERNEL is split
 * by bucket in Python from the exit handling times. */
enum vprof_ledger {
	L_GUEST = 0,
	L_IN_KVM_RUN = 1,
	L_KERNEL = 2,
	L_VMM_USERSPACE = 3,
	L_RUNQUEUE = 4,
	L_HALTED = 5,
	L_UNATTRIBUTED = 6,
	L_DEAD = 7, /* thread exited: no more time accrues */
	L_NCAT = 8, /* ns[] slots */
	/* Blocked outside KVM_RUN: the VMM's userspace waits (the I/O bucket's
	 * time, but not CPU: vmm_userspace is the running part).  Its time goes
	 * to ns[L_DEAD], which dead threads never use (vprof_move), so the
	 * struct and recorded maps keep their layout. */
	L_VMM_BLOCKED = 8,
};

/* vcpu_state.flags */
#define F_EXITS_SEEN 1 /* kvm_exit/kvm_entry fire for this thread */
#define F_BLOCKED 2    /* switched out while not runnable */
#define F_IOCTL_SEEN 4 /* KVM_RUN ioctl boundaries are traced */
#define F_EXIT_MMIO 8  /* the pending exit continued as MMIO (kvm_mmio/kvm_fast_mmio) */

/* exit_key.isa | VPROF_ISA_MMIO: a stage-2 fault (SVM NPF, VMX EPT_VIOLATION)
 * that turned out to be MMIO, which is I/O, not memory (vprof.taxonomy). */
#define VPROF_ISA_MMIO 0x100

/* overflow[] slots: map full or ring buffer full; vprof/events.py names them */
enum vprof_overflow {
	OVF_VCPUS = 0,
	OVF_EVENTS = 1,
	OVF_EXITS = 2,
	OVF_IO = 3,
	OVF_RINGBUF = 4,
	OVF_NEW_VCPUS = 5, /* new_vcpus ring buffer full */
	OVF_NSLOTS = 8,
};

/* Non-exit events; vprof/events.py maps each id to its tracepoint name. */
enum vprof_event {
	EV_USERSPACE_EXIT = 1, /* detail: KVM_EXIT_* reason */
	EV_CPUID = 2,          /* detail: function (leaf) */
	EV_MSR = 3,            /* detail: write << 32 | msr index */
	EV_CR = 4,             /* detail: rw << 32 | cr number */
	EV_HYPERCALL = 5,      /* detail: nr */
	EV_EMULATE_INSN = 6,   /* detail: failed << 16 | opcode */
	EV_PAGE_FAULT = 7,         /* detail: gpa >> 30 (1 GiB region) */
	EV_MMU_SET_SPTE = 8,       /* detail: gpa >> 30 */
	EV_MMU_SPTE_REQUESTED = 9, /* detail: gpa >> 30 */
	EV_FAST_PAGE_FAULT = 10,
	EV_MMIO_PAGE_FAULT = 11,
	EV_MARK_MMIO_SPTE = 12,
	EV_MMU_PAGETABLE_WALK = 13,
	EV_ASYNC_PF_NOT_PRESENT = 14,
	EV_ASYNC_PF_READY = 15,
	EV_ASYNC_PF_COMPLETED = 16,
	EV_VCPU_WAKEUP = 17, /* detail: waited; sum: ns */
	EV_HALT_POLL_NS = 18, /* detail: grow */
	EV_FPU = 19,          /* detail: load */
	EV_INJ_VIRQ = 20,     /* detail: vector */
	EV_INJ_EXCEPTION = 21, /* detail: exception vector */
};

/* io map kinds and directions */
#define IO_PIO 1       /* dir: 0 in, 1 out (kvm_pio rw) */
#define IO_MMIO 2      /* dir: KVM_TRACE_MMIO_*: 0 unsatisfied read, 1 read, 2 write */
#define IO_FAST_MMIO 3 /* dir: 2 write */

struct vcpu_state {
	__u32 pid;
	__u32 vcpu_id; /* from kvm_exit/kvm_entry; ~0 until known */
	__u32 state;   /* enum vprof_ledger */
	__u32 resume;  /* state to return to when switched back in */
	__u32 in_run;  /* inside the KVM_RUN ioctl */
	__u32 flags;
	__u64 since_ns; /* CLOCK_MONOTONIC when `state` began */
	__u64 first_ns; /* first event of this thread */
	__u64 ns[L_NCAT];
	__u64 runq_wait_ns;
	__u64 preemptions;
	__u64 voluntary;
	__u64 wakeups;
	__u64 exit_ns; /* pending exit: time, isa, reason; 0 when none */
	__u32 exit_isa;
	__u32 exit_reason;
	__u64 exit_kernel_ns; /* pending exit: time on CPU in the kernel so far */
};

struct event_key {
	__u32 pid;
	__u32 tid;
	__u32 id; /* enum vprof_event */
	__u32 pad;
	__u64 detail;
};

struct event_val {
	__u64 count;
	__u64 sum;
};

struct exit_key {
	__u32 pid;
	__u32 tid;
	__u32 isa; /* kvm_exit isa: 1 VMX, 2 SVM; | VPROF_ISA_MMIO */
	__u32 reason; /* raw exit_reason, flag bits included */
};

struct exit_val {
	__u64 count;
	__u64 timed; /* exits whose handling time was measured */
	__u64 total_ns;  /* exit -> entry, blocked and waiting time included */
	__u64 kernel_ns; /* of which on CPU in the kernel: the ledger's share */
	__u64 hist[VPROF_HIST_SLOTS];
};

struct io_key {
	__u32 pid;
	__u32 tid;
	__u32 kind;
	__u32 dir;
	__u32 size;
	__u32 pad;
	__u64 addr;
};

/* ring-buffer record: one exit slower than VPROF_SLOW_NS */
struct slow_exit {
	__u32 pid;
	__u32 tid;
	__u32 isa;
	__u32 reason;
	__u32 vcpu_id;
	__u32 pad;
	__u64 exit_ns;
	__u64 duration_ns;
};

/* ring-buffer record (vmm family): a thread's first KVM_RUN, so userspace
 * names its VM while the process still lives, however short its life. */
struct new_vcpu {
	__u32 pid;
	__u32 tid;
	__u64 first_ns;
};

#endif /* VPROF_H */
