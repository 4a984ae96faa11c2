"""Caffe's Input layer: declares net input blobs and their shapes.

The net feeds real values through `CompiledNet.forward(inputs)`; run on its own the layer yields
zeros of the declared shapes, as Caffe's freshly allocated input blobs hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2


@register("Input")
class Input(Layer):
    min_bottoms = 0
    max_bottoms = 0

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        shapes = [tuple(int(d) for d in s.dim) for s in param.input_param.shape]
        n = len(param.top)
        if len(shapes) == 1:
            shapes = shapes * n
        elif len(shapes) != n:
            raise self.error(
                f"needs 1 shape or one per top ({n}), got {len(shapes)}"
            )
        for shape in shapes:
            if any(d <= 0 for d in shape):
                # Caffe's Blob::Reshape refuses a negative dimension; an empty blob it would carry
                # into layers that then divide by its size.
                raise self.error(f"shape {shape} has a dimension that is not positive")
        self.top_shapes = shapes

    def forward(self, *bottoms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros(s) for s in self.top_shapes)
