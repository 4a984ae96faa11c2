"""Caffe's layers that only move data between blobs: Flatten, Split, Silence."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from replicate.layers.axes import canonical_axis
from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2


def refuse_in_place(layer: Layer, param: caffe_pb2.LayerParameter) -> None:
    """Caffe's Flatten and Split CHECK that no top is their bottom (their tops share its data,
    so in place they would be no layer at all): Caffe aborts, and so does this."""
    if param.bottom and param.bottom[0] in param.top:
        raise layer.error(f"does not allow in-place computation (top '{param.bottom[0]}' is its bottom; Caffe "
                          "aborts); give its top another name")


@register("Flatten")
class Flatten(Layer):
    """Collapses axes `axis`..`end_axis` (inclusive) into one."""

    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        refuse_in_place(self, param)
        fp = param.flatten_param
        shape = tuple(bottom_shapes[0])
        start = canonical_axis(self, fp.axis, len(shape))
        end = canonical_axis(self, fp.end_axis, len(shape))
        if end < start - 1:
            # Caffe's Blob::count(start, end + 1) CHECKs start <= end + 1 (torch.flatten would
            # stop with a traceback).
            raise self.error(f"end_axis {fp.end_axis} comes before axis {fp.axis}")
        # end_axis = axis - 1 collapses no axes: Caffe inserts an axis of size 1 there.
        self.top_shapes = [shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :]]
        self.start, self.end = start, end

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if self.end < self.start:
            return (x.unsqueeze(self.start),)
        return (torch.flatten(x, self.start, self.end),)


@register("Split")
class Split(Layer):
    """Hands its bottom to every top; the gradients of the tops sum (autograd does the sum)."""

    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        if not param.top:
            raise self.error("produces at least 1 top blob, got none (Caffe aborts)")
        refuse_in_place(self, param)
        self.top_shapes = [tuple(bottom_shapes[0])] * len(param.top)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(x for _ in self.top_shapes)


@register("Silence")
class Silence(Layer):
    """Consumes blobs so they are not net outputs; produces nothing."""

    min_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        if param.top:
            raise self.error("takes no top blobs")
        self.top_shapes = []

    def forward(self, *bottoms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ()
