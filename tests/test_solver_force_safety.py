"""`train --force` never leaves a folder with neither run: the earlier run stays, file for file and
byte for byte, until its replacement has written its first snapshot (replicate.solver.aside)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replicate.cli import main
from replicate.solver import aside as aside_module
from replicate.solver.aside import ASIDE, MOVED, MOVING, Aside, aside_path, recover
from replicate.solver.outputs import earlier_run
from solver_support import copy_run

SHORT = {"max_iter: 20": "max_iter: 2", "snapshot: 10": "snapshot: 1", "test_interval: 5": "test_interval: 2"}


def _finished_run(tmp_path: Path, edits: dict[str, str] = SHORT) -> tuple[Path, dict[str, bytes]]:
    """A folder holding a finished run, and its files' bytes (every file the run wrote)."""
    run = copy_run(tmp_path, "run", edits)
    assert main(["train", str(run / "solver.prototxt")]) == 0
    return run / "solver.prototxt", _run_files(run)


def _run_files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir()
            if p.is_file() and p.name.startswith(("train.log", "metrics.jsonl", "snap_iter_"))}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_a_forced_start_with_a_missing_weights_file_leaves_the_earlier_run_intact(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    solver, before = _finished_run(tmp_path)
    capsys.readouterr()
    missing = solver.parent / "nonexistent.caffemodel"
    assert main(["train", str(solver), "--weights", str(missing), "--force"]) == 2
    assert capsys.readouterr().err == f"error: weights file {missing} does not exist\n"
    assert _run_files(solver.parent) == before
    assert not (solver.parent / ASIDE).exists()


def test_a_forced_start_whose_data_source_is_missing_puts_the_earlier_run_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The data source is found missing while the nets are built, after the earlier run was moved
    # aside and the new log opened: the new log goes, the earlier files come back.
    solver, before = _finished_run(tmp_path)
    _edit(solver.parent / "train.prototxt", 'source: "train_lmdb"', 'source: "moved_lmdb"')
    capsys.readouterr()
    assert main(["train", str(solver), "--force"]) == 2
    err = capsys.readouterr().err
    assert "moved_lmdb" in err.splitlines()[-1] and err.splitlines()[-1].startswith("error: ")
    assert f"metrics.jsonl and 6 snapshot files are back in {solver.parent}" in err
    assert _run_files(solver.parent) == before
    assert not (solver.parent / ASIDE).exists()


def test_a_forced_start_that_diverges_before_its_first_snapshot_puts_the_earlier_run_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Iterations ran (the new log has them), but nothing was snapshotted: the earlier run is worth more.
    solver, before = _finished_run(tmp_path)
    _edit(solver, "base_lr: 0.05", "base_lr: 1e30")
    _edit(solver, "snapshot: 1", "snapshot: 5")
    assert main(["train", str(solver), "--force"]) == 2
    assert capsys.readouterr().err.endswith("error: iteration 1: the loss is nan; training stopped\n")
    assert _run_files(solver.parent) == before


def test_the_earlier_run_is_deleted_when_the_first_snapshot_is_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    solver, before = _finished_run(tmp_path)
    run = solver.parent
    seen: list[tuple[list[str], list[str]]] = []
    discard = Aside.discard

    def spy(self: Aside) -> None:
        aside = sorted(p.name for p in (run / ASIDE).iterdir()) if (run / ASIDE).exists() else []
        seen.append((sorted(p.name for p in run.glob("snap_iter_*.solverstate")), aside))
        discard(self)

    monkeypatch.setattr(Aside, "discard", spy)
    assert main(["train", str(solver), "--force"]) == 0
    # First called by the snapshot writer right after snap_iter_1.solverstate, the earlier run
    # still aside then; the later calls (snapshot 2, the run's end) find nothing left to do.
    assert seen[0] == (["snap_iter_1.solverstate"], sorted([*before, MOVED]))
    assert not (run / ASIDE).exists()
    assert (run / "train.log").read_bytes() != before["train.log"]
    assert "] --force: the earlier run's " in (run / "train.log").read_text()  # where it went is said
    assert "were deleted when this run wrote its first snapshot" in (run / "train.log").read_text()


def _aside_by_hand(run: Path, files: list[Path], listing: str, moved: list[Path]) -> None:
    """The folder as a process killed mid-way leaves it: the list `listing`, `moved` aside."""
    (run / ASIDE).mkdir()
    (run / ASIDE / listing).write_text(json.dumps([p.name for p in files]))
    for path in moved:
        os.replace(path, aside_path(path))


@pytest.mark.parametrize("state", ["killed while moving aside", "killed before the first snapshot",
                                   "killed while moving back"])
def test_a_killed_forced_start_is_undone_by_the_next_train(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], state: str) -> None:
    solver, before = _finished_run(tmp_path)
    run = solver.parent
    files = earlier_run(run, run / "snap")
    if state == "killed while moving aside":
        _aside_by_hand(run, files, MOVING, files[:3])
    elif state == "killed before the first snapshot":  # a new log, a half-written snapshot
        _aside_by_hand(run, files, MOVED, files)
        (run / "train.log").write_text("I0101 00:00:00.000000     1 train.py:0] the new run\n")
        (run / "metrics.jsonl").write_text('{"kind": "train", "iter": 1}\n')
        (run / "snap_iter_1.caffemodel").write_bytes(b"new")
    else:  # restore had renamed the list back and put some files back
        _aside_by_hand(run, files, MOVING, files[2:])
    capsys.readouterr()
    assert main(["train", str(solver)]) == 2  # refused: the folder holds the earlier run again
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"moved back the earlier run from {run / ASIDE}" in err
    assert _run_files(run) == before
    assert not (run / ASIDE).exists()


def test_a_forced_start_killed_after_its_first_snapshot_keeps_the_new_run(tmp_path: Path) -> None:
    solver, _ = _finished_run(tmp_path)
    run = solver.parent
    files = earlier_run(run, run / "snap")
    _aside_by_hand(run, files, MOVED, files)
    for path in files[: len(files) // 2]:  # a discard cut short: half the earlier run already gone
        aside_path(path).unlink()
    for name in ("caffemodel", "solverstate"):  # the new run's first snapshot
        (run / f"snap_iter_1.{name}").write_bytes(b"new " + name.encode())
    assert "deleted the earlier run" in recover(run, run / "snap")
    assert not (run / ASIDE).exists()
    assert (run / "snap_iter_1.solverstate").read_bytes() == b"new solverstate"
    assert recover(run, run / "snap") is None


def _training_aside(run: Path) -> bool:
    """The forced start has moved the earlier run aside and trained two iterations."""
    try:
        return (run / ASIDE / MOVED).is_file() and b'"iter": 2' in (run / "metrics.jsonl").read_bytes()
    except FileNotFoundError:
        return False


def test_a_forced_start_killed_by_sigkill_before_its_first_snapshot_leaves_the_earlier_run(
        tmp_path: Path) -> None:
    """A real `kill -9` of `train --force` mid-training, then `train` again in that folder."""
    solver, before = _finished_run(tmp_path)
    run = solver.parent
    _edit(solver, "max_iter: 2", "max_iter: 1000000")
    _edit(solver, "snapshot: 1", "snapshot: 1000000")
    # A fresh interpreter, not a fork of this one: a fork of a process in which an earlier test
    # compiled a backward (torch.compile) cannot run autograd ("Unable to handle autograd's
    # threading in combination with fork-based multiprocessing").
    child = subprocess.Popen([sys.executable, "-m", "replicate", "train", str(solver), "--force"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not _training_aside(run) and time.monotonic() < deadline:
            assert child.poll() is None, f"the trainer ended before it was killed: {child.stderr.read()}"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    assert (run / ASIDE / MOVED).is_file()  # the state a kill leaves: the new run, the earlier aside
    run = run.rename(tmp_path / "moved")  # the folder moved whole (a copy to another disk) first
    solver = run / "solver.prototxt"
    assert main(["train", str(solver)]) == 2
    assert _run_files(run) == before
    assert not (run / ASIDE).exists()
    _edit(solver, "max_iter: 1000000", "max_iter: 2")
    _edit(solver, "snapshot: 1000000", "snapshot: 1")
    assert main(["train", str(solver), "--force"]) == 0  # and the corrected restart replaces it
    assert not (run / ASIDE).exists() and _run_files(run).keys() == before.keys()


def test_a_failed_move_aside_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    solver, before = _finished_run(tmp_path)
    run = solver.parent
    files = earlier_run(run, run / "snap")
    real, calls = os.replace, []

    def failing(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(src)
        if len(calls) == 4:
            raise OSError(13, "Permission denied")
        real(src, dst)

    monkeypatch.setattr(aside_module.os, "replace", failing)
    with pytest.raises(OSError):
        Aside.move(run, run / "snap", files)
    monkeypatch.undo()
    assert _run_files(run) == before
    assert not (run / ASIDE).exists()
