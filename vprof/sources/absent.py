"""Figures a snapshot source can lack (Snapshot.absent).

A sink shows an absent figure as "n/a" and exports no series for it: never a
zero that was not measured.  The perf source lacks all of PERF_ABSENT.
"""

from __future__ import annotations

ABSENT_EXIT_TIMING = "exit_handling_time"  # exit -> entry durations, slow exits
ABSENT_LEDGER_SPLIT = "ledger_split"  # guest / in-kernel / VMM userspace / halted time
ABSENT_IO_ADDRESSES = "io_addresses"  # per-port and per-address counts
ABSENT_WAKEUPS = "wakeups"  # sched_wakeup of vCPU threads
ABSENT_DETAILS = "reason_details"  # counts by leaf, MSR index, opcode, vector, region
PERF_ABSENT: frozenset[str] = frozenset(
    {ABSENT_EXIT_TIMING, ABSENT_LEDGER_SPLIT, ABSENT_IO_ADDRESSES, ABSENT_WAKEUPS, ABSENT_DETAILS}
)
# Ledger categories the perf source can measure; the rest are absent with it.
PERF_LEDGER: frozenset[str] = frozenset({"runqueue", "unattributed"})
# A perf source family's reason while no vCPU thread has its counters open:
# not attached (nothing is counting), yet nothing is wrong (vprof.daemon).
PERF_WAITING = "no vCPU thread to count yet: perf counters are opened on each vCPU thread found"
