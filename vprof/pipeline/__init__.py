"""The live BPF pipeline, vprof's main snapshot source.

profiler.py owns the loader and the inventory and yields cumulative
Snapshots; aggregate.py classifies decoded records (reasons.py names them
through the taxonomy), ledger.py splits each vCPU's wall time, seed.py
registers already-running vCPU threads, probes_cli.py is `vprof probes`.
"""
