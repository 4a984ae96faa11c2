"""Shared pieces of the solver tests: a run folder copied from Caffe's e2e fixture, its params,
and single-threaded torch (the fixture's nets are tiny; on a shared 2-core machine the default
thread pool makes them 10-20x slower through oversubscription)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

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


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
