"""Caffe's Dropout: in TRAIN keeps each unit with probability 1-p and scales kept units by
1/(1-p); in TEST it is the identity (Caffe's inverted dropout, so no rescaling at test time)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2


@register("Dropout")
class Dropout(Layer):
    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        self.ratio = float(param.dropout_param.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        self.top_shapes = [tuple(bottom_shapes[0])]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if self.phase != caffe_pb2.TRAIN or self.ratio == 0.0:
            return (x,)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.ratio)
        return (x * keep * (1.0 / (1.0 - self.ratio)),)
