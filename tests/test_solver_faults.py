"""Faults: a killed run resumes exactly, a diverged run stops cleanly, missing inputs fail early."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from replicate.errors import ReplicateError
from replicate.io.binary import read_binary
from replicate.proto import caffe_pb2
from replicate.results.logs import read_log
from replicate.solver.run import train
from replicate.solver.solver import TrainingDiverged
from solver_support import copy_run, params

ROOT = Path(__file__).resolve().parent.parent


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    edits = {"max_iter: 20": "max_iter: 400", "snapshot: 10": "snapshot: 5", "test_interval: 5": "test_interval: 50",
             "stepsize: 8": "stepsize: 150"}
    whole = copy_run(tmp_path, "whole", edits)
    train(whole / "solver.prototxt", weights=str(whole / "init.caffemodel"), echo=False)

    killed = copy_run(tmp_path, "killed", edits)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicate", "train", "solver.prototxt", "--weights", "init.caffemodel"],
        cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(killed.glob("snap_iter_*.solverstate")):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    states = sorted(killed.glob("snap_iter_*.solverstate"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert states, "the run was killed before its first snapshot"
    # SIGKILL may land inside a write: only a temporary file may be cut, never a snapshot.
    for snap in killed.glob("snap_iter_*.caffemodel"):
        params(snap)
    for snap in killed.glob("snap_iter_*.solverstate"):
        read_binary(snap, caffe_pb2.SolverState())
    last = states[-1]
    stopped_at = int(last.stem.rsplit("_", 1)[1])
    assert stopped_at < 400, "the run finished before it was killed; nothing was tested"
    train(killed / "solver.prototxt", snapshot=last, echo=False)
    a, b = params(whole / "snap_iter_400.caffemodel"), params(killed / "snap_iter_400.caffemodel")
    for layer in a:
        for x, y in zip(a[layer], b[layer]):
            np.testing.assert_array_equal(x, y)
    states_at_end = [read_binary(run / "snap_iter_400.solverstate", caffe_pb2.SolverState()) for run in (whole, killed)]
    assert states_at_end[0] == states_at_end[1], "the resumed run's history differs from the uninterrupted one"

    # The appended log of the resumed run reads as the uninterrupted run's validation curve.
    curves = [[(p.iter, p.top1, p.loss) for p in read_log(run / "train.log").val] for run in (whole, killed)]
    assert curves[0] == curves[1] and [p[0] for p in curves[0]] == list(range(0, 401, 50))

    def lr_line(run: Path) -> str:
        lines = [line for line in (run / "train.log").read_text().splitlines() if f"Iteration {stopped_at}, lr" in line]
        return lines[-1].split("] ", 1)[1]

    assert lr_line(killed) == lr_line(whole)


@pytest.mark.parametrize(
    "base_lr, message",
    [
        # Huge but finite weights: the next forward pass is the first to see NaN.
        ("1e30", r"iteration 1: the loss is (nan|inf); training stopped; the last good snapshot is .*snap_iter_1"),
        # The update itself overflows: caught before the snapshot that would have saved it.
        ("3e38", r"iteration 1: the update made \S+ param \d non-finite; training stopped$"),
    ],
)
def test_divergence_stops_with_the_iteration_and_keeps_the_last_good_snapshot(
    tmp_path: Path, base_lr: str, message: str
) -> None:
    run = copy_run(tmp_path, "nan", {"base_lr: 0.05": f"base_lr: {base_lr}", "snapshot: 10": "snapshot: 1"})
    with pytest.raises(TrainingDiverged, match=message), np.errstate(over="ignore"):
        train(run / "solver.prototxt", weights=str(run / "init.caffemodel"), echo=False)
    for model in run.glob("snap_iter_*.caffemodel"):
        for blobs in params(model).values():
            for blob in blobs:
                assert np.isfinite(blob).all(), f"{model.name} holds non-finite weights"


@pytest.mark.parametrize(
    "edit, message",
    [
        (("train_lmdb", "missing_lmdb"), "missing_lmdb"),
        (("mean.binaryproto", "missing_mean.binaryproto"), "missing_mean"),
    ],
)
def test_missing_data_is_reported_before_training(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    run = copy_run(tmp_path, "missing")
    net = run / "train.prototxt"
    net.write_text(net.read_text().replace(*edit))
    with pytest.raises(ReplicateError, match=message):
        train(run / "solver.prototxt", echo=False)
    assert not list(run.glob("snap_iter_*"))
    assert "Iteration 0" not in (run / "train.log").read_text()


def test_missing_weights_net_or_solver(tmp_path: Path) -> None:
    run = copy_run(tmp_path, "missing")
    with pytest.raises(ReplicateError, match="weights file .*nope.caffemodel does not exist"):
        train(run / "solver.prototxt", weights=str(run / "nope.caffemodel"), echo=False)
    with pytest.raises(ReplicateError, match="solver file .* does not exist"):
        train(run / "nope.prototxt", echo=False)
    (run / "val.prototxt").unlink()
    with pytest.raises(ReplicateError, match="val.prototxt.*does not exist"):
        train(run / "solver.prototxt", echo=False)


def test_train_command_exit_code_2_on_bad_input(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "replicate", "train", str(tmp_path / "nope.prototxt")],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: solver file {tmp_path / 'nope.prototxt'} does not exist"]


def test_snapshot_prefix_defaults_and_unwritable_folder(tmp_path: Path) -> None:
    # Caffe's UpgradeSnapshotPrefixProperty: no prefix -> the solver's name; a directory -> dir/stem.
    run = copy_run(tmp_path, "noprefix", {'snapshot_prefix: "snap"': "", "max_iter: 20": "max_iter: 2",
                                          "test_interval: 5": "test_interval: 0"})
    train(run / "solver.prototxt", echo=False)
    assert (run / "solver_iter_2.caffemodel").is_file() and (run / "solver_iter_2.solverstate").is_file()
    run = copy_run(tmp_path, "dirprefix", {'snapshot_prefix: "snap"': 'snapshot_prefix: "snaps"',
                                           "max_iter: 20": "max_iter: 2", "test_interval: 5": "test_interval: 0"})
    (run / "snaps").mkdir()
    train(run / "solver.prototxt", echo=False)
    assert (run / "snaps" / "solver_iter_2.solverstate").is_file()
    # A prefix whose folder cannot be made is reported before any training.
    run = copy_run(tmp_path, "badprefix", {'snapshot_prefix: "snap"': 'snapshot_prefix: "solver.prototxt/x"'})
    with pytest.raises(ReplicateError, match="cannot write snapshots with prefix"):
        train(run / "solver.prototxt", echo=False)
    assert "Iteration 0" not in (run / "train.log").read_text()


def test_sigint_snapshots_and_stops_like_caffe(tmp_path: Path) -> None:
    run = copy_run(tmp_path, "sigint", {"max_iter: 20": "max_iter: 100000", "snapshot: 10": "snapshot: 0",
                                        "test_interval: 5": "test_interval: 0"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicate", "train", "solver.prototxt", "--weights", "init.caffemodel"],
        cwd=run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    log_file, deadline = run / "train.log", time.time() + 120
    while time.time() < deadline and not (log_file.exists() and "Iteration 3," in log_file.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    log = (run / "train.log").read_text()
    assert log.rstrip().endswith("Optimization stopped early.")
    states = list(run.glob("snap_iter_*.solverstate"))
    assert len(states) == 1
    state = read_binary(states[0], caffe_pb2.SolverState())
    assert f"snap_iter_{state.iter}.solverstate" == states[0].name and 3 < state.iter < 100000
