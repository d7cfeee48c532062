"""The live loop in a real pseudo-terminal, fed by a fake source (no root needed).

Checks keys end to end and that the terminal comes back as it was (cooked
mode, echo, main screen, visible cursor) on q, Ctrl-C, SIGTERM and on an
exception from the snapshot source.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from test_top_support import FakeSource, Load, snap, vm

from vprof.sinks.top.app import Feeder
from vprof.sinks.top.stream import PrimedSource
from vprof.sinks.top.terminal import ENTER_SEQ, LEAVE_SEQ

CHILD = """
import sys
sys.path.insert(0, {tests!r})
from test_top_support import FakeSource, Load
from vprof.sinks.top.cli import TopOptions, run_top

class Failing(FakeSource):
    def snapshots(self, interval):
        for i, s in enumerate(super().snapshots(interval)):
            if i == 3:
                raise RuntimeError("source broke")
            yield s

kind = Failing if sys.argv[1] == "fail" else FakeSource
src = kind([("pio-vm", "1:1", Load(pio=5000, vmm=0.2)),
            ("hlt-vm", "2:2", Load(wakeups=100, halted=0.9))], sleep=True)
try:
    run_top(src, TopOptions(interval=0.2, color=False), sys.stdout, True, 2)
except KeyboardInterrupt:
    sys.exit(130)
"""


class Pty:
    def __init__(self, mode: str, cols: int = 100, rows: int = 30) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.before = termios.tcgetattr(self.slave)
        code = CHILD.format(tests=str(Path(__file__).parent))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, mode],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
            # Make the pty the controlling terminal, so Ctrl-C raises SIGINT.
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        self.out = b""

    def read_until(self, needle: bytes, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.out and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:
                    break
        assert needle in self.out, f"{needle!r} not seen; got {self.out[-2000:]!r}"
        return self.out

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 10.0) -> int:
        rc = self.proc.wait(timeout)
        while select.select([self.master], [], [], 0.2)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.out += chunk
        return rc

    def assert_restored(self) -> None:
        after = termios.tcgetattr(self.slave)
        assert after[3] & termios.ICANON and after[3] & termios.ECHO
        assert after == self.before
        assert ENTER_SEQ.encode() in self.out
        tail = self.out[self.out.rindex(ENTER_SEQ.encode()) :]
        assert LEAVE_SEQ.encode() in tail  # main screen and cursor back after the last frame

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty_factory():  # type: ignore[no-untyped-def]
    made: list[Pty] = []

    def make(mode: str = "ok") -> Pty:
        made.append(Pty(mode))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_keys_drill_down_and_q_restores_the_terminal(pty_factory) -> None:  # type: ignore[no-untyped-def]
    t = pty_factory()
    t.read_until(b"pio-vm")
    t.send(b"\r")  # the cursor starts on the busiest VM
    t.read_until(b"VM pio-vm  pid 1")
    t.read_until(b"0x3f8")
    t.send(b"\x1b")
    t.send(b"/hlt\r")
    t.read_until(b"filter /hlt/")
    t.send(b"d0.4\r")
    t.read_until(b"every 0.4s")
    t.send(b" ")
    t.read_until(b"PAUSED")
    t.send(b"?")
    t.read_until(b"vprof top: keys")
    t.send(b"q")
    assert t.finish() == 0
    t.assert_restored()


def test_ctrl_c_restores_the_terminal(pty_factory) -> None:  # type: ignore[no-untyped-def]
    t = pty_factory()
    t.read_until(b"hlt-vm")
    t.send(b"\x03")
    assert t.finish() == 130
    t.assert_restored()


def test_sigterm_restores_the_terminal(pty_factory) -> None:  # type: ignore[no-untyped-def]
    t = pty_factory()
    t.read_until(b"hlt-vm")
    t.proc.send_signal(signal.SIGTERM)
    assert t.finish() == 128 + signal.SIGTERM
    t.assert_restored()


def test_exception_from_the_source_restores_the_terminal(pty_factory) -> None:  # type: ignore[no-untyped-def]
    t = pty_factory("fail")
    assert t.finish() == 1
    assert b"source broke" in t.out
    t.assert_restored()
    # The traceback is printed after the terminal is back, so the user can read it.
    assert t.out.rindex(b"source broke") > t.out.rindex(LEAVE_SEQ.encode())


class PollingSource(FakeSource):
    """Like the Profiler: snapshots() and snapshot() on demand; counts calls."""

    def __init__(self) -> None:
        super().__init__([("pio-vm", "1:1", Load(pio=1000))])
        self.calls: list[float] = []

    def snapshot(self):  # type: ignore[no-untyped-def]
        self.calls.append(time.monotonic())
        self.t += 0.05
        return snap(vm("pio-vm", "1:1", Load(pio=1000), self.t), seconds=self.t, interval=0.05)


def test_feeder_polls_on_an_interruptible_timer() -> None:
    source = PollingSource()
    primed = PrimedSource(source, 0.05)
    feeder = Feeder(primed, 0.05)
    feeder.start()
    time.sleep(0.3)
    feeder.set_interval(10.0)  # applies at once: no snapshot for 10 s now
    time.sleep(0.1)
    n = len(source.calls)
    time.sleep(0.3)
    assert len(source.calls) == n
    started = time.monotonic()
    feeder.stop()
    assert time.monotonic() - started < 0.5  # stop() does not wait out the interval
    assert not feeder.is_alive()
    items = feeder.drain()
    assert items[0] is primed.first  # the snapshot taken to check --vm comes first
    # The first snapshot is taken on demand too (a baseline): it is one of the calls.
    assert len(items) == n and n >= 3
    assert all(not isinstance(i, BaseException) for i in items)
