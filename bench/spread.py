"""Medians with their spread, and when a spread makes a claim untrustworthy.

Guest rates on this 2-core host swing +-30% from run to run, so bench/
reports each ratio as the median over rounds with its interquartile range
(the middle half of the rounds), and flags a figure whose IQR is wider than
the effect it would show: a cost (1 - ratio) or a difference between two
tracers taken in the same rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    median: float
    low: float  # 25th percentile
    high: float  # 75th percentile
    n: int

    @property
    def width(self) -> float:
        return self.high - self.low


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no values")
    if len(values) < 4:  # quartiles of 1-3 values: use the whole range
        return Spread(statistics.median(values), min(values), max(values), len(values))
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Spread(statistics.median(values), q1, q3, len(values))


def noisy(s: Spread, effect: float) -> bool:
    """Whether the spread is wider than `effect`, the claim the median makes."""
    return s.width > abs(effect)


def ratio_cell(values: Sequence[float]) -> str:
    """'0.987 [0.95-1.01]', with ' (!)' when the IQR exceeds the cost 1 - median."""
    s = spread(values)
    flag = " (!)" if noisy(s, 1.0 - s.median) else ""
    return f"{s.median:.3f} [{s.low:.3f}-{s.high:.3f}]{flag}"


def diff_cell(a: Sequence[float], b: Sequence[float]) -> str:
    """Per-round differences a - b (same rounds), '+0.012 [..]', (!) if noisy."""
    s = spread([x - y for x, y in zip(a, b, strict=True)])
    flag = " (!)" if noisy(s, s.median) else ""
    return f"{s.median:+.3f} [{s.low:+.3f}..{s.high:+.3f}]{flag}"
