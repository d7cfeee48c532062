"""The taxonomy's data shapes and the bucket remedies.

A table row is an `Entry`: one exit code or event with its name as the kernel
prints it, the overhead bucket it charges and a one-line reason.  Callers get
a `Classified`, which adds the flag bits decoded from the same exit code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from vprof.model import Bucket

# Bucket aliases keep the tables one row per line.
PRIV = Bucket.PRIVILEGED
MEM = Bucket.MEMORY
IO = Bucket.IO
CTX = Bucket.CONTEXT_SWITCH

# ISAs as vprof names them; the kvm_exit tracepoint's numeric `isa` field
# uses KVM_ISA_VMX = 1 and KVM_ISA_SVM = 2 (arch/x86/kvm/trace.h).
ISAS: tuple[str, ...] = ("vmx", "svm", "arm64", "userspace", "event")
TRACEPOINT_ISA: Mapping[int, str] = MappingProxyType({1: "vmx", 2: "svm"})


@dataclass(frozen=True)
class Entry:
    """One row of a table: a code the kernel defines and how vprof judges it."""

    code: int
    name: str
    bucket: Bucket
    reason: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Classified:
    """An exit code or event, named and charged to one overhead bucket."""

    isa: str  # "vmx", "svm", "arm64", "userspace" or "event"
    code: int  # basic reason for VMX (flag bits removed); 0 for events
    name: str  # kernel's name, or "unknown:<isa>:<code>"
    bucket: Bucket
    reason: str  # one line for users
    flags: tuple[str, ...] = ()  # e.g. ("FAILED_VMENTRY",)

    @property
    def known(self) -> bool:
        return self.bucket is not Bucket.UNCLASSIFIED


@dataclass(frozen=True)
class Table:
    """All codes of one ISA, with the header the codes come from."""

    isa: str
    title: str
    source: str  # kernel header(s) the codes and names come from
    entries: Mapping[int, Entry]
    code_format: str = "{:d}"  # how the kernel and users write these codes

    def format_code(self, code: int) -> str:
        return self.code_format.format(code)

    def classify(self, code: int, flags: tuple[str, ...] = ()) -> Classified:
        entry = self.entries.get(code)
        if entry is None:
            return unknown(self.isa, self.format_code(code), code, flags)
        return Classified(self.isa, code, entry.name, entry.bucket, entry.reason, flags)


def make_table(
    isa: str,
    title: str,
    source: str,
    rows: Iterable[tuple[int, str, Bucket, str] | tuple[int, str, Bucket, str, tuple[str, ...]]],
    code_format: str = "{:d}",
) -> Table:
    """Build a table, refusing duplicate codes (a typo would hide a row)."""
    entries: dict[int, Entry] = {}
    for row in rows:
        entry = Entry(*row)
        if entry.code in entries:
            raise ValueError(f"{isa}: code {entry.code:#x} listed twice")
        entries[entry.code] = entry
    return Table(isa, title, source, MappingProxyType(entries), code_format)


UNKNOWN_REASON = (
    "not in vprof's tables (newer kernel or hardware?): counted, never dropped; please report it"
)


def unknown(isa: str, shown: str, code: int, flags: tuple[str, ...] = ()) -> Classified:
    """The classification of a code missing from the tables."""
    return Classified(
        isa, code, f"unknown:{isa}:{shown}", Bucket.UNCLASSIFIED, UNKNOWN_REASON, flags
    )


_REMEDIES: Mapping[Bucket, str] = MappingProxyType(
    {
        Bucket.PRIVILEGED: (
            "Hardware virtualization assists that let the guest run the instruction "
            "without a trap (MSR and I/O bitmaps, TSC offsetting and scaling, "
            "XSAVES/XSETBV pass-through, unrestricted guest, VMCS shadowing for nested "
            "guests), and paravirtual interfaces (kvmclock, PV EOI, PV TLB flush, PV "
            "spinlocks) that replace trapping instructions with shared memory."
        ),
        Bucket.MEMORY: (
            "Two-dimensional paging (Intel EPT, AMD NPT, arm64 stage-2) instead of "
            "shadow page tables, backed by huge pages (1 GiB/2 MiB hugetlbfs or THP) "
            "so that fewer nested faults and TLB misses happen; pre-allocated, locked "
            "guest memory avoids first-touch and async page faults."
        ),
        Bucket.IO: (
            "Paravirtual devices (virtio) with in-kernel back ends (vhost-net, "
            "vhost-scsi, vhost-user, ioeventfd/irqfd) instead of emulated devices; "
            "device assignment (VT-d/AMD-Vi pass-through with VFIO) and SR-IOV "
            "virtual functions for the heaviest I/O; APICv/AVIC for interrupt-"
            "controller exits."
        ),
        Bucket.CONTEXT_SWITCH: (
            "Pin vCPU threads to dedicated host CPUs (cpusets, isolcpus) so they do "
            "not wait in the run queue; halt-polling (halt_poll_ns) for short idle "
            "periods; pause-loop exiting (PLE) tuning for spinning guests; posted "
            "interrupts (VT-d PI, AVIC) so interrupts reach a running vCPU without "
            "an exit."
        ),
        Bucket.UNCLASSIFIED: (
            "None known: vprof has no rule for this code. Upgrade vprof or report "
            "the code so that it can be classified."
        ),
    }
)


def remedy(bucket: Bucket) -> str:
    """The technology that reduces `bucket`'s overhead."""
    return _REMEDIES[bucket]


# The same remedies in one line each, in the words users search for: what a
# dashboard panel or an alert says to do.
_BRIEF: Mapping[Bucket, str] = MappingProxyType(
    {
        Bucket.PRIVILEGED: (
            "hardware assists (APICv/AVIC posted interrupts, TSC scaling, MSR bitmaps) and a "
            "guest kernel that avoids trapping instructions"
        ),
        Bucket.MEMORY: (
            "huge pages (1 GiB or 2 MiB backing for guest RAM) and EPT/NPT hardware paging"
        ),
        Bucket.IO: (
            "virtio with vhost (vhost-net, vhost-user) or device passthrough (VFIO, SR-IOV)"
        ),
        Bucket.CONTEXT_SWITCH: (
            "vCPU pinning (isolated host CPUs for vCPU threads) and halt-polling "
            "(halt_poll_ns) tuned to the wake-up pattern"
        ),
    }
)


def remedy_brief(bucket: Bucket) -> str:
    """remedy() in one line; KeyError for UNCLASSIFIED, which has none."""
    return _BRIEF[bucket]
