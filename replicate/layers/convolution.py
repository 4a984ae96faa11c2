"""Caffe's Convolution layer: grouped, dilated N-d convolution with per-axis kernel/stride/pad.

Caffe accepts the geometry either as repeated `kernel_size`/`stride`/`pad`/`dilation` (one value
for all spatial axes or one per axis) or, in 2-D, as `kernel_h`/`kernel_w` etc.; both spellings
are resolved here so nets from any Caffe era compile the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from replicate.layers.base import Layer, Shape, register
from replicate.layers.params import new_param
from replicate.proto import caffe_pb2

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def spatial_values(
    layer: Layer,
    what: str,
    values: Sequence[int],
    hw: tuple[bool, int, bool, int],
    n_axes: int,
    default: int | None,
) -> tuple[int, ...]:
    """One value per spatial axis from Caffe's repeated field or its `_h`/`_w` form.

    `hw` = (has_h, h, has_w, w).  Caffe forbids mixing the two forms and requires both `_h` and
    `_w` (and exactly two spatial axes) when either is given.
    """
    has_h, h, has_w, w = hw
    if has_h or has_w:
        if n_axes != 2:
            raise layer.error(f"{what}_h/{what}_w can only be used for 2D convolution")
        if values:
            raise layer.error(f"either {what}_size/{what} or {what}_h and {what}_w, not both")
        if not (has_h and has_w):
            raise layer.error(f"both {what}_h and {what}_w are required")
        return (int(h), int(w))
    if not values:
        if default is None:
            raise layer.error(f"{what} size is required")
        return (default,) * n_axes
    if len(values) == 1:
        return (int(values[0]),) * n_axes
    if len(values) != n_axes:
        raise layer.error(
            f"{what} must be specified once, or once per spatial dimension ({n_axes}); got {len(values)}"
        )
    return tuple(int(v) for v in values)


@register("Convolution")
class Convolution(Layer):
    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        cp = param.convolution_param
        shape = tuple(bottom_shapes[0])
        axis = cp.axis if cp.axis >= 0 else cp.axis + len(shape)
        if axis != 1:
            raise self.error(f"channel axis {cp.axis} is not supported (only axis 1)")
        n_axes = len(shape) - 2
        if n_axes not in _CONV:
            raise self.error(f"input of shape {shape}: only 1 to 3 spatial axes are supported")
        self.kernel = spatial_values(
            self, "kernel", cp.kernel_size,
            (cp.HasField("kernel_h"), cp.kernel_h, cp.HasField("kernel_w"), cp.kernel_w), n_axes, None,
        )
        self.stride = spatial_values(
            self, "stride", cp.stride,
            (cp.HasField("stride_h"), cp.stride_h, cp.HasField("stride_w"), cp.stride_w), n_axes, 1,
        )
        self.pad = spatial_values(
            self, "pad", cp.pad, (cp.HasField("pad_h"), cp.pad_h, cp.HasField("pad_w"), cp.pad_w),
            n_axes, 0,
        )
        self.dilation = spatial_values(self, "dilation", cp.dilation, (False, 0, False, 0), n_axes, 1)
        if any(k <= 0 for k in self.kernel) or any(s <= 0 for s in self.stride):
            raise self.error(f"kernel {self.kernel} and stride {self.stride} must be positive")
        channels, self.group, num_output = shape[1], cp.group, cp.num_output
        if num_output <= 0:
            raise self.error("num_output must be positive")
        if channels % self.group or num_output % self.group:
            raise self.error(
                f"input channels ({channels}) and num_output ({num_output}) must be divisible by "
                f"group ({self.group})"
            )
        self.blobs.append(
            new_param((num_output, channels // self.group, *self.kernel), cp.weight_filler)
        )
        self.bias_term = cp.bias_term
        if self.bias_term:
            self.blobs.append(new_param((num_output,), cp.bias_filler))
        out = []
        for size, k, s, p, d in zip(shape[2:], self.kernel, self.stride, self.pad, self.dilation):
            extent = d * (k - 1) + 1
            o = (size + 2 * p - extent) // s + 1
            if o <= 0:
                raise self.error(f"input of shape {shape} is too small for kernel {self.kernel}")
            out.append(o)
        self.top_shapes = [(shape[0], num_output, *out)]
        self._conv = _CONV[n_axes]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        bias = self.blobs[1] if self.bias_term else None
        if x.dim() == 4 and x.device.type == "cpu":
            # oneDNN convolves channels-last blobs without reordering, and the ReLU, pooling and
            # LRN that follow keep the format (max pooling is ~10x faster in it on CPU).
            x = x.contiguous(memory_format=torch.channels_last)
        return (
            self._conv(x, self.blobs[0], bias, self.stride, self.pad, self.dilation, self.group),
        )
