"""A V1-format caffemodel (deprecated `layers` field, num/channels/height/width blob dims), as
the 2014 reference models are stored: loaded and upgraded by io, copied into the net by layer
name, it must hold the parameters Caffe read from it and give Caffe's output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from golden_checks._compare import CPU, FORWARD_RTOL, assert_close, assert_every_blob, load_arrays, on
from replicate.io.model import load_caffemodel
from replicate.io.prototxt import read_net_text
from replicate.net.compile import CompiledNet
from replicate.net.weights import copy_trained_layers
from replicate.proto import caffe_pb2


def handles(case_name: str) -> bool:
    return case_name == "caffemodel_v1"


def check(case_dir: Path, device: torch.device = CPU) -> None:
    arrays = load_arrays(case_dir)
    net = CompiledNet(read_net_text(case_dir / "net.prototxt"), caffe_pb2.TEST)
    blobs = net.layer_blobs()
    assert_every_blob(arrays, blobs, "param")
    copy_trained_layers(blobs, load_caffemodel(case_dir / "v1.caffemodel"))
    for layer, params in blobs.items():
        for i, p in enumerate(params):
            np.testing.assert_array_equal(p.detach().numpy(), arrays[f"param/{layer}/{i}"], err_msg=f"{layer}/{i}")
    net.to(device)
    inputs = {k[3:]: torch.from_numpy(v).to(device) for k, v in arrays.items() if k.startswith("in/")}
    result = net(inputs)
    for key, expected in arrays.items():
        if key.startswith("out/"):
            assert_close(on(device, result.blobs[key[4:]]), expected, FORWARD_RTOL, key)
