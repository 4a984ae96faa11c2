"""What the paper could not give: uncertainty over splits and a test of the AnB+ boost.

The paper plots single nets and means.  Here each (treatment, n) gets a Student-t interval over
the random A/B splits: the nets of one split (A->B and B->A) share their class partition, so they
are averaged first and the splits are the independent samples.  The AnB+ boost is tested with
paired differences: each AnB+ net against the base net of its own target dataset, and each
(split, n) AnB+ mean against the BnB+ mean of the same split and n.  Pairs that share a base net
are not independent, so the p-values are optimistic; the report says so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from statistics import fmean, stdev

from scipy import stats as sps

from replicate.results.groups import Scores, base_of, by_treatment, random_split

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    treatment: str
    n: int
    splits: int
    mean: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class PairedTest:
    """`t_p`: two-sided paired t-test; `wilcoxon_p`: signed-rank test (None below 2 pairs or
    when every difference is zero)."""

    control: str
    pairs: int
    mean_diff: float
    low: float | None
    high: float | None
    t_p: float | None
    wilcoxon_p: float | None


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """Mean and two-sided Student-t interval (None bounds for fewer than 2 values)."""
    mean = fmean(values)
    if len(values) < 2:
        return mean, None, None
    half = sps.t.ppf(0.5 + level / 2, len(values) - 1) * stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def split_intervals(scores: Scores, level: float = LEVEL) -> list[Interval]:
    """Per (treatment, n): mean over splits of the per-split means, with its t-interval."""
    out = []
    for (treatment, n), nets in sorted(by_treatment(scores).items(),
                                       key=lambda kv: (kv[0][1], kv[0][0])):
        per_split: dict[str, list[float]] = defaultdict(list)
        for p, v in nets:
            per_split[p.split].append(v)
        mean, low, high = t_interval([fmean(v) for v in per_split.values()], level)
        out.append(Interval(treatment, n, len(per_split), mean, low, high))
    return out


def paired_test(diffs: list[float], control: str, level: float = LEVEL) -> PairedTest | None:
    if not diffs:
        return None
    mean, low, high = t_interval(diffs, level)
    t_p = w_p = None
    if len(diffs) >= 2 and any(d != 0 for d in diffs):
        t_p = float(sps.ttest_1samp(diffs, 0.0).pvalue)
        w_p = float(sps.wilcoxon(diffs).pvalue)
    return PairedTest(control, len(diffs), mean, low, high, t_p, w_p)


def boost_tests(scores: Scores, level: float = LEVEL) -> list[PairedTest]:
    """The AnB+ boost over baseB (paired by target dataset) and over BnB+ (paired by split, n)."""
    ft = [(p, v) for p, v in random_split(scores) if p.treatment == "AnB+"]
    over_base = [v - b for p, v in ft if (b := base_of(scores, p)) is not None]
    cells: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for p, v in random_split(scores):
        if p.treatment in ("AnB+", "BnB+"):
            cells[(p.split, p.n)][p.treatment].append(v)
    over_self = [fmean(c["AnB+"]) - fmean(c["BnB+"]) for _, c in sorted(cells.items())
                 if c["AnB+"] and c["BnB+"]]
    tests = [paired_test(over_base, "baseB (same target dataset)", level),
             paired_test(over_self, "BnB+ (same split and n)", level)]
    return [t for t in tests if t is not None]
