"""Probe family names and label granularities: the names users type.

Re-exported by vprof/model.py, the usual place to import them from.
"""

from __future__ import annotations

from collections.abc import Iterable

# Probe families: each compiles and attaches on its own and is switched off on
# its own (vprof/bpf/).  Config files and `--families` use these names.
PROBE_FAMILIES: tuple[str, ...] = ("exits", "io", "vmm", "privileged", "memory", "sched")

# The order they compile in at start-up (vprof/bpf/loader.py).  vmm first: once
# it is on, each new vCPU thread's first KVM_RUN makes a new-vCPU record, and
# the Namer (vprof/pipeline/names.py) names a VM that starts while the others
# compile and exits before the next snapshot.  Loaded after io, such a VM's
# threads were first met by io's programs, no record came, and it stayed pid-N.
# The rest keep their order (exits before io: io leaves out the program it shares
# with exits).  Derived, so a family added above is never left unloaded.
LOAD_ORDER: tuple[str, ...] = ("vmm", *(f for f in PROBE_FAMILIES if f != "vmm"))


class UnknownFamilies(ValueError):
    """Probe family names that are not in PROBE_FAMILIES (in the order given)."""

    def __init__(self, unknown: tuple[str, ...]) -> None:
        super().__init__(f"unknown probe families: {', '.join(unknown)}")
        self.unknown = unknown


def parse_families(value: str | Iterable[str]) -> tuple[str, ...]:
    """The one rule for probe family lists: "a, b" or ["a", "b"] -> ("a", "b").

    In a string, names are stripped and blanks dropped; a list's names are
    taken as given.  Repeats are kept once, order is kept; UnknownFamilies if
    a name is not a family.  An empty result is the caller's to judge.
    """
    if isinstance(value, str):
        value = [n.strip() for n in value.split(",") if n.strip()]
    names = tuple(dict.fromkeys(value))
    unknown = tuple(n for n in names if n not in PROBE_FAMILIES)
    if unknown:
        raise UnknownFamilies(unknown)
    return names


# Label detail of the exported series (`vprof daemon --granularity`).
GRANULARITIES: tuple[str, ...] = ("vm", "vcpu", "full")
