"""`vprof advise --recording DIR`: facts and one profile from a recording.

The recording is read as a snapshot source (vprof/sources/replay.py
ReplaySource), like any live one: its last cumulative snapshot is the whole
recording's profile.  The host facts come from its meta.json (kernel, CPU
count where `vprof record` wrote it); the VMs' facts are what its rows hold
(identity, VMM, vCPU count).  Rules that read live facts the recording does
not hold are listed as not checked (Rule.live, engine.unchecked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from vprof.advice import cmdline
from vprof.advice.collect import UnknownVm
from vprof.advice.host import HostFacts
from vprof.advice.vmfacts import VmFacts
from vprof.model import Snapshot, VmStat
from vprof.sources.replay import RecordingError, ReplaySource


@dataclass(frozen=True)
class Recorded:
    host: HostFacts
    vms: tuple[VmFacts, ...]  # every VM of the recording
    profile: Snapshot  # the whole recording as one delta


def host_from_meta(meta: dict[str, Any]) -> HostFacts:
    cpus = meta.get("host_cpus")
    n = cpus if isinstance(cpus, int) and cpus > 0 else 0
    return HostFacts(kernel=str(meta.get("kernel", "")), cpus=tuple(range(n)), recorded=True)


def vm_facts(vm: VmStat) -> VmFacts:
    return VmFacts(
        key=vm.key,
        name=vm.name,
        pid=vm.pid,
        vmm=vm.vmm,
        vcpu_count=vm.vcpu_count,
        config=cmdline.parse(vm.vmm, []),
        recorded=True,
    )


def read(path: str) -> Recorded:
    """The recording at `path`; RecordingError (one line) when it cannot be read
    or holds no interval."""
    src = ReplaySource(path)
    last: Snapshot | None = None
    for last in src.snapshots():  # noqa: B007 (only the last, cumulative, is kept)
        pass
    if last is None:
        raise RecordingError(f"{path}: the recording holds no interval")
    profile = replace(last, interval_ns=last.monotonic_ns, is_delta=True)
    vms = tuple(vm_facts(v) for v in sorted(profile.vms, key=lambda v: v.key))
    return Recorded(host_from_meta(src.recording.meta), vms, profile)


def select(rec: Recorded, names: Sequence[str]) -> list[str]:
    """Keys of the recorded VMs named (by name or key); all when none is."""
    if not names:
        return [v.key for v in rec.vms]
    keys: list[str] = []
    for name in names:
        found = [v.key for v in rec.vms if name in (v.name, v.key)]
        if not found:
            known = ", ".join(sorted({v.name for v in rec.vms})) or "none"
            raise UnknownVm(f"no VM named {name!r} in the recording (VMs in it: {known})")
        keys += [k for k in found if k not in keys]
    return keys
