"""Caffe's InnerProduct: flattens axes from `axis` on and multiplies by W (N x K, or K x N when
`transpose`), plus a bias."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from replicate.layers.base import Layer, Shape, register
from replicate.layers.params import new_param
from replicate.proto import caffe_pb2


@register("InnerProduct")
class InnerProduct(Layer):
    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        ip = param.inner_product_param
        shape = tuple(bottom_shapes[0])
        axis = ip.axis if ip.axis >= 0 else ip.axis + len(shape)
        if not 0 <= axis < len(shape):
            raise self.error(f"axis {ip.axis} out of range for input of shape {shape}")
        if ip.num_output <= 0:
            raise self.error("num_output must be positive")
        self.axis = axis
        self.transpose = ip.transpose
        k = math.prod(shape[axis:])
        n = ip.num_output
        self.blobs.append(new_param((k, n) if self.transpose else (n, k), ip.weight_filler))
        self.bias_term = ip.bias_term
        if self.bias_term:
            self.blobs.append(new_param((n,), ip.bias_filler))
        self.top_shapes = [(*shape[:axis], n)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        lead = x.shape[: self.axis]
        flat = x.reshape(math.prod(lead), -1)
        w = self.blobs[0]
        bias = self.blobs[1] if self.bias_term else None
        # F.linear's backward writes the weight gradient in the weight's own layout (no copy).
        y = F.linear(flat, w.t() if self.transpose else w, bias)
        return (y.reshape(*lead, y.shape[-1]),)
