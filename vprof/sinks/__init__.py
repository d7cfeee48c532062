"""Consumers of Snapshots: the Prometheus collector and its render cache, `vprof top`.

Sinks only read vprof.model.Snapshot objects; none imports bcc or touches /proc.
"""
