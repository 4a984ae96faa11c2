"""Checks `results` on the authors' whole release against the authors' own numbers.

Why: the release (github.com/yosinski/convnet_transfer, commit 9838c27, its `results/` folder:
148 logged nets in 354 job logs, 79 MB of gzip, 6.6 million lines) is too big for CI and
states no licence, so CI reads three of its nets rebuilt from facts of their logs
(tests/test_results_release.py, tests/release_support.py).  This reads every real net as
`results --runs` does and compares:
- each validation curve with results/original_curves.csv.gz (iteration, top-1, loss);
- each net's best10 (mean of the 10 highest top-1 values) with the one computed from those
  curves, and with results/paper_reference.csv (5 decimals);
- Table 1 and the PNGs of Figures 2 and 3 drawn from the release with those drawn from
  results/paper_reference.csv.  The figures are compared pixel by pixel with the release's
  best10 rounded to 5 decimals as results.csv and paper_reference.csv write them; unrounded,
  the up to 5e-6 of rounding moves antialiased edges of some markers (counted, not failed).

Get it with `git clone https://github.com/yosinski/convnet_transfer`; run (from the repo root;
about a minute of CPU):
  python tools/check_release.py convnet_transfer/results
It exits 1 when a check fails.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np

from replicate.results.figures import figure2, figure3
from replicate.results.reference import load_paper_curves, load_reference
from replicate.results.runs import find_runs
from replicate.results.stats import net_stats
from replicate.results.table import table1

TOLERANCE = 2e-4


def _pixels_differ(draw, paper: dict[str, float], ours: dict[str, float], folder: Path) -> int:
    """How many pixels of the figure drawn from `ours` differ from the one drawn from `paper`
    (both beside the paper's, as the report draws them)."""
    a, b = folder / "from_release.png", folder / "from_reference.png"
    draw(paper, ours, a)
    draw(paper, paper, b)
    x, y = mpimg.imread(a), mpimg.imread(b)
    return -1 if x.shape != y.shape else int(np.any(x != y, axis=-1).sum())


def main(release: str) -> int:
    runs = find_runs(release)
    reference = load_reference()
    curves = load_paper_curves()
    ours = {n.name: n.stats.best10_top1 for n in runs.nets}
    paper = {name: p.best10_top1 for name, p in reference.items()}
    same_curve = [n.name for n in runs.nets if n.name in curves and
                  [(p.iter, p.top1, p.loss) for p in n.curve.val] ==
                  [(p.iter, p.top1, p.loss) for p in curves[n.name]]]
    vs_curves = max(abs(ours[name] - net_stats(points).best10_top1)
                    for name, points in curves.items() if name in ours)
    vs_csv = max(abs(ours[name] - paper[name]) for name in paper if name in ours)
    rows = [(a.over_base - b.over_base, a.over_selffer - b.over_selffer)
            for a, b in zip(table1(ours), table1(paper))]
    table_gap = max(abs(d) for row in rows for d in row)
    rounded = {name: round(value, 5) for name, value in ours.items()}
    with tempfile.TemporaryDirectory() as tmp:
        pixels = {(fig.__name__, exact): _pixels_differ(fig, paper, ours if exact else rounded,
                                                        Path(tmp))
                  for fig in (figure2, figure3) for exact in (False, True)}
    left_out = sum(len(n.curve.left_out) for n in runs.nets)
    lost = sum(1 for n in runs.nets for item in n.curve.left_out if item.lost)
    print(f"{len(runs.nets)} nets read, {len(runs.skipped)} skipped, "
          f"{len(runs.not_started)} not started; {left_out} segments or tests left out "
          f"({lost} tests lost)")
    print(f"curves equal to original_curves.csv.gz: {len(same_curve)} of {len(curves)}")
    print(f"best10, largest difference: {vs_curves:.2g} from the authors' curves, "
          f"{vs_csv:.2g} from paper_reference.csv (5 decimals)")
    print(f"Table 1, largest difference from paper_reference.csv: {table_gap:.2g}")
    for fig in ("figure2", "figure3"):
        print(f"{fig}: pixels that differ from the one drawn from paper_reference.csv: "
              f"{pixels[(fig, False)]} (best10 to 5 decimals), {pixels[(fig, True)]} (unrounded)")
    good = (not runs.skipped and set(ours) == set(paper) and len(same_curve) == len(curves)
            and max(vs_curves, vs_csv, table_gap) <= TOLERANCE
            and pixels[("figure2", False)] == 0 and pixels[("figure3", False)] == 0)
    print("OK" if good else "FAILED")
    return 0 if good else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} <release>/results")
    sys.exit(main(sys.argv[1]))
