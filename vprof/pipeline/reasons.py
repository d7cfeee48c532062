"""Names and buckets for what the probes count, from the taxonomy.

A thin, cached layer over vprof.taxonomy so the aggregator asks once per
series, not once per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from vprof.model import Bucket

# kvm_exit's isa field (arch/x86/kvm/trace.h: KVM_ISA_VMX 1, KVM_ISA_SVM 2).
ISA_NAMES = {1: "vmx", 2: "svm"}
ISA_MMIO = 0x100  # VPROF_ISA_MMIO in probes/vprof.h: the exit continued as MMIO


@dataclass(frozen=True)
class Named:
    isa: str
    reason: str
    bucket: Bucket


@lru_cache(maxsize=4096)
def name_exit(isa: int, code: int) -> Named:
    """An exit reason; flag bits (FAILED_VMENTRY, ...) are kept as "+FLAG",
    and a stage-2 fault that continued as MMIO is "+MMIO", bucketed as I/O."""
    from vprof.taxonomy import classify_exit, resolve_bucket

    mmio = bool(isa & ISA_MMIO)
    isa &= ~ISA_MMIO
    isa_name = ISA_NAMES.get(isa)
    if isa_name is None:
        return Named(f"isa{isa}", f"unknown:isa{isa}:{code}", Bucket.UNCLASSIFIED)
    c = classify_exit(isa_name, code)
    resolved = resolve_bucket(c, mmio)
    name = c.name + "".join(f"+{f}" for f in c.flags) + ("+MMIO" if mmio else "")
    return Named(c.isa, name, resolved.bucket)


@lru_cache(maxsize=1024)
def name_event(name: str, detail: int = 0) -> Named:
    """A non-exit event by tracepoint name; kvm_userspace_exit by its reason."""
    from vprof.taxonomy import classify_event, userspace_exit

    c = userspace_exit(detail) if name == "kvm_userspace_exit" else classify_event(name)
    return Named(c.isa, c.name, c.bucket)
