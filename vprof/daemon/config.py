"""`vprof daemon` configuration: a TOML file, then flags on top (flags win).

Every problem is a ConfigError whose message is one line naming the file, the
line and the key, so `vprof daemon --check-config FILE` and a SIGHUP reload
can say exactly what to fix.  deploy/vprof.toml is the annotated example.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vprof.model import GRANULARITIES, PROBE_FAMILIES, UnknownFamilies, parse_families

# 9477 is not taken in Prometheus's "Default port allocations" wiki list in the
# copy we could consult, so vprof does not collide with node_exporter (9100),
# libvirt-exporter (9177), ebpf_exporter (9435) or other common host exporters.
DEFAULT_PORT = 9477
LOG_LEVELS = ("debug", "info", "warning", "error")

# Keys whose change needs a new Profiler (re-attach); the rest apply live.
SOURCE_KEYS = ("source", "families", "slow_exit_threshold_us", "proc_root", "bpf_stats")
SOURCES = ("auto", "bpf", "perf")  # vprof/sources/select.py


class ConfigError(Exception):
    """A one-line, user-facing description of a bad configuration."""


@dataclass(frozen=True)
class DaemonConfig:
    listen: str = f"0.0.0.0:{DEFAULT_PORT}"
    interval: float = 5.0  # seconds between snapshots
    granularity: str = "vm"  # "vm", "vcpu" (adds per-vCPU series) or "full" (no top-K caps)
    top_k: int = 5  # reasons / I/O addresses kept per VM before "other"
    slow_exit_threshold_us: float = 1000.0
    families: tuple[str, ...] = PROBE_FAMILIES
    bpf_stats: bool = False
    proc_root: str = "/proc"
    log_level: str = "info"
    source: str = "auto"  # "bpf", "perf", or "auto": BPF where it compiles, else perf
    # A dead VM's final series stay this long, so Prometheus scraping every
    # 15-60 s stores its final counts (issue 12); then they are dropped.
    dead_vm_grace_seconds: float = 300.0
    # exporter-toolkit web config (TLS, basic auth; vprof/daemon/webconfig.py);
    # "" serves plain HTTP to anyone, as exporters do by default.
    web_config_file: str = ""

    @property
    def slow_exit_threshold_ns(self) -> int:
        return round(self.slow_exit_threshold_us * 1000)

    def source_differs(self, other: DaemonConfig) -> bool:
        return any(getattr(self, k) != getattr(other, k) for k in SOURCE_KEYS)


KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DaemonConfig))


def parse_listen(value: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or ':port' -> (host, port); ValueError if malformed."""
    m = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]*)):(\d{1,5})", value.strip())
    if m is None:
        raise ValueError(f"{value!r} is not HOST:PORT")
    host = m.group(1) if m.group(1) is not None else (m.group(2) or "0.0.0.0")
    port = int(m.group(3))
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    if m.group(1) is not None:
        ipaddress.IPv6Address(host)  # ValueError on a bad literal
    return host, port


def _number(lo: float, hi: float) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"must be a number, not {type(v).__name__}")
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}, not {v}")
        return float(v)

    return check


def _integer(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be an integer, not {type(v).__name__}")
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}, not {v}")
        return v

    return check


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError(f"must be one of {', '.join(options)}, not {v!r}")
        return str(v)

    return check


def _listen(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError('must be a string like "0.0.0.0:9477"')
    parse_listen(v)
    return v


def _families(v: Any) -> tuple[str, ...]:
    # A string is the --families flag (comma separated); the file gives a list.
    if not isinstance(v, str | list) or not all(isinstance(f, str) for f in v):
        raise ValueError("must be a list of probe family names")
    try:
        names = parse_families(v)
    except UnknownFamilies as e:
        known = ", ".join(PROBE_FAMILIES)
        raise ValueError(f"unknown family {e.unknown[0]!r} (known: {known})") from None
    if not names:
        raise ValueError("must name at least one probe family")
    return names


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _directory(v: Any) -> str:
    if not isinstance(v, str) or not os.path.isdir(v):
        raise ValueError(f"{v!r} is not a directory")
    return v


def _file(v: Any) -> str:
    if not isinstance(v, str) or (v and not os.path.isfile(v)):
        raise ValueError(f"{v!r} is not a file")
    return v


_CHECKS: Mapping[str, Callable[[Any], Any]] = {
    "listen": _listen,
    "interval": _number(0.1, 3600),
    "granularity": _choice(GRANULARITIES),
    "top_k": _integer(1, 1000),
    "slow_exit_threshold_us": _number(1, 60_000_000),
    "families": _families,
    "bpf_stats": _bool,
    "proc_root": _directory,
    "log_level": _choice(LOG_LEVELS),
    "source": _choice(SOURCES),
    "dead_vm_grace_seconds": _number(0, 86400),
    "web_config_file": _file,
}
assert set(_CHECKS) == set(KEYS)


def _line_of(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        # `key = ...`, a dotted `key.sub = ...`, or a table header `[key]`.
        if re.match(rf"""\s*\[*\s*["']?{re.escape(key)}["']?\s*[=.\]]""", line):
            return number
    return None


def _where(path: str, text: str, key: str) -> str:
    line = _line_of(text, key)
    return f"{path}:{line}" if line else path


def load_file(path: str) -> dict[str, Any]:
    """The validated settings of one TOML file (only the keys it sets)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _CHECKS:
            raise ConfigError(
                f"{_where(path, text, key)}: unknown key {key!r} (known: {', '.join(KEYS)})"
            )
        try:
            out[key] = _CHECKS[key](value)
        except ValueError as e:
            raise ConfigError(f"{_where(path, text, key)}: {key}: {e}") from None
    return out


def check_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Validated flag values; None means "not given"."""
    out: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        try:
            out[key] = _CHECKS[key](value)
        except ValueError as e:
            raise ConfigError(f"--{key.replace('_', '-')}: {e}") from None
    return out


def load(path: str | None, flags: Mapping[str, Any] | None = None) -> DaemonConfig:
    """Defaults, then the file at `path` (if any), then non-None `flags`."""
    settings = load_file(path) if path else {}
    settings.update(check_flags(flags or {}))
    return DaemonConfig(**settings)
