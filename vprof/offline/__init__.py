"""Offline analysis: record, report, diff and import (docs/offline.md).

`read_recording(path)` is the one entry point for other commands (advise):
it returns a Recording (metadata + one tidy DataFrame of interval deltas).
"""

from vprof.sources.replay import Recording, RecordingError, read_recording

__all__ = ["Recording", "RecordingError", "read_recording"]
