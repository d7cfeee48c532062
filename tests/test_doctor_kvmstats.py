"""`vprof doctor`'s KVM binary-statistics line on fixture trees.

One VM that QEMU serves over QMP (a fake QMP server on a unix socket, with
the figures it answers as the oracle), one with no route: the line names the
route of each, says why the other has none with the fix, and the exit
status follows doctor's rule (a VM without statistics is degraded).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from advice_cases import Tree, qemu
from click.testing import CliRunner
from test_advice_cli import _doctor_tree

from vprof.advice.doctor import Env
from vprof.advice.doctor_cli import doctor_cmd
from vprof.advice.doctor_kvmstats import check_kvm_stats

pytestmark = pytest.mark.unit

VM_STATS = [{"name": "remote_tlb_flush", "value": 7}, {"name": "pages_4k", "value": 512}]
VCPU_STATS = [{"name": "halt_exits", "value": 41}, {"name": "exits", "value": 900}]


def _answer(command: str, args: dict[str, object]) -> object:
    if command == "query-stats" and args.get("target") == "vm":
        return [{"provider": "kvm", "stats": VM_STATS}]
    if command == "query-stats":
        return [{"provider": "kvm", "qom-path": "/machine/cpu0", "stats": VCPU_STATS}]
    if command == "query-cpus-fast":
        return [{"qom-path": "/machine/cpu0", "thread-id": 201}]
    return {}


def _serve(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn, conn.makefile("rw", encoding="utf-8") as f:
            f.write(json.dumps({"QMP": {"version": {}, "capabilities": []}}) + "\n")
            f.flush()
            for line in f:
                msg = json.loads(line)
                reply = _answer(msg["execute"], msg.get("arguments", {}))
                f.write(json.dumps({"return": reply}) + "\n")
                f.flush()


@pytest.fixture
def qmp_socket(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "vm.qmp")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    t = threading.Thread(target=_serve, args=(server,), daemon=True)
    t.start()
    yield path
    server.close()


def _tree(tmp_path: Path, qmp: str | None) -> Tree:
    t = _doctor_tree(tmp_path)
    t.vm(200, qemu("served", "-qmp", f"unix:{qmp},server=on,wait=off") if qmp else qemu("served"))
    t.vm(300, qemu("plain"))
    return t


def _env(t: Tree) -> Env:
    return Env(proc_root=str(t.fake.proc), sys_root=str(t.fake.sys))


def test_each_vm_has_its_route_or_why_not(tmp_path: Path, qmp_socket: str) -> None:
    c = check_kvm_stats(_env(_tree(tmp_path, qmp_socket)))
    vms = {v["vm"]: v for v in c.data["vms"]}  # type: ignore[attr-defined]
    assert vms["served"]["route"] == "qmp" and vms["served"]["fix"] == ""
    assert vms["served"]["counters"] == len(VM_STATS) + len(VCPU_STATS) - 1  # pages_4k: a gauge
    plain = vms["plain"]
    assert plain["route"] == "none" and "no QMP socket" in plain["why"]
    assert "holds no KVM stats fd" in plain["why"] and "-qmp unix:" in plain["fix"]
    assert c.level == "degraded" and "1 of 2 VMs without KVM binary statistics" in c.detail
    assert "served (pid 200): QMP query-stats" in c.detail and "plain: give QEMU" in c.fix


def test_every_vm_reached_is_ok(tmp_path: Path, qmp_socket: str) -> None:
    t = _doctor_tree(tmp_path)
    t.vm(200, qemu("served", "-qmp", f"unix:{qmp_socket},server=on,wait=off"))
    c = check_kvm_stats(_env(t))
    assert (
        c.level == "ok"
        and c.fix == ""
        and c.detail == ("served (pid 200): QMP query-stats on the VMM's monitor socket")
    )


def test_no_vms_is_ok_and_says_so(tmp_path: Path) -> None:
    c = check_kvm_stats(_env(_doctor_tree(tmp_path)))
    assert c.level == "ok" and "no VMs running" in c.detail and c.data["vms"] == []


def test_doctor_text_and_json_and_exit_status(tmp_path: Path) -> None:
    t = _tree(tmp_path, None)
    (t.fake.sys / "kernel" / "tracing" / "events").mkdir(parents=True)  # tracefs: not degraded
    roots = ["--proc-root", str(t.fake.proc), "--sys-root", str(t.fake.sys), "--no-count"]
    roots += ["--modules-root", str(t.fake.proc.parent / "modules")]
    result = CliRunner().invoke(doctor_cmd, [*roots, "--json"])
    doc = json.loads(result.stdout)
    checks = {c["check"]: c for c in doc["checks"]}
    assert [v["route"] for v in checks["kvm-stats"]["data"]["vms"]] == ["none", "none"]
    assert checks["kvm-stats"]["level"] == "degraded"
    assert (
        result.exit_code
        == doc["status"]
        == max({"ok": 0, "degraded": 1, "unusable": 2}[c["level"]] for c in doc["checks"])
    )
    text = CliRunner().invoke(doctor_cmd, roots)
    assert "DEGRADED  kvm-stats" in text.stdout and "2 of 2 VMs without" in text.stdout
    assert "plain (pid 300): none (the VMM holds no KVM stats fd" in text.stdout
