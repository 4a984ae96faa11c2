"""Faults: killed runs resume exactly, a diverged run stops cleanly, missing inputs fail early, signals."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from replicate.errors import ReplicateError
from replicate.experiments import preload
from replicate.io.binary import read_binary
from replicate.layers.data import BatchLayer
from replicate.proto import caffe_pb2
from replicate.solver.run import train
from replicate.solver.solver import TrainingDiverged
from solver_support import NO_TESTS, copy_run, params, random_run, same_weights

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ the kill -9 campaign
FAULTS, MAX_ITER = 20, 60
CAMPAIGN = {"max_iter: 14": f"max_iter: {MAX_ITER}", "stepsize: 8": "stepsize: 25\nrandom_seed: 3"}


def _attempt(run: Path, resume: Path | None, fault: tuple[str, int, float] | None) -> None:
    """One `train` in a child process, killed by SIGKILL at `fault`: (where, n, delay) = after the
    n-th train batch plus `delay` seconds ("step", a kill from a timer thread, so it lands at a
    random point of the computation), at the n-th test batch ("test"), or just before or after the
    n-th rename of a snapshot file into place ("write-before", "write-after")."""
    torch.set_num_threads(1)
    where, n, delay = fault or ("", 0, 0.0)
    seen = {"step": 0, "test": 0, "write": 0}

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    forward = BatchLayer.forward

    def counting_forward(self: BatchLayer):
        out = forward(self)
        kind = "step" if self.phase == caffe_pb2.TRAIN else "test"
        seen[kind] += 1
        if where == kind and seen[kind] == n:
            threading.Timer(delay, die).start() if kind == "step" else die()
        return out

    replace = os.replace

    def counting_replace(src, dst) -> None:
        snapshot_file = "snap_iter_" in os.path.basename(dst)
        seen["write"] += snapshot_file
        if snapshot_file and where == "write-before" and seen["write"] == n:
            die()
        replace(src, dst)
        if snapshot_file and where == "write-after" and seen["write"] == n:
            die()

    BatchLayer.forward = counting_forward
    os.replace = counting_replace
    # A run killed before its first snapshot starts again (--force: its logs are all it left).
    train(run / "solver.prototxt", snapshot=resume, force=resume is None, echo=False)


def _run_attempt(run: Path, resume: Path | None, fault: tuple[str, int, float] | None) -> int:
    # Forked from a forkserver, not from pytest: once this process has run autograd inside
    # torch.compile's tracing (an earlier test), autograd refuses to run in a plain fork of it.
    # The grid's own server (one serves the whole process, and the first to start it chooses
    # what it imports): it has imported the trainer, so each attempt starts in milliseconds rather
    # than importing torch again.  It cannot preload this module: Python's server (3.11-3.13)
    # ignores the parent's sys.path, where pytest put tests/; each child imports it, cheaply.
    child = preload._context().Process(target=_attempt, args=(run, resume, fault))
    child.start()
    child.join(120)
    assert child.exitcode is not None, "an attempt hung"
    return child.exitcode


def _snapshot_sets(run: Path) -> dict[int, Path]:
    """Every snapshot in `run`, each checked complete: its .caffemodel and .solverstate parse and
    its sidecar is for its iteration.  A solverstate is the last file of a snapshot written."""
    sets = {}
    for state_path in run.glob("snap_iter_*.solverstate"):
        at = int(state_path.stem.split("_iter_")[1])
        assert read_binary(state_path, caffe_pb2.SolverState()).iter == at
        params(run / f"snap_iter_{at}.caffemodel")
        assert json.loads((run / f"{state_path.name}.resume.json").read_text())["iter"] == at
        sets[at] = state_path
    return sets


def test_kill_9_campaign_every_resume_ends_at_the_uninterrupted_weights(tmp_path: Path) -> None:
    """20 SIGKILLs at seeded random moments (during steps, tests and snapshot writes), each
    followed by a resume from the newest snapshot, end bit-identical to an uninterrupted run."""
    whole = random_run(tmp_path, "whole", CAMPAIGN)
    assert _run_attempt(whole, None, None) == 0
    run = random_run(tmp_path, "killed", CAMPAIGN)
    rng = random.Random(20141108)
    kinds = ["step", "test", "write-before", "write-after"] * (FAULTS // 4)
    rng.shuffle(kinds)
    resumed_from, kills = [], 0
    for kind in kinds + [None]:
        fault = None if kind is None else (kind, rng.randint(1, 4 if kind == "test" else 6), rng.uniform(0, 0.02))
        sets = _snapshot_sets(run)
        resume = sets[max(sets)] if sets else None
        resumed_from.append(max(sets) if sets else 0)
        code = _run_attempt(run, resume, fault)
        if kind is None:
            assert code == 0
        else:
            assert code == -signal.SIGKILL, f"fault {fault} did not happen: the attempt exited {code}"
            kills += 1
    assert kills == FAULTS
    assert resumed_from == sorted(resumed_from) and resumed_from[-1] < MAX_ITER
    log = (run / "train.log").read_text()
    assert log.count("Resumed data layers (data at batch") == sum(1 for at in resumed_from if at)
    assert "has no resume sidecar" not in log  # every resume found its whole snapshot
    assert not list(run.glob(".tmp-*")), "a temporary file of a killed write was left behind"
    assert same_weights(whole / f"snap_iter_{MAX_ITER}.caffemodel", run / f"snap_iter_{MAX_ITER}.caffemodel")
    states = [read_binary(r / f"snap_iter_{MAX_ITER}.solverstate", caffe_pb2.SolverState()) for r in (whole, run)]
    assert states[0] == states[1]


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


def test_solver_fields_caffe_reads_otherwise_are_refused_or_said(tmp_path: Path) -> None:
    run = copy_run(tmp_path, "iter_size", {"max_iter: 20": "max_iter: 2\niter_size: 0"})
    with pytest.raises(ReplicateError, match="^iter_size must be at least 1, not 0$"):
        train(run / "solver.prototxt", echo=False)
    run = copy_run(tmp_path, "average_loss", {"max_iter: 20": "max_iter: 2\naverage_loss: 0"})
    with pytest.raises(ReplicateError, match="^average_loss must be at least 1, not 0$"):
        train(run / "solver.prototxt", echo=False)
    # Test nets that would never be tested: Caffe's Solver::Init refuses test_interval 0 beside them.
    run = copy_run(tmp_path, "test_interval", {"test_interval: 5": "test_interval: 0"})
    with pytest.raises(ReplicateError, match=r"^the solver has 1 test net\(s\) but test_interval 0: "):
        train(run / "solver.prototxt", echo=False)
    # Snapshots in HDF5 are not written: the run says so and writes binary protobuf.
    run = copy_run(tmp_path, "hdf5", {"max_iter: 20": "max_iter: 2\nsnapshot_format: HDF5", **NO_TESTS})
    train(run / "solver.prototxt", echo=False)
    assert "snapshot_format HDF5: snapshots are written as binary protobuf" in (run / "train.log").read_text()
    assert (run / "snap_iter_2.caffemodel").is_file() and (run / "snap_iter_2.solverstate").is_file()
    # Nor are gradients in snapshots, or Caffe's per-layer debug lines: each said once.
    run = copy_run(tmp_path, "diff", {"max_iter: 20": "max_iter: 2\nsnapshot_diff: true\ndebug_info: true", **NO_TESTS})
    train(run / "solver.prototxt", echo=False)
    log = (run / "train.log").read_text()
    assert log.count("snapshot_diff: snapshots hold the weights only") == 1
    assert log.count("debug_info: Caffe's per-layer data and gradient norms are not logged") == 1
    # Caffe's HDF5 files, given as weights or as a snapshot, are named for what they are.
    run = copy_run(tmp_path, "h5")
    for kind, name in (("weights", "snap_iter_2.caffemodel.h5"), ("snapshot", "snap_iter_2.solverstate.h5")):
        (run / name).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
        with pytest.raises(ReplicateError, match=rf"{name}: an HDF5 file \(Caffe's snapshot_format: HDF5\)"):
            train(run / "solver.prototxt", **{kind: str(run / name)}, echo=False)
    # A net path written for Caffe's root, as the model zoo's solvers are, gets a hint.
    run = copy_run(tmp_path, "root", {'train_net: "train.prototxt"': 'train_net: "examples/x/train.prototxt"'})
    with pytest.raises(ReplicateError, match=re.escape(
            f"net file {run / 'examples/x/train.prototxt'} (named in the solver) does not exist: "
            f"'examples/x/train.prototxt' is read against the solver's folder {run} (Caffe reads it against")):
        train(run / "solver.prototxt", echo=False)


def test_a_train_net_caffes_backward_aborts_on_is_refused_before_training(tmp_path: Path) -> None:
    # An Accuracy weighed into the loss: Caffe's first Backward aborts ("Not Implemented Yet");
    # here its value joined the loss with no gradient.
    run = copy_run(tmp_path, "accuracy_loss", NO_TESTS)
    with open(run / "train.prototxt", "a") as f:
        f.write('layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" loss_weight: 0.5 }\n')
    with pytest.raises(ReplicateError, match=r"^layer 'acc' \(Accuracy\): has no backward"):
        train(run / "solver.prototxt", echo=False)
    assert not list(run.glob("snap_iter_*"))


def test_train_command_exit_code_2_on_bad_input(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "replicate", "train", str(tmp_path / "nope.prototxt")],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: solver file {tmp_path / 'nope.prototxt'} does not exist"]


def test_snapshot_prefix_defaults_and_unwritable_folder(tmp_path: Path) -> None:
    # Caffe's UpgradeSnapshotPrefixProperty: no prefix -> the solver's name; a directory -> dir/stem.
    run = copy_run(tmp_path, "noprefix", {'snapshot_prefix: "snap"': "", "max_iter: 20": "max_iter: 2", **NO_TESTS})
    train(run / "solver.prototxt", echo=False)
    assert (run / "solver_iter_2.caffemodel").is_file() and (run / "solver_iter_2.solverstate").is_file()
    run = copy_run(tmp_path, "dirprefix", {'snapshot_prefix: "snap"': 'snapshot_prefix: "snaps"',
                                           "max_iter: 20": "max_iter: 2", **NO_TESTS})
    (run / "snaps").mkdir()
    train(run / "solver.prototxt", echo=False)
    assert (run / "snaps" / "solver_iter_2.solverstate").is_file()
    # A prefix whose folder cannot be made is reported before any training.
    run = copy_run(tmp_path, "badprefix", {'snapshot_prefix: "snap"': 'snapshot_prefix: "solver.prototxt/x"'})
    with pytest.raises(ReplicateError, match="cannot write snapshots with prefix"):
        train(run / "solver.prototxt", echo=False)
    assert "Iteration 0" not in (run / "train.log").read_text()


def test_sigint_snapshots_and_stops_like_caffe(tmp_path: Path) -> None:
    run = copy_run(tmp_path, "sigint", {"max_iter: 20": "max_iter: 100000", "snapshot: 10": "snapshot: 0", **NO_TESTS})
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


def test_a_native_crash_leaves_the_python_stack_in_the_log() -> None:
    """A trainer that dies in native code (here an abort, as a C++ std::terminate raises) prints
    where it was, as Caffe's failure signal handler does, not just an exit status."""
    crash = ("import os, runpy, replicate.cli\n"
             "def main():\n    os.abort()\n"
             "replicate.cli.main = main\n"
             "runpy.run_module('replicate', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGABRT
    assert "Fatal Python error: Aborted" in done.stderr
    assert 'line 3 in main' in done.stderr and "replicate/__main__.py" in done.stderr
