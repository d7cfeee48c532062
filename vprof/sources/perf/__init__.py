"""The perf source: counting-mode tracepoint counters and /proc, no compiler.

For hosts where bcc cannot run (no headers, no compiler, BPF disabled).  It
fills the same Snapshot as the BPF pipeline where it can and marks the rest
absent (`Snapshot.absent`), never zero.
"""
