"""Caffe's LRN (local response normalization), both regions.

ACROSS_CHANNELS: top = x * (k + alpha/n * sum of x^2 over n neighbouring channels)^-beta, the
channel window zero-padded at the ends.  WITHIN_CHANNEL: Caffe builds it from layers (square,
AVE pooling of size n with pad (n-1)/2, power with scale alpha and shift 1, product), so k is
unused and the mean is Caffe's AVE pooling with its divisor (always n*n at stride 1 with that pad).
ACROSS_CHANNELS runs as Caffe's own forward/backward pair (`lrn_layer.cpp`): the backward
bottom_diff = top_diff * scale^-beta - 2*alpha*beta/n * x * window_sum(top_diff * top / scale)
reuses the forward's scale and scale^-beta, which is cheaper than autograd through the window
sums and keeps the channels-last layout convolutions hand it.  The power is kept rather than
recomputed because it is the layer's one expensive elementwise op (a fractional power costs
about 25 multiplies per element on the CPU).  WITHIN_CHANNEL goes through autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from replicate.layers.base import Layer, Shape, register
from replicate.layers.pooling import ave_divisor
from replicate.proto import caffe_pb2

_L = caffe_pb2.LRNParameter


def channel_window_sum(t: torch.Tensor, pre_pad: int) -> torch.Tensor:
    """Sum over channels c-pre_pad..c+pre_pad (zero outside), in t's memory layout.

    `add_` on the slice views, not `out[...] += ...`: Python turns the latter into a setitem that
    copies each sum back onto itself, a wasted pass over the tensor per neighbour.
    """
    out = t.clone()
    for d in range(1, pre_pad + 1):
        out[:, d:].add_(t[:, :-d])
        out[:, :-d].add_(t[:, d:])
    return out


class _AcrossChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        pre_pad = (size - 1) // 2
        scale = channel_window_sum(x * x, pre_pad).mul_(alpha / size).add_(k)
        scale_pow = scale.pow(-beta)
        top = x * scale_pow
        ctx.save_for_backward(x, scale, scale_pow, top)
        ctx.consts = (pre_pad, size, alpha, beta)
        return top

    @staticmethod
    def backward(ctx, top_diff: torch.Tensor):
        x, scale, scale_pow, top = ctx.saved_tensors
        pre_pad, size, alpha, beta = ctx.consts
        ratio = channel_window_sum(top_diff * top / scale, pre_pad)
        bottom_diff = torch.addcmul(top_diff * scale_pow, ratio, x, value=-2.0 * alpha * beta / size)
        return bottom_diff, None, None, None, None


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
        if self.region == _L.ACROSS_CHANNELS:
            return (_AcrossChannels.apply(x, self.size, self.alpha, self.beta, self.k),)
        summed = F.avg_pool2d(x * x, self.size, stride=1, padding=self.pre_pad, divisor_override=1)
        scale = summed / self.divisor.to(x.dtype) * self.alpha + 1.0
        return (x * scale.pow(-self.beta),)
