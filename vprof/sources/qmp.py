"""QMP `query-stats` (QEMU 7.1+): KVM statistics through QEMU's monitor.

The socket is taken from the VMM's command line (`-qmp unix:PATH,...`, or a
`-chardev socket,...,path=PATH` that a `-mon ...,mode=control` uses).  One
short connection per read: a QMP server serves one client at a time, and a
held connection would lock out the VM's owner (libvirt holds its own).
"""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Sequence
from typing import Any

TIMEOUT_S = 2.0


class QmpError(Exception):
    """QEMU answered with an error, or not as QMP does."""


def _opts(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        out[key] = value
    return out


def socket_of(argv: Sequence[str]) -> str | None:
    """The QMP unix socket path on a QEMU command line, or None."""
    chardevs: dict[str, str] = {}
    control: list[str] = []
    for flag, value in itertools.pairwise(argv):
        if flag in ("-qmp", "--qmp") and value.startswith("unix:"):
            return value[len("unix:") :].split(",", 1)[0]
        if flag in ("-chardev", "--chardev") and value.startswith("socket,"):
            o = _opts(value)
            if "id" in o and "path" in o:
                chardevs[o["id"]] = o["path"]
        if flag in ("-mon", "--mon"):
            o = _opts(value)
            if o.get("mode") == "control" and "chardev" in o:
                control.append(o["chardev"])
    for cid in control:
        if cid in chardevs:
            return chardevs[cid]
    return None


class _Client:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT_S)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw", encoding="utf-8")
        greeting = json.loads(self.file.readline() or "{}")
        if "QMP" not in greeting:
            raise QmpError("no QMP greeting")
        self.call("qmp_capabilities")

    def call(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            line = self.file.readline()
            if not line:
                raise QmpError("QEMU closed the monitor")
            reply = json.loads(line)
            if "event" in reply:
                continue
            if "error" in reply:
                raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


Value = int | tuple[int, ...]  # a scalar, or a histogram's buckets


def _scalars(entry: dict[str, Any]) -> dict[str, Value]:
    """Integer statistics and integer lists (histograms); booleans are left out."""
    out: dict[str, Value] = {}
    for s in entry.get("stats", []):
        value = s.get("value")
        if isinstance(value, int) and not isinstance(value, bool):
            out[s["name"]] = value
        elif isinstance(value, list) and all(type(v) is int for v in value):
            out[s["name"]] = tuple(value)
    return out


def query_stats(path: str) -> tuple[dict[str, Value], dict[int, dict[str, Value]]]:
    """KVM statistics of the VM and of each vCPU by its host thread id."""
    client = _Client(path)
    try:
        kvm = [{"provider": "kvm"}]
        vm: dict[str, Value] = {}
        for entry in client.call("query-stats", target="vm", providers=kvm) or []:
            vm.update(_scalars(entry))
        threads = {c["qom-path"]: int(c["thread-id"]) for c in client.call("query-cpus-fast") or []}
        vcpus: dict[int, dict[str, Value]] = {}
        for entry in client.call("query-stats", target="vcpu", providers=kvm) or []:
            tid = threads.get(entry.get("qom-path", ""))
            if tid is not None:
                vcpus[tid] = _scalars(entry)
        return vm, vcpus
    finally:
        client.close()
