"""Caffe's Softmax along `axis` (exp(x - max) / sum, as Caffe computes it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from replicate.layers.axes import canonical_axis
from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2


@register("Softmax")
class Softmax(Layer):
    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        shape = tuple(bottom_shapes[0])
        self.axis = canonical_axis(self, param.softmax_param.axis, len(shape))
        self.top_shapes = [shape]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.softmax(x, dim=self.axis),)
