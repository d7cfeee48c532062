"""Consumers of Snapshots: the Prometheus collector, `vprof top`, the recorder.

Sinks only read vprof.model.Snapshot objects; none imports bcc or touches /proc.
"""
