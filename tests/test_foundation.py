"""The package, CLI wiring, snapshot model and sanitiser."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from vprof import model, sanitize
from vprof.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand_without_importing_them() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output
    # In an interpreter of its own: other tests of this process import bcc.
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom vprof.cli import main\n"
        "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m == 'bcc' or m.startswith('bcc.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_gives_usage_and_an_example_of_every_subcommand() -> None:
    out = CliRunner().invoke(main, ["--help"], prog_name="vprof").output
    assert out.startswith("Usage: vprof [OPTIONS] COMMAND [ARGS]...")
    examples = out.split("Examples:", 1)[1]
    for name in SUBCOMMANDS:
        assert f"vprof {name} " in examples, name


def test_module_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vprof", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().startswith("vprof, version")


def test_every_ledger_category_has_a_bucket_rule() -> None:
    for cat in model.Ledger:
        model.bucket_of(cat)  # KeyError if a category lacks its rule
    for bucket in model.Bucket:
        assert model.bucket_of(model.kernel_ledger(bucket)) is bucket


def _vm(count: int, wall: int, key: str = "1:1") -> model.VmStat:
    vcpu = model.VcpuStat(tid=11, index=0, wall_ns=wall, ledger={"halted": wall})
    reason = model.ReasonStat("event", "kvm_pio", model.Bucket.IO, count)
    io = model.IoStat("pio", "out", 0x3F8, 1, count)
    return model.VmStat(key, 1, "vm", "vm", "test", "", "vprof-guest", 1, (vcpu,), (reason,), (io,))


def _snap(mono: int, *vms: model.VmStat) -> model.Snapshot:
    return model.Snapshot(0.0, mono, 0, "test", False, vms)


def test_diff_subtracts_counters_and_drops_vanished_vms() -> None:
    prev = _snap(1_000, _vm(10, 100), _vm(5, 50, key="2:2"))
    cur = _snap(3_000, _vm(25, 300))
    d = model.diff(prev, cur)
    assert d.is_delta and d.interval_ns == 2_000
    (vm,) = d.vms
    assert vm.reasons[0].count == 15
    assert vm.io[0].count == 15
    assert vm.vcpus[0].wall_ns == 200
    assert vm.vcpus[0].ledger["halted"] == 200
    assert vm.events_by_bucket()[model.Bucket.IO] == 15


def test_diff_keeps_new_vms_whole() -> None:
    d = model.diff(_snap(0), _snap(10, _vm(7, 70)))
    assert d.vms[0].reasons[0].count == 7


def test_sanitiser_strips_escapes_and_bounds_length() -> None:
    hostile = "\x1b[2J\x1b]0;owned\x07vm\nname\r\t" + "x" * 10_000
    shown = sanitize.display(hostile, 20)
    assert "\x1b" not in shown and "\n" not in shown and "\r" not in shown
    assert len(shown) == 20 and shown.endswith(sanitize.ELLIPSIS)
    assert shown.startswith("vm name")
    assert sanitize.filename("../../etc/passwd") == "etc_passwd"
