"""`python -m replicate time` reports per-layer and average times the way `caffe time` does."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from replicate.cli import main
from replicate.commands.time import LayerTimes, random_inputs, timed_pass
from replicate.data.lmdb_io import array_datum, write_lmdb
from replicate.io.prototxt import parse_text
from replicate.net.compile import CompiledNet
from replicate.proto import caffe_pb2

NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_engine_time_prints_caffe_style_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "net.prototxt"
    model.write_text(NET)
    assert main(["time", "--model", str(model), "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    for layer in ("conv", "relu", "pool", "ip", "loss"):
        assert re.search(rf"^\s*{layer}\tforward: [\d.e-]+ ms\.$", out, re.M)
        assert re.search(rf"^\s*{layer}\tbackward: [\d.e-]+ ms\.$", out, re.M)
    for what in ("Forward pass", "Backward pass", "Forward-Backward"):
        assert re.search(rf"^Average {what}: [\d.]+ ms\.$", out, re.M)
    assert out.count("forward-backward time") == 2


def test_engine_time_feeds_valid_labels_and_checks_a_data_layers(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # An Input label blob not named "label" is still a label (zeros, not random values) ...
    model = tmp_path / "net.prototxt"
    model.write_text(NET.replace('"label"', '"y"'))
    assert main(["time", "--model", str(model), "--iterations", "1"]) == 0
    capsys.readouterr()
    # ... and a data layer's labels are checked against the loss's classes, as in training.
    images = np.zeros((4, 3, 8, 8), dtype=np.uint8)
    write_lmdb(tmp_path / "db", [(f"i{i}", array_datum(img, 3 + i)) for i, img in enumerate(images)])
    data = (f'layer {{ name: "data" type: "Data" top: "data" top: "label" '
            f'data_param {{ source: "{tmp_path / "db"}" batch_size: 4 backend: LMDB }} }}')
    model.write_text(NET.replace(NET.splitlines()[1], data))
    assert main(["time", "--model", str(model), "--iterations", "1"]) == 2
    assert capsys.readouterr().err == "error: layer 'loss' (SoftmaxWithLoss): label 5 in blob 'label' out of range [0, 5)\n"


def test_engine_time_runs_every_backward_as_caffe_time_does() -> None:
    # caffe time calls each layer's Backward whether a loss reaches it or not: on a deploy net (no
    # loss) the convolution's parameter gradient is computed, on zero diffs, and timed.
    deploy = "\n".join(line for line in NET.splitlines() if "SoftmaxWithLoss" not in line)
    net = CompiledNet(parse_text(deploy, caffe_pb2.NetParameter(), "<net>"), caffe_pb2.TEST)
    computed = []
    net.layer("conv").blobs[0].register_hook(lambda grad: computed.append(float(grad.abs().sum())))
    times = [LayerTimes() for _ in net.layers]
    timed_pass(net, random_inputs(net), times)
    assert computed == [0.0]
    assert all(len(t.backward) == 1 for t in times)


def test_engine_time_rejects_bad_iterations(tmp_path: Path) -> None:
    model = tmp_path / "net.prototxt"
    model.write_text(NET)
    assert main(["time", "--model", str(model), "--iterations", "0"]) == 2
