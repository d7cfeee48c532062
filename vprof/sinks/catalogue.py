"""Every metric `vprof daemon` exports: the single source for docs/metrics.md.

Dashboards and alert rules use only names listed here; the Prometheus
collector (vprof/sinks/prometheus.py) refuses to emit a family that is not in
this table, and a test keeps docs/metrics.md in step with it.  Regenerate the
docs with `python -m vprof.sinks.catalogue > docs/metrics.md`.

Names follow the Prometheus conventions: base units (seconds, bytes), `_total`
on counters, `_seconds` on durations, histograms as histograms, and help text
on every family.  `name` is the name users query (counters with `_total`,
info metrics with `_info`); `family` is the name before those suffixes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from vprof.markdown import table

MetricType = Literal["counter", "gauge", "histogram", "info"]

# When a family is emitted (the `detail` column of docs/metrics.md).
ALWAYS = "always"  # default granularity: per VM and bucket, or per daemon
TOP_K = "top-K"  # per VM, the top K label values; the rest summed into "other"
VCPU = "vcpu"  # only with granularity "vcpu" or "full"
TIMING = "exit timing"  # only on hosts where kvm_exit/kvm_entry give handling times
BPF_STATS = "bpf_stats"  # only with bpf_stats = true (kernel.bpf_stats_enabled)
KVM_STATS = "kvm stats"  # only for VMs whose KVM binary statistics vprof can reach
PERF = "perf source"  # only with the perf source

OTHER = "other"  # label value that sums everything past the top-K cap


@dataclass(frozen=True)
class Metric:
    name: str  # as queried: vprof_vm_events_total, vprof_vm_info, ...
    type: MetricType
    help: str
    labels: tuple[str, ...]
    unit: str = ""  # base unit the name ends with: "seconds", "bytes" or ""
    detail: str = ALWAYS

    @property
    def family(self) -> str:
        """The name prometheus_client families take (without _total / _info)."""
        if self.type == "counter":
            return self.name.removesuffix("_total")
        if self.type == "info":
            return self.name.removesuffix("_info")
        return self.name


_VM = ("vm",)

METRICS: tuple[Metric, ...] = (
    # --- per VM -------------------------------------------------------------
    Metric(
        "vprof_vm_info",
        "info",
        "Identity of a VM vprof tracks: sanitised name, UUID, VMM, vCPU count and host PID. "
        "Join on the vm label.",
        ("vm", "uuid", "vmm", "vcpus", "pid"),
    ),
    Metric(
        "vprof_vm_advice_info",
        "info",
        "Advice rules that match a VM now (`vprof advise`, docs/advice.md): at most "
        "three per VM, best first; bucket is where the overhead the rule addresses is charged.",
        ("vm", "rule", "bucket"),
    ),
    Metric(
        "vprof_vm_events_total",
        "counter",
        "KVM exits and events handled for a VM, by overhead bucket.",
        ("vm", "bucket"),
    ),
    Metric(
        "vprof_vm_reason_events_total",
        "counter",
        "KVM exits and events for a VM by exit reason or event name; the top K reasons per VM "
        'by count, the rest summed into reason="other" per bucket.',
        ("vm", "bucket", "isa", "reason"),
        detail=TOP_K,
    ),
    Metric(
        "vprof_vm_time_seconds_total",
        "counter",
        "vCPU thread time of a VM by ledger category (guest, kernel handling by bucket, VMM "
        'userspace, run queue, halted, ...); bucket is the overhead bucket charged or "none".',
        ("vm", "category", "bucket"),
        unit="seconds",
    ),
    Metric(
        "vprof_vm_wall_seconds_total",
        "counter",
        "Wall time of a VM's vCPU threads covered by the ledger (the denominator of shares).",
        _VM,
        unit="seconds",
    ),
    Metric(
        "vprof_vm_exit_handling_seconds",
        "histogram",
        "Time from VM exit to the next entry, by overhead bucket (from kvm_exit/kvm_entry).",
        ("vm", "bucket"),
        unit="seconds",
        detail=TIMING,
    ),
    Metric(
        "vprof_vm_io_accesses_total",
        "counter",
        "Guest port I/O and MMIO accesses of a VM, by kind (pio, mmio, fast_mmio) and direction.",
        ("vm", "kind", "direction"),
    ),
    Metric(
        "vprof_vm_io_bytes_total",
        "counter",
        "Bytes moved by guest port I/O and MMIO accesses of a VM, by kind and direction.",
        ("vm", "kind", "direction"),
        unit="bytes",
    ),
    Metric(
        "vprof_vm_io_address_accesses_total",
        "counter",
        "Guest I/O accesses by port or guest-physical address (hex); the top K addresses per VM, "
        'the rest summed into address="other" per kind and direction.',
        ("vm", "kind", "direction", "address"),
        detail=TOP_K,
    ),
    Metric(
        "vprof_vm_runqueue_wait_seconds_total",
        "counter",
        "Time a VM's vCPU threads were runnable but waiting for a host CPU.",
        _VM,
        unit="seconds",
    ),
    Metric(
        "vprof_vm_preemptions_total",
        "counter",
        "Involuntary switches of a VM's vCPU threads off a host CPU while runnable.",
        _VM,
    ),
    Metric(
        "vprof_vm_voluntary_switches_total",
        "counter",
        "Voluntary switches of a VM's vCPU threads (blocked on halt, ioctl wait, ...).",
        _VM,
    ),
    Metric(
        "vprof_vm_wakeups_total",
        "counter",
        "Wake-ups of a VM's vCPU threads (halt exits ended by an interrupt or kick).",
        _VM,
    ),
    # --- per vCPU (opt-in) --------------------------------------------------
    Metric(
        "vprof_vcpu_time_seconds_total",
        "counter",
        "vCPU thread time by ledger category, per vCPU; threads not mapped to a vCPU index are "
        'summed into vcpu="unmapped".',
        ("vm", "vcpu", "category", "bucket"),
        unit="seconds",
        detail=VCPU,
    ),
    Metric(
        "vprof_vcpu_events_total",
        "counter",
        "KVM exits and events per vCPU, by overhead bucket.",
        ("vm", "vcpu", "bucket"),
        detail=VCPU,
    ),
    Metric(
        "vprof_vcpu_runqueue_wait_seconds_total",
        "counter",
        "Time a vCPU thread was runnable but waiting for a host CPU.",
        ("vm", "vcpu"),
        unit="seconds",
        detail=VCPU,
    ),
    Metric(
        "vprof_vcpu_preemptions_total",
        "counter",
        "Involuntary switches of a vCPU thread off a host CPU while runnable.",
        ("vm", "vcpu"),
        detail=VCPU,
    ),
    # --- the daemon itself --------------------------------------------------
    Metric(
        "vprof_build_info",
        "info",
        "vprof version and the Python running it.",
        ("version", "python"),
    ),
    Metric(
        "vprof_host_info",
        "info",
        "The KVM backend vprof found and whether it gives exit handling times "
        '(exit_timing="true" means the vprof_vm_exit_handling_seconds histograms exist).',
        ("backend", "exit_timing"),
    ),
    Metric(
        "vprof_probe_attached",
        "gauge",
        "1 when a configured probe family is attached, 0 when it failed to attach; reason "
        "says why.",
        ("family", "reason"),
    ),
    Metric(
        "vprof_events_lost_total",
        "counter",
        "Ring-buffer records the kernel dropped because user space fell behind.",
        (),
    ),
    Metric(
        "vprof_map_overflows_total",
        "counter",
        "Updates a BPF map refused because it was full, by map.",
        ("map",),
    ),
    Metric(
        "vprof_decode_errors_total",
        "counter",
        "Records from the kernel that vprof could not decode.",
        (),
    ),
    Metric(
        "vprof_bpf_prog_run_seconds_total",
        "counter",
        "CPU time spent in each vprof BPF program (kernel BPF statistics).",
        ("prog",),
        unit="seconds",
        detail=BPF_STATS,
    ),
    Metric(
        "vprof_bpf_prog_runs_total",
        "counter",
        "Runs of each vprof BPF program (kernel BPF statistics).",
        ("prog",),
        detail=BPF_STATS,
    ),
    Metric(
        "vprof_interval_seconds",
        "gauge",
        "Length of the last aggregation interval.",
        (),
        unit="seconds",
    ),
    Metric(
        "vprof_aggregation_seconds",
        "gauge",
        "Time vprof spent building the last snapshot in user space.",
        (),
        unit="seconds",
    ),
    Metric(
        "vprof_vms_tracked",
        "gauge",
        "VMs in the last snapshot.",
        (),
    ),
    Metric(
        "vprof_proc_unreadable_entries",
        "gauge",
        "/proc entries the last inventory refresh could not read (raced exits, permissions).",
        (),
    ),
    # --- snapshot source and KVM binary statistics (both sources) -----------
    Metric(
        "vprof_source_info",
        "info",
        'Which snapshot source is in use: source="bpf" (compiled probes) or "perf" '
        "(perf tracepoint counters and /proc; no exit timing, ledger split, per-address "
        "detail or wake-ups: those series are absent, never 0).",
        ("source",),
    ),
    Metric(
        "vprof_perf_exits_over_bound_total",
        "counter",
        "Perf source: exits whose reason has no counter of its own (beyond the per-reason "
        'bound); also counted per VM as reason="over_bound".',
        (),
        detail=PERF,
    ),
    Metric(
        "vprof_perf_counters",
        "gauge",
        "Perf source: perf_event file descriptors open (one per counter per vCPU thread).",
        (),
        detail=PERF,
    ),
    Metric(
        "vprof_vm_kvm_stat_total",
        "counter",
        "KVM's own cumulative statistics of a VM (KVM_GET_STATS_FD; the VM's plus its vCPUs' "
        "sum), by the kernel's stat name, e.g. exits, halt_exits, mmio_exits, "
        "halt_poll_success_ns. Values in the stat's own unit (an _ns stat is nanoseconds).",
        ("vm", "stat"),
        detail=KVM_STATS,
    ),
    Metric(
        "vprof_vm_kvm_stat_value",
        "gauge",
        "KVM's instant and peak statistics of a VM (e.g. pages_4k, max_mmu_rmap_size).",
        ("vm", "stat"),
        detail=KVM_STATS,
    ),
    Metric(
        "vprof_vm_kvm_halt_seconds",
        "histogram",
        "KVM's halt_*_hist of a VM's vCPUs, summed: phase poll_success, poll_fail or wait.",
        ("vm", "phase"),
        unit="seconds",
        detail=KVM_STATS,
    ),
    Metric(
        "vprof_vm_kvm_stats_reachable",
        "gauge",
        '1 when vprof reads the VM\'s KVM statistics (route "pidfd" or "qmp"), 0 when no '
        "route reaches them (why: `vprof vms`/the daemon log).",
        ("vm", "route"),
    ),
    Metric(
        "vprof_last_snapshot_success",
        "gauge",
        "1 when the last interval produced a snapshot, 0 when it failed.",
        (),
    ),
    Metric(
        "vprof_last_snapshot_timestamp_seconds",
        "gauge",
        "Unix time of the last successful snapshot.",
        (),
        unit="seconds",
    ),
    Metric(
        "vprof_snapshot_failures_total",
        "counter",
        "Intervals whose snapshot failed (the error is logged).",
        (),
    ),
    Metric(
        "vprof_config_reloads_total",
        "counter",
        'Configuration reloads on SIGHUP, by result ("ok" or "error").',
        ("result",),
    ),
)

BY_NAME: Mapping[str, Metric] = MappingProxyType({m.name: m for m in METRICS})
BY_FAMILY: Mapping[str, Metric] = MappingProxyType({m.family: m for m in METRICS})

_DETAIL_TEXT = {
    ALWAYS: "always",
    TOP_K: "always, capped at `top_k` label values per VM (uncapped with granularity `full`)",
    VCPU: "granularity `vcpu` or `full`",
    TIMING: "hosts with kvm_exit/kvm_entry timing",
    BPF_STATS: "`bpf_stats = true`",
    KVM_STATS: "VMs whose KVM statistics are reachable (a held stats fd or QMP)",
    PERF: "the perf source",
}

_HEADER = """\
# vprof metrics

Generated by `python -m vprof.sinks.catalogue` from vprof/sinks/catalogue.py;
do not edit by hand (a test checks the two agree).

All names follow the Prometheus conventions: base units, `_total` on counters,
`_seconds` on durations.  The `vm` label is the sanitised VM name (the same
name `vprof top` shows); join other VM metrics with `vprof_vm_info` on `vm` to
get the UUID, VMM and vCPU count.  Label values:

- `bucket`: `privileged`, `memory`, `io`, `context_switch`, `unclassified`
  (and `none` on `*_time_seconds_total` for time that is not overhead).
- `category`: the ledger categories of vprof/model.py (`guest`, `in_kvm_run`,
  `kernel_<bucket>`, `vmm_userspace` (the VMM's userspace running), `vmm_blocked`
  (the VMM's userspace blocked: I/O time, not CPU), `runqueue`, `halted`,
  `unattributed`).
- `other`: where a family is capped at the top K label values per VM, the rest
  are summed into one series whose capped label is `other`.

Cardinality at the default granularity is bounded per VM: about 42 series per VM, plus 70
for the handling-time histograms on hosts with exit timing (500 VMs: ~21,000 or ~56,000
series; see bench/scrape.py), plus 42 for KVM's halt histograms where reachable.
`granularity = "vcpu"` adds about 18 series per vCPU and `"full"` also removes the top-K caps.
Histogram buckets (`le`) are the kernel's log2 nanosecond slots merged in
steps of 4x, from 1 µs to about 1 s, converted to seconds.
"""


def render_markdown() -> str:
    """docs/metrics.md, from METRICS."""
    rows = [
        (
            f"`{m.name}`",
            m.type,
            ", ".join(f"`{label}`" for label in m.labels) or "-",
            _DETAIL_TEXT[m.detail],
            m.help,
        )
        for m in METRICS
    ]
    lines = [_HEADER, *table(("Metric", "Type", "Labels", "Emitted", "Help"), rows)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """`python -m vprof.sinks.catalogue > docs/metrics.md` (what `make docs` runs)."""
    if argv:
        print("usage: python -m vprof.sinks.catalogue > docs/metrics.md", file=sys.stderr)
        return 2
    sys.stdout.write(render_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
