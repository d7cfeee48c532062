"""The measured figures a rule cites, from one VM of a delta Snapshot.

Time shares come from the vCPU ledger (vprof.model.Ledger): the I/O share is
in-kernel I/O handling plus time in the VMM's userspace; the context-switch
share is in-kernel switching plus run-queue wait.  Event rates come from the
taxonomy's counts.  Legacy port numbers are the PC's fixed assignments (and
QEMU's hw/i386/pc.c, hw/ide/isa.c, hw/nvram/fw_cfg.c); anything at or above
0x1000 is a PCI I/O BAR the firmware placed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from vprof.model import Bucket, Ledger, VmStat, bucket_of
from vprof.sources.absent import ABSENT_IO_ADDRESSES, ABSENT_LEDGER_SPLIT

# Without per-address records (the perf source), accesses are these events' counts.
PIO_EVENTS = ("kvm_pio",)
MMIO_EVENTS = ("kvm_mmio", "kvm_fast_mmio")

# (first, last, what, device kind it implicates or "")
PORTS: tuple[tuple[int, int, str, str], ...] = (
    (0x20, 0x21, "PIC master", ""),
    (0x40, 0x43, "PIT timer", ""),
    (0x60, 0x60, "i8042 keyboard", ""),
    (0x61, 0x61, "PIT gate / speaker", ""),
    (0x64, 0x64, "i8042 keyboard", ""),
    (0x70, 0x71, "RTC/CMOS", ""),
    (0x80, 0x80, "POST delay port", ""),
    (0xA0, 0xA1, "PIC slave", ""),
    (0x170, 0x177, "IDE secondary channel", "block"),
    (0x1F0, 0x1F7, "IDE primary channel", "block"),
    (0x2F8, 0x2FF, "COM2 serial", "console"),
    (0x376, 0x376, "IDE secondary control", "block"),
    (0x3F0, 0x3F5, "floppy controller", "block"),
    (0x3F6, 0x3F6, "IDE primary control", "block"),
    (0x3F8, 0x3FF, "COM1 serial", "console"),
    (0x402, 0x402, "debug console", "console"),
    (0x510, 0x511, "fw_cfg", ""),
    (0x600, 0x67F, "ACPI PM (q35)", ""),
    (0xB000, 0xB03F, "ACPI PM (piix4)", ""),
    (0xCF8, 0xCFF, "PCI configuration", ""),
)


def port_name(port: int) -> tuple[str, str]:
    """What a port is on a PC, and the device kind it implicates."""
    for lo, hi, what, kind in PORTS:
        if lo <= port <= hi:
            return what, kind
    if port >= 0x1000:
        return "PCI I/O BAR or VMM port", "pci"
    return "port", ""


@dataclass(frozen=True)
class PortGroup:
    what: str
    kind: str
    ports: tuple[int, ...]
    count: int

    def label(self) -> str:
        lo, hi = min(self.ports), max(self.ports)
        span = f"{lo:#x}" if lo == hi else f"{lo:#x}-{hi:#x}"
        return f"{span} ({self.what})" if self.what != "port" else f"port {span}"


def _zero() -> Mapping[Bucket, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Measures:
    seconds: float
    wall_ns: int = 0
    shares: Mapping[Bucket, float] = field(default_factory=_zero)  # % of vCPU wall time
    ledger_pct: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    rates: Mapping[Bucket, float] = field(default_factory=_zero)  # events/s
    reasons: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))  # name -> /s
    io_per_s: float = 0.0  # port and MMIO accesses per second
    pio_per_s: float = 0.0
    port_groups: tuple[PortGroup, ...] = ()  # busiest first
    mmio_per_s: float = 0.0
    runqueue_ms_per_s: float = 0.0  # summed over vCPUs
    preemptions_per_s: float = 0.0
    wakeups_per_s: float = 0.0
    absent: frozenset[str] = frozenset()  # what the source could not measure (absent.py)

    @property
    def shares_known(self) -> bool:
        """False where the source has no ledger split: every time share is then n/a."""
        return ABSENT_LEDGER_SPLIT not in self.absent

    @property
    def addresses_known(self) -> bool:
        return ABSENT_IO_ADDRESSES not in self.absent

    def pct(self, bucket: Bucket) -> float:
        return self.shares.get(bucket, 0.0)

    def pct_text(self, bucket: Bucket) -> str:
        """The bucket's share as "12.3%", or "n/a" where the source has no ledger split."""
        return f"{self.pct(bucket):.1f}%" if self.shares_known else "n/a"

    def ledger(self, cat: Ledger) -> float:
        return self.ledger_pct.get(cat.value, 0.0)

    def reason(self, name: str) -> float:
        return self.reasons.get(name, 0.0)

    def ranked(self) -> list[tuple[Bucket, float, float]]:
        """(bucket, % of vCPU time, events/s), largest time share first, then rate."""
        rows = [(b, self.pct(b), self.rates.get(b, 0.0)) for b in Bucket]
        return sorted(rows, key=lambda r: (-r[1], -r[2], r[0].value))


def _groups(vm: VmStat) -> tuple[PortGroup, ...]:
    by: dict[tuple[str, str], dict[int, int]] = {}
    for s in vm.io:
        if s.kind != "pio" or s.count <= 0:
            continue
        what, kind = port_name(s.address)
        key = (what, kind) if what != "port" else (f"port {s.address:#x}", kind)
        ports = by.setdefault(key, {})
        ports[s.address] = ports.get(s.address, 0) + s.count
    groups = [
        PortGroup(w if not w.startswith("port ") else "port", k, tuple(sorted(p)), sum(p.values()))
        for (w, k), p in by.items()
    ]
    return tuple(sorted(groups, key=lambda g: (-g.count, min(g.ports))))


def _accesses(vm: VmStat, absent: frozenset[str]) -> tuple[int, int]:
    """(port, MMIO) accesses: from the per-address records, or where the
    source has none, from the I/O events' own counts."""
    if ABSENT_IO_ADDRESSES not in absent:
        pio = sum(s.count for s in vm.io if s.kind == "pio")
        return pio, sum(s.count for s in vm.io if s.kind != "pio")
    pio = sum(r.count for r in vm.reasons if r.reason in PIO_EVENTS)
    return pio, sum(r.count for r in vm.reasons if r.reason in MMIO_EVENTS)


def measure(vm: VmStat | None, seconds: float, absent: frozenset[str] = frozenset()) -> Measures:
    """Figures of one VM over an interval of `seconds` (vm is a delta);
    `absent` names what the snapshot's source could not measure."""
    if vm is None or seconds <= 0:
        return Measures(seconds=max(seconds, 0.0), absent=absent)
    wall = vm.wall_ns()
    ledger = vm.ledger_total()
    shares = {b: 0.0 for b in Bucket}
    pct: dict[str, float] = {}
    for cat, ns in ledger.items():
        share = 100.0 * ns / wall if wall > 0 else 0.0
        pct[str(cat.value)] = share
        bucket = bucket_of(Ledger(cat))
        if bucket is not None:
            shares[bucket] += share
    rates = {b: n / seconds for b, n in vm.events_by_bucket().items()}
    reasons: dict[str, float] = {}
    for r in vm.reasons:
        reasons[r.reason] = reasons.get(r.reason, 0.0) + r.count / seconds
    pio, mmio = _accesses(vm, absent)
    return Measures(
        seconds=seconds,
        wall_ns=wall,
        shares=MappingProxyType(shares),
        ledger_pct=MappingProxyType(pct),
        rates=MappingProxyType(rates),
        reasons=MappingProxyType(reasons),
        io_per_s=(pio + mmio) / seconds,
        pio_per_s=pio / seconds,
        port_groups=_groups(vm),
        mmio_per_s=mmio / seconds,
        runqueue_ms_per_s=sum(v.runqueue_wait_ns for v in vm.vcpus) / 1e6 / seconds,
        preemptions_per_s=sum(v.preemptions for v in vm.vcpus) / seconds,
        wakeups_per_s=sum(v.wakeups for v in vm.vcpus) / seconds,
        absent=absent,
    )
