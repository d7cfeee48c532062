# ruff: noqa: E501  (rule texts and tables read better on one line each)
"""I/O rules: emulated devices, consoles, vhost, iothreads, passthrough."""

from __future__ import annotations

from vprof.advice.cmdline import Device
from vprof.advice.rule import (
    ADVISE,
    BLOCKED,
    CONFIG,
    HARDWARE,
    NOT_POSSIBLE,
    PARAVIRT,
    Ctx,
    Finding,
    Rule,
    pct,
    rate,
)
from vprof.model import Bucket, Ledger

IO_SHARE = 5.0  # % of vCPU time on I/O (in-kernel handling + VMM userspace)
IO_RATE = 1000.0  # port and MMIO exits per second
CONSOLE_RATE = 500.0  # accesses per second to a serial port
PASSTHROUGH_SHARE = 20.0


def io_busy(ctx: Ctx) -> bool:
    return ctx.m.pct(Bucket.IO) >= IO_SHARE or ctx.m.io_per_s >= IO_RATE


NOT_WITH_PERF = "not available with the perf source"


def io_evidence(ctx: Ctx, limit: int = 3) -> str:
    m = ctx.m
    if not m.addresses_known:  # the perf source: the exits' own counts
        share = f"{pct(m.pct(Bucket.IO))} of vCPU time" if m.shares_known else NOT_WITH_PERF
        return (
            f"port exits {rate(m.pio_per_s)}, MMIO exits {rate(m.mmio_per_s)} "
            f"(I/O share: {share}; per-port counts: {NOT_WITH_PERF})"
        )
    text = (
        f"{m.pct_text(Bucket.IO)} of vCPU time on I/O "
        f"({pct(m.ledger(Ledger.VMM_USERSPACE))} in the VMM's userspace), "
        f"port/MMIO exits {rate(m.io_per_s)}"
    )
    total = sum(g.count for g in m.port_groups)
    if total:
        busiest = ", ".join(
            f"{g.label()} {100 * g.count / total:.0f}%"
            for g in m.port_groups[:limit]
            if 100 * g.count >= total
        )
        text += f"; busiest ports: {busiest}"
    return text


def io_figures(ctx: Ctx) -> dict[str, float]:
    """The figures an I/O finding carries; the I/O share only where measured."""
    out = {"io_exits_per_s": round(ctx.m.io_per_s, 1)}
    if ctx.m.shares_known:
        out["io_pct"] = round(ctx.m.pct(Bucket.IO), 2)
    return out


def _names(devices: list[Device]) -> str:
    return ", ".join(f"{d.model} ({d.origin})" for d in devices)


def _replacement(ctx: Ctx, d: Device) -> str:
    if d.kind == "net":
        vhost = (
            "with vhost=on on its -netdev"
            if ctx.host.vhost_net
            else "(and vhost=on once /dev/vhost-net exists: modprobe vhost_net)"
        )
        return f"{d.model} -> virtio-net-pci {vhost}"
    return (
        f"{d.model} -> virtio-blk-pci on an iothread "
        "(-object iothread,id=io0 -device virtio-blk-pci,drive=...,iothread=io0)"
    )


def emulated_device(ctx: Ctx, rule: Rule) -> Finding | None:
    devices = [d for d in ctx.vm.config.devices if d.emulated and d.kind in ("net", "block")]
    if not devices or not io_busy(ctx):
        return None
    return rule.finding(
        ctx,
        ADVISE,
        f"{io_evidence(ctx)}; emulated devices: {_names(devices)}",
        remedy="; ".join(_replacement(ctx, d) for d in devices),
        score=ctx.m.pct(Bucket.IO),
        figures=io_figures(ctx),
        devices=",".join(d.model for d in devices),
    )


def unidentified_ports(ctx: Ctx, rule: Rule) -> Finding | None:
    # Only where the command line names no device: otherwise the device rules speak.
    # Without addresses (the perf source) the port exits' own count stands in.
    on_ports = bool(ctx.m.port_groups) or (not ctx.m.addresses_known and ctx.m.pio_per_s > 0)
    if ctx.vm.config.devices or not io_busy(ctx) or not on_ports:
        return None
    where = (
        f"the {ctx.vm.vmm} command line is not in the recording"
        if ctx.vm.recorded
        else f"the {ctx.vm.vmm} command line names no NIC, disk or console model"
    )
    figures: dict[str, float] = {**io_figures(ctx), "port_exits_per_s": round(ctx.m.pio_per_s, 1)}
    if ctx.m.port_groups:
        figures["top_port"] = min(ctx.m.port_groups[0].ports)
    return rule.finding(
        ctx,
        ADVISE,
        f"{io_evidence(ctx)}; {where}",
        score=ctx.m.pct(Bucket.IO),
        figures=figures,
    )


def console(ctx: Ctx, rule: Rule) -> Finding | None:
    com = [g for g in ctx.m.port_groups if g.kind == "console"]
    per_s = sum(g.count for g in com) / ctx.m.seconds if ctx.m.seconds else 0.0
    if per_s < CONSOLE_RATE:
        return None
    remedy = rule.remedy
    if ctx.vm.vmm == "firecracker":
        remedy = "Firecracker's only console is an 8250 UART: boot with `quiet loglevel=1`, or without console=ttyS0 in production"
    return rule.finding(
        ctx,
        ADVISE,
        f"{rate(per_s)} accesses to {', '.join(g.label() for g in com)}: each character is a port exit to the VMM",
        remedy=remedy,
        score=ctx.m.pct(Bucket.IO),
        console_accesses_per_s=round(per_s, 1),
    )


def virtio_vhost(ctx: Ctx, rule: Rule) -> Finding | None:
    nets = [d for d in ctx.vm.config.devices if d.kind == "net" and d.paravirtual and not d.vhost]
    if not nets or not io_busy(ctx):
        return None
    evidence = f"{io_evidence(ctx)}; virtio-net served by the VMM's userspace: {_names(nets)}"
    if not ctx.host.vhost_net:
        return rule.finding(
            ctx,
            BLOCKED,
            evidence + "; /dev/vhost-net is absent",
            needs="the vhost_net module: modprobe vhost_net",
            score=ctx.m.pct(Bucket.IO),
        )
    return rule.finding(ctx, ADVISE, evidence, score=ctx.m.pct(Bucket.IO))


def virtio_iothread(ctx: Ctx, rule: Rule) -> Finding | None:
    disks = [
        d
        for d in ctx.vm.config.devices
        if d.kind == "block" and d.paravirtual and not d.iothread and not d.vhost
    ]
    if not disks or not io_busy(ctx) or ctx.vm.vmm != "qemu":
        return None
    return rule.finding(
        ctx,
        ADVISE,
        f"{io_evidence(ctx)}; virtio disks on QEMU's main loop: {_names(disks)}",
        score=ctx.m.pct(Bucket.IO),
        iothreads=ctx.vm.config.iothreads,
    )


def passthrough(ctx: Ctx, rule: Rule) -> Finding | None:
    nets = [d for d in ctx.vm.config.devices if d.kind == "net"]
    if not nets or ctx.vm.vfio_groups or ctx.m.pct(Bucket.IO) < PASSTHROUGH_SHARE:
        return None
    evidence = f"{io_evidence(ctx)}; network devices: {_names(nets)}"
    if not ctx.host.iommu_units:
        opt = "amd_iommu=on" if "svm" in ctx.host.cpu_flags else "intel_iommu=on"
        return rule.finding(
            ctx,
            NOT_POSSIBLE,
            evidence
            + "; no IOMMU on this host (/sys/class/iommu is empty): passthrough is not possible",
            needs=f"VT-d/AMD-Vi enabled in the firmware and the kernel booted with {opt} iommu=pt",
            score=ctx.m.pct(Bucket.IO),
        )
    return rule.finding(ctx, ADVISE, evidence, score=ctx.m.pct(Bucket.IO))


RULES: tuple[Rule, ...] = (
    Rule(
        "io-emulated-device",
        Bucket.IO,
        PARAVIRT,
        "Emulated NIC or disk",
        f"the command line has an emulated NIC or disk (e1000, rtl8139, IDE, AHCI, LSI, ...) and I/O takes >= {IO_SHARE:g}% of vCPU time or >= {IO_RATE:g} port/MMIO exits/s",
        "replace each emulated device with its virtio counterpart: virtio-net-pci (vhost=on), virtio-blk-pci or virtio-scsi-pci on an iothread",
        "virtio drivers in the guest (Linux has virtio_net/virtio_blk since 2.6.25; Windows needs virtio-win installed first); a guest that mounts by /dev/sda must mount by UUID",
        "the VM's I/O share and port exits per second fall; the emulated device's ports disappear",
        emulated_device,
        live="the VMM's command line",
    ),
    Rule(
        "io-unidentified-ports",
        Bucket.IO,
        PARAVIRT,
        "Port I/O to a device the command line does not name",
        f"I/O takes >= {IO_SHARE:g}% of vCPU time or >= {IO_RATE:g} exits/s, on ports, and the VMM's command line names no NIC, disk or console model",
        "a paravirtual (virtio) device whose doorbell is an ioeventfd (KVM_IOEVENTFD), completed in the kernel, instead of port I/O that returns to the VMM on every access",
        "a VMM that offers virtio (or registers the doorbell port with KVM_IOEVENTFD) and a guest driver for it",
        "KVM_EXIT_IO and the VMM-userspace share fall",
        unidentified_ports,
    ),
    Rule(
        "io-emulated-console",
        Bucket.IO,
        PARAVIRT,
        "Busy serial console",
        f">= {CONSOLE_RATE:g} accesses/s to a 16550/8250 serial port (COM1/COM2)",
        "move the guest console to virtio-console (-device virtio-serial-pci -device virtconsole,chardev=c0; console=hvc0), or quiet the serial console (loglevel=3, no getty on ttyS0)",
        "the guest's virtio_console driver (Linux >= 2.6.35)",
        "accesses to 0x3f8-0x3ff fall to near zero",
        console,
    ),
    Rule(
        "io-virtio-vhost",
        Bucket.IO,
        CONFIG,
        "virtio-net without vhost",
        f"a virtio-net device without vhost=on (nor vhost-user) and I/O >= {IO_SHARE:g}% of vCPU time",
        "serve virtio-net in the kernel: vhost=on on its tap -netdev (or vhost-user with a DPDK switch)",
        "/dev/vhost-net on the host (modprobe vhost_net) and a tap backend",
        "the VMM-userspace share falls; vhost-<pid> kernel threads carry the work",
        virtio_vhost,
        live="the VMM's command line and /dev/vhost-net",
    ),
    Rule(
        "io-virtio-iothread",
        Bucket.IO,
        CONFIG,
        "virtio disk on QEMU's main loop",
        f"a QEMU virtio-blk/virtio-scsi device with no iothread= and I/O >= {IO_SHARE:g}% of vCPU time",
        "give each busy disk its own iothread: -object iothread,id=io0 -device virtio-blk-pci,drive=...,iothread=io0 (libvirt: <iothreads> and <driver iothread=...>)",
        "QEMU >= 2.0; a host CPU for the iothread",
        "the VMM-userspace share and the main thread's CPU time fall",
        virtio_iothread,
        live="the VMM's command line",
    ),
    Rule(
        "io-passthrough",
        Bucket.IO,
        HARDWARE,
        "Device passthrough (VT-d / AMD-Vi)",
        f"a network device and I/O >= {PASSTHROUGH_SHARE:g}% of vCPU time, no VFIO group held",
        "assign an SR-IOV virtual function with vfio-pci (-device vfio-pci,host=BDF): DMA and interrupts bypass the VMM",
        "an IOMMU (VT-d/AMD-Vi on, /sys/class/iommu populated), an SR-IOV NIC, the VF driver in the guest; live migration is lost",
        "the I/O share falls to the guest driver's own work",
        passthrough,
        live="the VMM's command line, its VFIO groups and the host's IOMMU",
    ),
)
