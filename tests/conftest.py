"""Test gating: markers say what a test needs; this decides skip or fail.

A test marked `live`, `kvm` or `e2e` that cannot run here is skipped with the
reason, or fails with it when VPROF_REQUIRE_LIVE=1 (CI sets it), so that CI
can never pass by skipping the tests that matter.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

REQUIRE_LIVE = os.environ.get("VPROF_REQUIRE_LIVE") == "1"
FIXTURES = Path(__file__).parent / "fixtures"


def _live_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root for BPF"
    if importlib.util.find_spec("bcc") is None:
        return "bcc is not importable (run `make setup`; the venv needs --system-site-packages)"
    if not Path("/sys/kernel/tracing/events/kvm").is_dir():
        return "tracefs with kvm events is not mounted at /sys/kernel/tracing"
    return None


def _kvm_problem() -> str | None:
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm on this host"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no permission to open /dev/kvm"
    return None


def _e2e_problem() -> str | None:
    for tool in ("prometheus", "promtool", "tmux", "chromium"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run `make setup`)"
    return None


_CHECKS = {"live": _live_problem, "kvm": _kvm_problem, "e2e": _e2e_problem}


def unavailable(reason: str) -> None:
    """Skip, or fail under VPROF_REQUIRE_LIVE=1, for a missing capability."""
    if REQUIRE_LIVE:
        pytest.fail(f"VPROF_REQUIRE_LIVE=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, check in _CHECKS.items():
        if item.get_closest_marker(marker) is not None:
            problem = check()
            if problem is not None:
                unavailable(f"[{marker}] {problem}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # realhost tests run only in an L1 that tests/realhost booted (l1-init.sh sets VPROF_IN_L1):
    # deselected, not skipped, everywhere else, so CI's no-skip rule holds.
    in_l1 = os.environ.get("VPROF_IN_L1") == "1"
    away = [i for i in items if (i.get_closest_marker("realhost") is not None) != in_l1]
    if away:
        config.hook.pytest_deselected(items=away)
        items[:] = [i for i in items if i not in away]
    # A test with no capability marker is a unit test, so `-m unit` selects it.
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("live", "kvm", "e2e", "realhost")):
            item.add_marker(pytest.mark.unit)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    # Under VPROF_REQUIRE_LIVE=1 a skip from anywhere (skipif, importorskip,
    # pytest.skip in a fixture) is a failure: CI must never pass by skipping.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if REQUIRE_LIVE and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"VPROF_REQUIRE_LIVE=1 forbids skips: {reason}"
    return None


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
