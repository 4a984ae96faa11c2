"""The authors' release as published: three of its nets rebuilt job log by job log from the
facts of their real logs and the authors' curves (tests/release_support.py; why not the real
files: tests/data/convnet_transfer/README.md), and the restart patterns of the rest of the
release rebuilt from the authors' real curves."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import pytest

from replicate.cli import main
from replicate.results.logs import (FORMAT_2014, LogError, Segment, chronological, merge_segments,
                                    parse_lines, parse_segments, read_log)
from replicate.results.reference import load_paper_curves
from replicate.results.runs import Runs, find_runs
from replicate.results.stats import PAPER_COLUMNS, paper_row
from release_support import SOLVER, write_release
from results_support import REFERENCE, load_curves, log_2014, log_modern

NETS = ["nolearn_1_2", "transfer-ft0A0B_1_5", "transfer0A0B_1_5"]
PAPER = load_paper_curves()
CURVES = load_curves()


def _reference() -> dict[str, dict[str, str]]:
    with open(REFERENCE, newline="") as handle:
        return {r["name"]: r for r in csv.DictReader(handle)}


def _points(points) -> list[tuple[int, float, float | None]]:
    return [(p.iter, p.top1, p.loss) for p in points]


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three nets' folders, written once for the module (about a second)."""
    return write_release(tmp_path_factory.mktemp("release") / "results")


def _jobs(release_dir: Path, net: str) -> list[Path]:
    """The net's job logs, oldest job first."""
    return sorted((release_dir / net).glob("*.o*.gz"),
                  key=lambda p: int(p.name.split(".o")[1][:-3]))


@pytest.fixture(scope="module")
def release(release_dir: Path) -> Runs:
    return find_runs(release_dir)


def test_release_gives_the_authors_curves_and_numbers(release: Runs) -> None:
    assert sorted(n.name for n in release.nets) == NETS
    assert not release.skipped and not release.not_started
    reference = _reference()
    for net in release.nets:
        assert _points(net.curve.val) == _points(PAPER[net.name])
        p = net.parsed
        assert p is not None
        assert paper_row(net.name, p.family, p.split, p.n, net.stats) == reference[net.name]
        assert net.curve.format == FORMAT_2014
        assert net.max_iter == 450000 and net.complete


def test_what_the_curves_leave_out_is_listed(release: Runs) -> None:
    left = {n.name: [(Path(i.path).name, i.line, i.what, i.lost) for i in n.curve.left_out]
            for n in release.nets}
    assert left == {
        "nolearn_1_2": [("140328_115722_nolearn.o227799.gz", 1,
                         "no test: iterations 330020-330920 only", False)],
        "transfer-ft0A0B_1_5": [("140507_104429_transfer-ft0A0B.o258003.gz", 1,
                                 "empty: no iteration logged", False)],
        "transfer0A0B_1_5": [("140415_235525_transfer0A0B.o240418.gz", 10607,
                              "the log ends inside the test at iteration 103000; the curve "
                              "takes it from 140415_235525_transfer0A0B.o240769.gz", False)]}


def test_segments_go_by_time_not_by_name_and_plain_logs_read(release_dir: Path,
                                                               tmp_path: Path) -> None:
    """Job logs renamed so that name order is the reverse of job order, half of them
    decompressed to plain `.log`: the same curves come back."""
    for net in NETS:
        (tmp_path / net).mkdir()
        jobs = _jobs(release_dir, net)
        for i, job in enumerate(jobs):
            name = f"{len(jobs) - i:02d}"
            if i % 2:
                (tmp_path / net / f"{name}.log").write_bytes(gzip.decompress(job.read_bytes()))
            else:
                shutil.copy(job, tmp_path / net / f"{name}.log.gz")
    runs = find_runs(tmp_path)
    assert sorted(n.name for n in runs.nets) == NETS and not runs.skipped
    for net in runs.nets:
        assert _points(net.curve.val) == _points(PAPER[net.name])
        assert net.max_iter is None and net.complete is None  # no solver prototxt copied


def test_unfinished_and_not_started_nets_are_reported(release_dir: Path, tmp_path: Path,
                                                      capsys) -> None:
    runs_dir = tmp_path / "results"
    for net in NETS[:2]:
        shutil.copytree(release_dir / net, runs_dir / net)
    # transfer0A0B_1_5 as if its second job had never run: it stops inside the test at 103000
    first_job = _jobs(release_dir, "transfer0A0B_1_5")[0]
    (runs_dir / "transfer0A0B_1_5").mkdir()
    shutil.copy(first_job, runs_dir / "transfer0A0B_1_5")
    shutil.copy(release_dir / "transfer0A0B_1_5" / SOLVER, runs_dir / "transfer0A0B_1_5")
    # set up, never trained (22 fine-tuned nets of the release look like this)
    (runs_dir / "transfer-ft0B0A_1_1").mkdir()
    shutil.copy(release_dir / "transfer0A0B_1_5" / SOLVER, runs_dir / "transfer-ft0B0A_1_1")

    with pytest.raises(LogError, match="truncated: the log ends inside the test at iteration "
                                       "103000 .* no later run repeats it"):
        read_log(first_job)  # one log on its own may not lose a test

    out = tmp_path / "report"
    assert main(["results", "--runs", str(runs_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "found 0 run dirs and 3 raw Caffe logs" in printed and "3 readable, 0 skipped" in printed
    assert ("1 not started, 1 stopped before max_iter; 3 log segments or tests left out of the "
            "curves (1 tests lost)") in printed
    md = (out / "report.md").read_text()
    assert "Not started (1: " in md and "transfer-ft0B0A_1_1." in md
    assert "Stopped before max_iter (1; " in md and "transfer0A0B_1_5 (102000 of 450000)" in md
    assert ("| transfer0A0B_1_5 | `140415_235525_transfer0A0B.o240418.gz` | 10607 | "
            "**truncated: the log ends inside the test at iteration 103000") in md
    assert ("| transfer-ft0A0B_1_5 | `140507_104429_transfer-ft0A0B.o258003.gz` | 1 | "
            "empty: no iteration logged |") in md
    with open(out / "results.csv", newline="") as handle:
        rows = {r["name"]: r for r in csv.DictReader(handle)}
    reference = _reference()
    for net in NETS[:2]:
        assert {c: rows[net][c] for c in PAPER_COLUMNS} == reference[net]
        assert rows[net]["complete"] == "true"
    assert rows["transfer0A0B_1_5"]["complete"] == "false"
    assert rows["transfer0A0B_1_5"]["final_iter"] == "102000"


def _merged(*logs: str) -> list[tuple[int, float, float | None]]:
    """The curve of one run whose job logs are given, each as its text."""
    segments = [s for i, text in enumerate(logs) for s in parse_segments(text.splitlines(), f"{i}")]
    return _points(merge_segments(segments, "run").val)


def _float(points: list[tuple[int, str, str]]) -> list[tuple[int, float, float]]:
    return [(i, float(t), float(l)) for i, t, l in points]


A, B, C = CURVES["half0A"], CURVES["half0B"], CURVES["half1A"]  # three runs' real numbers


def test_a_file_holding_the_resumed_run_before_the_run_it_resumed() -> None:
    """netbase/catlog.oMANUAL.gz: the run resumed at 230000 (11 March) pasted before the run
    of 6 March it resumed, which had gone on to 236000: the resumed run's tests win."""
    first = log_2014("netbase", A, display=1000, date="0306", last=236000)
    resumed = log_2014("netbase", B, display=1000, date="0311", start=230000)
    expected = _float([p for p in A if p[0] <= 230000] + [p for p in B if p[0] > 230000])
    assert _merged(resumed + first) == expected


def test_a_later_job_resumed_from_an_older_snapshot_wins() -> None:
    """transfer-ft1A1B_1_4: job 253002 resumed at 270000 and died at 273000; job 257165 then
    resumed from 200000 and went on.  The later job's tests at 271000-273000 are the curve's,
    though it starts from an earlier iteration."""
    first = log_2014("t", A, display=1000, date="0507", last=278000)
    short = log_2014("t", C, display=1000, date="0519", start=270000, last=273000)
    later = log_2014("t", B, display=1000, date="0527", start=200000)
    expected = _float([p for p in A if p[0] <= 200000] + [p for p in B if p[0] > 200000])
    assert _merged(first, short, later) == expected


def test_a_restart_that_was_abandoned_keeps_the_tests_it_did_not_repeat() -> None:
    """transfer-ft0A0B_1_2: a run to 270000, then, in the same file, a restart from scratch
    killed at 12300; a later job resumed the first run's snapshot at 260000.  The authors'
    curve: the restart's tests to 12000, the first run's to 260000, the resumed job's after."""
    first = log_2014("t", A, display=1000, date="0507", last=270000)
    restart = log_2014("t", C, display=1000, date="0513", last=12300)
    resumed = log_2014("t", B, display=1000, date="0519", start=260000)
    expected = _float([p for p in C if p[0] <= 12000] + [p for p in A if 12000 < p[0] <= 260000]
                      + [p for p in B if p[0] > 260000])
    assert _merged(first + restart, resumed) == expected


def test_glog_dates_across_new_year() -> None:
    """glog writes no year: a job of 2 January ran after one of 30 December."""
    december = log_modern([(100, 0.1, 3.0), (200, 0.2, 2.0)], date="1230")
    january = log_modern([(200, 0.25, 1.9), (300, 0.3, 1.8)], initial=None, date="0102")
    assert _merged(january, december) == [(0, 0.001, 6.9), (100, 0.1, 3.0), (200, 0.25, 1.9),
                                          (300, 0.3, 1.8)]
    segments = [Segment("x", 1, start=0, time=(None, t)) for t in (5.0, 3.0, 4.0)]
    assert [s.time for s in chronological(segments)] == [(None, 3.0), (None, 4.0), (None, 5.0)]


def test_a_job_killed_inside_a_test_and_resumed_past_it() -> None:
    """Killed inside the test at 10000 after its snapshot at 10000, resumed from there in the
    same log: the restart's `Solving` line ends the first segment (no iteration goes back), so
    the test is cut off, not corrupt.  Nothing repeats it: listed as lost, and refused by
    `parse_lines`, which may not lose a test."""
    first = log_2014("t", A, display=1000, date="0507", last=10000)
    first = first[: first.index("Iteration 10000, Testing net") + 29]
    resumed = log_2014("t", B, display=1000, date="0508", start=10000)
    segments = parse_segments((first + resumed).splitlines(), "t.log")
    assert [s.start for s in segments] == [1000, 11000]
    cut = segments[0].cut
    assert cut is not None and (cut.iter, cut.at_end) == (10000, False)
    curve = merge_segments(segments, "t")
    assert [p.iter for p in curve.val] == [i for i, _, _ in A if i != 10000]
    assert [i.lost for i in curve.left_out] == [True]
    assert "a run ends inside the test at iteration 10000" in curve.left_out[0].what
    with pytest.raises(LogError, match="a run ends inside the test at iteration 10000"):
        parse_lines((first + resumed).splitlines(), "t.log")
