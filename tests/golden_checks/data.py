"""Golden check of the data path: Caffe's Data layer output, its LMDB records and its mean file.

Case `data_lmdb_mean`: the layer is built from the case's own net.prototxt (centre crop, mean
file, scale, batch 4 over 6 records) in the TEST phase, with its source and mean file pointed at
the case folder; its first two batches (the second wraps around) must equal Caffe's, both as the
layer makes them on the CPU and as the GPU path does (records read into one uint8 host batch,
then crop, mean and scale as one gather, on the device the check runs on: the CPU here, CUDA in
the GPU tier).  The records
read back must be the stored images and labels, and compute_mean must rebuild mean.binaryproto.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from golden_checks._compare import CPU, on
from replicate.data.lmdb_io import LmdbReader, datum_array
from replicate.data.loader import read_host_batch
from replicate.data.mean import compute_mean
from replicate.io.binary import read_mean
from replicate.io.prototxt import read_net_text
from replicate.layers.base import layer_class
from replicate.proto import caffe_pb2

CASES = ("data_lmdb_mean",)


def handles(case_name: str) -> bool:
    return case_name in CASES


def _close(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != Caffe's {theirs.shape}"
    bound = 1e-5 * max(float(np.abs(theirs).max()), 1e-30)
    worst = float(np.abs(ours.astype(np.float64) - theirs).max())
    assert worst <= bound, f"{what}: differs from Caffe by {worst} (allowed {bound})"


def check(case_dir: pathlib.Path, device: torch.device = CPU) -> None:
    arrays = np.load(case_dir / "arrays.npz")
    net = read_net_text(case_dir / "net.prototxt")
    (param,) = [layer for layer in net.layer if layer.type == "Data"]
    param.data_param.source = str(case_dir / param.data_param.source)
    param.transform_param.mean_file = str(case_dir / param.transform_param.mean_file)
    layer = layer_class(param)(param, caffe_pb2.TEST, [])
    n = 1
    while f"out/batch{n}/data" in arrays:
        data, label = layer.forward()
        assert tuple(data.shape) == layer.top_shapes[0], f"batch{n}: {tuple(data.shape)} != {layer.top_shapes[0]}"
        _close(data.numpy(), arrays[f"out/batch{n}/data"], f"{case_dir.name} batch{n} data")
        _close(label.numpy(), arrays[f"out/batch{n}/label"], f"{case_dir.name} batch{n} label")
        host = read_host_batch(layer.maker, n - 1)
        gathered = on(device, layer.transformer.apply_gathered(host.stacked.to(device), host.draws))
        _close(gathered.cpu().numpy(), arrays[f"out/batch{n}/data"], f"{case_dir.name} batch{n} data, GPU path's gather")
        _close(np.asarray(host.labels, np.float32), arrays[f"out/batch{n}/label"], f"{case_dir.name} batch{n} label, host batch")
        n += 1
    assert n > 1, f"{case_dir}: no out/batch1/data in arrays.npz"

    reader = LmdbReader(param.data_param.source)
    records = [reader.datum(i) for i in range(len(reader))]
    images = np.stack([datum_array(d, reader.where(i)) for i, d in enumerate(records)])
    np.testing.assert_array_equal(images, arrays["images"])
    np.testing.assert_array_equal([d.label for d in records], arrays["labels"])
    _close(compute_mean(param.data_param.source), read_mean(case_dir / "mean.binaryproto"), "compute_mean")
    _close(read_mean(case_dir / "mean.binaryproto"), arrays["mean"], "mean.binaryproto")
