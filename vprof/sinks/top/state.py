"""What the interactive view shows, and what each key does to it (pure).

Keys arrive as names from `decode_keys` ("UP", "ENTER", "ESC", or the
character typed).  `handle_key` changes a UiState and touches nothing else,
so every key binding is tested without a terminal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from vprof.sinks.top.view import COLUMN_KEYS, column, compile_filter

KEY_HELP: tuple[tuple[str, str], ...] = (
    ("Up/Down j/k", "move the cursor between VMs (PgUp/PgDn, Home/End)"),
    ("Enter", "drill down into the VM under the cursor"),
    ("Esc / Backspace", "back to the VM table (in the table: clear the filter)"),
    ("s or >  /  <", "sort by the next / previous column"),
    ("R", "reverse the sort order"),
    ("/", "filter VMs by name (regex, case-insensitive; empty clears)"),
    ("space or p", "pause / resume updates"),
    ("d", "change the update interval (seconds)"),
    ("r", "reset: restart the since-reset totals and slow-exit list"),
    ("h or ?", "this help (any key closes it)"),
    ("q", "quit (Ctrl-C too)"),
)

_ESCAPES: dict[str, str] = {
    "\x1b[A": "UP",
    "\x1b[B": "DOWN",
    "\x1bOA": "UP",
    "\x1bOB": "DOWN",
    "\x1b[5~": "PGUP",
    "\x1b[6~": "PGDN",
    "\x1b[H": "HOME",
    "\x1b[F": "END",
    "\x1b[1~": "HOME",
    "\x1b[4~": "END",
    "\x1bOH": "HOME",
    "\x1bOF": "END",
}
_CSI_TAIL = re.compile(r"\x1b(\[[0-9;]*[~A-Za-z]|O[A-Za-z])")


def decode_keys(data: str) -> list[str]:
    """Split terminal input into key names; unknown escape sequences are dropped."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        ch = data[i]
        if ch == "\x1b":
            m = _CSI_TAIL.match(data, i)
            if m:
                name = _ESCAPES.get(m.group(0))
                if name:
                    keys.append(name)
                i = m.end()
                continue
            keys.append("ESC")
        elif ch in "\r\n":
            keys.append("ENTER")
        elif ch in "\x7f\x08":
            keys.append("BACKSPACE")
        elif ch.isprintable():
            keys.append(ch)
        i += 1
    return keys


@dataclass
class UiState:
    sort_key: str = "events_per_s"
    descending: bool = True
    filter_text: str = ""
    name_filter: re.Pattern[str] | None = None
    selected: str | None = None  # key of the VM under the cursor
    drill: str | None = None  # key of the VM drilled into
    drill_name: str = ""  # its name, to say which VM went away
    paused: bool = False
    help: bool = False
    interval: float = 1.0
    prompt: str | None = None  # "filter" or "interval" while typing
    buffer: str = ""
    message: str = ""
    quit: bool = False
    reset_requested: bool = False
    page: int = 10  # rows moved by PgUp/PgDn (set from the terminal height)
    live: bool = True  # False in batch mode: no key hints

    def set_sort(self, key: str) -> None:
        self.sort_key = key
        self.descending = column(key).kind != "text"


def _apply_prompt(ui: UiState) -> None:
    text = ui.buffer.strip()
    if ui.prompt == "filter":
        try:
            ui.name_filter = compile_filter(text) if text else None
        except re.error as exc:
            ui.message = f"bad regex {text!r}: {exc}"
        else:
            ui.filter_text = text
            ui.message = f"filter /{text}/" if text else "filter cleared"
    elif ui.prompt == "interval":
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if 0 < value <= 86_400:  # also refuses nan and inf
            ui.interval = value
            ui.message = f"interval {value:g}s"
        else:
            ui.message = f"interval must be a positive number of seconds, not {text!r}"
    ui.prompt = None
    ui.buffer = ""


def _prompt_key(ui: UiState, key: str) -> None:
    if key == "ENTER":
        _apply_prompt(ui)
    elif key == "ESC":
        ui.prompt, ui.buffer = None, ""
    elif key == "BACKSPACE":
        ui.buffer = ui.buffer[:-1]
    elif len(key) == 1:
        ui.buffer += key


def _move(ui: UiState, visible: Sequence[str], key: str) -> None:
    if not visible:
        return
    pos = visible.index(ui.selected) if ui.selected in visible else 0
    step = {"UP": -1, "k": -1, "DOWN": 1, "j": 1, "PGUP": -ui.page, "PGDN": ui.page}
    if key == "HOME":
        pos = 0
    elif key == "END":
        pos = len(visible) - 1
    else:
        pos = min(len(visible) - 1, max(0, pos + step[key]))
    ui.selected = visible[pos]


def _sort_step(ui: UiState, step: int) -> None:
    i = COLUMN_KEYS.index(ui.sort_key) if ui.sort_key in COLUMN_KEYS else 0
    ui.set_sort(COLUMN_KEYS[(i + step) % len(COLUMN_KEYS)])


def handle_key(ui: UiState, key: str, visible: Sequence[str]) -> None:
    """Apply one key; `visible` is the VM keys in table order, as shown."""
    ui.message = "" if ui.prompt is None else ui.message
    if ui.prompt is not None:
        _prompt_key(ui, key)
    elif key == "q":
        ui.quit = True
    elif ui.help:
        ui.help = False
    elif key in ("h", "?"):
        ui.help = True
    elif key in (" ", "p"):
        ui.paused = not ui.paused
        ui.message = "paused" if ui.paused else "resumed"
    elif key == "d":
        ui.prompt, ui.buffer = "interval", ""
    elif key == "/":
        ui.prompt, ui.buffer = "filter", ui.filter_text
    elif key == "r":
        ui.reset_requested = True
        ui.message = "reset"
    elif ui.drill is not None:
        if key in ("ESC", "BACKSPACE"):
            ui.selected, ui.drill = ui.drill, None
    else:
        _table_key(ui, key, visible)


def _table_key(ui: UiState, key: str, visible: Sequence[str]) -> None:
    if key in ("s", ">"):
        _sort_step(ui, 1)
    elif key == "<":
        _sort_step(ui, -1)
    elif key == "R":
        ui.descending = not ui.descending
    elif key in ("UP", "DOWN", "k", "j", "PGUP", "PGDN", "HOME", "END"):
        _move(ui, visible, key)
    elif key == "ENTER" and visible:
        ui.drill = ui.selected if ui.selected in visible else visible[0]
    elif key in ("ESC", "BACKSPACE") and ui.name_filter is not None:
        ui.name_filter, ui.filter_text, ui.message = None, "", "filter cleared"
