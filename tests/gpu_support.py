"""Shared by the gpu tests: a tiny net on a tiny JPEG LMDB, trained by `train`, alone or as one
rank of a two-process gloo run."""

from __future__ import annotations

import faulthandler
import json
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from replicate.data.image import encode_jpeg
from replicate.data.lmdb_io import encoded_datum, write_lmdb
from replicate.io.blobs import blob_to_array
from replicate.io.model import load_caffemodel

NET = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { crop_size: 8 mirror: true scale: 0.0078125 }
  data_param { source: "db" batch_size: 8 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 8 scale: 0.0078125 }
  data_param { source: "db" batch_size: 4 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" include { phase: TEST } }
"""

SOLVER = """
net: "net.prototxt"
base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 lr_policy: "step" gamma: 0.5 stepsize: 2
max_iter: 4 display: 1 test_iter: 2 test_interval: 2
snapshot_prefix: "snap" random_seed: 3 solver_mode: CPU test_compute_loss: true
"""


def dataset(folder: Path) -> None:
    rng = np.random.default_rng(0)
    records = []
    for i in range(12):
        h, w = 10 + i % 3, 9 + (i * 5) % 4  # sizes differ, so a crop's draws depend on the image
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        records.append((f"{i:03d}.jpg", encoded_datum(encode_jpeg(image), i % 3)))
    write_lmdb(folder / "db", records)


def run_dir(folder: Path, solver_extra: str = "") -> Path:
    """The run folder; `solver_extra`'s fields replace SOLVER's of the same name (a solver names
    a non-repeated field once: Caffe's parser, and ours, refuse it twice)."""
    folder.mkdir()
    dataset(folder)
    (folder / "net.prototxt").write_text(NET)
    solver = SOLVER
    for key in re.findall(r"(\w+):", solver_extra):
        solver = re.sub(rf"\b{key}: \S+ ?", "", solver)
    (folder / "solver.prototxt").write_text(solver + solver_extra)
    return folder / "solver.prototxt"


def train_rank(rank: int, world: int, runs: list[tuple[int, str, bool | str]], device: str = "cpu") -> None:
    """One rank of a data-parallel run of each (port, solver, compile) in turn: one process
    start (seconds of imports) serves them all, each run its own process group (gloo on the CPU;
    NCCL on `device` "cuda", each rank on GPU LOCAL_RANK).  A native crash
    in a rank prints its Python stacks (faulthandler), as under `python -m replicate`.  The
    rank's thread names after the last run go to rank<N>.threads beside that run's solver."""
    faulthandler.enable()
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    from replicate.solver.run import train

    for port, solver, compile in runs:
        os.environ["MASTER_PORT"] = str(port)
        train(solver, device=device, echo=False, compile=compile)
    (Path(runs[-1][1]).parent / f"rank{rank}.threads").write_text("\n".join(thread_names()))


@contextmanager
def one_process_group() -> Iterator[None]:
    """A live gloo process group of this process alone (an in-memory store, no port), ended on
    leaving, for tests that need a group but no second rank."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def thread_names() -> list[str]:
    """The names of this process's threads (Linux), native ones included."""
    return [(task / "comm").read_text().strip() for task in sorted(Path("/proc/self/task").iterdir())]


def holds_a_process_group(names: list[str]) -> bool:
    """Whether these thread names include those of a gloo process group or its store server."""
    return any("gloo" in name or "tcpstore" in name for name in names)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(path: Path) -> dict[str, list[np.ndarray]]:
    return {l.name: [blob_to_array(b) for b in l.blobs] for l in load_caffemodel(path).layer if l.blobs}


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
