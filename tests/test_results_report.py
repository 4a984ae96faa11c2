"""End to end: `python -m replicate results` on the authors' raw logs and on our run dirs."""

from __future__ import annotations

import csv
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from replicate.cli import main
from replicate.errors import ReplicateError
from replicate.results.findings import claims_table
from replicate.results.reference import load_reference
from replicate.results.report import _estimate
from replicate.results.runs import find_runs
from replicate.results.shape import shape_checks
from replicate.results.stats import PAPER_COLUMNS
from results_support import REFERENCE, load_curves, log_2014, log_modern, write_gz

ROOT = Path(__file__).parent.parent
CURVES = load_curves()
RAW = ["half0A", "half0B", "half1A", "half1B", "transfer0A0B_1_5", "transfer-ft0A0B_1_5",
       "transfer-ft0A0A_1_5", "transfer-ft1A1B_1_3", "transfer-ft1A1A_1_3", "halfnatmanB",
       "transfernatmanAB_1_7", "netbase", "nolearn_1_2", "reduced-0050", "reduced-1300"]


def _reference() -> dict[str, dict[str, str]]:
    with open(REFERENCE, newline="") as handle:
        return {r["name"]: r for r in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def raw_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The authors' layout: `<name>.log.gz` files, one `<name>/` folder, one broken log."""
    root = tmp_path_factory.mktemp("raw")
    for name in RAW:
        text = log_2014(name, CURVES[name], display=1000)
        if name == "transfer0A0B_1_5":
            (root / name).mkdir()
            (root / name / "caffe.INFO.log").write_text(text)
        else:
            write_gz(root / f"{name}.log.gz", text)
    data = gzip.compress(log_2014("half2A", CURVES["half2A"], display=1000).encode())
    (root / "half2A.log.gz").write_bytes(data[: len(data) // 3])
    (root / "README.txt").write_text("not a log\n")
    return root


@pytest.fixture(scope="module")
def raw_cli(raw_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`python -m replicate results` on the raw logs, run as a user runs it: the report folder
    and what it printed."""
    out = tmp_path_factory.mktemp("report")
    done = subprocess.run([sys.executable, "-m", "replicate", "results", "--runs", str(raw_logs),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


@pytest.fixture(scope="module")
def raw_report(raw_cli: tuple[Path, str]) -> Path:
    return raw_cli[0]


def test_raw_logs_found_and_broken_one_reported(raw_logs: Path, capsys) -> None:
    runs = find_runs(raw_logs)
    assert sorted(n.name for n in runs.nets) == sorted(RAW)
    assert [(s.name, s.kind) for s in runs.skipped] == [("half2A", "raw log")]
    assert "gzip data broken" in runs.skipped[0].reason
    assert not runs.demo


def test_results_csv_equals_the_papers_rows(raw_report: Path) -> None:
    """Through logs, parser, statistics and csv writer, the authors' numbers come back."""
    ref = _reference()
    with open(raw_report / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == sorted(RAW)
    for row in rows:
        assert {c: row[c] for c in PAPER_COLUMNS} == ref[row["name"]]
        assert row["kind"] == "raw log" and row["format"] == "caffe-2014"


def test_report_md_puts_numbers_beside_the_paper(raw_report: Path) -> None:
    md = (raw_report / "report.md").read_text()
    assert "15 raw Caffe logs" not in md and "16 raw Caffe logs" in md
    assert "1 skipped as corrupt or truncated" in md
    assert "| half2A |" in md and "gzip data broken" in md
    # per-net rows: ours, paper, difference (identical here)
    assert "| half0A | 450 / 450 | 0.6151 | 0.6151 | +0.0000 |" in md
    assert "## Table 1" in md and "| 5-7 |" in md and "2.1%" in md
    assert "| layers | over baseB: ours | paper | printed | over BnB+: ours | paper | printed |" in md
    assert "**printed**: the paper's Table 1 as printed" in md
    assert "no loss output" not in md and "Every net:" not in md  # the 2014 logs have their loss
    assert "Wilcoxon" in md and "95% low" in md
    assert "Shapes, not numbers" not in md
    assert "Schedules not the paper's" not in md  # the authors' own logs ran the authors' schedules
    for fig in ("figure2", "figure3", "figure_reduced", "curves"):
        assert f"![{fig}]({fig}.png)" in md


def test_curves_csv_holds_every_validation_point(raw_report: Path) -> None:
    with open(raw_report / "curves.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(len(CURVES[name]) for name in RAW)
    half0a = [(int(r["iter"]), float(r["top1"]), float(r["loss"])) for r in rows
              if r["name"] == "half0A"]
    assert half0a == [(i, float(t), float(l)) for i, t, l in CURVES["half0A"]]


def test_figures_are_written(raw_report: Path) -> None:
    for fig in ("figure2", "figure3", "figure_reduced", "curves"):
        path = raw_report / f"{fig}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 30_000


def _run_dir(root: Path, name: str, points: list[tuple[int, float, float | None]],
             max_iter: int = 1000, metrics_edit=None, arch: str = "demo") -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(
        {"name": name, "arch": arch, "max_iter": max_iter, "val_loss": False}))
    (folder / "train.log").write_text(log_modern(points, initial=(0.05, None)))
    records = [{"iter": 0, "kind": "test", "net": 0, "outputs": {"accuracy": 0.05}}]
    records += [{"iter": i, "kind": "test", "net": 0, "outputs": {"accuracy": t}}
                for i, t, _ in points]
    records.append({"kind": "done", "iter": points[-1][0]})
    if metrics_edit:
        metrics_edit(records)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _curve(top: float, n: int = 10) -> list[tuple[int, float, float | None]]:
    return [(100 * i, round(top * i / n, 5), None) for i in range(1, n + 1)]


def test_demo_run_dirs_compare_shapes(tmp_path: Path, capsys) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for name, top in (("half0A", 0.30), ("half0B", 0.28), ("transfer0A0B_1_3", 0.26),
                      ("transfer-ft0A0B_1_3", 0.31), ("transfer0B0B_1_3", 0.27)):
        _run_dir(runs_dir, name, _curve(top))
    _run_dir(runs_dir, "transfer0A0B_1_5", _curve(0.2, n=6))  # still running: 600 of 1000

    def disagree(records: list[dict]) -> None:
        records[3]["outputs"]["accuracy"] += 0.01
    _run_dir(runs_dir, "transfer0A0B_1_7", _curve(0.2), metrics_edit=disagree)
    (runs_dir / "transfer0A0B_1_6").mkdir()
    (runs_dir / "transfer0A0B_1_6" / "manifest.json").write_text('{"name": "transfer0A0B_1_6"}')
    (runs_dir / "plan.json").write_text("{}")
    out = tmp_path / "report"
    assert main(["results", "--runs", str(runs_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "found 7 run dirs and 0 raw Caffe logs" in printed
    assert "skipped transfer0A0B_1_7" in printed and "iteration 300" in printed
    assert "compares shapes" in printed and str(out / "report.md") in printed
    md = (out / "report.md").read_text()
    assert "Shapes, not numbers" in md and "scaled demo architecture" in md
    assert "Schedules differ" not in md  # every net had 1000 iterations
    assert "transfer0A0B_1_6" in md.split("Not started")[1]
    # No reduced-data, natural/man-made or random-frozen net among them: no empty panel, but why.
    assert not (out / "figure_reduced.png").exists() and "![figure_reduced]" not in md
    assert "- figure_reduced.png is not drawn: none of these runs belongs in it ('reduced-data nets')." in md
    assert ("- figure3.png leaves out its rows 'man-made/natural transfer (AnB)' and 'random, untrained "
            "layers 1..n': none of these runs belongs there.") in md
    assert "incomplete: stopped at 600 of 1000" in md
    assert "only 6 validation points" in md
    # Clutter left out: the relative table shows no loss column, so no note about a missing loss;
    # the printed Table 1 (top-1 points) is said once in words, not as a column of dashes.
    assert "no loss output" not in md
    table1 = md.split("## Table 1")[1].split("\n## ")[0]
    assert "| layers | over baseB: ours | paper | over BnB+: ours | paper | our nets (AnB+ / base / BnB+) |" in table1
    assert "The paper prints these boosts in top-1 points: +1.6 / +1.8 / +2.1 % over baseB and +1.4 / +1.4 / +1.7 % over BnB+." in table1
    assert "(csv)" not in md and "(printed)" not in md
    # transfer0A0B_1_3 relative to its own base (half0B), beside the paper's ratio
    ours = 0.26 * (sum(range(1, 11)) / 10) / 10 / (0.28 * (sum(range(1, 11)) / 10) / 10)
    paper = _reference()
    paper_ratio = float(paper["transfer0A0B_1_3"]["best10_top1"]) / float(paper["half0B"]["best10_top1"])
    assert f"| {ours:.3f} | {paper_ratio:.3f} |" in md
    with open(out / "results.csv", newline="") as handle:
        rows = {r["name"]: r for r in csv.DictReader(handle)}
    assert rows["transfer0A0B_1_5"]["complete"] == "false"
    assert rows["half0A"]["complete"] == "true" and rows["half0A"]["min10_valid_loss"] == ""
    assert rows["half0A"]["format"] == "metrics.jsonl" and rows["half0A"]["points"] == "10"


def test_a_demo_without_the_bnb_dip_says_it_was_not_reproduced_at_demo_scale(tmp_path: Path) -> None:
    """The note comes with demo runs whose dip check says no, not with a dip or with paper-scale runs."""
    def report(ratios: dict[int, float], arch: str) -> str:
        runs_dir = tmp_path / f"{arch}{sorted(ratios.values())}"
        runs_dir.mkdir()
        _run_dir(runs_dir, "half0A", _curve(0.5), arch=arch)
        for n, r in ratios.items():
            _run_dir(runs_dir, f"transfer0A0A_1_{n}", _curve(0.5 * r), arch=arch)
        out = runs_dir / "report"
        assert main(["results", "--runs", str(runs_dir), "--out", str(out)]) == 0
        return (out / "report.md").read_text()

    flat = {n: 1.0 + 0.001 * n for n in range(1, 8)}
    dip = {1: 1.0, 2: 0.999, 3: 0.95, 4: 0.94, 5: 0.951, 6: 0.96, 7: 1.001}
    md = report(flat, "demo")
    assert "**The BnB dip was not reproduced at demo scale**" in md and "The full-scale grid" in md
    assert "not reproduced at demo scale" not in report(dip, "demo")
    assert "not reproduced at demo scale" not in report(flat, "caffenet")


def test_a_longer_base_schedule_is_said_as_a_departure_from_the_paper(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    for name in ("half0A", "half0B"):
        _run_dir(runs_dir, name, _curve(0.3, n=20), max_iter=2000)
    for name in ("transfer0A0B_1_3", "transfer-ft0A0B_1_3"):
        _run_dir(runs_dir, name, _curve(0.3))
    out = tmp_path / "report"
    assert main(["results", "--runs", str(runs_dir), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert ("**Schedules differ from the paper's:** the base nets and netbase trained 2,000 "
            "iterations, the nets that copy them or are measured against them 1,000;") in md


def _short_caffenets(runs_dir: Path) -> None:
    """Four CaffeNets of the paper's names that all trained 1,200 iterations: three asked for
    1,200, transfer0A0B_1_5 for 2,000 (so it is incomplete)."""
    for name in ("half0A", "half0B", "transfer0A0B_1_3"):
        _run_dir(runs_dir, name, _curve(0.6, n=12), max_iter=1200, arch="caffenet")
    _run_dir(runs_dir, "transfer0A0B_1_5", _curve(0.6, n=12), max_iter=2000, arch="caffenet")


def test_a_note_true_of_every_net_is_said_once_not_on_every_row(tmp_path: Path) -> None:
    # Full-scale names and no loss output anywhere: the loss columns are shown, so the missing loss
    # is worth saying, once; the one incomplete net keeps its own note on its row.
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    _short_caffenets(runs_dir)
    out = tmp_path / "report"
    assert main(["results", "--runs", str(runs_dir), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.count("no loss output") == 1 and "Every net: validation net has no loss output." in md
    rows = [line for line in md.split("## Every net")[1].splitlines() if line.startswith("| ")]
    assert rows[0].endswith("| notes |") and rows[-1].startswith("| transfer0A0B_1_5 |")
    assert rows[-1].endswith("| incomplete: stopped at 1200 of 2000 |")
    assert [r.endswith("|  |") for r in rows[1:]] == [True, True, True, False]  # no note of their own


def test_nets_compared_with_the_paper_on_another_schedule_are_named(tmp_path: Path) -> None:
    # CaffeNets of the paper's names trained 1,200 and 2,000 iterations: their absolute numbers sit
    # beside 450,000-iteration ones, so the report must say the gap includes the schedule.  The
    # reduced-data net matches its paper namesake's 200,000 and is not named.
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    _short_caffenets(runs_dir)
    _run_dir(runs_dir, "reduced-0050", [(i * 20_000, 0.1, None) for i in range(1, 11)],
             max_iter=200_000, arch="caffenet")
    out = tmp_path / "report"
    assert main(["results", "--runs", str(runs_dir), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert ("**Schedules not the paper's (4 nets):** these ran another number of iterations than "
            "the authors' nets of the same name") in md
    assert ("1,200 against the paper's 450,000: half0A, half0B, transfer0A0B_1_3; 2,000 against "
            "the paper's 450,000: transfer0A0B_1_5.") in md
    assert "reduced-0050" not in md.split("## Every net")[0].split("Schedules not the paper's")[1]


def test_single_run_dir_and_unknown_names(tmp_path: Path) -> None:
    folder = _run_dir(tmp_path, "my_experiment", _curve(0.5))
    runs = find_runs(folder)
    assert [n.name for n in runs.nets] == ["my_experiment"] and runs.nets[0].parsed is None
    out = tmp_path / "report"
    assert main(["results", "--runs", str(folder), "--out", str(out)]) == 0
    assert "| my_experiment |" in (out / "report.md").read_text()


def test_empty_or_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ReplicateError, match="no run dirs"):
        find_runs(tmp_path)
    with pytest.raises(ReplicateError, match="no such folder"):
        find_runs(tmp_path / "nope")


def test_an_out_that_is_a_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["results", "--runs", str(tmp_path / "none"), "--out", str(afile)]) == 2
    assert capsys.readouterr().err == f"error: --out {afile}: is a file; the report is a folder (default: report/)\n"
    assert main(["results", "--runs", str(tmp_path / "none"), "--out", str(afile / "sub")]) == 2
    assert capsys.readouterr().err == (f"error: --out {afile}/sub: cannot be made: {afile} is a file; "
                                       "the report is a folder (default: report/)\n")
    assert afile.read_text() == "mine"


def test_command_line(raw_cli: tuple[Path, str], tmp_path: Path, capsys) -> None:
    out, printed = raw_cli
    assert "found 0 run dirs and 16 raw Caffe logs" in printed
    assert f"report: {out / 'report.md'}" in printed
    # It ends with the paper's claims checked on the runs read (here 16 of the authors' own logs).
    ending = printed[printed.index("The paper's claims on these runs"):].splitlines()
    assert len(ending) == 9 and ending[-1].startswith("2 of the paper's 6 claims hold on these runs (4 not judged")
    assert main(["results", "--runs", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such folder" in err


def test_a_figure_draws_only_the_rows_some_run_of_ours_belongs_in(tmp_path: Path) -> None:
    from matplotlib.image import imread

    from replicate.results.figures import figure3, figure_reduced

    paper = {name: float(row["best10_top1"]) for name, row in _reference().items()}
    ours = {"half0A": 0.30, "half0B": 0.28, "transfer0A0B_1_3": 0.26, "transfer0B0B_1_3": 0.27}
    (tmp_path / "figure_reduced.png").write_bytes(b"an earlier report's")
    assert figure_reduced(paper, ours, tmp_path / "figure_reduced.png", True).path is None
    assert not (tmp_path / "figure_reduced.png").exists()  # not left beside a report that omits it
    drawn = figure3(paper, ours, tmp_path / "figure3.png", True)
    assert drawn.left_out == ("man-made/natural transfer (AnB)", "random, untrained layers 1..n")
    assert imread(drawn.path).shape[0] == round(3.6 * 110)  # one row of panels, not three
    assert figure3(paper, paper, tmp_path / "all.png").left_out == ()
    assert imread(tmp_path / "all.png").shape[0] == round(3 * 3.6 * 110)


def test_figure3_draws_only_the_natman_directions_that_were_run(tmp_path: Path) -> None:
    """The demo runs natman transfers one way (man-made to natural); the other way, of which
    only its base exists, gets neither a line nor a legend entry."""
    import matplotlib.pyplot as plt

    from replicate.results.figures import _natman

    scores = {"halfnatmanA": 0.8, "halfnatmanB": 0.9}
    scores.update({f"transfernatmanBA_1_{n}": 0.8 - 0.03 * n for n in range(1, 8)})
    fig, ax = plt.subplots()
    assert _natman(ax, scores, True)
    assert [line.get_label() for line in ax.get_lines()] == [
        "man-made -> natural (transfernatmanBA; n=0: base)"]
    plt.close(fig)


@pytest.mark.parametrize("folder", ["demo", "demo_long"])
def test_the_shipped_demo_reports_are_what_the_code_makes_of_their_results(folder: str) -> None:
    """results/demo and results/demo_long hold no runs, so they cannot be rebuilt here; what can be
    checked is that their claims follow today's rules and their figures are the ones the report
    names.  (Both reports once outlived a change of the figures, and a change of the dip's rule.)"""
    root = ROOT / "results" / folder
    with open(root / "results.csv", newline="") as handle:
        scores = {row["name"]: float(row["best10_top1"]) for row in csv.DictReader(handle)}
    paper = {name: net.best10_top1 for name, net in load_reference().items()}
    checks, paper_checks = shape_checks(scores), shape_checks(paper)
    md = (root / "report.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    for check, paper_check in zip(checks, paper_checks):
        row = rows.get(check.claim, "")
        assert row.startswith(f"| {check.claim} | {check.rule} | {_estimate(paper_check)} |"), (check.claim, row)
        assert f"| {_estimate(check)} |" in row, (check.claim, row)
    named = set(re.findall(r"!\[[^]]*\]\(([^)]+)\)", md))
    assert named == {p.name for p in root.glob("*.png")}
    if folder == "demo":  # the README shows the demo's on-screen ending
        readme = (ROOT / "README.md").read_text()
        assert all(line in readme for line in claims_table(checks, paper_checks))
