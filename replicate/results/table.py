"""Table 1 of the paper: the boost of AnB+ over baseB and over BnB+, pooled over layer ranges.

The paper's numbers (1.6/1.8/2.1 % over baseB, 1.4/1.4/1.7 % over BnB+) come out of
results/paper_reference.csv when the AnB+ nets with n in the range are pooled and their mean is
compared with the mean of all 8 base nets, or with the pooled mean of the BnB+ nets of the same
range (tests/test_results_table.py checks this).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean

from replicate.results.groups import Scores, base_mean, random_split

RANGES = ((1, 7), (3, 7), (5, 7))
#: Table 1 as printed: (over baseB, over BnB+), in accuracy units.
PAPER_TABLE1 = {(1, 7): (0.016, 0.014), (3, 7): (0.018, 0.014), (5, 7): (0.021, 0.017)}


@dataclass(frozen=True)
class Table1Row:
    """None where a control or the AnB+ nets are missing; counts say how many nets were pooled."""

    lo: int
    hi: int
    over_base: float | None
    over_selffer: float | None
    n_transfer_ft: int
    n_base: int
    n_selffer_ft: int


def _pooled(scores: Scores, treatment: str, lo: int, hi: int) -> list[float]:
    return [v for p, v in random_split(scores) if p.treatment == treatment and lo <= p.n <= hi]


def table1(scores: Scores, relative: bool = False) -> list[Table1Row]:
    """Table 1 from per-net scores.  `relative`: boosts as fractions of baseB (for comparing a
    scaled demo's shape with the paper's)."""
    base = base_mean(scores)
    n_base = sum(1 for p, _ in random_split(scores) if p.family == "base")
    rows = []
    for lo, hi in RANGES:
        ft = _pooled(scores, "AnB+", lo, hi)
        self_ft = _pooled(scores, "BnB+", lo, hi)
        over_base = fmean(ft) - base if ft and base is not None else None
        over_self = fmean(ft) - fmean(self_ft) if ft and self_ft else None
        if relative and base:
            over_base = None if over_base is None else over_base / base
            over_self = None if over_self is None else over_self / base
        rows.append(Table1Row(lo, hi, over_base, over_self, len(ft), n_base, len(self_ft)))
    return rows
