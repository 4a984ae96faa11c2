"""Caffe's Scale: multiplies by a learned blob (or a second bottom) broadcast over the axes
`axis`..`axis+num_axes`, plus an optional learned bias (Caffe's Scale+Bias in one layer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from replicate.layers.axes import canonical_axis
from replicate.layers.base import Layer, Shape, register
from replicate.layers.params import new_param
from replicate.proto import caffe_pb2


def _constant(value: float) -> caffe_pb2.FillerParameter:
    filler = caffe_pb2.FillerParameter()
    filler.type = "constant"
    filler.value = value
    return filler


@register("Scale")
class Scale(Layer):
    min_bottoms = 1
    max_bottoms = 2

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        sp = param.scale_param
        shape = tuple(bottom_shapes[0])
        if len(bottom_shapes) == 2:
            scale_shape = tuple(bottom_shapes[1])
            # A scalar second bottom may use axis 0 of an input with any number of axes.
            self.axis = 0 if not scale_shape else canonical_axis(self, sp.axis, len(shape))
        else:
            self.axis = canonical_axis(self, sp.axis, len(shape)) if shape else 0
            if sp.num_axes < -1:
                raise self.error(f"num_axes must be >= -1, got {sp.num_axes}")
            end = len(shape) if sp.num_axes == -1 else self.axis + sp.num_axes
            if end > len(shape):
                raise self.error(
                    f"scale blob would need {sp.num_axes} axes from axis {self.axis} of input {shape}"
                )
            scale_shape = shape[self.axis : end]
            self.blobs.append(
                new_param(scale_shape, sp.filler if sp.HasField("filler") else _constant(1.0))
            )
        if shape[self.axis : self.axis + len(scale_shape)] != scale_shape:
            raise self.error(
                f"scale shape {scale_shape} does not match input {shape} from axis {self.axis}"
            )
        self.bias_term = sp.bias_term
        if self.bias_term:
            self.blobs.append(new_param(scale_shape, sp.bias_filler))
        self.second_bottom = len(bottom_shapes) == 2
        #: A learned blob over the batch axis is the compiled batch size; fed another, Caffe's
        #: Reshape stops, where a batch-1 blob would silently broadcast here.
        self.batch = scale_shape[0] if not self.second_bottom and self.axis == 0 and scale_shape else None
        self.view = scale_shape + (1,) * (len(shape) - self.axis - len(scale_shape))
        self.top_shapes = [shape]

    def forward(self, x: torch.Tensor, *scale: torch.Tensor) -> tuple[torch.Tensor]:
        if self.batch is not None and x.shape[0] != self.batch:
            raise self.error(f"its blob spans the batch axis ({self.batch}); fed a batch of {x.shape[0]}")
        factor = scale[0] if self.second_bottom else self.blobs[0]
        y = x * factor.reshape(self.view)
        if self.bias_term:
            y = y + self.blobs[-1].reshape(self.view)
        return (y,)
