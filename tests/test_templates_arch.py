"""Architectures: Caffe's output sizes, the paper's CaffeNet shapes, a valid demo architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from replicate.errors import ReplicateError
from replicate.io.prototxt import read_net_text
from replicate.templates import (ARCH_DIR, Templates, arch_shapes, data_paths, load_arch,
                                 with_num_output)
from replicate.templates import _conv_out, _pool_out
from replicate.treatments import net_spec

GOLDEN = Path(__file__).parent / "golden" / "caffe"


@pytest.mark.parametrize("case", ["pool_max_13_k3s2", "pool_max_6_k3s2_ceil", "pool_max_pad",
                                  "pool_ave_8_k3s2_pad1", "pool_ave_6_k3s2_ceil",
                                  "pool_ave_pad"])
def test_pool_sizes_match_real_caffe(case: str) -> None:
    layer = read_net_text(GOLDEN / case / "net.prototxt").layer[-1]
    p = layer.pooling_param
    arrays = np.load(GOLDEN / case / "arrays.npz")
    h_in, w_in = arrays["in/data"].shape[2:]
    h_out, w_out = arrays[f"out/{layer.top[0]}"].shape[2:]
    assert _pool_out(h_in, p.kernel_size, p.pad, p.stride) == h_out
    assert _pool_out(w_in, p.kernel_size, p.pad, p.stride) == w_out


@pytest.mark.parametrize("case", ["conv_k11_s4", "conv_group_stride", "conv_basic"])
def test_conv_sizes_match_real_caffe(case: str) -> None:
    layer = read_net_text(GOLDEN / case / "net.prototxt").layer[-1]
    c = layer.convolution_param
    arrays = np.load(GOLDEN / case / "arrays.npz")
    size_in = arrays["in/data"].shape[2]
    size_out = arrays[f"out/{layer.top[0]}"].shape[2]
    pad = c.pad[0] if c.pad else 0
    stride = c.stride[0] if c.stride else 1
    assert _conv_out(size_in, c.kernel_size[0], pad, stride) == size_out


def test_caffenet_has_the_papers_shapes() -> None:
    shapes = arch_shapes(load_arch("caffenet"))
    assert shapes["conv1"] == (96, 55, 55) and shapes["pool1"] == (96, 27, 27)
    assert shapes["pool2"] == (256, 13, 13) and shapes["conv5"] == (256, 13, 13)
    assert shapes["pool5"] == (256, 6, 6)  # fc6 sees 9216 inputs
    assert shapes["fc8"] == (1000,)


def test_demo_architecture_is_valid_and_small() -> None:
    demo = with_num_output(load_arch("demo"), 10)
    shapes = arch_shapes(demo)
    assert shapes["data"] == (3, 24, 24)
    assert demo.params["input"]["stored_size"] == 28
    # Every pooled map at least one full window (Caffe's ceil rounding), the last pool 2x2.
    assert shapes["pool1"][1:] == (10, 10) and shapes["pool2"][1:] == (5, 5)
    assert shapes["pool5"] == (32, 2, 2)
    assert shapes["fc6"] == (128,) and shapes["fc8"] == (10,)
    # Same layer kinds as CaffeNet: groups on conv2, conv4, conv5, LRN, dropout.
    spec = net_spec("AnB", "0", 2, "B")
    net = Templates().net(spec, demo, data_paths(spec, "/d"), "train")
    kinds = [layer.type for layer in net.layer]
    assert net.layer[0].transform_param.scale == 1 / 64  # pixels of about unit spread for He fillers
    paper = Templates().net(spec, load_arch("caffenet"), data_paths(spec, "/d"), "train")
    assert kinds == [layer.type for layer in paper.layer]
    groups = {l.name: l.convolution_param.group for l in net.layer if l.type == "Convolution"}
    assert groups == {"conv1": 1, "conv2": 2, "conv3-new": 1, "conv4-new": 2, "conv5-new": 2}


def test_demo_needs_a_class_count() -> None:
    with pytest.raises(ReplicateError, match="needs --num-output"):
        with_num_output(load_arch("demo"), None)
    assert with_num_output(load_arch("caffenet"), None).params["fc8"]["num_output"] == 1000


@pytest.mark.parametrize("change,reason", [
    (lambda a: a["conv4"].update(group=5), "group 5 does not divide"),
    (lambda a: a["input"].update(crop_size=40), "larger than the stored"),
    (lambda a: a["pool1"].update(kernel_size=40), "pool1 output is empty"),
    (lambda a: a["conv1"].pop("std"), "conv1.std is required"),
    (lambda a: a["conv1"].update(num_output=1.5), "expected an integer"),
    (lambda a: a["fc6"].update(width=3), "unknown field"),
    (lambda a: a.pop("norm2"), "'norm2' missing"),
])
def test_bad_architectures_are_refused(tmp_path: Path, change, reason: str) -> None:
    arch = json.loads((ARCH_DIR / "demo.json").read_text())
    arch["fc8"]["num_output"] = 10
    change(arch)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch))
    with pytest.raises(ReplicateError, match=reason):
        arch_shapes(load_arch(str(path)))
