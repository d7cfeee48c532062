"""A tiny x86-64 "assembler": hand-encoded bytes with labels and a listing.

Guest programs are written as calls that each append one instruction whose
bytes are spelled out at the call site with a comment.  Only jumps need help:
their rel32 displacement is patched once every label is known.  Everything
here is pure, so encodings are unit-tested without KVM.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Jcc rel32 is 0F 80+cc; the condition codes used by the guest programs.
CC = {"e": 0x4, "ne": 0x5, "b": 0x2, "ae": 0x3}


@dataclass
class Asm:
    """Append-only code buffer placed at guest-physical address `base`."""

    base: int
    code: bytearray = field(default_factory=bytearray)
    labels: dict[str, int] = field(default_factory=dict)
    fixups: list[tuple[int, str]] = field(default_factory=list)
    listing: list[tuple[int, bytes, str]] = field(default_factory=list)

    @property
    def here(self) -> int:
        return self.base + len(self.code)

    def op(self, data: bytes, comment: str) -> None:
        """Append one instruction; `comment` is its assembly for the listing."""
        self.listing.append((self.here, bytes(data), comment))
        self.code += data

    def label(self, name: str) -> None:
        if name in self.labels:
            raise ValueError(f"label {name!r} defined twice")
        self.labels[name] = self.here

    def _rel32(self, opcode: bytes, target: str, comment: str) -> None:
        self.op(opcode + b"\0\0\0\0", comment)
        self.fixups.append((len(self.code) - 4, target))

    def jmp(self, target: str) -> None:
        # E9 cd: JMP rel32, relative to the end of the instruction.
        self._rel32(b"\xe9", target, f"jmp {target}")

    def jcc(self, cond: str, target: str) -> None:
        # 0F 8x cd: Jcc rel32.
        self._rel32(bytes([0x0F, 0x80 | CC[cond]]), target, f"j{cond} {target}")

    def addr(self, name: str) -> int:
        return self.labels[name]

    def assemble(self) -> bytes:
        """Patch every jump and return the code bytes."""
        out = bytearray(self.code)
        for pos, target in self.fixups:
            if target not in self.labels:
                raise ValueError(f"undefined label {target!r}")
            rel = self.labels[target] - (self.base + pos + 4)
            out[pos : pos + 4] = struct.pack("<i", rel)
        return bytes(out)

    def text(self) -> str:
        """A listing: address, bytes, assembly; for --help-like docs and debugging."""
        names = {v: k for k, v in self.labels.items()}
        code = self.assemble()  # jumps with their displacements patched in
        lines = []
        for addr, data, comment in self.listing:
            if addr in names:
                lines.append(f"{names[addr]}:")
            raw = code[addr - self.base : addr - self.base + len(data)]
            lines.append(f"  {addr:08x}  {raw.hex(' '):<32} {comment}")
        return "\n".join(lines)


def imm8(value: int) -> bytes:
    return struct.pack("<B", value & 0xFF)


def imm16(value: int) -> bytes:
    return struct.pack("<H", value & 0xFFFF)


def imm32(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFFFFFF)


def imm64(value: int) -> bytes:
    return struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)
