"""Caffe's BatchNorm: normalization only (scale/shift is a separate Scale layer).

Its three blobs are running sums, not learnable parameters: mean, variance and a scale factor
that Caffe divides both by (0 means "no statistics yet").  In TRAIN (unless use_global_stats)
it normalizes with the batch statistics and updates mean <- mean_batch + f * mean,
var <- var_batch * m/(m-1) + f * var, factor <- f * factor + 1; in TEST it uses the stored sums
divided by the factor.  Like Caffe it forces lr_mult 0 on its blobs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2


@register("BatchNorm")
class BatchNorm(Layer):
    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        bp = param.batch_norm_param
        shape = tuple(bottom_shapes[0])
        self.use_global_stats = (
            bp.use_global_stats if bp.HasField("use_global_stats") else phase == caffe_pb2.TEST
        )
        self.writes_blobs = not self.use_global_stats
        self.fraction = float(bp.moving_average_fraction)
        self.eps = float(bp.eps)
        if len(shape) < 2:
            # Caffe reads its channels as the bottom's axis 1 and aborts on a blob with fewer axes.
            raise self.error(f"input must have a channel axis (num, channels, ...), got shape {shape}")
        channels = shape[1]
        for size in ((channels,), (channels,), (1,)):
            self.blobs.append(nn.Parameter(torch.zeros(size), requires_grad=False))
        for i in range(3):
            if len(param.param) == i:
                param.param.add().lr_mult = 0.0
            elif param.param[i].lr_mult != 0.0:
                raise self.error("cannot configure batch normalization statistics as layer parameters")
        self.top_shapes = [shape]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        view = (1, -1) + (1,) * (x.dim() - 2)
        axes = [0] + list(range(2, x.dim()))
        mean_blob, var_blob, factor_blob = self.blobs
        if self.use_global_stats:
            factor = factor_blob.detach()[0]
            scale = torch.where(factor == 0, torch.zeros_like(factor), 1.0 / factor)
            mean = (mean_blob.detach() * scale).to(x.dtype).reshape(view)
            var = (var_blob.detach() * scale).to(x.dtype).reshape(view)
        else:
            var, mean = torch.var_mean(x, dim=axes, correction=0, keepdim=True)
            m = x.numel() // x.shape[1]
            correction = m / (m - 1) if m > 1 else 1.0
            with torch.no_grad():
                factor_blob.mul_(self.fraction).add_(1.0)
                mean_blob.mul_(self.fraction).add_(mean.detach().reshape(-1).to(mean_blob.dtype))
                var_blob.mul_(self.fraction).add_(var.detach().reshape(-1).to(var_blob.dtype) * correction)
        return ((x - mean) / torch.sqrt(var + self.eps),)
