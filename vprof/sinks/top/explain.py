"""One-line explanations from the taxonomy (vprof.taxonomy), degrading to none.

The drill-down shows why its top reason happens and what reduces it.  Snapshots
carry reason names, not codes (vprof/reasons.py: the taxonomy's name, plus
"+FLAG" for VMX flag bits and "+MMIO" for a stage-2 fault that continued as
MMIO), so the explanation is that of the base name in the reason's own ISA,
found by the same lookup as `vprof explain`: every table entry is reachable,
SVM's VMGEXIT codes 0x8000_00xx and ERR included.  If the taxonomy is missing
or its interface differs, the view simply shows no explanation.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from vprof import sanitize
from vprof.model import Bucket

_INTERFACE_ERRORS = (AttributeError, KeyError, ValueError, TypeError, LookupError)


def _taxonomy() -> ModuleType | None:
    try:
        return importlib.import_module("vprof.taxonomy.lookup")
    except ImportError:
        return None


@functools.lru_cache(maxsize=256)
def reason_line(isa: str, reason: str) -> str | None:
    """The taxonomy's one-line reason text for a ReasonStat, or None."""
    tax = _taxonomy()
    if tax is None:
        return None
    base = reason.split("+", 1)[0]
    try:
        found = [item.entry for item in tax.lookup(base) if item.entry.isa == isa]
    except _INTERFACE_ERRORS:
        return None
    text = found[0].reason if found else None
    if not text or str(found[0].name).startswith("unknown"):
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
