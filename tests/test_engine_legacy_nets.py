"""The authors' own 2014 nets compile and run: their V0 files (through io's upgrade) and what
Caffe's upgrade tool made of them.

Their Data layers read LMDBs that are not here, so each is replaced by an Input layer of the
same tops with a batch of 2 at the crop size; every other layer is the authors' own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from replicate.io.model import load_net
from replicate.net.compile import CompiledNet
from replicate.proto import caffe_pb2

LEGACY = Path(__file__).parent / "golden" / "caffe" / "legacy"
NETS = [p for p in sorted(LEGACY.glob("*/imagenet_*.prototxt")) if "solver" not in p.name]


def _with_input_layers(path: Path) -> caffe_pb2.NetParameter:
    net = load_net(path)
    for layer in net.layer:
        if layer.type == "Data":
            crop = layer.transform_param.crop_size
            layer.type = "Input"
            layer.ClearField("data_param")
            layer.ClearField("transform_param")
            layer.input_param.shape.add().dim.extend([2, 3, crop, crop])
            layer.input_param.shape.add().dim.extend([2])
    return net


@pytest.mark.parametrize("path", NETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_engine_authors_2014_nets_compile_and_run(path: Path) -> None:
    phase = caffe_pb2.TRAIN if "train" in path.name else caffe_pb2.TEST
    net = CompiledNet(_with_input_layers(path), phase)
    torch.manual_seed(0)
    with torch.no_grad():
        result = net({"data": torch.randn(2, 3, 227, 227) * 50, "label": torch.tensor([1.0, 7.0])})
    assert net.blob_shapes["fc8" if "fc8" in net.blob_shapes else "fc8-new"][1] == 1000
    if phase == caffe_pb2.TRAIN:
        # The 2014 loss layer has no top: its loss counts, but it is no net output (Caffe's
        # anonymous AutoTopBlobs top).
        assert result.outputs == {} and torch.isfinite(result.loss) and result.loss > 0
        assert all(e.param.requires_grad == (e.lr_mult != 0) for e in net.learnable_params())
    else:
        assert list(result.outputs) == ["accuracy"] and 0 <= float(result.outputs["accuracy"]) <= 1
