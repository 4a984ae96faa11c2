"""Table 1 from the paper's csv, and the statistics the paper did not give."""

from __future__ import annotations

from statistics import fmean

import pytest

from replicate.results.groups import base_mean, transfer_gaps
from replicate.results.inference import boost_tests, split_intervals, t_interval
from replicate.results.reference import load_reference
from replicate.results.table import PAPER_TABLE1, table1
from results_support import REFERENCE

PAPER = {name: net.best10_top1 for name, net in load_reference(REFERENCE).items()}


def test_table1_reproduces_the_paper_within_rounding() -> None:
    rows = table1(PAPER)
    assert [(r.lo, r.hi) for r in rows] == [(1, 7), (3, 7), (5, 7)]
    for r in rows:
        over_base, over_selffer = PAPER_TABLE1[(r.lo, r.hi)]
        assert round(r.over_base, 3) == pytest.approx(over_base)
        assert round(r.over_selffer, 3) == pytest.approx(over_selffer)
        assert r.n_base == 8
    assert [r.n_transfer_ft for r in rows] == [10, 7, 3]
    assert [r.n_selffer_ft for r in rows] == [10, 8, 5]


def test_table1_relative_and_missing_controls() -> None:
    rel = table1(PAPER, relative=True)
    assert rel[0].over_base == pytest.approx(table1(PAPER)[0].over_base / base_mean(PAPER))
    only_ft = {k: v for k, v in PAPER.items() if k.startswith("transfer-ft0A0B")}
    row = table1(only_ft)[0]
    assert row.over_base is None and row.over_selffer is None and row.n_transfer_ft == 7


def test_headline_drops_at_layer_7() -> None:
    """Paper: 8% drop for similar tasks, 25% for man-made/natural at n = 7."""
    gaps = transfer_gaps(PAPER)
    assert round(fmean(gaps["similar"][7]), 2) == -0.08
    assert round(fmean(gaps["dissimilar"][7]), 2) == -0.25
    assert len(gaps["similar"][7]) == 8 and len(gaps["random"][3]) == 1


def test_t_interval_by_hand() -> None:
    mean, low, high = t_interval([1.0, 2.0, 3.0, 4.0])
    # t(0.975, 3) = 3.182446; sd = 1.290994
    assert mean == 2.5
    assert high - mean == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-6)
    assert low == pytest.approx(2 * mean - high)
    assert t_interval([0.5]) == (0.5, None, None)


def test_split_intervals_average_directions_within_a_split() -> None:
    intervals = {(i.treatment, i.n): i for i in split_intervals(PAPER)}
    base = intervals[("baseB", 0)]
    assert base.splits == 4
    per_split = [fmean([PAPER[f"half{s}A"], PAPER[f"half{s}B"]]) for s in "0123"]
    assert base.mean == pytest.approx(fmean(per_split))
    assert base.low < base.mean < base.high
    assert intervals[("AnB+", 1)].splits == 1 and intervals[("AnB+", 1)].low is None


def test_boost_tests_on_the_paper() -> None:
    over_base, over_selffer = boost_tests(PAPER)
    assert over_base.pairs == 10  # every AnB+ net against the base of its own target
    # transfer-ft{s}A{s}B_1_n: target half{s}B
    expected = fmean(PAPER[n] - PAPER[f"half{n[11]}{n[14]}"]
                     for n in PAPER if n.startswith("transfer-ft") and n[12] != n[14])
    assert over_base.mean_diff == pytest.approx(expected)
    assert over_base.mean_diff > 0 and over_base.t_p < 0.05
    assert over_selffer.pairs == 8  # (split, n) cells with both AnB+ and BnB+
    assert 0 < over_base.wilcoxon_p <= 1
