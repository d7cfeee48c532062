"""`vprof daemon`: the click command (command.py), its main loop and state
(core.py), the config file (config.py), HTTP (http.py) and the carry of dead
VMs' last counters (carry.py)."""
