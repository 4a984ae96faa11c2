"""Nets grouped the way the paper's figures and Table 1 pool them.

Everything downstream works on `Scores` (net name -> best10_top1), so the same code draws and
tabulates the paper's numbers and ours.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from statistics import fmean

from replicate.results.names import NetName, try_parse_name

Scores = Mapping[str, float]


def parsed(scores: Scores) -> list[tuple[NetName, float]]:
    """Every scored net whose name is in the paper's scheme."""
    out = []
    for name, value in sorted(scores.items()):
        if (p := try_parse_name(name)) is not None:
            out.append((p, value))
    return out


def random_split(scores: Scores) -> list[tuple[NetName, float]]:
    """The similar-task experiment: base and transfer nets on the random A/B splits 0-3."""
    return [(p, v) for p, v in parsed(scores) if p.random_split]


def by_treatment(scores: Scores) -> dict[tuple[str, int], list[tuple[NetName, float]]]:
    """Random-split nets keyed by (treatment, n); base nets are ("baseB", 0)."""
    groups: dict[tuple[str, int], list[tuple[NetName, float]]] = defaultdict(list)
    for p, v in random_split(scores):
        groups[(p.treatment, p.n)].append((p, v))
    return dict(groups)


def base_mean(scores: Scores) -> float | None:
    """baseB: the mean of every base net on the random splits (8 in the paper)."""
    values = [v for p, v in random_split(scores) if p.family == "base"]
    return fmean(values) if values else None


def base_of(scores: Scores, net: NetName) -> float | None:
    """The score of the base net trained on `net`'s target dataset (its own control)."""
    return scores.get(net.target)


def transfer_gaps(scores: Scores, relative: bool = False) -> dict[str, dict[int, list[float]]]:
    """Figure 3 (bottom): every frozen-transfer net minus its own base, by n, for the similar
    (random split AnB), dissimilar (man-made/natural) and random-filter (nolearn vs netbase)
    treatments.  `relative`: the ratio to the base minus 1 instead of the difference."""
    def gap(value: float, base: float) -> float:
        return value / base - 1.0 if relative else value - base

    out: dict[str, dict[int, list[float]]] = {"similar": defaultdict(list),
                                              "dissimilar": defaultdict(list),
                                              "random": defaultdict(list)}
    for p, v in parsed(scores):
        if p.treatment == "AnB" and p.random_split:
            key, base = "similar", base_of(scores, p)
        elif p.family == "natman_transfer":
            key, base = "dissimilar", base_of(scores, p)
        elif p.family == "random_frozen":
            key, base = "random", scores.get("netbase")
        else:
            continue
        if base is not None and base > 0:
            out[key][p.n].append(gap(v, base))
    return {k: dict(v) for k, v in out.items()}
