"""Start the vprof micro-guest from tests and read its ground truth.

    from guestproc import start_guest

    with start_guest("t-pio", "pio", vcpus=2, count=10_000) as g:
        g.ready            # {"event": "ready", "pid": ..., "vcpus": [{"index", "tid"}]}
        result = g.wait(30)  # {"event": "result", "total_ops": ..., "vcpus": [...]}

With neither count nor duration the guest runs until g.stop() (SIGTERM: it
finishes the current iteration, prints its result and exits 0).  Leaving the
`with` block stops a guest that is still running.  The process is started as
`python -m vprof.guest.runner -name guest=NAME ...`, exactly what
`vprof guest` execs, so its PID is the VM's PID.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vprof.guest.args import RUNNER_MODULE, GuestArgs, runner_argv  # noqa: E402

# A failure bound, not a timing: a guest started inside the realhost L1 (TCG, 2 vCPUs
# shared with the profiler) under a loaded host once took over 20 s to say ready.
READY_TIMEOUT = 90.0


class GuestError(RuntimeError):
    """The guest failed to start or exited badly; carries its stderr."""


class GuestProcess:
    def __init__(self, argv: list[str]) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._stderr, cwd=REPO, text=True
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._result: dict[str, Any] | None = None
        self.ready = self._next_event("ready", READY_TIMEOUT)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _next_event(self, kind: str, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise GuestError(f"no {kind!r} line within {timeout} s: {self.stderr()}") from None
        if line is None:
            self.proc.wait(5)
            raise GuestError(
                f"guest exited ({self.proc.returncode}) before {kind!r}: {self.stderr()}"
            )
        event: dict[str, Any] = json.loads(line)
        if event.get("event") != kind:
            raise GuestError(f"expected {kind!r}, got {line!r}")
        return event

    def wait(self, timeout: float = 60.0) -> dict[str, Any]:
        """The result dict, once the guest has finished (exit status 0)."""
        if self._result is None:
            self._result = self._next_event("result", timeout)
            rc = self.proc.wait(timeout)
            if rc != 0:
                raise GuestError(f"guest exited with {rc}: {self.stderr()} {self._result}")
        return self._result

    def go(self) -> None:
        """Start the vCPUs of a guest started with hold=True."""
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self) -> None:
        """SIGTERM: the guest stops at an iteration boundary and prints its result."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            # A guest whose vCPU threads wait for a CPU behind ten others (the
            # contention tests) can take longer than 10 s to be reaped.
            self.proc.wait(60)

    def __enter__(self) -> GuestProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.proc.poll() is None:
                self.stop()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.kill()
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._stderr.close()


def start_guest(
    name: str,
    workload: str,
    vcpus: int = 1,
    count: int | None = None,
    duration: float | None = None,
    mode: str = "user",
    stats: bool = False,
    hold: bool = False,
    keep_stats_fds: bool = False,
) -> GuestProcess:
    """Start a micro-guest and return once its vCPU threads exist (`.ready`).
    With `hold` its vCPUs start only at `.go()`."""
    args = GuestArgs(
        name,
        vcpus,
        workload,
        count,
        duration,
        mode,
        json=True,
        stats=stats,
        hold=hold,
        keep_stats_fds=keep_stats_fds,
    )
    return GuestProcess([sys.executable, "-m", RUNNER_MODULE, *runner_argv(args)])
