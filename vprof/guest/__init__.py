"""The built-in KVM micro-guest: a real VM driven through /dev/kvm from Python.

cli.py is the `vprof guest` command; runner.py runs one guest in its own
process; vm.py and kvmapi.py hold the KVM ioctls; workloads.py and asm.py
assemble the guest code.  The tests use its own operation counts as ground
truth.
"""
