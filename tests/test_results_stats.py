"""The paper's statistics and names: every row of results/paper_reference.csv from the curves."""

from __future__ import annotations

import csv

import pytest

from replicate.errors import ReplicateError
from replicate.results.logs import ValPoint
from replicate.results.names import parse_name
from replicate.results.reference import load_paper_curves, load_reference
from replicate.results.stats import PAPER_COLUMNS, best_k_mean, net_stats, paper_row
from results_support import REFERENCE


def _rows() -> list[dict[str, str]]:
    with open(REFERENCE, newline="") as handle:
        return list(csv.DictReader(handle))


def test_all_148_rows_recomputed_from_the_curves() -> None:
    """best10_top1, final_top1, final_iter, min10_valid_loss and points, to the csv's text."""
    curves = load_paper_curves()
    rows = _rows()
    assert len(rows) == 148 and set(curves) == {r["name"] for r in rows}
    assert sum(len(c) for c in curves.values()) == 62857
    for row in rows:
        p = parse_name(row["name"])
        assert paper_row(row["name"], p.family, p.split, p.n, net_stats(curves[row["name"]])) == row


def test_names_parse_to_the_csv_family_split_n() -> None:
    for row in _rows():
        p = parse_name(row["name"])
        assert (p.family, p.split, str(p.n)) == (row["family"], row["split"], row["n"])


@pytest.mark.parametrize("name, expected", [
    ("half0A", ("base", "0", 0, "baseB", "half0A", None)),
    ("halfnatmanB", ("base", "natman", 0, "baseB", "halfnatmanB", None)),
    ("transfer0A0B_1_3", ("transfer", "0", 3, "AnB", "half0B", "half0A")),
    ("transfer2B2B_1_5", ("selffer", "2", 5, "BnB", "half2B", "half2B")),
    ("transfer-ft1A1B_1_4", ("transfer_ft", "1", 4, "AnB+", "half1B", "half1A")),
    ("transfer-ft0A0A_1_7", ("selffer_ft", "0", 7, "BnB+", "half0A", "half0A")),
    ("transfernatmanAB_1_7", ("natman_transfer", "natman", 7, "AnB", "halfnatmanB", "halfnatmanA")),
    ("transfernatmanAA_1_2", ("natman_selffer", "natman", 2, "BnB", "halfnatmanA", "halfnatmanA")),
    ("nolearn_1_2", ("random_frozen", "", 2, "random", "whole", None)),
    ("netbase", ("whole", "", 0, "whole", "whole", None)),
    ("reduced-0050", ("reduced", "0050", 0, "reduced", "reduced0050", None)),
    ("reduced-1300", ("reduced", "1300", 0, "reduced", "whole", None)),
])
def test_name_parsing(name: str, expected: tuple) -> None:
    p = parse_name(name)
    assert (p.family, p.split, p.n, p.treatment, p.target, p.source) == expected


@pytest.mark.parametrize("name", ["half4A", "transfer0A1B_1_3", "transfer0A0B_1_8", "nolearn_1_0",
                                  "reduced-50", "half0AB", "base"])
def test_bad_names_raise(name: str) -> None:
    with pytest.raises(ReplicateError, match=repr(name)):
        parse_name(name)


def test_few_points_average_what_exists_and_are_flagged() -> None:
    points = [ValPoint(0, 0.001, 7.0)] + [ValPoint(100 * i, 0.1 * i, 3.0 - 0.2 * i)
                                          for i in range(1, 5)]
    s = net_stats(points)
    # iteration 0 (before any update; 2014 Caffe never tested there) is left out
    assert s.points == 4 and s.few_points
    assert s.best10_top1 == pytest.approx(0.25)
    assert s.min10_valid_loss == pytest.approx(2.5)
    assert (s.final_top1, s.final_iter) == (0.4, 400)


def test_best10_uses_the_ten_highest_anywhere_in_the_run() -> None:
    values = [0.5] * 10 + [0.9, 0.1] + [0.6] * 9
    assert best_k_mean(values) == pytest.approx((0.9 + 9 * 0.6) / 10)
    assert best_k_mean(values, highest=False) == pytest.approx((0.1 + 9 * 0.5) / 10)


def test_no_loss_output_gives_no_min10_loss() -> None:
    s = net_stats([ValPoint(100 * i, 0.1, None) for i in range(1, 12)])
    assert s.min10_valid_loss is None and not s.few_points
    assert paper_row("x", "", "", 0, s)["min10_valid_loss"] == ""


def test_only_iteration_zero_is_an_error() -> None:
    with pytest.raises(ValueError, match="no validation points after iteration 0"):
        net_stats([ValPoint(0, 0.001, 6.9)])


def test_reference_loads_and_rejects_missing_columns(tmp_path) -> None:
    ref = load_reference(REFERENCE)
    assert len(ref) == 148 and ref["half0A"].best10_top1 == 0.61510
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(c for c in PAPER_COLUMNS if c != "points") + "\n")
    with pytest.raises(ReplicateError, match="missing columns points"):
        load_reference(bad)
    with pytest.raises(ReplicateError, match="cannot read"):
        load_reference(tmp_path / "none.csv")
    with pytest.raises(ReplicateError, match="cannot read the paper's curves"):
        load_paper_curves(bad)
