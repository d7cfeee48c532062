"""One-line explanations from the taxonomy (vprof.taxonomy), degrading to none.

The drill-down shows why its top reason happens and what reduces it.  The
taxonomy classifies by code, and snapshots carry names, so exit names are
found by scanning each ISA's code space once (cached, case-insensitive).  If the taxonomy is
missing or its interface differs, the view simply shows no explanation.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

from vprof import sanitize
from vprof.model import Bucket

# Exit codes span VMX 0..~80, SVM 0..0x403 (NPF is 0x400), arm64 ESR EC 0..63.
_CODE_SPACE = range(0x410)
_USERSPACE_CODES = range(64)
_INTERFACE_ERRORS = (AttributeError, KeyError, ValueError, TypeError, LookupError)


def _taxonomy() -> ModuleType | None:
    try:
        return importlib.import_module("vprof.taxonomy")
    except ImportError:
        return None


@functools.lru_cache(maxsize=8)
def _names(isa: str) -> dict[str, Any]:
    tax = _taxonomy()
    if tax is None:
        return {}
    out: dict[str, Any] = {}
    try:
        if isa == "userspace":
            for code in _USERSPACE_CODES:
                c = tax.userspace_exit(code)
                out.setdefault(str(c.name).upper(), c)
        else:
            for code in _CODE_SPACE:
                c = tax.classify_exit(isa, code)
                out.setdefault(str(c.name).upper(), c)
    except _INTERFACE_ERRORS:
        return out
    return out


@functools.lru_cache(maxsize=256)
def reason_line(isa: str, reason: str) -> str | None:
    """The taxonomy's one-line reason text for a ReasonStat, or None."""
    tax = _taxonomy()
    if tax is None:
        return None
    try:
        if isa == "event":
            found: Any = tax.classify_event(reason)
        else:
            names = _names(isa)
            found = names.get(reason.upper()) or names.get(f"KVM_EXIT_{reason.upper()}")
    except _INTERFACE_ERRORS:
        return None
    text = getattr(found, "reason", None) if found is not None else None
    if not text or str(getattr(found, "name", "")).startswith("unknown"):
        return None
    return sanitize.display(str(text), 200)


@functools.lru_cache(maxsize=16)
def remedy_line(bucket: Bucket) -> str | None:
    """What reduces overhead in `bucket` (taxonomy's remedy()), or None."""
    tax = _taxonomy()
    if tax is None or bucket is Bucket.UNCLASSIFIED:
        return None
    try:
        text = tax.remedy(bucket)
    except _INTERFACE_ERRORS:
        return None
    return sanitize.display(str(text), 200) if text else None
