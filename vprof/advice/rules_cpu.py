# ruff: noqa: E501  (rule texts and tables read better on one line each)
"""Memory, privileged-instruction and context-switch rules."""

from __future__ import annotations

from vprof.advice.rule import (
    ADVISE,
    BLOCKED,
    CONFIG,
    HARDWARE,
    NOT_POSSIBLE,
    Ctx,
    Finding,
    Rule,
    rate,
)
from vprof.model import Bucket

HUGE_COVERAGE = 80.0  # % of guest RAM on huge pages above which the rule is quiet
MEMORY_SHARE = 1.0  # % of vCPU time, or
MEMORY_RATE = 1000.0  # memory events/s, for the TDP rule on hosts that have no TDP
EMULATION_RATE = 10_000.0  # kvm_emulate_insn per second
APIC_RATE = 5000.0  # interrupt-controller events per second
RUNQUEUE_SHARE = 5.0  # % of vCPU time runnable but not running
HALTED_SHARE = 20.0
WAKEUP_RATE = 100.0
HALT_POLL_LOW_NS = 50_000  # below this, a wake-up usually arrives after polling gave up
HALT_POLL_NS = 200_000  # KVM's default since Linux 4.3
_APIC_EVENTS = ("kvm_apic_accept_irq", "kvm_apic", "kvm_eoi", "kvm_apic_ipi", "kvm_inj_virq")


def _mem_evidence(ctx: Ctx) -> str:
    return (
        f"memory: {ctx.m.pct_text(Bucket.MEMORY)} of vCPU time, "
        f"{rate(ctx.m.rates.get(Bucket.MEMORY, 0.0))} memory events"
    )


def hugepages(ctx: Ctx, rule: Rule) -> Finding | None:
    ram = ctx.vm.guest_ram_kb
    if ctx.vm.huge_backed or not ram or ctx.vm.anon_huge_kb is None:
        return None
    coverage = 100.0 * ctx.vm.anon_huge_kb / ram
    if coverage >= HUGE_COVERAGE:
        return None
    evidence = (
        f"guest RAM on 4 KiB pages: {ctx.vm.anon_huge_kb // 1024} of {ram // 1024} MiB on "
        f"transparent huge pages ({coverage:.0f}%, THP {ctx.host.thp or 'unknown'}), no hugetlbfs "
        f"or memfd hugetlb backing; {_mem_evidence(ctx)}"
    )
    need = -(-ram // 2048)
    pool = next((p for p in ctx.host.huge_pools if p.size_kb == 2048), None)
    figures: dict[str, float | int | str] = {
        "huge_coverage_pct": round(coverage, 1),
        "guest_ram_mib": ram // 1024,
    }
    if pool is None or pool.free < need:
        total, free = (pool.total, pool.free) if pool else (0, 0)
        return rule.finding(
            ctx,
            BLOCKED,
            evidence + f"; the 2 MiB hugetlb pool has {free} free pages of {total}",
            needs=f"{need} free 2 MiB pages: echo {total + need - free} > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages (or hugepages= on the kernel command line)",
            score=ctx.m.pct(Bucket.MEMORY),
            figures=figures,
        )
    return rule.finding(ctx, ADVISE, evidence, score=ctx.m.pct(Bucket.MEMORY), figures=figures)


def tdp(ctx: Ctx, rule: Rule) -> Finding | None:
    h = ctx.host
    module, param, flag, name = {
        "vmx": ("kvm_intel", "ept", "ept", "EPT"),
        "svm": ("kvm_amd", "npt", "npt", "NPT"),
    }.get(h.backend, ("", "", "", ""))
    busy = (
        ctx.m.pct(Bucket.MEMORY) >= MEMORY_SHARE or ctx.m.rates.get(Bucket.MEMORY, 0) >= MEMORY_RATE
    )
    if h.backend == "kvm_pvm" and busy:
        return rule.finding(
            ctx,
            NOT_POSSIBLE,
            f"{_mem_evidence(ctx)}; the kvm_pvm backend has no EPT/NPT: guest page tables are shadowed in software",
            remedy="run memory-heavy VMs on a VMX/SVM host with EPT/NPT; here, huge pages (memory-hugepages) cut shadow-page upkeep",
            needs="a CPU exposing vmx+ept or svm+npt to this kernel",
            score=ctx.m.pct(Bucket.MEMORY),
        )
    if not module or h.param_on(module, param) is not False:
        return None
    if flag not in h.cpu_flags and flag not in h.vmx_flags:
        return rule.finding(
            ctx,
            NOT_POSSIBLE,
            f"{name} is off ({module} {param}=0) and this CPU has no {flag} flag: shadow paging only; {_mem_evidence(ctx)}",
            score=ctx.m.pct(Bucket.MEMORY),
        )
    return rule.finding(
        ctx,
        ADVISE,
        f"{name} is off: {module} {param}={h.param(module, param)}; {_mem_evidence(ctx)}",
        remedy=f"with every VM stopped: modprobe -r {module} && modprobe {module} {param}=1; persist with 'options {module} {param}=1' in /etc/modprobe.d/kvm.conf",
        score=max(ctx.m.pct(Bucket.MEMORY), 1.0),
    )


def emulation(ctx: Ctx, rule: Rule) -> Finding | None:
    per_s = ctx.m.reason("kvm_emulate_insn")
    if per_s < EMULATION_RATE:
        return None
    total = sum(ctx.m.rates.values()) or 1.0
    evidence = f"{rate(per_s)} instructions run through KVM's emulator (kvm_emulate_insn), {100 * per_s / total:.0f}% of the VM's events"
    h = ctx.host
    if not h.hardware_virt:
        return rule.finding(
            ctx,
            NOT_POSSIBLE,
            evidence
            + f"; the {h.backend} backend emulates guest kernel-mode (CPL0) code, and this CPU exposes neither vmx nor svm",
            score=max(ctx.m.pct(Bucket.PRIVILEGED), 100.0 * per_s / total / 10),
            emulated_per_s=round(per_s),
        )
    if h.backend == "vmx" and h.param_on("kvm_intel", "unrestricted_guest") is False:
        return rule.finding(
            ctx,
            ADVISE,
            evidence
            + "; kvm_intel unrestricted_guest=N: real-mode and big-real-mode code is emulated",
            remedy="with every VM stopped: modprobe -r kvm_intel && modprobe kvm_intel unrestricted_guest=1 (needs ept=1)",
            score=ctx.m.pct(Bucket.PRIVILEGED),
            emulated_per_s=round(per_s),
        )
    return None


def apicv(ctx: Ctx, rule: Rule) -> Finding | None:
    per_s = sum(ctx.m.reason(n) for n in _APIC_EVENTS)
    if per_s < APIC_RATE:
        return None
    h = ctx.host
    module, param, capable = {
        "vmx": (
            "kvm_intel",
            "enable_apicv",
            "apicv" in h.vmx_flags or "posted_intr" in h.vmx_flags,
        ),
        "svm": ("kvm_amd", "avic", "avic" in h.cpu_flags),
    }.get(h.backend, ("", "", False))
    evidence = f"{rate(per_s)} interrupt-controller events (accepts, EOIs, APIC accesses)"
    if not module:
        return rule.finding(
            ctx,
            NOT_POSSIBLE,
            evidence + f"; the {h.backend} backend has no APICv/AVIC",
            score=ctx.m.pct(Bucket.IO),
        )
    if h.param_on(module, param) is not False:
        return None
    if not capable:
        return rule.finding(
            ctx,
            NOT_POSSIBLE,
            evidence + f"; {module} {param} is off and this CPU lacks the feature",
            score=ctx.m.pct(Bucket.IO),
        )
    return rule.finding(
        ctx,
        ADVISE,
        evidence + f"; {module} {param}={h.param(module, param)}",
        remedy=f"with every VM stopped: modprobe -r {module} && modprobe {module} {param}=1",
        score=max(ctx.m.pct(Bucket.IO), 1.0),
    )


RULES: tuple[Rule, ...] = (
    Rule(
        "memory-hugepages",
        Bucket.MEMORY,
        CONFIG,
        "Guest RAM on small pages",
        f"guest RAM is not backed by hugetlbfs or memfd hugetlb and less than {HUGE_COVERAGE:g}% of it is on transparent huge pages (AnonHugePages in smaps_rollup)",
        "back guest RAM with 2 MiB (or 1 GiB) pages: -object memory-backend-memfd,id=mem,size=<RAM>,hugetlb=on,hugetlbsize=2M -machine memory-backend=mem (or -mem-path /dev/hugepages; libvirt <memoryBacking><hugepages/>; Cloud Hypervisor --memory hugepages=on)",
        "a hugetlb pool with enough free pages (/sys/kernel/mm/hugepages/); or THP enabled=always",
        "the memory share and memory events per second fall (fewer stage-2 / shadow faults and shorter TLB walks)",
        hugepages,
        live="the VMM's memory backing (smaps_rollup), THP mode and hugetlb pools",
    ),
    Rule(
        "memory-tdp",
        Bucket.MEMORY,
        HARDWARE,
        "Two-dimensional paging (EPT/NPT)",
        "EPT (kvm_intel ept) or NPT (kvm_amd npt) is off; or, on a backend without them (kvm_pvm), memory takes "
        f">= {MEMORY_SHARE:g}% of vCPU time or >= {MEMORY_RATE:g} events/s",
        "turn EPT/NPT on: reload kvm_intel ept=1 / kvm_amd npt=1",
        "a CPU with the ept (Intel) or npt (AMD) flag; every VM on the host stopped while the module reloads",
        "memory events (shadow page faults, kvm_mmu_*) fall sharply",
        tdp,
        live="the KVM module parameters (ept, npt) and CPU flags",
    ),
    Rule(
        "privileged-emulation",
        Bucket.PRIVILEGED,
        HARDWARE,
        "Instructions emulated by KVM",
        f">= {EMULATION_RATE:g} kvm_emulate_insn/s",
        "run the guest's kernel natively with hardware virtualization (VT-x/AMD-V, unrestricted guest)",
        "a CPU exposing vmx or svm; on VMX, kvm_intel unrestricted_guest=1 (needs ept=1)",
        "kvm_emulate_insn per second falls by orders of magnitude",
        emulation,
        live="the CPU flags and kvm_intel unrestricted_guest",
    ),
    Rule(
        "privileged-apicv",
        Bucket.IO,
        HARDWARE,
        "Interrupt controller virtualization (APICv/AVIC)",
        f">= {APIC_RATE:g} interrupt-controller events/s and APICv (kvm_intel enable_apicv) or AVIC (kvm_amd avic) off",
        "turn on APICv/AVIC with posted interrupts, so interrupts and EOIs reach the guest without exits",
        "a CPU with APIC register virtualization and posted interrupts (vmx flags apicv, posted_intr) or AVIC",
        "kvm_apic_accept_irq / kvm_eoi per second fall",
        apicv,
        live="the KVM module parameters (enable_apicv, avic) and CPU flags",
    ),
)
