"""Advice: host and VM facts, rules that say what would cut the overhead, and the doctor.

`vprof advise` (vprof.advice.cli) and `vprof doctor` (vprof.advice.doctor)
live here; docs/advice.md is generated from the rules (vprof.advice.docgen).
"""
