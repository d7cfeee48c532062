"""A Profiler left open at interpreter exit: no traceback, nothing attached.

Seen in CI: an atexit close() raised "cannot schedule new futures after
interpreter shutdown" from the loader's parallel detach.  Each variant runs
in a subprocess that prints its programs' kernel IDs, then exits without a
`with` block; afterwards none of those programs may still exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import atexit, json, sys
from pathlib import Path
from vprof.pipeline.profiler import Profiler, ProfilerConfig

prof = Profiler(ProfilerConfig(families=frozenset({"sched", "vmm"})))
ids = []
for fd in prof._loader.prog_fds().values():
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("prog_id:"):
            ids.append(int(line.split()[1]))
prof.snapshot()
if sys.argv[1] == "atexit":
    atexit.register(prof.close)
print(json.dumps(ids), flush=True)
"""


def _prog_exists(prog_id: int) -> bool:
    run = subprocess.run(
        ["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True, text=True
    )
    return run.returncode == 0


@pytest.mark.parametrize("how", ["atexit", "no-close"])
def test_exit_without_close_is_clean(how: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, how], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == "", run.stderr
    ids = json.loads(run.stdout)
    assert ids, "the child loaded no programs"
    assert not [i for i in ids if _prog_exists(i)], ids
