"""What a VMM's command line says about its devices and memory: pure parsing.

The command line is data chosen by whoever started the VM: it is only split
and matched here, never executed or passed to a shell, and every string kept
for display goes through vprof.sanitize first.  Formats: QEMU's
`-device DRIVER,key=value` and the JSON forms libvirt writes
(`-device {"driver":...}`, `-object {"qom-type":...}`, docs/system/invocation),
Firecracker's flags (src/firecracker/src/main.rs) and Cloud Hypervisor's
`--disk/--net/--memory key=value` lists (cloud-hypervisor/src/main.rs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from vprof import sanitize

# model -> (kind, paravirtual).  Emulated models copy real hardware, so every
# register access traps to the VMM; paravirtual ones batch work in rings.
MODELS: Mapping[str, tuple[str, bool]] = {
    **{
        m: ("net", False)
        for m in (
            "e1000",
            "e1000e",
            "e1000-82544gc",
            "e1000-82545em",
            "rtl8139",
            "ne2k_pci",
            "ne2k_isa",
            "pcnet",
            "i82550",
            "i82551",
            "i82557a",
            "i82557b",
            "i82557c",
            "i82558a",
            "i82558b",
            "i82559a",
            "i82559b",
            "i82559c",
            "i82559er",
            "i82562",
            "i82801",
            "tulip",
            "vmxnet3",
            "igb",
        )
    },
    **{
        m: ("block", False)
        for m in (
            "ide-hd",
            "ide-cd",
            "ide-drive",
            "ahci",
            "ich9-ahci",
            "piix3-ide",
            "piix4-ide",
            "lsi53c895a",
            "lsi53c810",
            "megasas",
            "megasas-gen2",
            "am53c974",
            "dc390",
            "mptsas1068",
            "usb-storage",
            "floppy",
            "isa-fdc",
            "sd-card",
        )
    },
    **{
        m: ("console", False)
        for m in ("isa-serial", "pci-serial", "pci-serial-2x", "pci-serial-4x")
    },
    **{
        m: ("net", True)
        for m in (
            "virtio-net-pci",
            "virtio-net-pci-non-transitional",
            "virtio-net-pci-transitional",
            "virtio-net-device",
            "virtio-net-ccw",
            "virtio-net",
        )
    },
    **{
        m: ("block", True)
        for m in (
            "virtio-blk-pci",
            "virtio-blk-pci-non-transitional",
            "virtio-blk-device",
            "virtio-blk",
            "virtio-scsi-pci",
            "virtio-scsi-device",
            "vhost-user-blk-pci",
            "vhost-scsi-pci",
            "vhost-user-scsi-pci",
        )
    },
    **{m: ("console", True) for m in ("virtconsole", "virtio-serial-pci", "virtio-serial-device")},
    "vfio-pci": ("passthrough", False),
    "vfio-pci-nohotplug": ("passthrough", False),
}
DRIVE_IF: Mapping[str, str] = {
    "ide": "ide-hd",
    "floppy": "floppy",
    "scsi": "lsi53c895a",
    "sd": "sd-card",
}


@dataclass(frozen=True)
class Device:
    kind: str  # "net", "block", "console", "passthrough"
    model: str  # sanitised
    paravirtual: bool
    vhost: bool = False  # virtio-net backed by vhost-net or vhost-user (or vhost-* device)
    iothread: bool = False  # virtio-blk/scsi served by a dedicated iothread
    origin: str = ""  # the option it came from, sanitised and bounded

    @property
    def emulated(self) -> bool:
        return not self.paravirtual and self.kind != "passthrough"


@dataclass(frozen=True)
class VmmConfig:
    vmm: str  # "qemu", "firecracker", "cloud-hypervisor", "other"
    devices: tuple[Device, ...] = ()
    hugepages: str = ""  # "hugetlbfs", "memfd-hugetlb", "" (not asked for on the command line)
    iothreads: int = 0
    vcpus: int | None = None  # -smp / --cpus boot=
    memory_mb: int | None = None
    notes: tuple[str, ...] = ()  # sanitised facts that have no device form


def _kv(text: str) -> tuple[str, dict[str, str]]:
    """QEMU "head,key=value,...": the head (first item without '=') and the keys.
    A doubled comma is QEMU's escape for a literal comma."""
    parts = text.replace(",,", "\0").split(",")
    head = ""
    keys: dict[str, str] = {}
    for i, part in enumerate(parts):
        part = part.replace("\0", ",")
        key, sep, value = part.partition("=")
        if not sep and i == 0:
            head = key
        elif sep:
            keys[key] = value
        else:
            keys[key] = "on"
    return head, keys


def _json_opts(text: str) -> dict[str, str] | None:
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in data.items()}


def _opts(text: str, head_key: str) -> tuple[str, dict[str, str]]:
    js = _json_opts(text)
    if js is not None:
        return js.get(head_key, ""), js
    head, keys = _kv(text)
    return head or keys.get(head_key, ""), keys


def _pairs(argv: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(option, value) for "-opt value", "--opt value" and "--opt=value"."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        has_value = i + 1 < len(argv) and not argv[i + 1].startswith("-")
        if arg.startswith("--") and "=" in arg:
            name, _, value = arg.partition("=")
            yield name.lstrip("-"), value
        elif arg.startswith("-") and has_value:
            yield arg.lstrip("-"), argv[i + 1]
            i += 1
        elif arg.startswith("-"):
            yield arg.lstrip("-"), ""
        i += 1


def _on(value: str | None) -> bool:
    return value is not None and value.lower() in ("on", "true", "yes", "1", "y")


def _show(text: str) -> str:
    return sanitize.display(text, 80)


def _number(text: str) -> int | None:
    digits = "".join(ch for ch in text.split(",")[0].split("=")[-1] if ch.isdigit())
    return int(digits) if digits and len(digits) < 12 else None


def _memory_mb(text: str) -> int | None:
    value = text.split(",")[0].removeprefix("size=").strip().upper()
    unit = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1 << 20}
    try:
        if value and value[-1] in unit:
            return int(float(value[:-1]) * unit[value[-1]])
        return int(float(value)) if value else None
    except ValueError:
        return None


RawDevice = tuple[str, dict[str, str], str]  # model, its keys, the option it came from


def _qemu_device(opt: str, value: str) -> RawDevice | None:
    """The device model a -nic/-net/-drive/-hdX/-cdrom/-serial option adds, if any."""
    if opt in ("nic", "net"):
        kind, keys = _opts(value, "type")
        if opt == "nic" or kind == "nic":
            model = keys.get("model", "e1000")  # QEMU's default NIC on pc/q35
            keys.setdefault("vhost", "on" if _on(keys.get("vhost")) else "off")
            return (model, {"_vhost": keys["vhost"]}, f"-{opt} {value}")
    elif opt == "drive":
        _, keys = _opts(value, "if")
        iface = keys.get("if", "ide")  # the pc machines' default
        if keys.get("media") == "cdrom" and iface == "ide":
            return ("ide-cd", {}, f"-drive {value}")
        if iface == "virtio":
            return ("virtio-blk-pci", keys, f"-drive {value}")
        if iface in DRIVE_IF:
            return (DRIVE_IF[iface], {}, f"-drive {value}")
    elif opt in ("hda", "hdb", "hdc", "hdd", "cdrom"):
        return ("ide-cd" if opt == "cdrom" else "ide-hd", {}, f"-{opt} {value}")
    elif opt == "serial" and value not in ("", "none", "null"):
        return ("isa-serial", {}, f"-serial {value}")
    return None


def _object_backing(kind: str, keys: dict[str, str]) -> str:
    """The huge-page backing an -object gives guest memory, or ""."""
    if kind == "memory-backend-file" and "hugepages" in keys.get("mem-path", ""):
        return "hugetlbfs"
    if kind == "memory-backend-memfd" and _on(keys.get("hugetlb")):
        return "memfd-hugetlb"
    return ""


def parse_qemu(argv: Sequence[str]) -> VmmConfig:
    netdevs: dict[str, dict[str, str]] = {}
    raw_devices: list[RawDevice] = []
    hugepages = ""
    iothreads = 0
    vcpus = memory = None
    for opt, value in _pairs(argv):
        if opt == "netdev":
            kind, keys = _opts(value, "type")
            netdevs[keys.get("id", "")] = {"type": kind, **keys}
        elif opt == "device":
            model, keys = _opts(value, "driver")
            raw_devices.append((model, keys, f"-device {value}"))
        elif opt == "object":
            kind, keys = _opts(value, "qom-type")
            iothreads += kind == "iothread"
            hugepages = _object_backing(kind, keys) or hugepages
        elif opt == "mem-path" and value:
            hugepages = "hugetlbfs"
        elif opt == "smp":
            vcpus = _number(value.split(",")[0]) if value else None
        elif opt == "m":
            memory = _memory_mb(value)
        elif (raw := _qemu_device(opt, value)) is not None:
            raw_devices.append(raw)
    # Only models the rules know (NICs, disks, consoles, passthrough): root
    # ports, controllers for them and the like say nothing about overhead.
    devices = [
        _device(model, keys, origin, netdevs)
        for model, keys, origin in raw_devices
        if model in MODELS or model.startswith(("virtio-net", "virtio-blk", "vhost-"))
    ]
    return VmmConfig("qemu", tuple(devices), hugepages, iothreads, vcpus, memory)


def _device(
    model: str, keys: Mapping[str, str], origin: str, netdevs: Mapping[str, Mapping[str, str]]
) -> Device:
    kind, paravirtual = MODELS.get(model, ("other", model.startswith(("virtio", "vhost"))))
    backend = netdevs.get(keys.get("netdev", ""), {})
    vhost = (
        model.startswith("vhost")
        or _on(keys.get("_vhost"))
        or _on(backend.get("vhost"))
        or backend.get("type") == "vhost-user"
    )
    return Device(
        kind=kind,
        model=_show(model),
        paravirtual=paravirtual,
        vhost=vhost,
        iothread=bool(keys.get("iothread")),
        origin=_show(origin),
    )


def parse_firecracker(argv: Sequence[str]) -> VmmConfig:
    # Firecracker offers only virtio-mmio devices and an 8250 serial console;
    # the rest is in its API socket or --config-file, which are not read here.
    notes = []
    for opt, value in _pairs(argv):
        if opt in ("api-sock", "config-file") and value:
            notes.append(_show(f"--{opt} {value}"))
    return VmmConfig("firecracker", notes=tuple(notes))


def parse_cloud_hypervisor(argv: Sequence[str]) -> VmmConfig:
    devices: list[Device] = []
    hugepages = ""
    vcpus = memory = None
    for opt, value in _pairs(argv):
        _, keys = _kv("," + value)
        if opt == "disk":
            devices.append(
                Device(
                    "block",
                    "virtio-blk",
                    True,
                    vhost=_on(keys.get("vhost_user")),
                    origin=_show(f"--disk {value}"),
                )
            )
        elif opt == "net":
            devices.append(
                Device(
                    "net",
                    "virtio-net",
                    True,
                    vhost=_on(keys.get("vhost_user")),
                    origin=_show(f"--net {value}"),
                )
            )
        elif opt == "device":
            devices.append(Device("passthrough", "vfio", False, origin=_show(f"--device {value}")))
        elif opt == "memory":
            hugepages = "hugetlbfs" if _on(keys.get("hugepages")) else ""
            memory = _memory_mb(keys.get("size", ""))
        elif opt == "cpus":
            vcpus = _number(keys.get("boot", ""))
    return VmmConfig("cloud-hypervisor", tuple(devices), hugepages, 0, vcpus, memory)


def parse(vmm: str, argv: Sequence[str]) -> VmmConfig:
    """The devices and memory backing `argv` asks for, for the VMM the inventory found."""
    if vmm in ("qemu", "kubevirt") or (argv and "qemu" in argv[0].rsplit("/", 1)[-1]):
        return parse_qemu(argv)
    if vmm == "firecracker":
        return parse_firecracker(argv)
    if vmm == "cloud-hypervisor":
        return parse_cloud_hypervisor(argv)
    return VmmConfig("other")
