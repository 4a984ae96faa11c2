"""Caffe's Eltwise: SUM (with per-bottom coefficients), PROD, MAX over equally shaped bottoms.

MAX routes the whole gradient to the bottom Caffe's forward picked: between the first two
bottoms ties go to the second (`a > b ? a : b`), later bottoms win only when strictly greater.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2

_E = caffe_pb2.EltwiseParameter


@register("Eltwise")
class Eltwise(Layer):
    min_bottoms = 2

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        ep = param.eltwise_param
        first = tuple(bottom_shapes[0])
        for j, shape in enumerate(bottom_shapes):
            if tuple(shape) != first:
                raise self.error(f"bottom {j} has shape {tuple(shape)}, bottom 0 has {first}")
        self.op = ep.operation
        if ep.coeff and self.op != _E.SUM:
            raise self.error("coefficients are only allowed for the SUM operation")
        if ep.coeff and len(ep.coeff) != len(bottom_shapes):
            raise self.error(f"needs one coeff per bottom ({len(bottom_shapes)}), got {len(ep.coeff)}")
        if self.op == _E.PROD and not ep.stable_prod_grad:
            # Caffe then divides top_diff * top by each bottom (inf or NaN where a bottom is 0);
            # autograd gives the stable product of the other bottoms.
            raise self.error("PROD with stable_prod_grad: false is not supported (the default, true, is)")
        self.coeff = [float(c) for c in ep.coeff] or [1.0] * len(bottom_shapes)
        self.top_shapes = [first]

    def forward(self, *bottoms: torch.Tensor) -> tuple[torch.Tensor]:
        if self.op == _E.SUM:
            out = bottoms[0] * self.coeff[0] if self.coeff[0] != 1.0 else bottoms[0]
            for b, c in zip(bottoms[1:], self.coeff[1:]):
                out = out + (b * c if c != 1.0 else b)
            return (out,)
        if self.op == _E.PROD:
            out = bottoms[0]
            for b in bottoms[1:]:
                out = out * b
            return (out,)
        with torch.no_grad():
            best = bottoms[0]
            index = torch.zeros(best.shape, dtype=torch.long, device=best.device)
            for j, b in enumerate(bottoms[1:], start=1):
                take = b >= best if j == 1 else b > best
                best = torch.where(take, b, best)
                index = torch.where(take, torch.full_like(index, j), index)
        stacked = torch.stack(bottoms)
        return (stacked.gather(0, index.unsqueeze(0)).squeeze(0),)
