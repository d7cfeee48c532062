"""vprof: a production profiler for KVM hypervisor hosts."""

__version__ = "0.1.0"
