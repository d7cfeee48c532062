"""vprof.markdown: the one table writer behind docs/*.md."""

from __future__ import annotations

import pytest

from vprof.markdown import table

pytestmark = pytest.mark.unit


def test_a_pipe_in_text_stays_inside_its_cell_and_alignment_follows_the_spec() -> None:
    lines = table(("code", "reason"), [(0x1E, "in | out\nport")], align="r")
    assert lines == ["| code | reason |", "|---:|---|", "| 30 | in \\| out port |"]
