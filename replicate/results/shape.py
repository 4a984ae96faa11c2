"""The paper's qualitative claims, checked on any set of scores (the paper's or ours).

A scaled replication cannot match the paper's numbers, but it can show (or fail to show) the
paper's shape: the fragile co-adaptation dip of BnB, AnB falling with n, the AnB+ boost, the
collapse of random frozen layers, dissimilar tasks transferring worse.  Each check states its
rule, so a reader sees exactly why a claim is said to hold or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean

from replicate.results.groups import Scores, base_mean, by_treatment, parsed


@dataclass
class ShapeCheck:
    claim: str
    rule: str
    value: float | None  # the quantity the rule tests, None when the nets are missing
    holds: bool | None


def _mean_by_n(scores: Scores, treatment: str) -> dict[int, float]:
    groups = by_treatment(scores)
    return {n: fmean(v for _, v in nets) for (t, n), nets in groups.items() if t == treatment}


def shape_checks(scores: Scores) -> list[ShapeCheck]:
    """Every check on `scores` (net name -> best10 top-1), relative to baseB where it applies."""
    base = base_mean(scores)
    rel = {t: {n: v / base for n, v in _mean_by_n(scores, t).items()} if base else {}
           for t in ("BnB", "BnB+", "AnB", "AnB+")}
    checks = []

    def add(claim: str, rule: str, value: float | None, test: bool | None) -> None:
        checks.append(ShapeCheck(claim, rule, value, None if value is None else test))

    bnb_ft = fmean(rel["BnB+"].values()) if rel["BnB+"] else None
    add("BnB+ matches its base (the base nets are trained to convergence)",
        "mean over n of BnB+ / baseB within 0.95..1.05", bnb_ft,
        bnb_ft is not None and 0.95 <= bnb_ft <= 1.05)
    bnb = rel["BnB"]
    if all(n in bnb for n in range(1, 8)):
        dip = min(bnb[n] for n in range(3, 7)) - fmean([bnb[1], bnb[2], bnb[7]])
    else:
        dip = None
    add("BnB dips in the middle (fragile co-adaptation, n = 3..6)",
        "min of BnB/baseB over n=3..6 minus the mean at n=1,2,7 is below -0.01", dip,
        dip is not None and dip < -0.01)
    anb = rel["AnB"]
    fall = anb[7] - anb[1] if 1 in anb and 7 in anb else None
    add("AnB falls with n (features become specific)", "AnB/baseB at n=7 minus at n=1 is below -0.02",
        fall, fall is not None and fall < -0.02)
    boost = fmean(rel["AnB+"].values()) - 1.0 if rel["AnB+"] else None
    add("AnB+ is at or above its base (transfer then fine-tuning helps)",
        "mean over n of AnB+/baseB minus 1 is at least 0", boost, boost is not None and boost >= 0)
    whole = scores.get("netbase")
    frozen = [v for p, v in parsed(scores) if p.family == "random_frozen" and p.n >= 3]
    collapse = fmean(frozen) / whole if frozen and whole else None
    add("random frozen layers collapse from n = 3", "mean nolearn n>=3 / netbase is below 0.5",
        collapse, collapse is not None and collapse < 0.5)
    natman = {p.n: v / scores[p.target] for p, v in parsed(scores)
              if p.family == "natman_transfer" and scores.get(p.target)}
    worse = (natman[7] - 1.0) - (anb[7] - 1.0) if 7 in natman and 7 in anb else None
    add("dissimilar tasks transfer worse (man-made/natural vs random halves, n = 7)",
        "natman AnB/base minus random-split AnB/baseB at n=7 is below 0", worse,
        worse is not None and worse < 0)
    return checks
