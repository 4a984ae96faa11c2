"""The paper's per-network numbers, computed from a validation curve.

The statistic the paper plots is `best10_top1`: the mean of the 10 highest validation top-1
values over the whole run, which smooths the noise of any single test (results/paper_reference.csv
was made this way from the authors' logs; tests/test_results_stats.py recomputes all 148 rows from
their curves).  `min10_valid_loss` is its counterpart for the loss: the mean of the 10 lowest
validation losses.  The authors' 2014 Caffe never tested before the first update, so a test at
iteration 0 (modern Caffe's test_initialization) is left out of every statistic here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from replicate.results.logs import ValPoint

TOP_K = 10
#: Columns of results/paper_reference.csv, in its order.
PAPER_COLUMNS = ("name", "family", "split", "n", "points", "best10_top1", "final_top1",
                 "final_iter", "min10_valid_loss")


@dataclass(frozen=True)
class NetStats:
    """`few_points`: fewer than 10 points, so best10/min10 average what exists (flagged in the
    report).  `min10_valid_loss` is None when the validation net has no loss output."""

    points: int
    best10_top1: float
    final_top1: float
    final_iter: int
    min10_valid_loss: float | None
    few_points: bool


def best_k_mean(values: Sequence[float], k: int = TOP_K, highest: bool = True) -> float:
    """Mean of the k highest (or lowest) values; of all of them when there are fewer than k."""
    if not values:
        raise ValueError("no values")
    # Summed in ascending order, one rounding per addition, as the reference csv was: a half-way
    # case at the 5th decimal (transfer1A1B_1_2: 0.628995) rounds the other way when the sum runs
    # from the top, and another when it is compensated, as Python 3.12's sum() is.
    ordered = sorted(values)
    top = ordered[-k:] if highest else ordered[:k]
    total = 0.0
    for value in top:
        total += value
    return total / len(top)


def scored_points(points: Sequence[ValPoint]) -> list[ValPoint]:
    """The points the statistics use: every test after training began."""
    return [p for p in points if p.iter > 0]


def net_stats(points: Sequence[ValPoint]) -> NetStats:
    """The paper's numbers for one curve (ValueError if no test after iteration 0)."""
    used = scored_points(points)
    if not used:
        raise ValueError("no validation points after iteration 0")
    losses = [p.loss for p in used if p.loss is not None and not math.isnan(p.loss)]
    has_loss = all(p.loss is not None for p in used)
    return NetStats(
        points=len(used),
        best10_top1=best_k_mean([p.top1 for p in used]),
        final_top1=used[-1].top1,
        final_iter=used[-1].iter,
        min10_valid_loss=best_k_mean(losses, highest=False) if has_loss and losses else None,
        few_points=len(used) < TOP_K,
    )


def paper_row(name: str, family: str, split: str, n: int, stats: NetStats) -> dict[str, str]:
    """One row formatted as results/paper_reference.csv writes it (5 decimals)."""
    loss = "" if stats.min10_valid_loss is None else f"{stats.min10_valid_loss:.5f}"
    return {"name": name, "family": family, "split": split, "n": str(n),
            "points": str(stats.points), "best10_top1": f"{stats.best10_top1:.5f}",
            "final_top1": f"{stats.final_top1:.5f}", "final_iter": str(stats.final_iter),
            "min10_valid_loss": loss}
