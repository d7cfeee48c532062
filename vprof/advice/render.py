"""`vprof advise` output: plain text for people, JSON for scripts."""

from __future__ import annotations

import json
from typing import Any

from vprof import sanitize
from vprof.advice.engine import Report, VmAdvice
from vprof.advice.rule import ADVISE
from vprof.model import OVERHEAD_BUCKETS, Bucket

_MARK = {ADVISE: "ADVICE", "blocked": "BLOCKED", "not possible": "NOT POSSIBLE"}


NA = "n/a (not available with the perf source)"


def _buckets(a: VmAdvice) -> str:
    rows = [r for r in a.measures.ranked() if r[0] in OVERHEAD_BUCKETS]
    if not a.measures.shares_known:  # events only, by rate
        rows.sort(key=lambda r: -r[2])
        return (
            "time shares " + NA + "; " + ", ".join(f"{b.value} {n:,.0f} ev/s" for b, _, n in rows)
        )
    return ", ".join(f"{b.value} {p:.1f}% ({n:,.0f} ev/s)" for b, p, n in rows)


def _idle(a: VmAdvice) -> str:
    if not a.measures.shares_known:
        return f"  halted, guest: {NA}"
    lp = a.measures.ledger_pct
    guest = lp.get("guest", 0.0) + lp.get("in_kvm_run", 0.0)
    return f"  halted {lp.get('halted', 0.0):.1f}%, guest {guest:.1f}%"


def _vm_text(a: VmAdvice) -> list[str]:
    f = a.facts
    head = f"VM {sanitize.display(f.name)}  pid {f.pid}  {f.vmm}  {f.vcpu_count} vCPUs"
    lines = [head]
    if a.measured:
        lines.append(f"  overhead by bucket ({a.measures.seconds:.1f} s): {_buckets(a)}")
        lines.append(_idle(a))
    elif a.measures.seconds > 0 and f"/proc/{f.pid}/cmdline" in f.unreadable:
        lines.append("  the VM exited while it was profiled: nothing measured")
    elif a.measures.seconds > 0:
        lines.append(
            "  not seen by the profile (no vCPU activity traced): advice from configuration only"
        )
    if f.cmdline_truncated:
        lines.append(
            f"  note: command line longer than {f.cmdline_bytes - 1} bytes: read up to the limit"
        )
    for path in f.unreadable:
        lines.append(f"  note: {path} is unreadable: the facts it gives are missing")
    if not a.findings:
        lines.append("  no rule applies")
    for i, finding in enumerate(a.findings, 1):
        mark = _MARK.get(finding.status, finding.status)
        where = f"{finding.bucket.value}, {finding.technology}"
        lines.append(f"  {i}. [{mark}] {finding.rule} ({where})")
        lines.append(f"     evidence: {finding.evidence}")
        lines.append(f"     remedy:   {finding.remedy}")
        lines.append(f"     needs:    {finding.needs}")
        if finding.status == ADVISE:
            lines.append(f"     check:    {finding.check}")
    if a.unchecked:
        lines.append("  not checked: the recording does not hold the live facts they read:")
        lines += [f"     {rule}: needs {needs}" for rule, needs in a.unchecked]
    return lines


def _origin(report: Report) -> str:
    if report.recording:
        return (
            f"recording {sanitize.display(report.recording, 80)} ({report.seconds:.1f} s, "
            f"{report.source} source; host facts from its metadata)"
        )
    if report.seconds:
        return f"profiled {report.seconds:.1f} s ({report.source} source)"
    return "configuration only (no profile)"


def text(report: Report) -> str:
    h = report.host
    cpus = f"{len(h.cpus)} host CPUs" if h.cpus or not h.recorded else "host CPUs not recorded"
    lines = [
        f"vprof advise  backend {report.backend or h.backend}  {cpus}  "
        f"kernel {sanitize.display(h.kernel, 40)}  {_origin(report)}",
        "",
    ]
    if not report.vms:
        lines.append("no VMs to advise on")
    for a in report.vms:
        lines += [*_vm_text(a), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def as_json(report: Report) -> str:
    h = report.host
    doc: dict[str, Any] = {
        "backend": report.backend or h.backend,
        "exit_timing": report.exit_timing,
        "seconds": round(report.seconds, 3),
        "source": report.source or None,
        "recording": report.recording or None,
        "host": {
            "recorded": h.recorded,
            "cpus": len(h.cpus) if h.cpus or not h.recorded else None,
            "kernel": h.kernel,
            "thp": h.thp,
            "smt": h.smt,
            "iommu_units": len(h.iommu_units),
            "vhost_net": h.vhost_net,
            "halt_poll_ns": h.param_int("kvm", "halt_poll_ns"),
        },
        "vms": [
            {
                "key": a.facts.key,
                "name": a.facts.name,
                "pid": a.facts.pid,
                "vmm": a.facts.vmm,
                "vcpus": a.facts.vcpu_count,
                "measured": a.measured,
                # null where the source measures no time shares (the perf source)
                "buckets": {
                    b.value: round(a.measures.pct(b), 2) if a.measures.shares_known else None
                    for b in Bucket
                },
                "events_per_s": {b.value: round(a.measures.rates.get(b, 0.0), 1) for b in Bucket},
                "devices": [d.model for d in a.facts.config.devices],
                "huge_backed": a.facts.huge_backed,
                "unreadable": list(a.facts.unreadable),
                "cmdline_truncated": a.facts.cmdline_truncated,
                "findings": [f.as_dict() for f in a.findings],
                "unchecked": [{"rule": r, "needs": n} for r, n in a.unchecked],
            }
            for a in report.vms
        ],
    }
    return json.dumps(doc, indent=2) + "\n"
