"""The daemon's log line for each slow exit (exits slower than slow_exit_threshold_us)."""

from __future__ import annotations

import logging

from vprof.model import Snapshot

log = logging.getLogger("vprof.daemon")


def log_slow_exits(prev: Snapshot | None, cur: Snapshot) -> None:
    """One info line per slow exit of `cur` that `prev` did not hold yet."""
    seen = {s.timestamp_ns for vm in prev.vms for s in vm.slow_exits} if prev else set()
    for vm in cur.vms:
        for s in vm.slow_exits:
            if s.timestamp_ns not in seen:
                log.info(
                    "slow exit: vm=%s vcpu=%s %s/%s %s took %.1f us",
                    vm.name,
                    s.vcpu,
                    s.isa,
                    s.reason,
                    s.bucket.value,
                    s.duration_ns / 1000,
                )
