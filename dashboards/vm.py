"""VM dashboard: one VM's ledger, buckets, reasons, I/O and vCPUs."""

from __future__ import annotations

from dashboards.spec import (
    EXIT_HIST,
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

_VCPU_TIME = "vprof_vcpu_time_seconds_total"


IDENTITY = PanelSpec(
    title="VM identity",
    kind=Kind.TABLE,
    unit="none",
    shows="Name, UUID, VMM, vCPU count and host PID vprof found for the VM (1 = present).",
    when_high=(
        "not a rate: use the UUID to find the VM in the cloud inventory, and the VMM to know "
        "which of virtio/vhost, passthrough or pinning it can use."
    ),
    queries=(Query(f"vprof_vm_info{{{VM}}}", instant=True),),
    width=16,
    height=5,
)

OVERHEAD_SHARE = PanelSpec(
    title="Overhead share",
    kind=Kind.STAT,
    unit="percentunit",
    shows="Share of the VM's vCPU time spent on virtualization overhead (all buckets).",
    when_high=(
        "see which bucket below carries it: hardware assists, huge pages, virtio/vhost or "
        "passthrough, pinning and halt-polling."
    ),
    queries=(Query(time_share("vm", OVERHEAD, "vm"), "{{vm}}"),),
    width=8,
    height=5,
)

LEDGER = PanelSpec(
    title="Ledger",
    kind=Kind.STACKED,
    unit="percentunit",
    shows=(
        "Where the VM's vCPU time goes: guest, in-kernel handling by bucket, VMM userspace, "
        "run queue, halted, unattributed."
    ),
    when_high=(
        "kernel_memory -> huge pages; kernel_io or vmm_userspace -> virtio/vhost or "
        "passthrough; kernel_privileged -> hardware assists; runqueue -> pinning."
    ),
    queries=(Query(time_share("vm, category", 'category=~".+"', "vm"), "{{category}}"),),
)

BUCKET_EVENTS = PanelSpec(
    title="Events by bucket",
    kind=Kind.STACKED,
    unit="ops",
    shows="The VM's KVM exits and events per second, by overhead bucket.",
    when_high=(
        "privileged -> hardware assists; memory -> huge pages; I/O -> virtio/vhost or "
        "passthrough; context switch -> pinning and halt-polling."
    ),
    queries=(Query(sum_rate("bucket", "vprof_vm_events_total", VM_BUCKET), "{{bucket}}"),),
)

REASONS = PanelSpec(
    title="Exit reasons",
    kind=Kind.BARGAUGE,
    unit="ops",
    shows="The VM's exit reasons and KVM events by rate over the time range (vprof explain).",
    when_high=(
        "CPUID/MSR/HLT traps -> hardware assists; EPT/NPT violations -> huge pages; PIO/MMIO -> "
        "virtio/vhost or passthrough."
    ),
    queries=(
        Query(
            "topk(20, "
            + sum_rate("bucket, isa, reason", "vprof_vm_reason_events_total", VM_BUCKET, "$__range")
            + ")",
            "{{reason}} ({{bucket}})",
            instant=True,
        ),
    ),
)

IO_ADDRESSES = PanelSpec(
    title="I/O ports and addresses",
    kind=Kind.BARGAUGE,
    unit="ops",
    shows=(
        "The VM's most accessed I/O ports and MMIO guest-physical addresses, per second over "
        "the time range."
    ),
    when_high=f"the device behind that port or address is emulated: {remedy_brief(Bucket.IO)}.",
    queries=(
        Query(
            "topk(20, "
            + sum_rate(
                "kind, direction, address",
                "vprof_vm_io_address_accesses_total",
                VM,
                "$__range",
            )
            + ")",
            "{{kind}} {{direction}} {{address}}",
            instant=True,
        ),
    ),
)

IO_KIND = PanelSpec(
    title="I/O accesses by kind",
    kind=Kind.TIMESERIES,
    unit="ops",
    shows="The VM's port I/O and MMIO accesses per second, by kind and direction.",
    when_high="use virtio with vhost (vhost-net, vhost-user), or VFIO/SR-IOV passthrough.",
    queries=(
        Query(
            sum_rate("kind, direction", "vprof_vm_io_accesses_total", VM),
            "{{kind}} {{direction}}",
        ),
    ),
    width=24,
)

HEATMAP = PanelSpec(
    title="Exit handling time",
    kind=Kind.HEATMAP,
    unit="s",
    shows="Distribution of the VM's exit-to-entry handling time, over time.",
    when_high=(
        "slow exits: memory -> huge pages; I/O -> vhost or passthrough; privileged -> hardware "
        "assists; context switch -> pinning."
    ),
    queries=(Query(sum_rate("le", EXIT_HIST, VM_BUCKET), "{{le}}"),),
    needs=Needs.EXIT_TIMING,
)

HANDLING_QUANTILES = PanelSpec(
    title="Exit handling p50 and p99",
    kind=Kind.TIMESERIES,
    unit="s",
    shows="Median and 99th percentile of the VM's exit handling time, by bucket.",
    when_high=(
        "memory -> huge pages; I/O -> vhost or passthrough; privileged -> hardware assists; "
        "context switch -> pinning and halt-polling."
    ),
    queries=(
        Query(
            f"histogram_quantile(0.5, {sum_rate('bucket, le', EXIT_HIST, VM_BUCKET)})",
            "p50 {{bucket}}",
        ),
        Query(
            f"histogram_quantile(0.99, {sum_rate('bucket, le', EXIT_HIST, VM_BUCKET)})",
            "p99 {{bucket}}",
        ),
    ),
    needs=Needs.EXIT_TIMING,
)

SCHEDULING = PanelSpec(
    title="Run-queue wait",
    kind=Kind.TIMESERIES,
    unit="percentunit",
    shows="Share of the VM's vCPU time spent runnable but waiting for a host CPU.",
    when_high=f"{remedy_brief(Bucket.CONTEXT_SWITCH)}; or move the VM to a less loaded host.",
    queries=(
        Query(
            share(sum_rate("vm", "vprof_vm_runqueue_wait_seconds_total", VM), "vm", VM),
            "{{vm}}",
        ),
    ),
)

SWITCHES = PanelSpec(
    title="Preemptions and wake-ups",
    kind=Kind.TIMESERIES,
    unit="ops",
    shows="Per second: involuntary preemptions of the VM's vCPUs, and wake-ups from halt.",
    when_high=(
        "preemptions -> pin vCPUs to isolated host CPUs; many wake-ups -> halt-polling keeps "
        "short halts on the CPU."
    ),
    queries=(
        Query(sum_rate("vm", "vprof_vm_preemptions_total", VM), "preemptions"),
        Query(sum_rate("vm", "vprof_vm_wakeups_total", VM), "wake-ups"),
    ),
)

VCPU_OVERHEAD = PanelSpec(
    title="Overhead share per vCPU",
    kind=Kind.TIMESERIES,
    unit="percentunit",
    shows="Share of each vCPU's time spent on overhead; one line per vCPU.",
    when_high=(
        "one hot vCPU usually takes the device interrupts: spread them (multi-queue virtio), "
        "or pin that vCPU; fix its bucket with hardware assists, huge pages, vhost or pinning."
    ),
    queries=(
        Query(
            sum_rate("vm, vcpu", _VCPU_TIME, f"{VM}, {OVERHEAD}")
            + " / on (vm, vcpu) group_left "
            + sum_rate("vm, vcpu", _VCPU_TIME, VM),
            "{{vm}} vCPU {{vcpu}}",
        ),
    ),
    needs=Needs.VCPU,
)

VCPU_LEDGER = PanelSpec(
    title="Ledger per vCPU",
    kind=Kind.TIMESERIES,
    unit="percentunit",
    shows="Each vCPU thread's time by ledger category (one thread: seconds per second = share).",
    when_high=(
        "kernel_memory -> huge pages; kernel_io or vmm_userspace -> virtio/vhost or "
        "passthrough; runqueue -> pinning and halt-polling."
    ),
    queries=(
        Query(
            sum_rate("vm, vcpu, category", _VCPU_TIME, f'{VM}, category=~".+"'),
            "{{vm}} vCPU {{vcpu}} {{category}}",
        ),
    ),
    needs=Needs.VCPU,
)

VCPU_EVENTS = PanelSpec(
    title="Events per vCPU",
    kind=Kind.TIMESERIES,
    unit="ops",
    shows="KVM exits and events per second for each vCPU, by bucket.",
    when_high=(
        "privileged -> hardware assists; memory -> huge pages; I/O -> virtio/vhost or "
        "passthrough; context switch -> pinning and halt-polling."
    ),
    queries=(
        Query(
            sum_rate("vm, vcpu, bucket", "vprof_vcpu_events_total", VM_BUCKET),
            "{{vm}} vCPU {{vcpu}} {{bucket}}",
        ),
    ),
    needs=Needs.VCPU,
)

VCPU_RUNQUEUE = PanelSpec(
    title="Run-queue wait per vCPU",
    kind=Kind.TIMESERIES,
    unit="percentunit",
    shows="Share of each vCPU thread's time spent runnable but waiting for a host CPU.",
    when_high="pin that vCPU to an isolated host CPU and keep other threads off it.",
    queries=(
        Query(
            sum_rate("vm, vcpu", "vprof_vcpu_runqueue_wait_seconds_total", VM),
            "{{vm}} vCPU {{vcpu}}",
        ),
    ),
    needs=Needs.VCPU,
)

VCPU_PREEMPTIONS = PanelSpec(
    title="Preemptions per vCPU",
    kind=Kind.TIMESERIES,
    unit="ops",
    shows="Involuntary switches of each vCPU thread off its host CPU, per second.",
    when_high=(
        "another thread shares that host CPU: pin the vCPU to an isolated CPU; halt-polling "
        "does not help here."
    ),
    queries=(
        Query(
            sum_rate("vm, vcpu", "vprof_vcpu_preemptions_total", VM),
            "{{vm}} vCPU {{vcpu}}",
        ),
    ),
    needs=Needs.VCPU,
)

VM_DASHBOARD = DashboardSpec(
    uid="vprof-vm",
    title="vprof / VM",
    description="One VM: its ledger, buckets, exit reasons, I/O and per-vCPU detail.",
    rows=(
        Row("Summary", (IDENTITY, OVERHEAD_SHARE, LEDGER, BUCKET_EVENTS)),
        Row("Reasons and I/O", (REASONS, IO_ADDRESSES, IO_KIND)),
        Row("Scheduling", (SCHEDULING, SWITCHES)),
        Row("Exit handling time", (HEATMAP, HANDLING_QUANTILES)),
        Row(
            "Per vCPU",
            (VCPU_OVERHEAD, VCPU_LEDGER, VCPU_EVENTS, VCPU_RUNQUEUE, VCPU_PREEMPTIONS),
        ),
    ),
    variables=("datasource", "instance", "vm", "bucket"),
    multi=("bucket",),
    filename="vprof-vm.json",
)
