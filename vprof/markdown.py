"""Markdown tables, the one writer behind docs/*.md and the benches' tables.

    table(["code", "name"], [["0x1e", "`IO`"]], align="r-")

`align` gives one character per column: "r" right-aligns it (`---:`), anything
else leaves the default.  Cells are escaped with `cell`, so a `|` inside text
never splits a row; pass text that is already markdown (links, code) as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(text: object) -> str:
    """`text` as one table cell: a literal `|` escaped, newlines folded."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """The lines of one table: header, rule, then each row."""
    rule = "|" + "".join("---:|" if align[i : i + 1] == "r" else "---|" for i in range(len(header)))
    return [row(header), rule, *(row(r) for r in rows)]
