# ruff: noqa: E501  (fixture lines copy the kernel's whole lines)
"""Shared pieces of the advice tests: real VMM command lines, trees, snapshots.

The command lines copy what each VMM or manager really writes: libvirt 9.x
for QEMU (JSON -device/-netdev/-object), a hand-written QEMU line, the
Firecracker jailer's exec line and Cloud Hypervisor's documented flags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from fixtures.proc.fakehost import FakeHost
from fixtures.proc.fakeproc import FakeProc

from vprof.advice import engine
from vprof.advice.collect import gather
from vprof.inventory import Inventory
from vprof.model import IoStat, ReasonStat, Snapshot, VcpuStat, VmStat
from vprof.taxonomy import classify_event

_LIBVIRT_HEAD = [
    "/usr/bin/qemu-system-x86_64",
    "-name",
    "guest={name},debug-threads=on",
    "-S",
    "-object",
    '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/domain-3-{name}/master-key.aes"}',
    "-machine",
    "pc-q35-8.2,usb=off,vmport=off,dump-guest-core=off,memory-backend=pc.ram,hpet=off,acpi=on",
    "-accel",
    "kvm",
    "-cpu",
    "host,migratable=on",
    "-m",
    "size=4194304k",
]
_LIBVIRT_TAIL = [
    "-overcommit",
    "mem-lock=off",
    "-smp",
    "2,sockets=2,cores=1,threads=1",
    "-uuid",
    "5f1c8a4e-0c1b-4d6e-9f3a-2b7c9d1e0f42",
    "-no-user-config",
    "-nodefaults",
    "-chardev",
    "socket,id=charmonitor,fd=31,server=on,wait=off",
    "-mon",
    "chardev=charmonitor,id=monitor,mode=control",
    "-rtc",
    "base=utc,driftfix=slew",
    "-no-shutdown",
    "-boot",
    "strict=on",
    "-device",
    '{"driver":"pcie-root-port","port":16,"chassis":1,"id":"pci.1","bus":"pcie.0","multifunction":true,"addr":"0x2"}',
    "-blockdev",
    '{"driver":"file","filename":"/var/lib/libvirt/images/{name}.qcow2","node-name":"libvirt-1-storage","auto-read-only":true,"discard":"unmap"}',
]
LIBVIRT_EMULATED_TAIL = [
    "-device",
    '{"driver":"ide-hd","bus":"ide.0","drive":"libvirt-1-format","id":"sata0-0-0","bootindex":1}',
    "-netdev",
    '{"type":"tap","fd":"33","id":"hostnet0"}',
    "-device",
    '{"driver":"e1000e","netdev":"hostnet0","id":"net0","mac":"52:54:00:6b:3c:58","bus":"pci.1","addr":"0x0"}',
    "-chardev",
    "pty,id=charserial0",
    "-device",
    '{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}',
]
LIBVIRT_VIRTIO_TAIL = [
    "-object",
    '{"qom-type":"iothread","id":"iothread1"}',
    "-device",
    '{"driver":"virtio-blk-pci","iothread":"iothread1","bus":"pci.4","addr":"0x0","drive":"libvirt-1-format","id":"virtio-disk0","bootindex":1}',
    "-netdev",
    '{"type":"tap","fds":"34","id":"hostnet0","vhost":true,"vhostfds":"35"}',
    "-device",
    '{"driver":"virtio-net-pci","netdev":"hostnet0","id":"net0","mac":"52:54:00:6b:3c:59","bus":"pci.1","addr":"0x0"}',
]
LIBVIRT_HUGE_RAM = [
    "-object",
    '{"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/dev/hugepages/libvirt/qemu/3-{name}","prealloc":true,"size":4294967296}',
]
LIBVIRT_PLAIN_RAM = ["-object", '{"qom-type":"memory-backend-ram","id":"pc.ram","size":4294967296}']


def libvirt(name: str, devices: Sequence[str], ram: Sequence[str] = LIBVIRT_PLAIN_RAM) -> list[str]:
    return [a.replace("{name}", name) for a in (*_LIBVIRT_HEAD, *ram, *_LIBVIRT_TAIL, *devices)]


def qemu(name: str, *extra: str) -> list[str]:
    """A hand-written QEMU line, as in a lab."""
    return [
        "qemu-system-x86_64",
        "-name",
        f"guest={name},debug-threads=on",
        "-accel",
        "kvm",
        "-m",
        "1024",
        "-smp",
        "2",
        "-nodefaults",
        *extra,
    ]


FIRECRACKER = [
    "/firecracker",
    "--id",
    "lambda-4f2a",
    "--start-time-us",
    "1735689600000000",
    "--start-time-cpu-us",
    "1200",
    "--parent-cpu-time-us",
    "900",
    "--api-sock",
    "/run/firecracker.socket",
]
CLOUD_HYPERVISOR = [
    "/usr/local/bin/cloud-hypervisor",
    "--api-socket",
    "/run/ch-web.sock",
    "--cpus",
    "boot=2",
    "--memory",
    "size=1024M,hugepages=on,shared=on",
    "--kernel",
    "/opt/ch/vmlinux",
    "--cmdline",
    "console=hvc0 root=/dev/vda1 rw",
    "--disk",
    "path=/var/lib/ch/focal.raw",
    "--net",
    "tap=ichv0,mac=12:34:56:78:90:ab,ip=192.168.249.1,mask=255.255.255.0",
    "--serial",
    "off",
    "--console",
    "tty",
]

SECONDS = 10.0
NS = int(SECONDS * 1e9)


class Tree:
    """A fake host: FakeProc + FakeHost, with VMs added by pid."""

    def __init__(self, base: Path, backend: str = "vmx", cpus: int = 8, **kvm: object) -> None:
        self.fake = FakeProc(base)
        self.host = FakeHost(self.fake)
        flags = {"vmx": "VMX", "svm": "SVM"}.get(backend, "PVM")
        from fixtures.proc import fakehost

        self.host.cpu(
            getattr(fakehost, f"{flags}_FLAGS"),
            cpus,
            vmx_flags="vnmi preemption_timer posted_intr invvpid ept_x_only ept flexpriority apicv tsc_offset vtpr mtf vapic ple"
            if backend == "vmx"
            else "",
        )
        self.host.kvm(backend, **kvm)  # type: ignore[arg-type]
        self.host.memory()

    def vm(
        self,
        pid: int,
        argv: Sequence[str],
        vcpus: int = 2,
        comm: str = "qemu-system-x86",
        rss_kb: int = 1 << 20,
        anon_huge_kb: int = 0,
        hugetlb_kb: int = 0,
        affinity: str = "0-7",
    ) -> dict[int, int]:
        """A VM whose vCPU threads are pid+1.. (named "CPU n/KVM"): tid -> index."""
        tids = {pid + 1 + n: n for n in range(vcpus)}
        self.fake.vm(
            pid, comm, argv, vcpus=vcpus, threads={t: f"CPU {n}/KVM" for t, n in tids.items()}
        )
        self.host.smaps(pid, rss_kb, anon_huge_kb, hugetlb_kb)
        self.host.affinity(pid, dict.fromkeys(tids, affinity))
        return tids

    def facts(self):  # type: ignore[no-untyped-def]
        inv = Inventory(str(self.fake.proc), str(self.fake.sys))

        def fd_count(pid: int) -> int | None:
            try:
                return len(os.listdir(self.fake.proc / str(pid) / "fd"))
            except OSError:
                return None

        inv._fs.fd_count = fd_count  # type: ignore[method-assign]
        view = inv.refresh()
        return view, gather(view, str(self.fake.proc), str(self.fake.sys), str(self.host.dev))

    def advise(self, stats: Sequence[VmStat] = (), only: int | None = None) -> engine.Report:
        view, facts = self.facts()
        keys = [v.key for v in view.vms.values()]
        pid_key = {v.pid: v.key for v in view.vms.values()}
        snap = delta([restat(s, pid_key[s.pid]) for s in stats])
        sel = [pid_key[only]] if only is not None else keys
        return engine.advise(facts.host, facts.vms, snap, sel)


def restat(s: VmStat, key: str) -> VmStat:
    from dataclasses import replace

    return replace(s, key=key)


def delta(vms: Sequence[VmStat]) -> Snapshot:
    return Snapshot(
        timestamp=0.0,
        monotonic_ns=NS,
        interval_ns=NS,
        backend="test",
        exit_timing=False,
        vms=tuple(vms),
        is_delta=True,
    )


def vcpu(
    tid: int,
    index: int,
    ledger_pct: Mapping[str, float],
    runq_ns: int = 0,
    preempt: int = 0,
    wakeups: int = 0,
) -> VcpuStat:
    ledger = {cat: int(NS * p / 100) for cat, p in ledger_pct.items()}
    return VcpuStat(
        tid=tid,
        index=index,
        wall_ns=NS,
        ledger=ledger,
        runqueue_wait_ns=runq_ns or ledger.get("runqueue", 0),
        preemptions=preempt,
        wakeups=wakeups,
    )


def vmstat(
    pid: int,
    tids: Mapping[int, int],
    ledger_pct: Mapping[str, float],
    *,
    ports: Mapping[int, int] | None = None,
    events: Mapping[str, int] | None = None,
    **kw: int,
) -> VmStat:
    """Counts in `ports` (port -> accesses) and `events` (tracepoint -> count) are over SECONDS."""
    reasons = []
    for name, count in (events or {}).items():
        c = classify_event(name)
        reasons.append(ReasonStat(isa="event", reason=c.name, bucket=c.bucket, count=count))
    io = tuple(IoStat("pio", "in", port, 1, n) for port, n in (ports or {}).items())
    return VmStat(
        key="",
        pid=pid,
        name="",
        name_raw="",
        name_source="test",
        uuid="",
        vmm="qemu",
        vcpu_count=len(tids),
        vcpus=tuple(vcpu(t, i, ledger_pct, **kw) for t, i in tids.items()),
        reasons=tuple(reasons),
        io=io,
    )


def finding(report: engine.Report, pid: int, rule: str):  # type: ignore[no-untyped-def]
    vm = next(a for a in report.vms if a.facts.pid == pid)
    return next((f for f in vm.findings if f.rule == rule), None)


IDE_PORTS = {0x1F0: 40_000, 0x1F7: 20_000, 0x3F6: 20_000, 0xCF8: 100}  # IDE reads, over SECONDS
