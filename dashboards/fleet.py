"""Fleet overview: every host at once, for finding where to look."""

from __future__ import annotations

from dashboards.spec import (
    INSTANCE,
    OVERHEAD,
    VM,
    VM_BUCKET,
    DashboardSpec,
    Kind,
    PanelSpec,
    Query,
    Row,
    share,
    sum_rate,
    time_share,
)

_BUCKETS_ACROSS_HOSTS = PanelSpec(
    title="Overhead by bucket across hosts",
    kind=Kind.STACKED,
    unit="percentunit",
    shows=(
        "Share of all vCPU time on the selected hosts spent on virtualization overhead, "
        "split into the four buckets (privileged, memory, I/O, context switch)."
    ),
    when_high=(
        "open the Host dashboard for the hosts that carry it; the biggest bucket names the fix: "
        "privileged -> hardware assists, memory -> huge pages, I/O -> virtio/vhost or "
        "passthrough, context switch -> pinning and halt-polling."
    ),
    queries=(Query(time_share("bucket", OVERHEAD, ""), "{{bucket}}"),),
    width=16,
)

_HOST_SHARE = PanelSpec(
    title="Overhead share by host",
    kind=Kind.BARGAUGE,
    unit="percentunit",
    shows="Share of each host's vCPU time spent on overhead over the dashboard's time range.",
    when_high=(
        "compare its buckets on the Host dashboard; a host far above its peers often lacks "
        "huge pages, vhost or pinning that the others have."
    ),
    queries=(
        Query(
            time_share("instance", OVERHEAD, "instance", "$__range"),
            "{{instance}}",
            instant=True,
        ),
    ),
    width=8,
)

_TOP_VMS = PanelSpec(
    title="Top VMs by overhead share",
    kind=Kind.BARGAUGE,
    unit="percentunit",
    shows=(
        "The ten VMs whose vCPUs spent the largest share of their time on overhead over the "
        "dashboard's time range."
    ),
    when_high=(
        "open the VM dashboard for it and fix its biggest bucket: hardware assists, huge pages, "
        "virtio/vhost or passthrough, or pinning and halt-polling."
    ),
    queries=(
        Query(
            "topk(10, " + time_share("instance, vm", OVERHEAD, "instance, vm", "$__range") + ")",
            "{{vm}} on {{instance}}",
            instant=True,
        ),
    ),
    links_to_vm=True,
)

_RUNQUEUE_HOSTS = PanelSpec(
    title="Hosts by run-queue wait",
    kind=Kind.TIMESERIES,
    unit="percentunit",
    shows="Share of vCPU time on each host spent runnable but waiting for a host CPU.",
    when_high=(
        "the host is CPU overcommitted: rebalance VMs, or pin vCPUs to isolated host CPUs "
        "and tune halt-polling so idle vCPUs give their CPU back."
    ),
    queries=(
        Query(
            "topk(10, "
            + share(
                sum_rate("instance", "vprof_vm_runqueue_wait_seconds_total", VM), "instance", VM
            )
            + ")",
            "{{instance}}",
        ),
    ),
)

_EXITS_BY_BUCKET = PanelSpec(
    title="Exits per second by bucket",
    kind=Kind.STACKED,
    unit="ops",
    shows="KVM exits and events per second on the selected hosts, by overhead bucket.",
    when_high=(
        "a rate far above the fleet's usual level points at a guest workload or device model; "
        "reduce exits with hardware assists (privileged), huge pages (memory), virtio/vhost "
        "or passthrough (I/O), pinning and halt-polling (context switch)."
    ),
    queries=(
        Query(
            sum_rate("bucket", "vprof_vm_events_total", VM_BUCKET),
            "{{bucket}}",
        ),
    ),
    width=24,
)

NOT_WAITING = 'reason!~"no vCPU thread to count yet.*"'  # vprof.sources.absent.PERF_WAITING
_PROBES_OFF = PanelSpec(
    title="Probe families off",
    kind=Kind.BARGAUGE,
    unit="short",
    shows=(
        "Probe families each host's daemon could not attach (0 is healthy); the reason label "
        "of vprof_probe_attached says why. A perf source family waiting for its first vCPU "
        "thread (a host with no VM) is not counted."
    ),
    when_high=(
        "that host's numbers miss a bucket: check `vprof probes` on it (kernel lockdown, "
        "missing tracepoints or headers) and restart the daemon once fixed."
    ),
    queries=(
        Query(
            f"sum by (instance) (1 - vprof_probe_attached{{{INSTANCE},{NOT_WAITING}}})",
            "{{instance}}",
            instant=True,
        ),
    ),
    width=8,
)

_EVENTS_LOST = PanelSpec(
    title="Events lost and decode errors",
    kind=Kind.TIMESERIES,
    unit="ops",
    shows=(
        "Ring-buffer records the kernel dropped, BPF map updates refused because a map was full, "
        "and undecodable records, per second and host."
    ),
    when_high=(
        "counts on that host are undercounted: lower the label granularity or the number of "
        "probe families, or give the daemon more CPU."
    ),
    queries=(
        Query(
            sum_rate("instance", "vprof_events_lost_total", INSTANCE),
            "{{instance}} lost",
        ),
        Query(
            sum_rate("instance", "vprof_map_overflows_total", INSTANCE),
            "{{instance}} map full",
        ),
        Query(
            sum_rate("instance", "vprof_decode_errors_total", INSTANCE),
            "{{instance}} decode errors",
        ),
    ),
    width=8,
)

_SNAPSHOT_AGE = PanelSpec(
    title="Seconds since last snapshot",
    kind=Kind.BARGAUGE,
    unit="s",
    shows="Age of each daemon's last successful snapshot (a few intervals at most is healthy).",
    when_high=(
        "the daemon is stuck or failing each interval: read its log and vprof_snapshot_failures"
        "_total; restart it if /healthz is failing."
    ),
    queries=(
        Query(
            f"time() - vprof_last_snapshot_timestamp_seconds{{{INSTANCE}}}",
            "{{instance}}",
            instant=True,
        ),
    ),
    width=8,
)

FLEET = DashboardSpec(
    uid="vprof-fleet",
    title="vprof / Fleet overview",
    description="Virtualization overhead across KVM hosts, by bucket, host and VM.",
    rows=(
        Row("Overhead", (_BUCKETS_ACROSS_HOSTS, _HOST_SHARE, _TOP_VMS, _RUNQUEUE_HOSTS)),
        Row("Exits", (_EXITS_BY_BUCKET,)),
        Row("Probe health", (_PROBES_OFF, _EVENTS_LOST, _SNAPSHOT_AGE)),
    ),
    variables=("datasource", "instance", "vm", "bucket"),
    multi=("instance", "vm", "bucket"),
    filename="vprof-fleet.json",
)
