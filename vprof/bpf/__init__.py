"""The kernel side's loader: the only package that imports bcc (in _bcc.py).

source.py renders the C of each probe family (pure, testable); loader.py
compiles and attaches each family on its own and reads the maps as raw bytes,
which vprof/records/events.py decodes.
"""
