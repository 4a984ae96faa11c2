"""`train` where a newcomer goes wrong: a transfer net without its base's weights, and a second run
in a folder that holds one already."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from replicate.cli import main
from replicate.invocation import command
from solver_support import E2E, copy_run, params

SHORT = {"max_iter: 20": "max_iter: 2", "snapshot: 10": "snapshot: 1", "test_interval: 5": "test_interval: 2"}


def _transfer_net(tmp_path: Path) -> Path:
    """The e2e net (conv1 frozen, the upper layers `-new`) as `generate` leaves a transfer net: a
    manifest naming its base's final snapshot, here Caffe's own snap_iter_20 in ../base."""
    run = copy_run(tmp_path, "transfer", SHORT)
    manifest = {"name": "transfer", "weights_from": "base", "weights": "../base/snap_iter_20.caffemodel"}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run / "solver.prototxt"


def test_a_transfer_net_trained_without_weights_starts_from_its_manifests_and_says_so(tmp_path: Path) -> None:
    solver = _transfer_net(tmp_path)
    (tmp_path / "base").mkdir()
    base = shutil.copy(E2E / "caffe" / "snap_iter_20.caffemodel", tmp_path / "base")
    assert main(["train", str(solver)]) == 0
    log = (solver.parent / "train.log").read_text()
    assert f"Starting weights from {solver.parent / 'manifest.json'}: base's final snapshot" in log
    assert "Finetuning from" in log
    # conv1 is frozen (lr_mult 0): after training it still holds the base's values.
    np.testing.assert_array_equal(params(solver.parent / "snap_iter_2.caffemodel")["conv1"][0], params(Path(base))["conv1"][0])


def test_a_transfer_net_whose_base_weights_are_missing_stops_with_the_commands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    solver = _transfer_net(tmp_path)
    assert main(["train", str(solver)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: transfer starts from base's final weights {tmp_path / 'base' / 'snap_iter_20.caffemodel'}")
    assert command("train", str(solver), "--weights", "FILE") in err and "--from-scratch" in err
    assert not (solver.parent / "train.log").exists()
    assert main(["train", str(solver), "--from-scratch"]) == 0
    log = (solver.parent / "train.log").read_text()
    assert "Finetuning" not in log and "Starting weights" not in log


def test_a_second_run_in_a_finished_folder_is_refused_then_resumed_or_forced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(tmp_path, "run", SHORT)
    solver = run / "solver.prototxt"
    assert main(["train", str(solver)]) == 0
    finished = {p.name: p.read_bytes() for p in run.iterdir() if p.suffix in (".log", ".jsonl", ".caffemodel", ".solverstate")}
    capsys.readouterr()

    assert main(["train", str(solver)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run} already holds a run (train.log, metrics.jsonl and 6 snapshot files) that finished "
                   "at iteration 2; add --force to start again (deletes them once the new run has written its first "
                   "snapshot), or train in another folder\n")
    assert {name: (run / name).read_bytes() for name in finished} == finished  # nothing touched

    # Stopped at iteration 1: the message gives the command that resumes it, and that command works.
    for ext in (".caffemodel", ".solverstate", ".solverstate.resume.json"):
        (run / f"snap_iter_2{ext}").unlink()
    assert main(["train", str(solver), "--weights", str(E2E / "init.caffemodel")]) == 2
    err = capsys.readouterr().err
    printed = re.search(r"stopped at iteration 1 of 2; resume it with `([^`]+)`", err).group(1)
    assert printed == command("train", str(solver), "--snapshot", str(run / "snap_iter_1.solverstate"))
    assert main(shlex.split(printed)[3:]) == 0  # after `<python> -m replicate`
    assert (run / "snap_iter_2.caffemodel").is_file()

    assert main(["train", str(solver), "--force"]) == 0
    log = (run / "train.log").read_text()
    assert f"--force: moved the earlier run's train.log, metrics.jsonl and 6 snapshot files to {run / '.earlier-run'}" in log
    assert not (run / ".earlier-run").exists()  # deleted at the new run's first snapshot
    assert log.count("Starting Optimization") == 1  # a new log, not the old one appended to


def test_weights_given_as_the_snapshot_to_resume_say_to_use_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(tmp_path, "run", SHORT)
    solver = run / "solver.prototxt"
    weights = shutil.copy(E2E / "caffe" / "snap_iter_20.caffemodel", tmp_path)
    assert main(["train", str(solver), "--snapshot", str(weights)]) == 2
    assert capsys.readouterr().err == (f"error: {weights}: is a .caffemodel (weights), not a .solverstate: --snapshot "
                                       f"resumes from a .solverstate; to start from these weights give --weights {weights}\n")
    assert not (run / "train.log").exists()
    renamed = shutil.copy(weights, tmp_path / "renamed.solverstate")  # told by its bytes, not its name
    assert main(["train", str(solver), "--snapshot", str(renamed)]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: {renamed}: is a .caffemodel (weights), not a")


def test_a_folder_given_as_the_solver_is_said_to_be_one_naming_its_solver(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(tmp_path, "run", SHORT)
    assert main(["train", str(run)]) == 2
    assert capsys.readouterr().err == f"error: solver {run} is a folder: give its solver file, {run / 'solver.prototxt'}\n"
    (run / "other_solver.prototxt").write_text("")  # two: neither is guessed
    assert main(["train", str(run)]) == 2
    assert capsys.readouterr().err == f"error: solver {run} is a folder: give the solver file in it\n"
    assert main(["train", str(tmp_path / "none.prototxt")]) == 2
    assert capsys.readouterr().err == f"error: solver file {tmp_path / 'none.prototxt'} does not exist\n"
