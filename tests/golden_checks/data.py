"""Golden check of the data path: Caffe's Data layer output, its LMDB records and its mean file.

Case `data_lmdb_mean`: the layer is built from the case's own net.prototxt (centre crop, mean
file, scale, batch 4 over 6 records) in the TEST phase, with its source and mean file pointed at
the case folder; its first two batches (the second wraps around) must equal Caffe's, both as the
layer makes them on the CPU and as the GPU path does (records read into one uint8 host batch,
then crop, mean and scale as one gather, on the device the check runs on: the CPU here, CUDA in
the GPU tier).  The records
read back must be the stored images and labels, and compute_mean must rebuild mean.binaryproto.

Cases `data_image_list`, `data_encoded_png` and `data_encoded_jpeg` (tools/caffe_goldens.py, a Caffe
built with OpenCV): every Data and ImageData layer of the case's net.prototxt is built on its own
in the TEST phase, its source (and root_folder) pointed at the case folder, and its first
`batches` batches (meta.json; each layer wraps around its list or LMDB) must equal Caffe's tops
`out/batchK/<top>` within the forward tolerance (1e-5 of the largest magnitude: every value is a
whole grey level minus a mean times a scale, so one grey level off fails), both from the layer
and from the GPU path (GpuLoader: records read on the host, encoded ones decoded on the device,
then transformed as one gather), on the device the check runs on.

JPEG: Caffe decoded with Debian 12's OpenCV 4.6 and its libjpeg-turbo 2.1.5, we with the
opencv-python-headless wheel's libjpeg-turbo (OpenCV 5.1): the same ISLOW integer IDCT and fancy
upsampling, so no tolerance of its own; measured, all 4,224 values of `data_encoded_jpeg` are
identical (4:2:0 and 4:4:4 colour, grey, natively and forced).  The one exception is the GPU path
on a CUDA device, whose JPEGs nvjpeg decodes: there the project's nvjpeg bounds against the
libjpeg reference (tests/test_cuda_data.py: NVJPEG_MAX_LEVELS at any pixel, NVJPEG_MEAN_LEVELS on
average, in grey levels, i.e. the difference divided by the layer's scale) apply to the layers
reading JPEGs, and everything else stays exact.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from golden_checks._compare import CPU, on
from replicate.data.item import Encoded
from replicate.data.lmdb_io import LmdbReader, datum_array
from replicate.data.image import jpeg_components
from replicate.data.loader import GpuLoader, read_host_batch
from replicate.data.mean import compute_mean
from replicate.io.binary import read_mean
from replicate.io.prototxt import read_net_text
from replicate.layers.base import layer_class
from replicate.proto import caffe_pb2

CASES = ("data_lmdb_mean", "data_image_list", "data_encoded_png", "data_encoded_jpeg")
#: The layers that read a case's images (each built and run on its own).
DATA_LAYERS = ("Data", "ImageData")


def handles(case_name: str) -> bool:
    return case_name in CASES


def _close(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != Caffe's {theirs.shape}"
    bound = 1e-5 * max(float(np.abs(theirs).max()), 1e-30)
    worst = float(np.abs(ours.astype(np.float64) - theirs).max())
    assert worst <= bound, f"{what}: differs from Caffe by {worst} (allowed {bound})"


def check(case_dir: pathlib.Path, device: torch.device = CPU) -> None:
    if case_dir.name != "data_lmdb_mean":
        _check_layers(case_dir, device)
        return
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


def _reads_jpegs(layer) -> bool:
    """Whether any record the layer's batches read is a JPEG (nvjpeg decodes those on CUDA)."""
    source = layer.maker.source
    return any(isinstance(getattr(source.item(i), "payload", None), Encoded)
               and jpeg_components(source.item(i).payload.data) for i in range(len(source)))


def _within_nvjpeg(ours: torch.Tensor, theirs: np.ndarray, scale: float, what: str) -> None:
    from test_cuda_data import NVJPEG_MAX_LEVELS, NVJPEG_MEAN_LEVELS

    assert tuple(ours.shape) == theirs.shape, f"{what}: shape {tuple(ours.shape)} != Caffe's {theirs.shape}"
    levels = np.abs(ours.cpu().double().numpy() - theirs) / scale
    assert levels.max() <= NVJPEG_MAX_LEVELS and levels.mean() <= NVJPEG_MEAN_LEVELS, (
        f"{what}: nvjpeg's pixels differ from Caffe's by up to {levels.max()} levels, {levels.mean():.2f} on average")


def _check_layers(case_dir: pathlib.Path, device: torch.device) -> None:
    import json

    arrays = np.load(case_dir / "arrays.npz")
    batches = json.loads((case_dir / "meta.json").read_text())["batches"]
    net = read_net_text(case_dir / "net.prototxt")
    params = [layer for layer in net.layer if layer.type in DATA_LAYERS]
    assert params, f"{case_dir}: no data layer in net.prototxt"
    for param in params:
        if param.type == "Data":
            param.data_param.source = str(case_dir / param.data_param.source)
        else:
            ip = param.image_data_param
            ip.source = str(case_dir / ip.source)
            ip.root_folder = str(case_dir) + "/" + ip.root_folder  # Caffe concatenates the strings
        layer = layer_class(param)(param, caffe_pb2.TEST, [])
        data_top, label_top = param.top
        loader = GpuLoader(layer.maker, device, ahead=0)
        nvjpeg = device.type == "cuda" and _reads_jpegs(layer)
        try:
            for k in range(1, batches + 1):
                what = f"{case_dir.name} {param.name} batch{k}"
                expected, expected_label = arrays[f"out/batch{k}/{data_top}"], arrays[f"out/batch{k}/{label_top}"]
                data, label = layer.forward()
                assert tuple(data.shape) == layer.top_shapes[0], f"{what}: {tuple(data.shape)} != {layer.top_shapes[0]}"
                _close(data.numpy(), expected, f"{what} {data_top}")
                _close(label.numpy(), expected_label, f"{what} {label_top}")
                data, label = next(loader)
                assert data.device.type == device.type, f"{what}: the GPU path's batch is on {data.device}"
                if nvjpeg:
                    _within_nvjpeg(data, expected, float(np.float32(param.transform_param.scale)),
                                   f"{what} {data_top}, GPU path (nvjpeg)")
                else:
                    _close(data.cpu().numpy(), expected, f"{what} {data_top}, GPU path")
                _close(label.numpy(), expected_label, f"{what} {label_top}, GPU path")
        finally:
            loader.close()
            layer.close()
