"""Render the C of each probe family from probes/ (pure: no bcc, no root).

Each family is one probes/<family>.bpf.c; core.bpf.c holds the maps they
share.  `#include "..."` of files in probes/ is expanded here, so what
`vprof probes --dump` prints is byte for byte what bcc compiles.  Options are
`#define` lines at the top, then the VPROF_ARG_* definitions of every
tracepoint field the family reads, from the running kernel's layout
(vprof/bpf/fields.py).  The one rewrite: the shared maps' names get the
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

from vprof.bpf.fields import Fields
from vprof.bpf.fields import defines as arg_defines
from vprof.model import PROBE_FAMILIES

# The repository's probes/ (a source checkout or an editable install).
PROBES_DIR = Path(__file__).resolve().parents[2] / "probes"
# Where a wheel puts them (pyproject.toml [tool.setuptools.data-files]),
# under the installation scheme's data directory.
INSTALLED_PROBES = Path("share") / "vprof" / "probes"
CORE = "core"
# One program per tracepoint: the exits family's kvm_userspace_exit program
# also counts the event for io once the loader has attached io and set
# exits_seen[SEEN_IO] (probes/exits.bpf.c); io then loads without a program
# of its own there (`without`).  With exits off, io attaches its own.
SHARED_TRACEPOINT = "kvm:kvm_userspace_exit"
SEEN_IO = 1

_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_.]+)"\s*$', re.MULTILINE)
_SHARED_MAP = re.compile(r"\bshared_(vcpus|events|overflow|hot)\b")
SHARED_MAPS = ("vcpus", "events", "overflow", "hot")
_TRACEPOINT = re.compile(r"^(TRACEPOINT_PROBE|VPROF_RAW_PROBE)\((\w+),\s*(\w+)\)", re.MULTILINE)


@dataclass(frozen=True)
class FamilySource:
    family: str
    text: str  # the final C, includes expanded, defines first
    tracepoints: tuple[str, ...]  # "kvm:kvm_pio", ...
    unavailable: tuple[str, ...] = ()  # "kvm:kvm_exit vcpu_id: <figure>": fields this kernel lacks
    raw: tuple[str, ...] = ()  # those of `tracepoints` attached as raw tracepoints


def _expand(text: str, probes_dir: Path, seen: set[str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in seen:
            return f"/* {name} already included */"
        seen.add(name)
        body = (probes_dir / name).read_text()
        return f"/* --- {name} --- */\n{_expand(body, probes_dir, seen)}"

    return _INCLUDE.sub(one, text)


def tracepoints_of(text: str, raw: bool | None = None) -> tuple[str, ...]:
    """The tracepoints a family's C attaches to, in source order (only the
    raw ones, or only the classic ones, if `raw` says so)."""
    return tuple(
        f"{cat}:{name}"
        for kind, cat, name in _TRACEPOINT.findall(text)
        if raw is None or raw == (kind == "VPROF_RAW_PROBE")
    )


def without_macro(tracepoint: str) -> str:
    """What a family's C tests (#ifndef) around a probe render() may leave out."""
    return f"VPROF_WITHOUT_{tracepoint.split(':')[1]}"


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
    fields: Fields | None = None,
    without: tuple[str, ...] = (),
) -> FamilySource:
    """The final C for `family` (or "core") with `defines` first, for the
    tracepoint layouts `fields` gives (default: the newest known), leaving
    out the probes on `without` (another family's program serves them)."""
    probes_dir = probes_dir or find_probes_dir()
    if family != CORE and family not in PROBE_FAMILIES:
        raise ValueError(f"unknown probe family {family!r}; known: {', '.join(PROBE_FAMILIES)}")
    defines = (defines or {}) | {without_macro(tp): 1 for tp in without}
    head = "".join(f"#define {k} {v}\n" for k, v in sorted(defines.items()))
    body = _expand((probes_dir / f"{family}.bpf.c").read_text(), probes_dir, set())
    tps = tuple(tp for tp in tracepoints_of(body) if tp not in without)
    raw = tuple(tp for tp in tracepoints_of(body, raw=True) if tp not in without)
    args, unavailable = arg_defines(tps, fields or (lambda _tp: None), raw)
    text = f"/* vprof probe family {family!r} */\n{head}{args}{body}"
    text = _SHARED_MAP.sub(lambda m: shared_map_name(m.group(1), instance), text)
    return FamilySource(family, text, tps, unavailable, raw)


def missing_tracepoints(tracepoints: tuple[str, ...], tracefs: Path) -> tuple[str, ...]:
    """Those of `tracepoints` the running kernel does not have."""
    return tuple(
        tp for tp in tracepoints if not (tracefs / "events" / tp.replace(":", "/")).is_dir()
    )
