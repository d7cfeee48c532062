"""One-line explanations from the taxonomy (vprof.taxonomy).

The drill-down shows why its top reason happens and what reduces it.  Snapshots
carry reason names, not codes (vprof/pipeline/reasons.py: the taxonomy's name, plus
"+FLAG" for VMX flag bits and "+MMIO" for a stage-2 fault that continued as
MMIO), so the explanation is that of the base name in the reason's own ISA,
found by the same lookup as `vprof explain`: every table entry is reachable,
SVM's VMGEXIT codes 0x8000_00xx and ERR included.  A reason the taxonomy
does not know shows no explanation; a broken taxonomy fails loudly.
"""

from __future__ import annotations

import functools
from types import ModuleType

from vprof import sanitize, taxonomy
from vprof.model import Bucket
from vprof.taxonomy import lookup


def _taxonomy() -> ModuleType | None:
    """The lookup the view explains with (a seam: a test takes it away)."""
    return lookup


@functools.lru_cache(maxsize=256)
def reason_line(isa: str, reason: str) -> str | None:
    """The taxonomy's one-line reason text for a ReasonStat, or None."""
    tax = _taxonomy()
    if tax is None:
        return None
    base = reason.split("+", 1)[0]
    found = [item.entry for item in tax.lookup(base) if item.entry.isa == isa]
    text = found[0].reason if found else None
    if not text or str(found[0].name).startswith("unknown"):
        return None
    return sanitize.display(str(text), 200)


@functools.lru_cache(maxsize=16)
def remedy_line(bucket: Bucket) -> str | None:
    """What reduces overhead in `bucket` (taxonomy's remedy()), or None."""
    if _taxonomy() is None or bucket is Bucket.UNCLASSIFIED:
        return None
    text = taxonomy.remedy(bucket)
    return sanitize.display(str(text), 200) if text else None
