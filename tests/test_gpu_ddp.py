"""Data parallel training (two gloo processes on CPU) matches one process on the whole batch.

The union of the ranks' Data-layer slices must be the single-process batch (same records, same
random crops and mirrors, even for JPEGs of different sizes), and averaging the per-rank
gradients must give the single-process gradient: after a few SGD iterations with momentum and
weight decay the weights agree within float tolerance.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from replicate.data.image import encode_jpeg
from replicate.data.loader import BatchMaker, LmdbSource
from replicate.data.lmdb_io import encoded_datum, write_lmdb
from replicate.data.transform import TRAIN, DataTransformer
from replicate.io.model import load_caffemodel
from replicate.io.blobs import blob_to_array
from replicate.proto import caffe_pb2

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
snapshot_prefix: "snap" random_seed: 3 solver_mode: CPU
"""


def _dataset(folder: Path) -> None:
    rng = np.random.default_rng(0)
    records = []
    for i in range(12):
        h, w = 10 + i % 3, 9 + (i * 5) % 4  # sizes differ, so a crop's draws depend on the image
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        records.append((f"{i:03d}.jpg", encoded_datum(encode_jpeg(image), i % 3)))
    write_lmdb(folder / "db", records)


def _run_dir(folder: Path) -> Path:
    folder.mkdir()
    _dataset(folder)
    (folder / "net.prototxt").write_text(NET)
    (folder / "solver.prototxt").write_text(SOLVER)
    return folder / "solver.prototxt"


def _rank(rank: int, world: int, port: int, solver: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from replicate.solver.run import train

    train(solver, device="cpu", echo=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(path: Path) -> dict[str, list[np.ndarray]]:
    return {l.name: [blob_to_array(b) for b in l.blobs] for l in load_caffemodel(path).layer if l.blobs}


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_shards_of_a_batch_together_are_the_single_process_batch(tmp_path: Path) -> None:
    _dataset(tmp_path)
    param = caffe_pb2.TransformationParameter(crop_size=8, mirror=True)

    def maker(shard):
        return BatchMaker(LmdbSource(tmp_path / "db"), DataTransformer(param, TRAIN), 6, seed=7, shard=shard)

    for k in range(3):
        whole, labels = maker((0, 1)).make(k)
        parts = [maker((r, 3)).make(k) for r in range(3)]
        assert torch.equal(torch.cat([p[0] for p in parts]), whole)
        assert torch.equal(torch.cat([p[1] for p in parts]), labels)


def test_two_processes_train_like_one(tmp_path: Path) -> None:
    from replicate.solver.run import train

    single = _run_dir(tmp_path / "single")
    train(single, device="cpu", echo=False)
    double = _run_dir(tmp_path / "ddp")
    mp.start_processes(_rank, args=(2, _free_port(), str(double)), nprocs=2, start_method="spawn")

    one, two = _weights(single.parent / "snap_iter_4.caffemodel"), _weights(double.parent / "snap_iter_4.caffemodel")
    assert one.keys() == two.keys() == {"conv", "fc"}
    for name in one:
        for a, b in zip(one[name], two[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    m1, m2 = _metrics(single.parent), _metrics(double.parent)
    assert m2[0]["kind"] == "config" and m2[0]["world_size"] == 2 and m2[0]["precision"] == "fp32"
    loss1 = [m["loss"] for m in m1 if m["kind"] == "train"]
    loss2 = [m["loss"] for m in m2 if m["kind"] == "train"]
    np.testing.assert_allclose(loss1, loss2, rtol=1e-5)
    test1 = [m["outputs"]["acc"] for m in m1 if m["kind"] == "test"]
    test2 = [m["outputs"]["acc"] for m in m2 if m["kind"] == "test"]
    assert test1 == test2 and len(test1) == 3
    assert not list(double.parent.glob("snap_iter_2*"))  # only rank 0 wrote, and only at the end
