"""Find taxonomy entries by name or by `isa:code`, for `vprof explain`.

Names match case-insensitively, with or without the kernel macro prefix
(EXIT_REASON_, SVM_EXIT_, ESR_ELx_EC_, KVM_EXIT_, a trace system such as
"kvm:").  The same name can exist on several ISAs (VMX CPUID and SVM cpuid,
HLT and KVM_EXIT_HLT): every match is returned.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from vprof.model import Bucket
from vprof.taxonomy import tracepoints
from vprof.taxonomy.core import ISAS, TRACEPOINT_ISA, Classified, remedy
from vprof.taxonomy.rules import TABLES, classify_exit, userspace_exit

_PREFIXES = (
    "exit_reason_",
    "svm_exit_",
    "svm_",
    "esr_elx_ec_",
    "arm_exception_",
    "kvm_exit_",
    "kvm:",
    "kvmmmu:",
    "sched:",
    "event:",
)
_CODE = re.compile(r"^(?:unknown:)?(?P<isa>[a-z0-9]+):(?P<code>-?(?:0x[0-9a-f]+|\d+))$")


@dataclass(frozen=True)
class Explained:
    """One taxonomy entry with everything `vprof explain` shows."""

    entry: Classified
    source: str  # kernel header(s) the code and name come from
    code_text: str  # the code as the kernel writes it; "" for events

    @property
    def remedy(self) -> str:
        return remedy(self.entry.bucket)


def key(text: str) -> str:
    """Normalised lookup key: lower case, '-' and ' ' as '_'."""
    return re.sub(r"[\s-]+", "_", text.strip().lower())


def _keys(name: str, aliases: tuple[str, ...] = ()) -> set[str]:
    keys = {key(name)} | {key(a) for a in aliases}
    return keys | {k[len(p) :] for k in keys for p in _PREFIXES if k.startswith(p)}


@functools.cache
def entries() -> tuple[Explained, ...]:
    """Every entry of every table, in ISA order, then code order."""
    found = []
    for table in TABLES.values():
        for code in sorted(table.entries):
            found.append(Explained(table.classify(code), table.source, table.format_code(code)))
    for name in tracepoints.EVENTS:
        found.append(Explained(tracepoints.classify_event(name), tracepoints.SOURCE, ""))
    return tuple(found)


@functools.cache
def _index() -> Mapping[str, tuple[Explained, ...]]:
    aliases = {
        (table.isa, entry.code): entry.aliases
        for table in TABLES.values()
        for entry in table.entries.values()
    }
    index: dict[str, list[Explained]] = {}
    for item in entries():
        entry = item.entry
        for k in _keys(entry.name, aliases.get((entry.isa, entry.code), ())):
            index.setdefault(k, []).append(item)
    return {k: tuple(v) for k, v in index.items()}


def _by_code(isa: str, code: int) -> Explained:
    if isa in TABLES and isa != "userspace":
        classified = classify_exit(isa, code)
    elif isa == "userspace":
        classified = userspace_exit(code)
    else:
        classified = classify_exit(int(isa), code)
    table = TABLES.get(classified.isa)
    source = table.source if table else ""
    shown = table.format_code(classified.code) if table else str(code)
    return Explained(classified, source, shown)


def parse_code(query: str) -> tuple[str, int] | None:
    """("svm", 0x7b) for "svm:0x7b"; None if `query` is not an isa:code pair."""
    match = _CODE.match(query.strip().lower())
    if match is None:
        return None
    isa = TRACEPOINT_ISA.get(int(match["isa"]), "") if match["isa"].isdigit() else match["isa"]
    if isa not in ISAS or isa == "event":
        return None
    return isa, int(match["code"], 0)


def lookup(query: str) -> list[Explained]:
    """Entries matching a name or an `isa:code`; empty if none is known.

    A code missing from the tables is returned as its unknown:<isa>:<code>
    entry (bucket unclassified), which is how vprof reports it.
    """
    parsed = parse_code(query)
    if parsed is not None:
        return [_by_code(*parsed)]
    wanted = key(query)
    index = _index()
    for candidate in (wanted, *(wanted[len(p) :] for p in _PREFIXES if wanted.startswith(p))):
        if candidate in index:
            return list(index[candidate])
    return []


def suggestions(query: str, limit: int = 5) -> list[str]:
    """Known names close to `query`, best first."""
    index = _index()
    close = difflib.get_close_matches(key(query), list(index), n=limit * 3, cutoff=0.6)
    names: list[str] = []
    for k in close:
        for item in index[k]:
            if item.entry.name not in names:
                names.append(item.entry.name)
    return names[:limit]


def is_unknown(item: Explained) -> bool:
    return item.entry.bucket is Bucket.UNCLASSIFIED
