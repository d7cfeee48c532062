"""`vprof top`: the incident view of virtualization overhead, per VM and per vCPU.

The parts, from data to terminal:

- view.py, drill.py: pure view models built from delta Snapshots (vprof.model.diff):
  rows, sorting, filtering, column priorities, the drill-down of one VM.
- render.py: turns a view model into text with rich (no terminal needed).
- state.py: the interactive state and what each key does (pure).
- terminal.py, app.py: the live loop; raw keys via termios, terminal restored
  on every exit path.
- batch.py: `-b` plain tables, `--json`, `--csv`.
- cli.py: the click command.
"""
