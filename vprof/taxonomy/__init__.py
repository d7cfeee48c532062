"""Exit-reason tables (VMX, SVM, arm64, KVM_EXIT_*) and the bucket rules.

Every KVM exit code and traced event maps to one overhead bucket
(vprof.model.Bucket) with a one-line reason; unknown codes map to
"unknown:<isa>:<code>" in bucket unclassified and are never dropped.
docs/taxonomy.md is generated from these tables (vprof.taxonomy.docgen).
"""

from __future__ import annotations

from vprof.taxonomy.arm64 import classify_arm64
from vprof.taxonomy.core import Classified, remedy, remedy_brief
from vprof.taxonomy.rules import (
    MMIO_EVENTS,
    STAGE2_FAULTS,
    classify_event,
    classify_exit,
    npf_bucket,
    resolve_bucket,
    userspace_exit,
)
from vprof.taxonomy.vmx import decode_flags as decode_vmx_flags

__all__ = [
    "MMIO_EVENTS",
    "STAGE2_FAULTS",
    "Classified",
    "classify_arm64",
    "classify_event",
    "classify_exit",
    "decode_vmx_flags",
    "npf_bucket",
    "remedy",
    "remedy_brief",
    "resolve_bucket",
    "userspace_exit",
]
