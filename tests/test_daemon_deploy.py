"""deploy/: the systemd unit keeps only justified capabilities; configs parse."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parent.parent / "deploy"
NEEDED = {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_RESOURCE", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "vprof-daemon.service")
    return parser


def test_unit_has_only_the_needed_capabilities_each_justified() -> None:
    service = unit()["Service"]
    assert set(service["CapabilityBoundingSet"].split()) == NEEDED
    assert set(service["AmbientCapabilities"].split()) == NEEDED
    text = (DEPLOY / "vprof-daemon.service").read_text()
    for cap in NEEDED:
        assert f"#   {cap}" in text, f"{cap} has no justification comment"


def test_unit_is_locked_down_and_reloads_with_sighup() -> None:
    service = unit()["Service"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "--check-config" in service["ExecStartPre"]
    assert "ReadWritePaths" not in service  # writes nothing outside its private /tmp


@pytest.mark.e2e
def test_scrape_config_is_valid_for_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    out = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus-scrape.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
