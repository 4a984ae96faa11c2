"""Shared pieces of the solver tests: Caffe's e2e run (a run folder copied from its fixture, its
params) and how a replay of it is compared; benchmarks/e2e_replay.py uses them too, on GPU
machines without pytest, so nothing here imports it.  (Single-threaded torch, which these tiny
nets need on a shared machine, is conftest.py's.)"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from replicate.io.blobs import blob_to_array
from replicate.io.model import load_caffemodel

E2E = Path(__file__).parent / "golden" / "caffe_train_e2e"
#: Caffe's log and snapshots of the same run with -weights init.caffemodel really loaded.
E2E_WEIGHTS = E2E.parent / "caffe_train_e2e_weights" / "caffe"
LINE = re.compile(r"\] (Iteration \d+(?: \([^)]*\))?, (?:loss|lr) = \S+|\s*Test net output #\d+: .*)$")
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


#: copy_run's edit that leaves the e2e solver without its test net (Caffe refuses test_interval 0
#: beside a test net, as we do).
NO_TESTS = {'test_net: "val.prototxt"\ntest_iter: 2\ntest_interval: 5\n': ""}


def copy_run(tmp_path: Path, name: str, solver_edits: dict[str, str] | None = None) -> Path:
    """The e2e folder without Caffe's outputs, its solver edited by plain text replacement."""
    run = tmp_path / name
    shutil.copytree(E2E, run, ignore=shutil.ignore_patterns("caffe"))
    text = (run / "solver.prototxt").read_text()
    for old, new in (solver_edits or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    (run / "solver.prototxt").write_text(text)
    return run


def params(path: Path) -> dict[str, list[np.ndarray]]:
    return {layer.name: [blob_to_array(b) for b in layer.blobs] for layer in load_caffemodel(path).layer}


def logged_numbers(log: Path, first_iter: int) -> list[str]:
    """Loss, lr and test-output lines from `first_iter` on, without the speed figures."""
    out, keep = [], False
    for line in log.read_text().splitlines():
        found = LINE.search(line)
        if "Iteration" in line:
            it = int(re.search(r"Iteration (\d+)", line).group(1))
            keep = it >= first_iter
        if found and keep:
            out.append(re.sub(r" \([^)]*iter/s[^)]*\)", "", found.group(1)).strip())
    return out


#: A line of the solver's own (Solver::Step, Test, ApplyUpdate) and the set-up lines left out.
SOLVER_LOG_LINE = re.compile(r"(?:solver|sgd_solver)\.cpp:\d+\] (.*)$")
LOG_SETUP = re.compile(r"Initializing|Creating|scaffolding|Solving|Policy|Optimization|Snapshot|Restarting|^\s*$")


def solver_lines(text: str) -> list[str]:
    """The solver's own lines of a glog log (Caffe's or ours), without prefix, timings or set-up."""
    lines = []
    for line in text.splitlines():
        found = SOLVER_LOG_LINE.search(line)
        if found and not LOG_SETUP.search(found.group(1)):
            lines.append(re.sub(r" \([^)]*iter/s[^)]*\)", "", found.group(1)))
    return lines


def within_last_digit(ours: float, caffes: float) -> bool:
    """Whether two numbers as Caffe prints them (6 significant digits) are equal or one unit apart
    in the last digit of Caffe's."""
    return ours == caffes or (caffes != 0 and abs(ours - caffes) <= 1.01 * 10.0 ** (math.floor(math.log10(abs(caffes))) - 5))


def masked_values(lines: list[str]) -> tuple[list[str], list[float]]:
    """Each line with its numbers masked, and the numbers."""
    return [NUMBER.sub("#", line) for line in lines], [float(v) for line in lines for v in NUMBER.findall(line)]

RANDOM_NETS = {
    # Random crops and mirrors (mirrors in TEST too, as Caffe draws them in both phases) and dropout.
    'transform_param { mean_file: "mean.binaryproto" scale: 0.02 }':
        'transform_param { mean_file: "mean.binaryproto" scale: 0.02 crop_size: 14 mirror: true }',
    'layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }':
        'layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }\n'
        'layer { name: "drop2" type: "Dropout" bottom: "conv2" top: "conv2" dropout_param { dropout_ratio: 0.5 } }',
}


class Replay(NamedTuple):
    same_lines: bool
    logged_values: int
    log_error: float
    snapshot_error: float


def replay_errors(run: Path) -> Replay:
    """How far a replay of Caffe's whole e2e run (trained in `run` from init.caffemodel) ended
    from Caffe's: whether its log has Caffe's lines, how many numbers Caffe logged, the largest
    relative deviation of the logged numbers (|ours - Caffe's| / (0.1 + |Caffe's|): Caffe prints 6 digits, so this is the tests'
    |a - b| <= 1e-6 + 1e-5 |b|), and that of the snapshots' parameters at iterations 10 and 20
    (relative to each blob's largest value)."""
    (ours, our_values), (caffes, caffe_values) = (
        masked_values(logged_numbers(log, 0)) for log in (run / "train.log", E2E_WEIGHTS / "train.log"))
    a, b = np.array(our_values), np.array(caffe_values)
    same_lines = ours == caffes
    log_error = float(np.max(np.abs(a - b) / (0.1 + np.abs(b)))) if same_lines else float("inf")
    snapshot_error = 0.0
    for it in (10, 20):
        mine, theirs = params(run / f"snap_iter_{it}.caffemodel"), params(E2E_WEIGHTS / f"snap_iter_{it}.caffemodel")
        for layer in theirs:
            for x, y in zip(mine[layer], theirs[layer]):
                snapshot_error = max(snapshot_error, float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30)))
    return Replay(same_lines, len(b), log_error, snapshot_error)


def random_run(tmp_path: Path, name: str, solver_edits: dict[str, str] | None = None) -> Path:
    """The e2e folder with every random stream of training in use: crops, mirrors (train and
    test), dropout, and no random_seed (the streams are seeded from torch's default generator).
    Its epochs do not divide the snapshot interval: 40 train records in batches of 8 (5 per
    epoch), 16 test records in batches of 6; 14 iterations, a snapshot every 3, a test every 4."""
    edits = {"max_iter: 20": "max_iter: 14", "snapshot: 10": "snapshot: 3", "test_interval: 5": "test_interval: 4",
             **(solver_edits or {})}
    run = copy_run(tmp_path, name, edits)
    for net, more in (("train.prototxt", {}), ("val.prototxt", {"batch_size: 8": "batch_size: 6"})):
        text = (run / net).read_text()
        for old, new in {**RANDOM_NETS, **more}.items():
            assert old in text, old
            text = text.replace(old, new)
        (run / net).write_text(text)
    (run / "init.caffemodel").unlink()  # its fc shape is for uncropped images: fillers start the run
    return run


def same_weights(a: Path, b: Path) -> bool:
    """Whether two .caffemodel files hold bit-identical parameters (torch.equal, blob by blob)."""
    pa, pb = params(a), params(b)
    return pa.keys() == pb.keys() and all(
        len(pa[k]) == len(pb[k]) and all(torch.equal(torch.from_numpy(x), torch.from_numpy(y))
                                         for x, y in zip(pa[k], pb[k]))
        for k in pa
    )
