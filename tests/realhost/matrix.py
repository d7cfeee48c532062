"""Handling-time p50/p99 per SVM exit reason from the realhost tests' records.

    python tests/realhost/matrix.py DIR    # DIR/stats/<release>.jsonl, from realhost.py --out DIR

Histograms are log2 slots (slot i: 2^i <= ns < 2^(i+1)); a percentile is shown as its
slot's upper bound, in microseconds.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def percentile(hist: list[int], q: float) -> int:
    """Upper bound (ns) of the slot holding the q-quantile."""
    need, seen = q * sum(hist), 0
    for i, n in enumerate(hist):
        seen += n
        if n and seen >= need:
            return 2 ** (i + 1)
    return 0


def main(argv: list[str]) -> int:
    for path in sorted(Path(argv[0], "stats").glob("*.jsonl")):
        merged: dict[str, list[int]] = defaultdict(lambda: [0] * 40)
        for line in path.read_text().splitlines():
            row = json.loads(line)
            for i, n in enumerate(row["hist"]):
                merged[row["reason"]][i] += n
        cells = [
            f"{r} {percentile(h, 0.5) / 1000:.0f}/{percentile(h, 0.99) / 1000:.0f}"
            for r, h in sorted(merged.items())
        ]
        print(f"| {path.stem} | {', '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
