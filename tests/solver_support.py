"""Shared pieces of the solver tests: a run folder copied from Caffe's e2e fixture, and its params.
(Single-threaded torch, which these tiny nets need on a shared machine, is conftest.py's.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from replicate.io.blobs import blob_to_array
from replicate.io.model import load_caffemodel

E2E = Path(__file__).parent / "golden" / "caffe_train_e2e"


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

