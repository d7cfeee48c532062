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
    for tool in ("prometheus", "promtool", "tmux"):
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test with no capability marker is a unit test, so `-m unit` selects it.
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("live", "kvm", "e2e")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
