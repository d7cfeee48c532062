"""Host dashboard: one hypervisor host, its VMs side by side."""

from __future__ import annotations

from dashboards.spec import (
    EXIT_HIST,
    INSTANCE,
    OVERHEAD,
    VM,
    VM_BUCKET,
    DashboardSpec,
    Kind,
    Needs,
    PanelSpec,
    Query,
    Row,
    share,
    sum_rate,
    time_share,
)
from vprof.model import Bucket
from vprof.taxonomy import remedy_brief

BUCKETS = PanelSpec(
    title="Overhead by bucket",
    kind=Kind.STACKED,
    unit="percentunit",
    shows="Share of this host's vCPU time spent on overhead, by bucket, over time.",
    when_high=(
        "fix the biggest bucket: privileged -> hardware assists, memory -> huge pages, "
        "I/O -> virtio/vhost or passthrough, context switch -> pinning and halt-polling."
    ),
    queries=(Query(time_share("bucket", OVERHEAD, ""), "{{bucket}}"),),
)

LEDGER = PanelSpec(
    title="Ledger shares per VM",
    kind=Kind.TIMESERIES,
    unit="percentunit",
    shows=(
        "Where each VM's vCPU time goes: guest code, in-kernel handling by bucket, VMM "
        "userspace, run queue, halted."
    ),
    when_high=(
        "a large kernel_* or vmm_userspace share is overhead: kernel_memory -> huge pages, "
        "vmm_userspace or kernel_io -> virtio/vhost or passthrough, kernel_privileged -> "
        "hardware assists, runqueue -> pinning."
    ),
    queries=(Query(time_share("vm, category", 'category=~".+"', "vm"), "{{vm}} {{category}}"),),
)

EVENTS = PanelSpec(
    title="Event rates per VM",
    kind=Kind.TIMESERIES,
    unit="ops",
    shows="KVM exits and events per second for each VM, by bucket.",
    when_high=(
        "find the reason in Top reasons; each bucket has its fix: hardware assists, huge pages, "
        "virtio/vhost or passthrough, pinning and halt-polling."
    ),
    queries=(
        Query(
            sum_rate("vm, bucket", "vprof_vm_events_total", VM_BUCKET),
            "{{vm}} {{bucket}}",
        ),
    ),
)

REASONS = PanelSpec(
    title="Top reasons",
    kind=Kind.BARGAUGE,
    unit="ops",
    shows=(
        "The exit reasons and KVM events with the highest rate on this host over the time "
        "range (run `vprof explain REASON` for each)."
    ),
    when_high=(
        "apply the fix for the reason's bucket: hardware assists for CPUID/MSR/CR/HLT traps, "
        "huge pages for EPT/NPT violations, virtio/vhost or passthrough for PIO/MMIO."
    ),
    queries=(
        Query(
            "topk(15, "
            + sum_rate("bucket, isa, reason", "vprof_vm_reason_events_total", VM_BUCKET, "$__range")
            + ")",
            "{{reason}} ({{bucket}})",
            instant=True,
        ),
    ),
)

HEATMAP = PanelSpec(
    title="Exit handling time",
    kind=Kind.HEATMAP,
    unit="s",
    shows="Distribution of time from VM exit to the next entry on this host, over time.",
    when_high=(
        "a band moving right means slow exits: look at the bucket in Exit handling p99, then "
        "hardware assists, huge pages, vhost or passthrough, or pinning for that bucket."
    ),
    queries=(Query(sum_rate("le", EXIT_HIST, VM_BUCKET), "{{le}}"),),
    needs=Needs.EXIT_TIMING,
)

HANDLING_P99 = PanelSpec(
    title="Exit handling p99 by bucket",
    kind=Kind.TIMESERIES,
    unit="s",
    shows="99th percentile of exit handling time on this host, by bucket.",
    when_high=(
        "memory -> huge pages; I/O -> vhost or passthrough; privileged -> hardware assists; "
        "context switch -> pinning and halt-polling."
    ),
    queries=(
        Query(
            f"histogram_quantile(0.99, {sum_rate('bucket, le', EXIT_HIST, VM_BUCKET)})",
            "{{bucket}}",
        ),
    ),
    needs=Needs.EXIT_TIMING,
)

IO_BY_VM = PanelSpec(
    title="I/O accesses by VM",
    kind=Kind.BARGAUGE,
    unit="ops",
    shows="Guest port I/O and MMIO accesses per second for each VM over the time range.",
    when_high=f"move the device to {remedy_brief(Bucket.IO)}.",
    queries=(
        Query(
            "topk(10, "
            + sum_rate("instance, vm", "vprof_vm_io_accesses_total", VM, "$__range")
            + ")",
            "{{vm}}",
            instant=True,
        ),
    ),
    links_to_vm=True,
)

IO_BY_KIND = PanelSpec(
    title="I/O by kind",
    kind=Kind.STACKED,
    unit="ops",
    shows="Guest I/O accesses per second on this host, by kind (pio, mmio) and direction.",
    when_high=(
        "emulated devices trap every access: use virtio with vhost, or VFIO/SR-IOV passthrough."
    ),
    queries=(
        Query(
            sum_rate("kind, direction", "vprof_vm_io_accesses_total", VM),
            "{{kind}} {{direction}}",
        ),
    ),
)

IO_BYTES = PanelSpec(
    title="I/O bytes by kind",
    kind=Kind.TIMESERIES,
    unit="Bps",
    shows="Bytes per second moved by trapped guest I/O accesses, by kind and direction.",
    when_high=(
        "bulk data through trapped accesses is the slowest path: virtio rings with vhost, or "
        "passthrough."
    ),
    queries=(
        Query(
            sum_rate("kind, direction", "vprof_vm_io_bytes_total", VM),
            "{{kind}} {{direction}}",
        ),
    ),
)

VMM_TIME = PanelSpec(
    title="VMM userspace time per VM",
    kind=Kind.TIMESERIES,
    unit="percentunit",
    shows="Share of each VM's vCPU time spent in the VMM process emulating devices.",
    when_high=(
        "device emulation in userspace: vhost (in-kernel or vhost-user) or passthrough moves "
        "it off the vCPU."
    ),
    queries=(Query(time_share("vm", 'category="vmm_userspace"', "vm"), "{{vm}}"),),
)

RUNQUEUE = PanelSpec(
    title="Run-queue wait per VM",
    kind=Kind.TIMESERIES,
    unit="percentunit",
    shows="Share of each VM's vCPU time spent runnable but waiting for a host CPU.",
    when_high=(
        "the host is overcommitted or noisy neighbours share CPUs: "
        f"{remedy_brief(Bucket.CONTEXT_SWITCH)}."
    ),
    queries=(
        Query(
            share(sum_rate("vm", "vprof_vm_runqueue_wait_seconds_total", VM), "vm", VM),
            "{{vm}}",
        ),
    ),
)

PREEMPTIONS = PanelSpec(
    title="Preemptions per VM",
    kind=Kind.TIMESERIES,
    unit="ops",
    shows="Involuntary switches of each VM's vCPU threads off a host CPU, per second.",
    when_high="other threads compete for the vCPU's host CPU: pin vCPUs to isolated host CPUs.",
    queries=(Query(sum_rate("vm", "vprof_vm_preemptions_total", VM), "{{vm}}"),),
)

HALTED = PanelSpec(
    title="Halted time per VM",
    kind=Kind.TIMESERIES,
    unit="percentunit",
    shows="Share of each VM's vCPU time halted: the guest's own idleness, not overhead.",
    when_high=(
        "the guest is idle: if its wake-up latency matters tune halt-polling (halt_poll_ns), "
        "otherwise consider fewer vCPUs for it."
    ),
    queries=(Query(time_share("vm", 'category="halted"', "vm"), "{{vm}}"),),
)

WAKEUPS = PanelSpec(
    title="Wake-ups and voluntary switches per VM",
    kind=Kind.TIMESERIES,
    unit="ops",
    shows="Per second: vCPU wake-ups from halt, and voluntary switches (halt, ioctl waits).",
    when_high=(
        "frequent short halts pay a switch each: halt-polling keeps the vCPU on its host CPU, "
        "and pinning keeps it warm."
    ),
    queries=(
        Query(sum_rate("vm", "vprof_vm_wakeups_total", VM), "{{vm}} wake-ups"),
        Query(sum_rate("vm", "vprof_vm_voluntary_switches_total", VM), "{{vm}} voluntary"),
    ),
)

SOURCE = PanelSpec(
    title="Snapshot source",
    kind=Kind.STAT,
    unit="short",
    shows=(
        'Which source the daemon uses: "bpf" (compiled probes: everything) or "perf" '
        "(perf tracepoint counters and /proc, for hosts without a compiler)."
    ),
    when_high=(
        'on "perf", panels of handling time, the ledger split, I/O bytes and addresses and '
        "wake-ups show no data: install kernel headers and a compiler (bcc) to get them, and "
        "use hardware assists, huge pages, virtio/vhost or pinning as the counts point."
    ),
    queries=(Query(f"count by (source) (vprof_source_info{{{INSTANCE}}})", "{{source}}", True),),
    width=6,
    height=4,
)

HOST = DashboardSpec(
    uid="vprof-host",
    title="vprof / Host",
    description="One KVM host: overhead buckets, ledger, reasons, I/O and scheduling per VM.",
    rows=(
        Row("Buckets and ledger", (BUCKETS, LEDGER, EVENTS, REASONS, SOURCE)),
        Row("Exit handling time", (HEATMAP, HANDLING_P99)),
        Row("I/O", (IO_BY_VM, IO_BY_KIND, IO_BYTES, VMM_TIME)),
        Row("Scheduling", (RUNQUEUE, PREEMPTIONS, HALTED, WAKEUPS)),
    ),
    variables=("datasource", "instance", "vm", "bucket"),
    multi=("vm", "bucket"),
    filename="vprof-host.json",
)
