"""Shared pieces of the solver tests: Caffe's e2e run (a run folder copied from its fixture, its
params) and how a replay of it is compared; benchmarks/e2e_replay.py uses them too, on GPU
machines without pytest, so nothing here imports it.  (Single-threaded torch, which these tiny
nets need on a shared machine, is conftest.py's.)"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from replicate.io.blobs import blob_to_array
from replicate.io.model import load_caffemodel

E2E = Path(__file__).parent / "golden" / "caffe_train_e2e"
#: Caffe's log and snapshots of the same run with -weights init.caffemodel really loaded.
E2E_WEIGHTS = E2E.parent / "caffe_train_e2e_weights" / "caffe"
LINE = re.compile(r"\] (Iteration \d+(?: \([^)]*\))?, (?:loss|lr) = \S+|\s*Test net output #\d+: .*)$")
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


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


def masked_values(lines: list[str]) -> tuple[list[str], list[float]]:
    """Each line with its numbers masked, and the numbers."""
    return [NUMBER.sub("#", line) for line in lines], [float(v) for line in lines for v in NUMBER.findall(line)]
