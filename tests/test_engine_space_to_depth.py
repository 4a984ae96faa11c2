"""Convolution as space-to-depth (an opt-in speed path for CaffeNet's conv1): a stride-s
convolution computed as a stride-1 one over s x s blocks of pixels gives the strided
convolution's outputs and gradients (float64: to rounding), real Caffe's golden outputs and
gradients within the golden tolerances, and the same under torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from golden_checks import layers as golden_layers

from replicate.bench.step import caffenet
from replicate.io.prototxt import read_net_text
from replicate.layers.convolution import space_to_depth_conv
from replicate.net.compile import CompiledNet
from replicate.proto import caffe_pb2

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("n, c, h, w, out, k, s, pad", [
    (2, 3, 67, 67, 6, 11, 4, 0),    # conv1's geometry, smaller
    (1, 3, 35, 38, 8, 11, 4, 0),    # columns left over past the last window
    (2, 3, 20, 23, 5, 3, 2, 1),     # padded
    (1, 2, 17, 13, 4, 5, 3, 2),     # stride 3, rectangular
    (1, 3, 9, 9, 4, 2, 3, 0),       # kernel smaller than the stride: pixels no window reads
])
def test_space_to_depth_is_the_strided_convolution(n, c, h, w, out, k, s, pad) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=generator)
    weight = torch.randn(out, c, k, k, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(out, dtype=torch.float64, generator=generator, requires_grad=True)
    strided = F.conv2d(x, weight, bias, s, pad)
    blocks = space_to_depth_conv(x, weight, bias, s, (pad, pad))
    torch.testing.assert_close(blocks, strided, rtol=0, atol=1e-10)
    for mine, theirs in zip(torch.autograd.grad(blocks.square().sum(), (weight, bias)),
                            torch.autograd.grad(strided.square().sum(), (weight, bias))):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-9)


def _conv_space_to_depth(net: CompiledNet) -> None:
    assert net.use_space_to_depth() == ["conv"]


@pytest.mark.parametrize("root", ["caffe", "caffe_grad"])
def test_space_to_depth_matches_caffes_golden_k11_stride_4_convolution(root: str) -> None:
    golden_layers.check(GOLDEN / root / "conv_k11_s4", prepare=_conv_space_to_depth)


def test_only_convolutions_of_few_channels_with_a_stride_run_as_space_to_depth() -> None:
    net = CompiledNet(caffenet(1), caffe_pb2.TRAIN)
    assert net.use_space_to_depth() == ["conv1"]
    assert [layer.space_to_depth for layer in net.layers if layer.type == "Convolution"] == [True] + [False] * 4


def test_space_to_depth_under_torch_compile_gives_the_eager_outputs() -> None:
    torch._dynamo.reset()
    net = CompiledNet(read_net_text(GOLDEN / "caffe" / "conv_k11_s4" / "net.prototxt"), caffe_pb2.TEST)
    net.use_space_to_depth()
    x = torch.randn(1, 3, 35, 35, generator=torch.Generator().manual_seed(1))
    eager = net.program({"data": x})[1]
    compiled = torch.compile(net.program, backend="aot_eager", fullgraph=True)({"data": x})[1]
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-6, atol=1e-6)
