"""Caffe's ReLU: max(x, 0) + negative_slope * min(x, 0); gradient 1 for x > 0, slope otherwise."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2


@register("ReLU")
class ReLU(Layer):
    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        self.negative_slope = float(param.relu_param.negative_slope)
        self.top_shapes = [bottom_shapes[0]]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if self.negative_slope:
            return (F.leaky_relu(x, self.negative_slope),)
        return (torch.relu(x),)
