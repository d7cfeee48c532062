"""Render the C of each probe family from probes/ (pure: no bcc, no root).

Each family is one probes/<family>.bpf.c; core.bpf.c holds the maps they
share.  `#include "..."` of files in probes/ is expanded here, so what
`vprof probes --dump` prints is byte for byte what bcc compiles.  Options are
`#define` lines at the top.  The one rewrite: the shared maps' names get the
loader's instance number (shared_vcpus -> shared_vcpus_3), because bcc keeps
shared maps in one per-process registry by name and rejects macros as map
names (see probes/shared.h).
"""

from __future__ import annotations

import re
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vprof.model import PROBE_FAMILIES

# The repository's probes/ (a source checkout or an editable install).
PROBES_DIR = Path(__file__).resolve().parents[2] / "probes"
# Where a wheel puts them (pyproject.toml [tool.setuptools.data-files]),
# under the installation scheme's data directory.
INSTALLED_PROBES = Path("share") / "vprof" / "probes"
CORE = "core"

_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_.]+)"\s*$', re.MULTILINE)
_SHARED_MAP = re.compile(r"\bshared_(vcpus|events|overflow|hot)\b")
SHARED_MAPS = ("vcpus", "events", "overflow", "hot")
_TRACEPOINT = re.compile(r"^TRACEPOINT_PROBE\((\w+),\s*(\w+)\)", re.MULTILINE)


@dataclass(frozen=True)
class FamilySource:
    family: str
    text: str  # the final C, includes expanded, defines first
    tracepoints: tuple[str, ...]  # "kvm:kvm_pio", ...


def _expand(text: str, probes_dir: Path, seen: set[str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in seen:
            return f"/* {name} already included */"
        seen.add(name)
        body = (probes_dir / name).read_text()
        return f"/* --- {name} --- */\n{_expand(body, probes_dir, seen)}"

    return _INCLUDE.sub(one, text)


def tracepoints_of(text: str) -> tuple[str, ...]:
    """The tracepoints a family's C attaches to, in source order."""
    return tuple(f"{cat}:{name}" for cat, name in _TRACEPOINT.findall(text))


def shared_map_name(name: str, instance: int) -> str:
    """The map name bcc knows one of the SHARED_MAPS by, for one loader."""
    return f"shared_{name}_{instance}"


def find_probes_dir(repo: Path = PROBES_DIR, data_dirs: Iterable[str] | None = None) -> Path:
    """The repository's probes/ if present, else the installed copy."""
    if (repo / "vprof.h").is_file():
        return repo
    if data_dirs is None:
        data_dirs = (sysconfig.get_paths()["data"], sys.prefix, "/usr/local", "/usr")
    for data in data_dirs:
        installed = Path(data) / INSTALLED_PROBES
        if (installed / "vprof.h").is_file():
            return installed
    raise FileNotFoundError(
        f"vprof's probes are missing: neither {repo} nor "
        f"<prefix>/{INSTALLED_PROBES} has vprof.h; reinstall vprof"
    )


def render(
    family: str,
    defines: dict[str, int] | None = None,
    probes_dir: Path | None = None,
    instance: int = 1,
) -> FamilySource:
    """The final C for `family` (or "core") with `defines` first."""
    probes_dir = probes_dir or find_probes_dir()
    if family != CORE and family not in PROBE_FAMILIES:
        raise ValueError(f"unknown probe family {family!r}; known: {', '.join(PROBE_FAMILIES)}")
    head = "".join(f"#define {k} {v}\n" for k, v in sorted((defines or {}).items()))
    body = (probes_dir / f"{family}.bpf.c").read_text()
    text = f"/* vprof probe family {family!r} */\n{head}{_expand(body, probes_dir, set())}"
    text = _SHARED_MAP.sub(lambda m: shared_map_name(m.group(1), instance), text)
    return FamilySource(family, text, tracepoints_of(text))


def missing_tracepoints(tracepoints: tuple[str, ...], tracefs: Path) -> tuple[str, ...]:
    """Those of `tracepoints` the running kernel does not have."""
    return tuple(
        tp for tp in tracepoints if not (tracefs / "events" / tp.replace(":", "/")).is_dir()
    )
