"""probes/ outside the repository: shipped in the wheel, found when installed.

The wheel is built from a copy of the sources (so no build/ is left in the
repository) with the venv's own setuptools, then its data part is unpacked
where an installer puts it (<prefix>/share/vprof/probes, wheel spec:
<name>.data/data/ goes to the scheme's data directory).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vprof.bpf.source import INSTALLED_PROBES, PROBES_DIR, find_probes_dir, render
from vprof.model import PROBE_FAMILIES

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.name for p in PROBES_DIR.iterdir() if p.suffix in (".c", ".h"))


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("vprof", "probes"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    out = tmp / "wheel"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run = subprocess.run(
        [*pip, "--no-cache-dir", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    (wheel,) = out.glob("vprof-*.whl")
    return wheel


def test_wheel_ships_probes_and_lookup_finds_them(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    prefix = tmp_path / "prefix"
    with zipfile.ZipFile(wheel) as zf:
        data = [n for n in zf.namelist() if f"/data/{INSTALLED_PROBES.as_posix()}/" in n]
        assert sorted(Path(n).name for n in data) == SHIPPED
        for name in data:
            target = prefix / name.split("/data/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    found = find_probes_dir(repo=tmp_path / "no-repo" / "probes", data_dirs=[str(prefix)])
    assert found == prefix / INSTALLED_PROBES
    for family in ("core", *PROBE_FAMILIES):
        assert render(family, probes_dir=found).text == render(family, probes_dir=PROBES_DIR).text


def test_lookup_prefers_the_repository_and_says_when_missing(tmp_path: Path) -> None:
    assert find_probes_dir() == PROBES_DIR  # this checkout
    with pytest.raises(FileNotFoundError, match="reinstall vprof"):
        find_probes_dir(repo=tmp_path / "probes", data_dirs=[str(tmp_path)])
