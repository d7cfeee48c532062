"""`vprof advise` on real QEMU VMs (qemu-system-x86_64 -accel kvm).

Under this host's kvm_pvm backend guest kernel-mode code is emulated, so
no OS is booted: the guest's I/O is the firmware's.  Each VM boots a
31-byte boot sector (BOOT_SECTOR) that loops on INT 13h disk reads, so
SeaBIOS drives the disk for as long as the VM lives: IDE port I/O for an
IDE disk, virtqueue notifications for virtio-blk.  romfile= keeps iPXE
out (it stops in the emulator here).  Three VMs at once, because each
spends ~10 s of CPU in the firmware:
- emu: e1000 + IDE disk, plain RAM: the virtio advice naming both, the huge-page advice;
- virtio: virtio-net + virtio-blk, pinned to one host CPU with `huge`;
- huge: guest RAM in a memfd on hugetlb pages, pinned to the same CPU.
Positive findings must appear within DEADLINE_S; negative ones must hold
in every interval profiled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kvm, pytest.mark.live]

# xor ax,ax; mov ds,ax; mov es,ax; mov [0x7e00],dl; loop: mov dl,[0x7e00];
# mov ah,2; mov al,8; mov ch,0; mov cl,2; mov dh,0; mov bx,0x8000; int 13h; jmp loop
BOOT_SECTOR = bytes.fromhex("31c08ed88ec08816007e8a16007eb402b008b500b102b600bb0080cd13ebeb")
DEADLINE_S = 150.0  # the firmware needs ~10 s of CPU; far longer on a loaded host
INTERVAL_S = 4.0
HUGE_PAGES = 40  # 2 MiB pages for the 64 MiB hugetlb-backed guest, with slack
POOL = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")


def _disk(tmp: Path) -> Path:
    path = tmp / "boot.img"
    path.write_bytes(BOOT_SECTOR + bytes(510 - len(BOOT_SECTOR)) + b"\x55\xaa" + bytes(1 << 20))
    return path


def _qemu(name: str, *extra: str, cpu: int | None = None) -> list[str]:
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        pytest.fail(
            "qemu-system-x86_64 is not installed (deploy/setup.sh installs qemu-system-x86)"
        )
    argv = [
        binary,
        "-accel",
        "kvm",
        "-name",
        f"guest={name},debug-threads=on",
        "-m",
        "64",
        "-smp",
        "1",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        *extra,
    ]
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv


@contextlib.contextmanager
def _hugetlb_pool(pages: int) -> Iterator[None]:
    before = int(POOL.read_text())
    POOL.write_text(str(before + pages))
    try:
        yield
    finally:
        POOL.write_text(str(before))


@contextlib.contextmanager
def _vms(tmp: Path, tag: str) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    disk = _disk(tmp)
    drive = f"file={disk},format=raw,snapshot=on"
    cpu = (os.cpu_count() or 1) - 1
    specs = {
        "emu": _qemu(
            f"{tag}-emu",
            "-netdev",
            "user,id=n0",
            "-device",
            "e1000,netdev=n0,romfile=",
            "-drive",
            f"{drive},if=ide",
        ),
        "virtio": _qemu(
            f"{tag}-virtio",
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
            "-drive",
            f"{drive},if=virtio",
            cpu=cpu,
        ),
        "huge": _qemu(
            f"{tag}-huge",
            "-object",
            "memory-backend-memfd,id=mem,size=64M,hugetlb=on,hugetlbsize=2M",
            "-machine",
            "pc,memory-backend=mem",
            "-drive",
            f"{drive},if=virtio",
            cpu=cpu,
        ),
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for key, argv in specs.items():
            procs[key] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        yield procs
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _wait_vcpus(procs: dict[str, subprocess.Popen[bytes]], deadline: float) -> None:
    """Until every QEMU holds a vCPU descriptor: the inventory finds a VM by
    them, and a cold start on a fresh machine takes longer than a warm one."""
    waiting = dict(procs)
    while waiting:
        for key, p in list(waiting.items()):
            assert p.poll() is None, f"{key} exited: {p.stderr.read().decode() if p.stderr else ''}"
            with contextlib.suppress(OSError):
                fds = Path(f"/proc/{p.pid}/fd")
                if any(os.readlink(fd).startswith("anon_inode:kvm-vcpu:") for fd in fds.iterdir()):
                    del waiting[key]
        assert time.monotonic() < deadline, f"no vCPU descriptor by the deadline: {sorted(waiting)}"
        time.sleep(0.1)


def _advise(names: list[str], seconds: float) -> dict[str, dict[str, dict[str, object]]]:
    """`vprof advise NAMES --json` in a child process (bcc never loads in pytest's):
    VM name -> rule id -> finding."""
    out = subprocess.run(
        [sys.executable, "-m", "vprof", "advise", *names, "--seconds", str(seconds), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    return {vm["name"]: {f["rule"]: f for f in vm["findings"]} for vm in doc["vms"]}


def test_real_qemu_vms_get_the_advice_their_configuration_and_profile_call_for(
    tmp_path: Path,
) -> None:
    tag = f"advq{os.getpid()}"
    names = {k: f"{tag}-{k}" for k in ("emu", "virtio", "huge")}
    wanted: dict[str, dict[str, object] | None] = {}
    with _hugetlb_pool(HUGE_PAGES), _vms(tmp_path, tag) as procs:
        deadline = time.monotonic() + DEADLINE_S
        _wait_vcpus(procs, deadline)
        while True:
            for key, p in procs.items():
                assert p.poll() is None, (
                    f"{key} exited: {p.stderr.read().decode() if p.stderr else ''}"
                )
            found = _advise(list(names.values()), INTERVAL_S)
            emu, virtio, huge = (found.get(names[k], {}) for k in ("emu", "virtio", "huge"))
            # Never: virtio advice for the virtio VM, huge-page advice for the hugetlb one.
            assert "io-emulated-device" not in virtio and "io-emulated-device" not in huge
            assert "memory-hugepages" not in huge
            wanted = {
                "emu io": emu.get("io-emulated-device"),
                "emu huge": emu.get("memory-hugepages"),
                "virtio pin": virtio.get("context-switch-pinning"),
                "huge pin": huge.get("context-switch-pinning"),
            }
            if all(wanted.values()) or time.monotonic() > deadline:
                break
    missing = [k for k, v in wanted.items() if v is None]
    assert not missing, f"not seen within {DEADLINE_S} s: {missing}: {found}"
    io = wanted["emu io"]
    assert io is not None
    assert "e1000 (-device e1000,netdev=n0,romfile=)" in str(io["evidence"])
    assert "ide-hd" in str(io["evidence"]) and "IDE primary channel" in str(io["evidence"])
    assert "e1000 -> virtio-net-pci" in str(io["remedy"]) and "ide-hd -> virtio-blk-pci" in str(
        io["remedy"]
    )
    for key in ("virtio pin", "huge pin"):
        pin = wanted[key]
        assert pin is not None and "run-queue wait" in str(pin["evidence"])
        assert pin["figures"]["runqueue_pct"] >= 5.0  # type: ignore[index]
        other = names["huge" if key == "virtio pin" else "virtio"]
        assert other in str(pin["evidence"])
