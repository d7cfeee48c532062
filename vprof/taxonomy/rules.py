"""The taxonomy's public rules: classify an exit, an event or a userspace exit.

Buckets are judged by what the overhead is, not by the instruction's name.
Most codes map to one bucket for good; one rule needs context the aggregator
has and a single code lacks: a stage-2 fault (VMX EPT_VIOLATION, SVM npf,
arm64 DABT_LOW/IABT_LOW) is memory overhead, unless the same exit goes on to
emulate MMIO (kvm_mmio or kvm_fast_mmio before the next entry), in which case
it was a device access: I/O.  `npf_bucket` and `resolve_bucket` apply it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

from vprof.model import Bucket
from vprof.taxonomy import arm64, svm, userspace, vmx
from vprof.taxonomy.core import TRACEPOINT_ISA, Classified, Table, unknown
from vprof.taxonomy.tracepoints import classify_event

__all__ = [
    "EXIT_TABLES",
    "MMIO_EVENTS",
    "STAGE2_FAULTS",
    "TABLES",
    "classify_event",
    "classify_exit",
    "npf_bucket",
    "resolve_bucket",
    "userspace_exit",
]

EXIT_TABLES: Mapping[str, Table] = MappingProxyType(
    {"vmx": vmx.TABLE, "svm": svm.TABLE, "arm64": arm64.TABLE}
)
TABLES: Mapping[str, Table] = MappingProxyType({**EXIT_TABLES, "userspace": userspace.TABLE})

# Events that show a stage-2 fault was really an MMIO access.
MMIO_EVENTS: frozenset[str] = frozenset({"kvm_mmio", "kvm_fast_mmio"})

# (isa, code) of exits that are memory unless followed by MMIO emulation.
STAGE2_FAULTS: frozenset[tuple[str, int]] = frozenset(
    {("vmx", 48), ("svm", 0x400), ("arm64", 0x20), ("arm64", 0x24)}
)


def classify_exit(isa: str | int, code: int) -> Classified:
    """Name and bucket of an exit code.

    `isa` is "vmx", "svm" or "arm64", or kvm_exit's numeric isa field (1 VMX,
    2 SVM).  VMX flag bits above the basic reason are decoded into `flags`.
    Unknown codes come back as "unknown:<isa>:<code>" in bucket unclassified.
    """
    if isinstance(isa, int):
        if isa not in TRACEPOINT_ISA:
            # A newer kernel's ISA number: count it, never drop it.
            return unknown(f"isa{isa}", str(code), code)
        isa = TRACEPOINT_ISA[isa]
    name = isa.lower()
    if name.isdigit():
        return classify_exit(int(name), code)
    if name == "vmx":
        return vmx.classify(code)
    if name == "svm":
        return svm.classify(code)
    if name == "arm64":
        return arm64.classify(code)
    raise ValueError(f"unknown ISA {isa!r}: expected vmx, svm, arm64, 1 or 2")


def userspace_exit(code: int) -> Classified:
    """Name and bucket of a kvm_userspace_exit reason (KVM_EXIT_*)."""
    return userspace.classify(code)


def npf_bucket(followed_by_mmio: bool) -> Bucket:
    """Bucket of a stage-2 fault (SVM npf, VMX EPT_VIOLATION, arm64 abort).

    Memory, unless the same exit continued as MMIO emulation (kvm_mmio or
    kvm_fast_mmio seen before the next entry): then it was device I/O.
    """
    return Bucket.IO if followed_by_mmio else Bucket.MEMORY


def resolve_bucket(classified: Classified, followed_by_mmio: bool) -> Classified:
    """Apply the stage-2 rule to one classified exit; other exits are unchanged."""
    if (classified.isa, classified.code) not in STAGE2_FAULTS:
        return classified
    bucket = npf_bucket(followed_by_mmio)
    if bucket is classified.bucket:
        return classified
    return replace(classified, bucket=bucket, reason=classified.reason + "; this one was MMIO")
