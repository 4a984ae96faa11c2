"""Caffe's LRN (local response normalization), both regions.

ACROSS_CHANNELS: top = x * (k + alpha/n * sum of x^2 over n neighbouring channels)^-beta, the
channel window zero-padded at the ends.  WITHIN_CHANNEL: Caffe builds it from layers (square,
AVE pooling of size n with pad (n-1)/2, power with scale alpha and shift 1, product), so k is
unused and the mean is Caffe's AVE pooling with its divisor (always n*n at stride 1 with that pad).
Autograd of these expressions is Caffe's analytic backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from replicate.layers.base import Layer, Shape, register
from replicate.layers.pooling import ave_divisor
from replicate.proto import caffe_pb2

_L = caffe_pb2.LRNParameter


@register("LRN")
class LRN(Layer):
    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        lp = param.lrn_param
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), got {shape}")
        if lp.local_size % 2 == 0:
            raise self.error(f"local_size must be odd, got {lp.local_size}")
        self.size = lp.local_size
        self.alpha, self.beta, self.k = float(lp.alpha), float(lp.beta), float(lp.k)
        self.region = lp.norm_region
        self.pre_pad = (self.size - 1) // 2
        if self.region == _L.WITHIN_CHANNEL:
            h, w = shape[2], shape[3]
            dh = ave_divisor(h, h, self.size, 1, self.pre_pad)
            dw = ave_divisor(w, w, self.size, 1, self.pre_pad)
            self.register_buffer("divisor", (dh[:, None] * dw[None, :]).float(), persistent=False)
        self.top_shapes = [shape]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        sq = x * x
        if self.region == _L.ACROSS_CHANNELS:
            # Sum over the channel window: pad channels with zeros and pool along them.
            n, c, h, w = x.shape
            summed = F.avg_pool3d(
                sq.unsqueeze(1), (self.size, 1, 1), stride=1, padding=(self.pre_pad, 0, 0),
                divisor_override=1,
            ).squeeze(1)
            scale = summed * (self.alpha / self.size) + self.k
        else:
            p = self.pre_pad
            summed = F.avg_pool2d(sq, self.size, stride=1, padding=p, divisor_override=1)
            scale = summed / self.divisor.to(x.dtype) * self.alpha + 1.0
        return (x * scale.pow(-self.beta),)
