"""The paper's qualitative claims, checked on any set of scores (the paper's or ours), with their noise.

A scaled replication cannot match the paper's numbers, but it can show (or fail to show) the
paper's shape: BnB+ back at its base, the fragile co-adaptation dip of BnB, AnB falling with n,
the AnB+ boost, the collapse of random frozen layers, dissimilar tasks transferring worse.

Each claim is one quantity over nets, each net taken relative to its own base (the base net of
its target dataset; netbase for the random-filter nets).  A net's score is noisy (its
initialisation, its data order, and the CPU's float arithmetic all move it), so a claim is
judged with the spread of its nets: the one-sided 95% Student-t bound of the mean (Welch's for
a difference of two groups of nets) must pass a stated margin on the side that would refute the
claim.  One lucky net cannot carry a verdict: it moves the mean, but it widens the bound.  Where
a group has a single net there is no spread to judge with; the check then judges the estimate
alone and says so (`bounded` is False).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from statistics import fmean, variance

from scipy import stats as sps

from replicate.results.groups import Scores, parsed
from replicate.results.names import NetName

#: One-sided confidence of every bound.
LEVEL = 0.95
#: The margins of the rules (fractions of the base's top-1).
MATCH_MARGIN = 0.05
DIP_MARGIN = 0.01
FALL_MARGIN = 0.02
BOOST_MARGIN = 0.0
COLLAPSE_BELOW = 0.5
DISSIMILAR_MARGIN = 0.02
MIDDLE, BEFORE, AFTER = (3, 4, 5, 6), (1, 2), (7,)
EARLY, LATE = (1, 2), (6, 7)


@dataclass(frozen=True)
class Estimate:
    """A mean (or a difference of two means) with its one-sided 95% bounds.

    `low`/`high` are None when a group has fewer than 2 nets: no spread to judge with."""

    value: float
    low: float | None
    high: float | None
    nets: str  # how many nets it rests on: "7", or "8 vs 6" for a difference
    #: What else the verdict rests on that the bounds do not show (a dip's other side, judged on
    #: a group of one net), or "".
    note: str = ""

    @property
    def bounded(self) -> bool:
        return self.low is not None


@dataclass(frozen=True)
class ShapeCheck:
    claim: str
    rule: str
    estimate: Estimate | None  # None when the nets it needs were not run
    holds: bool | None

    @property
    def value(self) -> float | None:
        return None if self.estimate is None else self.estimate.value


def _t(df: float) -> float:
    return float(sps.t.ppf(LEVEL, df))


def mean_estimate(values: Sequence[float]) -> Estimate:
    """The mean of `values` with its one-sided 95% Student-t bounds."""
    mean = fmean(values)
    if len(values) < 2:
        return Estimate(mean, None, None, str(len(values)))
    half = _t(len(values) - 1) * math.sqrt(variance(values) / len(values))
    return Estimate(mean, mean - half, mean + half, str(len(values)))


def difference_estimate(a: Sequence[float], b: Sequence[float]) -> Estimate:
    """mean(a) - mean(b) with Welch's one-sided 95% bounds (unequal variances)."""
    diff = fmean(a) - fmean(b)
    nets = f"{len(a)} vs {len(b)}"
    if len(a) < 2 or len(b) < 2:
        return Estimate(diff, None, None, nets)
    va, vb = variance(a) / len(a), variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Estimate(diff, diff, diff, nets)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = _t(df) * se
    return Estimate(diff, diff - half, diff + half, nets)


def dip_estimate(middle: Sequence[float], before: Sequence[float], after: Sequence[float]) -> Estimate:
    """A dip's depth: mean(middle) - mean(before) or mean(middle) - mean(after), whichever is
    nearer to refuting the dip (the higher upper bound; the estimate, where a group has one net).
    The side not shown, when it has no spread (one net at n = 7, as in the demo), is named in
    the estimate's `note`: its verdict rests on that net's estimate, which the bounds shown hide.

    A dip sits below both of its ends.  Against the two ends pooled, a steady fall with n (the
    middle below the start, above the end) could pass as one."""
    sides = {"n = 1, 2": difference_estimate(middle, before), "n = 7": difference_estimate(middle, after)}
    shown = max(sides.values(), key=lambda e: e.value if e.high is None else e.high)
    note = "; ".join(f"against {end}, {e.nets} nets, no spread: judged on its estimate {e.value:+.4f}"
                     for end, e in sides.items() if e is not shown and not e.bounded)
    return replace(shown, note=note)


def _relative(scores: Scores, keep: Callable[[NetName], bool]) -> list[tuple[NetName, float]]:
    """Every net `keep` selects, divided by its own base (skipped when that base is missing)."""
    out = []
    for p, v in parsed(scores):
        if not keep(p):
            continue
        base = scores.get("netbase" if p.family == "random_frozen" else p.target)
        if base:
            out.append((p, v / base))
    return out


def _values(nets: Iterable[tuple[NetName, float]], ns: Sequence[int]) -> list[float]:
    return [v for p, v in nets if p.n in ns]


def _random_split(treatment: str) -> Callable[[NetName], bool]:
    return lambda p: p.random_split and p.treatment == treatment


def shape_checks(scores: Scores) -> list[ShapeCheck]:
    """Every check on `scores` (net name -> best10 top-1), each net relative to its own base."""
    bnb_ft = _relative(scores, _random_split("BnB+"))
    bnb = _relative(scores, _random_split("BnB"))
    anb = _relative(scores, _random_split("AnB"))
    anb_ft = _relative(scores, _random_split("AnB+"))
    frozen = _relative(scores, lambda p: p.family == "random_frozen" and p.n >= 3)
    natman = _relative(scores, lambda p: p.family == "natman_transfer")
    checks = []

    def add(claim: str, rule: str, groups: Sequence[list[float]],
            make: Callable[..., Estimate], test: Callable[[float, float, float], bool]) -> None:
        if not all(groups):
            checks.append(ShapeCheck(claim, rule, None, None))
            return
        e = make(*groups)
        low = e.value if e.low is None else e.low
        high = e.value if e.high is None else e.high
        checks.append(ShapeCheck(claim, rule, e, test(e.value, low, high)))

    add("BnB+ matches its base (the base nets are trained to convergence)",
        f"mean of BnB+ / own base: both 95% bounds within {1 - MATCH_MARGIN:g}..{1 + MATCH_MARGIN:g}",
        [[v for _, v in bnb_ft]], mean_estimate,
        lambda e, lo, hi: 1 - MATCH_MARGIN <= lo and hi <= 1 + MATCH_MARGIN)
    add("BnB dips in the middle (fragile co-adaptation, n = 3..6)",
        "BnB / own base, mean at n=3..6 minus mean at n=1,2, and minus mean at n=7: upper 95% bound of "
        f"each below -{DIP_MARGIN:g} (shown: the one nearer to failing)",
        [_values(bnb, MIDDLE), _values(bnb, BEFORE), _values(bnb, AFTER)], dip_estimate,
        lambda e, lo, hi: hi < -DIP_MARGIN)
    add("AnB falls with n (features become specific)",
        f"AnB / own base, mean at n=6,7 minus mean at n=1,2: upper 95% bound below -{FALL_MARGIN:g}",
        [_values(anb, LATE), _values(anb, EARLY)], difference_estimate,
        lambda e, lo, hi: hi < -FALL_MARGIN)
    add("AnB+ is at or above its base (transfer then fine-tuning helps)",
        f"mean of AnB+ / own base minus 1: lower 95% bound at least {BOOST_MARGIN:g}",
        [[v - 1.0 for _, v in anb_ft]], mean_estimate,
        lambda e, lo, hi: lo >= BOOST_MARGIN)
    add("random frozen layers collapse from n = 3",
        f"mean of nolearn n>=3 / netbase: upper 95% bound below {COLLAPSE_BELOW:g}",
        [[v for _, v in frozen]], mean_estimate,
        lambda e, lo, hi: hi < COLLAPSE_BELOW)
    add("dissimilar tasks transfer worse (man-made/natural vs random halves, n = 6, 7)",
        "AnB / own base at n=6,7, man-made/natural minus random halves: upper 95% bound "
        f"below -{DISSIMILAR_MARGIN:g}",
        [_values(natman, LATE), _values(anb, LATE)], difference_estimate,
        lambda e, lo, hi: hi < -DISSIMILAR_MARGIN)
    return checks
