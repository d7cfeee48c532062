"""Make strings that VM owners control safe to show, label or use as a file name.

VM names, thread names and command lines are chosen by whoever runs the VM.
They are kept raw as data, and passed through `display()` before a terminal,
a Prometheus label or a file name sees them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MAX_NAME = 64
ELLIPSIS = "…"

# ESC-initiated sequences (CSI, OSC, ...) are removed whole, so that no
# fragment of a terminal command survives as text.
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")


def strip_controls(text: str) -> str:
    """Remove escape sequences and every control or format character."""
    text = _ANSI.sub("", text)
    return "".join(
        ch if unicodedata.category(ch)[0] != "C" else " " for ch in text if ch not in "\x1b"
    ).strip()


def truncate(text: str, width: int) -> str:
    """Cut `text` to at most `width` characters, marking the cut with an ellipsis."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + ELLIPSIS


def display(text: str, width: int = MAX_NAME) -> str:
    """The safe, bounded form of an untrusted string."""
    return truncate(" ".join(strip_controls(text).split()), width)


_FILE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def filename(text: str, width: int = MAX_NAME) -> str:
    """A file-name-safe form: ASCII letters, digits, '.', '_' and '-' only."""
    safe = _FILE_UNSAFE.sub("_", display(text, width * 4)).strip("._") or "unnamed"
    return safe[:width]


def unique_names(named: Iterable[tuple[str, int]]) -> list[str]:
    """Each (sanitised name, pid)'s name, made unique by appending "~pid".

    Two VMs may share a sanitised name ("web\\x1b[1m" and "web\\x1b[2m"):
    label sets and table rows must still tell them apart, even when a VM
    owner names theirs like a renamed duplicate ("web~123")."""
    seen: set[str] = set()
    out = []
    for name, pid in named:
        while name in seen:
            name = f"{name}~{pid}"
        seen.add(name)
        out.append(name)
    return out
