"""`python -m replicate time` reports per-layer and average times the way `caffe time` does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from replicate.cli import main

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


def test_engine_time_rejects_bad_iterations(tmp_path: Path) -> None:
    model = tmp_path / "net.prototxt"
    model.write_text(NET)
    assert main(["time", "--model", str(model), "--iterations", "0"]) == 2
