"""The container entrypoint's kernel-headers strategies, with the real bcc.

Each case runs in a private mount namespace laid out like the DaemonSet's pod:
the host's /lib/modules and /usr/src bind-mounted under a host root, and an
empty tmpfs over /lib/modules (the pod's emptyDir).  bcc can then only find
headers through the links the entrypoint makes; the control case without the
entrypoint shows that it cannot otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import unavailable

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parent.parent

# Compiles the shared maps and the sched family, which include kernel headers.
PROBE = """
from vprof.bpf.loader import Loader
loader = Loader(families=("sched",))
status = {s.family: s for s in loader.status()}
print("sched attached:", status["sched"].attached, status["sched"].reason)
loader.close()
"""

POD = """
set -e
mkdir -p "$T/host/lib/modules" "$T/host/usr/src"
mount --bind /lib/modules "$T/host/lib/modules"
mount --bind /usr/src "$T/host/usr/src"
mount -t tmpfs vprof-test /lib/modules
export VPROF_HOST_ROOT="$T/host" VPROF_KHEADERS="$T/no-kheaders"
if [ "$STRATEGY" = none ]; then exec "$@"; fi
export VPROF_HEADERS="$STRATEGY"
exec sh deploy/vprof-entrypoint.sh "$@"
"""


def _in_pod(tmp: Path, strategy: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("unshare") is None:
        unavailable("unshare (util-linux) is not installed")
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        pytest.skip("this kernel has kheaders: bcc would find headers without the entrypoint")
    env = {"T": str(tmp), "STRATEGY": strategy, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    cmd = ["unshare", "--mount", "sh", "-c", POD, "pod", sys.executable, "-c", PROBE]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("strategy", ["host", "bundled"])
def test_entrypoint_headers_let_bcc_compile_the_probes(tmp_path: Path, strategy: str) -> None:
    done = _in_pod(tmp_path, strategy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sched attached: True" in done.stdout, done.stdout + done.stderr
    assert f"kernel headers for {Path('/proc/sys/kernel/osrelease').read_text().strip()}" in (
        done.stderr
    )


def test_without_the_entrypoint_bcc_finds_no_headers(tmp_path: Path) -> None:
    done = _in_pod(tmp_path, "none")
    assert done.returncode != 0
    assert "cannot load the shared maps" in done.stderr
