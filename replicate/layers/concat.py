"""Caffe's Concat: joins bottoms along `axis` (or the deprecated `concat_dim`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from replicate.layers.axes import canonical_axis
from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2


@register("Concat")
class Concat(Layer):
    min_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        cp = param.concat_param
        first = tuple(bottom_shapes[0])
        if cp.HasField("axis") and cp.HasField("concat_dim"):
            # Caffe CHECKs this; taking one of the two would silently pick an axis.
            raise self.error(f"give axis ({cp.axis}) or concat_dim ({cp.concat_dim}), not both")
        self.axis = canonical_axis(self, cp.concat_dim if cp.HasField("concat_dim") else cp.axis, len(first))
        total = 0
        for j, shape in enumerate(bottom_shapes):
            shape = tuple(shape)
            if len(shape) != len(first) or any(
                a != b for i, (a, b) in enumerate(zip(shape, first)) if i != self.axis
            ):
                raise self.error(
                    f"bottom {j} has shape {shape}; all bottoms must match {first} except on axis {self.axis}"
                )
            total += shape[self.axis]
        self.top_shapes = [first[: self.axis] + (total,) + first[self.axis + 1 :]]

    def forward(self, *bottoms: torch.Tensor) -> tuple[torch.Tensor]:
        if len(bottoms) == 1:
            return (bottoms[0],)
        return (torch.cat(bottoms, dim=self.axis),)
