"""Helpers of the reliability suite (tests/test_reliability_*.py, issue 15).

A real `vprof daemon` in a child process, the BPF programs it holds (tracked
from its own /proc/<pid>/fdinfo, since other helpers run BPF programs on this
host at the same time), and whether any of them outlives it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from test_daemon import free_port, get
from test_daemon_e2e import VPROF, progs_of


def loaded(kind: str) -> list[dict[str, Any]]:
    """`bpftool -j prog list` or `link list`."""
    out = subprocess.run(["bpftool", "-j", kind, "list"], capture_output=True, text=True)
    return list(json.loads(out.stdout or "[]")) if out.returncode == 0 else []


def left_behind(progs: set[int], settle: float = 5.0) -> tuple[set[int], set[int]]:
    """(programs of `progs` still loaded, links still pointing at them), once the
    kernel has had `settle` seconds to free them: a dead process's raw-tracepoint
    links are put from a workqueue, so one was still listed just after its exit."""
    deadline = time.monotonic() + settle
    while True:
        still = {int(p["id"]) for p in loaded("prog")} & progs
        links = {int(ln["id"]) for ln in loaded("link") if int(ln.get("prog_id", -1)) in progs}
        if not (still or links) or time.monotonic() > deadline:
            return still, links
        time.sleep(0.1)


class DaemonProc:
    """`vprof daemon --config FILE` with `conf` (a listen line is added),
    run through `prefix` (e.g. setpriv) if given."""

    def __init__(
        self, tmp: Path, conf: str = "interval = 1.0\n", *args: str, prefix: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = tmp / f"vprof-{self.port}.toml"
        self.conf.write_text(f'listen = "127.0.0.1:{self.port}"\n{conf}')
        self.log = tmp / f"daemon-{self.port}.log"
        # Programs loaded before it are not its own, though it may hold one a moment:
        # the perf source reads the code of programs on the kvm tracepoints
        # (vprof/sources/perf/hiders.py), such as the test session's own Profiler's.
        self.before = {int(p["id"]) for p in loaded("prog")}
        self.p = subprocess.Popen(
            [*prefix, str(VPROF), "daemon", "--config", str(self.conf), *args],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        self.progs: set[int] = set()  # of its own
        self._watch = threading.Thread(target=self._track, daemon=True)
        self._watch.start()

    def _track(self) -> None:
        # Every program the daemon ever held, even one loaded just before a signal.
        while self.p.poll() is None:
            self.progs |= self.own_progs()
            time.sleep(0.02)

    def own_progs(self) -> set[int]:
        """Ids of the BPF programs it holds now that it loaded (not older than it)."""
        return progs_of(self.p.pid) - self.before

    def wait_healthy(self, timeout: float = 120) -> None:
        """/healthz 200 with every family loaded: it is 200 from the first on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.p.poll() is None, self.log.read_text()[-2000:]
            try:
                code, body = get(self.url + "/healthz")
                if code == 200 and not json.loads(body)["probes_loading"]:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("daemon never healthy: " + self.log.read_text()[-2000:])

    def metrics(self) -> str:
        return get(self.url + "/metrics")[1]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15) -> tuple[int | None, float]:
        """Send `signum`; (exit status or None if it hung, seconds to exit)."""
        start = time.monotonic()
        self.p.send_signal(signum)
        try:
            rc: int | None = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            self.p.kill()
            self.p.wait()
        elapsed = time.monotonic() - start
        self._watch.join()
        return rc, elapsed

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
