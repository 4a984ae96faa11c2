"""Faults: a killed run resumes exactly, a diverged run stops cleanly, missing inputs fail early."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from replicate.errors import ReplicateError
from replicate.io.blobs import blob_to_array
from replicate.io.model import load_caffemodel
from replicate.solver.run import train
from replicate.solver.solver import TrainingDiverged

E2E = Path(__file__).parent / "golden" / "caffe_train_e2e"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny nets on a shared machine: one thread avoids oversubscription (20x faster here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _copy(tmp_path: Path, name: str, solver_edits: dict[str, str] | None = None) -> Path:
    run = tmp_path / name
    shutil.copytree(E2E, run, ignore=shutil.ignore_patterns("caffe"))
    text = (run / "solver.prototxt").read_text()
    for old, new in (solver_edits or {}).items():
        text = text.replace(old, new)
    (run / "solver.prototxt").write_text(text)
    return run


def _params(path: Path) -> dict[str, list[np.ndarray]]:
    return {layer.name: [blob_to_array(b) for b in layer.blobs] for layer in load_caffemodel(path).layer}


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    edits = {"max_iter: 20": "max_iter: 400", "snapshot: 10": "snapshot: 5", "test_interval: 5": "test_interval: 1000",
             "stepsize: 8": "stepsize: 150"}
    whole = _copy(tmp_path, "whole", edits)
    train(whole / "solver.prototxt", weights=str(whole / "init.caffemodel"), echo=False)

    killed = _copy(tmp_path, "killed", edits)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
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
    assert not list(killed.glob(".tmp-*")), "a snapshot was left half-written"
    last = states[-1]
    stopped_at = int(last.stem.rsplit("_", 1)[1])
    assert stopped_at < 400, "the run finished before it was killed; nothing was tested"
    train(killed / "solver.prototxt", snapshot=last, echo=False)
    a, b = _params(whole / "snap_iter_400.caffemodel"), _params(killed / "snap_iter_400.caffemodel")
    for layer in a:
        for x, y in zip(a[layer], b[layer]):
            np.testing.assert_array_equal(x, y)
    def lr_line(run: Path) -> str:
        lines = [line for line in (run / "train.log").read_text().splitlines() if f"Iteration {stopped_at}, lr" in line]
        return lines[-1].split("] ", 1)[1]

    assert lr_line(killed) == lr_line(whole)


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_good_snapshot(tmp_path: Path) -> None:
    run = _copy(tmp_path, "nan", {"base_lr: 0.05": "base_lr: 1e30", "snapshot: 10": "snapshot: 1"})
    with pytest.raises(TrainingDiverged, match=r"iteration \d+: the loss is (nan|inf).*last good snapshot"):
        train(run / "solver.prototxt", weights=str(run / "init.caffemodel"), echo=False)
    for model in run.glob("snap_iter_*.caffemodel"):
        for blobs in _params(model).values():
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
    run = _copy(tmp_path, "missing")
    net = run / "train.prototxt"
    net.write_text(net.read_text().replace(*edit))
    with pytest.raises(ReplicateError, match=message):
        train(run / "solver.prototxt", echo=False)
    assert not list(run.glob("snap_iter_*"))
    assert "Iteration 0" not in (run / "train.log").read_text()


def test_missing_weights_net_or_solver(tmp_path: Path) -> None:
    run = _copy(tmp_path, "missing")
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
