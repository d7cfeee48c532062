"""A VM that lives while the families compile is counted under its own name.

`vprof daemon` attaches family by family in the background (seconds on a
small host), and short VMs (CI runners, functions) start and exit in that
window.  Each such VM counted by io must carry its name, although no
snapshot ran while it lived: only the Namer can name it, from the new-vCPU
record of vmm's programs, so vmm must be on before io counts anything.
Oracle: the guest's own name and port-write count.
"""

from __future__ import annotations

import os
import time

import pytest
from guestproc import start_guest

from vprof.guest import workloads as W
from vprof.pipeline.profiler import Profiler, ProfilerConfig

pytestmark = [pytest.mark.live, pytest.mark.kvm]

# io, then three families whose compiles leave seconds for guests to run counted.
FAMILIES = frozenset({"vmm", "exits", "io", "privileged", "memory", "sched"})
COUNT = 2000  # port writes: about half a second of guest here


def test_vms_started_while_families_compile_keep_their_names() -> None:
    tag = os.getpid()
    # pid -> name, port writes, vmm on at its start, still loading at its end
    guests: dict[int, tuple[str, int, bool, bool]] = {}
    with Profiler(ProfilerConfig(families=FAMILIES, background=True)) as prof:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            loading = prof.loading
            vmm_on = any(s.family == "vmm" and s.attached for s in prof.status())
            name = f"sn-{len(guests)}-{tag}"
            with start_guest(name, "pio", count=COUNT) as g:
                result = g.wait(60)
            out = int(result["vcpus"][0]["ops_by_kind"]["pio_out"])
            guests[g.pid] = (name, out, vmm_on, prof.loading)
            if not loading:
                break
        assert not prof.loading, "the families did not load within 120 s"
        snap = prof.snapshot()  # the first: no snapshot ran while any guest lived
    counted = {}
    for vm in snap.vms:
        if vm.pid not in guests:
            continue
        name, out, vmm_on, _ = guests[vm.pid]
        writes = sum(
            s.count for s in vm.io if (s.kind, s.direction, s.address) == ("pio", "out", W.PIO_PORT)
        )
        # Named: each VM io counted, and each started once vmm was on.  (One that
        # started before and exited within a poll of vmm's attach may not be.)
        if writes or vmm_on:
            assert vm.name == name, (vm.pid, vm.name, name, writes, guests)
        assert writes <= out, (name, writes, out)
        counted[name] = writes
    # The case itself must have happened: a guest io counted, that lived and exited
    # while families still compiled.  The last one, started after the load, is exact.
    assert any(counted.get(n) for n, _, _, loading in guests.values() if loading), (
        guests,
        counted,
    )
    last_name, last_out, _, _ = list(guests.values())[-1]
    assert counted.get(last_name) == last_out, (guests, counted)
