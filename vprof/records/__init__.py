"""Raw BPF map bytes -> typed records (ctypes mirrors of probes/vprof.h); pure.

events.py decodes the hashes, hot.py the per-thread counter blocks, maps.py
is the entry point for a whole read (and the stale keys of dead VMs).
"""
