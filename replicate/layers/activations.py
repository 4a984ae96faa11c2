"""Caffe's elementwise activations without parameters: Sigmoid and TanH."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2


class _Elementwise(Layer):
    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        self.top_shapes = [tuple(bottom_shapes[0])]


@register("Sigmoid")
class Sigmoid(_Elementwise):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.sigmoid(x),)


@register("TanH")
class TanH(_Elementwise):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.tanh(x),)
