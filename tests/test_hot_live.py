"""Per-thread counter blocks (probes/count.h) on the real probes: a thread
without a block falls back to the events hash and its counts stay exact, and
a dead VM's blocks are freed for new threads."""

from __future__ import annotations

from collections import defaultdict

import pytest
from guestproc import start_guest

from vprof.bpf.loader import Loader
from vprof.records.hot import decode_hot
from vprof.records.maps import decode, stale_keys

pytestmark = [pytest.mark.live, pytest.mark.kvm]
KVM_EXIT_IO = 2  # include/uapi/linux/kvm.h


def test_fallback_to_the_hash_is_exact_and_blocks_are_freed() -> None:
    # One block for the whole host: at most one thread owns it, every other
    # thread (here at least one of the two vCPUs) counts in the events hash.
    loader = Loader(("io", "vmm", "privileged"), map_bounds={"hot": 1})
    try:
        with start_guest("hot-fallback", "pio", vcpus=2, count=300) as g:
            result = g.wait(60)
        raw = loader.read()
        exits: dict[int, int] = defaultdict(int)
        for e in decode(raw).events:
            if e.pid == g.pid and e.name == "kvm_userspace_exit" and e.detail == KVM_EXIT_IO:
                exits[e.tid] += e.count
        hashed = {e.tid for e in decode({"events": raw["events"]}).events if e.pid == g.pid}
        # Every OUT and IN exits to the VMM; the final DONE write adds one.
        want = {v["tid"]: sum(v["ops_by_kind"].values()) + 1 for v in result["vcpus"]}
        assert dict(exits) == want
        assert len(hashed) >= 1  # a vCPU without a block counted in the hash

        loader.delete(stale_keys(raw, {g.pid}))
        left, _ = decode_hot(loader.read()["hot"])
        assert not [r for r in left if r.pid == g.pid]
    finally:
        loader.close()
