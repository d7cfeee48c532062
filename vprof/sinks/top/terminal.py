"""The terminal for the live view: keys in, frames out, and always restored.

Input is put in cbreak mode (keys arrive one by one, no echo; Ctrl-C still
raises KeyboardInterrupt), output switches to the alternate screen with the
cursor hidden.  `restore()` undoes all three; it runs from __exit__ (normal
exit, q, exceptions) and from the SIGTERM/SIGHUP handler, and is idempotent.
Writes go straight to the file descriptor so the signal handler never
re-enters a buffered stream.
"""

from __future__ import annotations

import os
import select
import signal
import termios
import tty
from types import FrameType, TracebackType
from typing import Any

from vprof.sinks.top.state import decode_keys

ENTER_SEQ = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J"  # alternate screen, hide cursor, clear
LEAVE_SEQ = "\x1b[?25h\x1b[?1049l"  # show cursor, main screen
_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _write_all(fd: int, text: str) -> None:
    data = text.encode("utf-8", "replace")
    while data:
        n = os.write(fd, data)
        data = data[n:]


class Terminal:
    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self._saved: list[Any] | None = None
        self._old_handlers: dict[int, Any] = {}
        self._active = False

    def __enter__(self) -> Terminal:
        self._saved = termios.tcgetattr(self.fd_in)
        for sig in _SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        self._active = True
        tty.setcbreak(self.fd_in, termios.TCSANOW)
        _write_all(self.fd_out, ENTER_SEQ)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.restore()
        raise SystemExit(128 + signum)

    def restore(self) -> None:
        if not self._active:
            return
        self._active = False
        if self._saved is not None:
            termios.tcsetattr(self.fd_in, termios.TCSADRAIN, self._saved)
        _write_all(self.fd_out, LEAVE_SEQ)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()

    def size(self) -> tuple[int, int]:
        """(columns, lines), at least 20x5 so layout arithmetic stays sane."""
        try:
            cols, rows = os.get_terminal_size(self.fd_out)
        except OSError:
            cols, rows = 80, 24
        return max(20, cols), max(5, rows)

    def read_keys(self, timeout: float) -> list[str]:
        """Keys typed within `timeout` seconds; ["q"] if input is closed."""
        ready, _, _ = select.select([self.fd_in], [], [], timeout)
        if not ready:
            return []
        data = os.read(self.fd_in, 1024)
        if not data:
            return ["q"]
        return decode_keys(data.decode("utf-8", "replace"))

    def draw(self, frame: str) -> None:
        """Paint a frame over the previous one without clearing (no flicker)."""
        body = "\x1b[K\r\n".join(frame.split("\n"))
        _write_all(self.fd_out, "\x1b[H" + body + "\x1b[K\x1b[J")
