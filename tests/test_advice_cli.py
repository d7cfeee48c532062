"""`vprof advise --seconds 0` and `vprof doctor` on fixture trees; bad input; the generated doc."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from advice_cases import LIBVIRT_EMULATED_TAIL, Tree, libvirt, qemu
from click.testing import CliRunner

from vprof.advice import docgen
from vprof.advice.cli import advise
from vprof.advice.doctor_cli import doctor_cmd
from vprof.advice.rules import RULES
from vprof.inventory.procfs import CMDLINE_LIMIT

DOCS = Path(__file__).resolve().parent.parent / "docs" / "advice.md"


def run(tree: Tree, *args: str) -> tuple[int, str, str]:
    roots = ["--proc-root", str(tree.fake.proc), "--sys-root", str(tree.fake.sys)]
    result = CliRunner().invoke(advise, [*args, *roots])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_docs_are_generated_from_the_rules_and_list_every_rule() -> None:
    text = DOCS.read_text()
    assert text == docgen.render(), "docs/advice.md is stale: run `make docs`"
    for r in RULES:
        assert f"### {r.id}" in text and r.remedy in text and r.needs in text


def test_configuration_only_advice_text_and_json(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.vm(100, libvirt("web-1", LIBVIRT_EMULATED_TAIL))
    code, out, _ = run(t, "--seconds", "0")
    assert code == 0, out
    assert "VM web-1  pid 100  qemu  2 vCPUs" in out and "memory-hugepages" in out
    assert "configuration only (no profile)" in out
    code, out, _ = run(t, "--seconds", "0", "--json", "web-1")
    doc = json.loads(out)
    assert code == 0 and [v["name"] for v in doc["vms"]] == ["web-1"]
    assert doc["vms"][0]["devices"] == ["ide-hd", "e1000e", "isa-serial"]
    assert {f["rule"] for f in doc["vms"][0]["findings"]} == {"memory-hugepages"}


def test_unknown_vm_name_is_one_line_and_exit_2(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.vm(100, qemu("web-1"))
    code, out, err = run(t, "--seconds", "0", "nope")
    assert code == 2 and "Traceback" not in out + err
    assert err.strip() == "Error: no VM named 'nope' (VMs now: web-1)"


def test_bad_seconds(tmp_path: Path) -> None:
    code, _, err = run(Tree(tmp_path), "--seconds", "nan")
    assert code == 2 and "--seconds must be between 0 and 3600" in err


def test_unreadable_proc_entries_are_named_not_fatal(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.vm(100, qemu("web-1"))
    t.fake.unreadable(100, "smaps_rollup")
    code, out, err = run(t, "--seconds", "0")
    assert code == 0 and "Traceback" not in out + err
    assert "note: /proc/100/smaps_rollup is unreadable: the facts it gives are missing" in out


def test_a_hostile_command_line_of_more_than_1_mib(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    evil = "e1000,netdev=n0,id=\x1b]0;owned\x07\x1b[2J" + "A" * 200
    argv = qemu("big", "-device", evil, "-append", "x" * (CMDLINE_LIMIT + 4096))
    t.vm(100, argv)
    code, out, err = run(t, "--seconds", "0", "--json")
    assert code == 0, err
    vm = json.loads(out)["vms"][0]
    assert vm["cmdline_truncated"] is True and vm["devices"] == ["e1000"]
    code, out, _ = run(t, "--seconds", "0")
    assert "\x1b" not in out and "\x07" not in out
    assert "command line longer than" in out


def _doctor_tree(tmp_path: Path) -> Tree:
    t = Tree(tmp_path)
    (t.fake.proc / "filesystems").write_text("nodev\tsysfs\nnodev\ttracefs\nnodev\tdebugfs\n")
    (t.fake.proc / "mounts").write_text("sysfs /sys sysfs rw 0 0\n")
    (t.fake.proc / "self").mkdir()
    (t.fake.proc / "self" / "status").write_text("Name:\tvprof\nCapEff:\t000001ffffffffff\n")
    sec = t.fake.sys / "kernel" / "security"
    sec.mkdir(parents=True)
    (sec / "lockdown").write_text("[none] integrity confidentiality\n")
    kvm = t.fake.sys / "kernel" / "debug" / "kvm"
    kvm.mkdir(parents=True)
    (kvm / "exits").write_text("0\n")
    (t.fake.proc.parent / "modules" / "6.8.0-45-generic" / "build" / "include").mkdir(parents=True)
    return t


def _doctor(t: Tree, *extra: str) -> Any:
    """`vprof doctor --no-count` on the fixture tree `t`."""
    roots = ["--proc-root", str(t.fake.proc), "--sys-root", str(t.fake.sys)]
    modules = ["--modules-root", str(t.fake.proc.parent / "modules")]
    return CliRunner().invoke(doctor_cmd, [*roots, *modules, "--no-count", *extra])


def test_doctor_without_tracefs_gives_the_mount_command_and_exits_1(tmp_path: Path) -> None:
    t = _doctor_tree(tmp_path)
    result = _doctor(t, "--json")
    doc = json.loads(result.stdout)
    checks = {c["check"]: c for c in doc["checks"]}
    assert result.exit_code == doc["status"] == 1, result.stdout
    assert checks["tracefs"]["level"] == "degraded"
    assert checks["tracefs"]["fix"] == "mount -t tracefs nodev /sys/kernel/tracing"
    assert checks["backend"]["level"] == "ok" and checks["backend"]["data"]["backend"] == "vmx"
    assert checks["lockdown"]["level"] == "ok" and checks["debugfs"]["level"] == "ok"
    assert {c["level"] for c in doc["checks"]} <= {"ok", "degraded"}


def test_doctor_without_kvm_or_tracefs_support_is_unusable(tmp_path: Path) -> None:
    t = _doctor_tree(tmp_path)
    (t.fake.proc / "filesystems").write_text("nodev\tsysfs\n")
    result = _doctor(t)
    assert result.exit_code == 2
    assert "UNUSABLE  tracefs" in result.stdout and "vprof doctor: unusable" in result.stdout


def test_doctor_on_a_host_without_kernel_headers_names_the_perf_fallback_and_exits_1(
    tmp_path: Path,
) -> None:
    t = _doctor_tree(tmp_path)
    shutil.rmtree(t.fake.proc.parent / "modules" / "6.8.0-45-generic")
    (t.fake.proc / "sys" / "kernel").mkdir(parents=True, exist_ok=True)
    (t.fake.proc / "sys" / "kernel" / "osrelease").write_text("6.8.0-45-generic\n")
    result = _doctor(t, "--json")
    doc = json.loads(result.stdout)
    checks = {c["check"]: c for c in doc["checks"]}
    assert checks["bcc"]["level"] == "degraded" and "cannot compile" in checks["bcc"]["detail"]
    assert checks["source"]["level"] == "degraded" and checks["source"]["data"]["source"] == "perf"
    assert "exit handling time" in checks["source"]["detail"]
    assert checks["source"]["fix"] == checks["bcc"]["fix"]
    assert result.exit_code == doc["status"] == 1, result.stdout
