"""Caffe's Convolution layer: grouped, dilated N-d convolution with per-axis kernel/stride/pad.

Caffe accepts the geometry either as repeated `kernel_size`/`stride`/`pad`/`dilation` (one value
for all spatial axes or one per axis) or, in 2-D, as `kernel_h`/`kernel_w` etc.; both spellings
are resolved here so nets from any Caffe era compile the same.

`space_to_depth` (off unless a net turns it on, CompiledNet.use_space_to_depth) runs a strided
convolution of few input channels, CaffeNet's conv1 (3 channels, 11x11, stride 4), as a stride-1
convolution over s x s blocks of pixels (`space_to_depth_conv`): the same products, summed in
another order (float32 rounding apart, the same outputs), with 48 input channels where tensor
cores want more than 3.  Whether that is faster is a GPU's to say (bench --space-to-depth).

On the CPU a 1x1 convolution with a stride reads every s-th pixel first and convolves those with
stride 1 (`pointwise_strided_conv`): the same products.  PyTorch's own strided 1x1 convolution
on a channels-last input of 2-4 channels (oneDNN 3.10 in torch 2.11, 3.12 in 2.13 and 2.14)
returns a wrong weight gradient, or corrupts the heap with one thread, where the stride divides
the image (tests/test_engine_layers.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from replicate.layers.base import Layer, Shape, register
from replicate.layers.params import new_param
from replicate.proto import caffe_pb2

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
#: The most input channels x stride^2 a convolution may have to run as space-to-depth.
SPACE_TO_DEPTH_CHANNELS = 64


def space_to_depth_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                        pad: tuple[int, int]) -> torch.Tensor:
    """F.conv2d(x, weight, bias, stride, pad) as a stride-1 convolution over blocks of pixels.

    Output (i, j) of a stride-s convolution sums weight[., ., a, b] * x[., ., s i + a, s j + b].
    With a = s p + u and b = s q + v, pixel (s (i + p) + u, s (j + q) + v) is channel (u, v) of
    block (i + p, j + q), so the sum is a stride-1 convolution of a ceil(k / s) kernel over the
    c s^2 channels of the blocks.  The image is zero-padded as Caffe pads it, then to whole blocks
    (or cut where no window reaches); the kernel is zero-padded to whole blocks: the padding meets
    only zero weights or zero pixels."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    out_h, out_w = (h + 2 * pad[0] - kh) // stride + 1, (w + 2 * pad[1] - kw) // stride + 1
    bh, bw = -(-kh // stride), -(-kw // stride)
    rows, cols = (out_h + bh - 1) * stride, (out_w + bw - 1) * stride
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    x = F.pad(x, (pad[1], cols - w - pad[1], pad[0], rows - h - pad[0]))
    x = x.reshape(n, c, rows // stride, stride, cols // stride, stride).permute(0, 1, 3, 5, 2, 4)
    x = x.reshape(n, c * stride * stride, rows // stride, cols // stride)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = F.pad(weight, (0, bw * stride - kw, 0, bh * stride - kh))
    weight = weight.reshape(o, c, bh, stride, bw, stride).permute(0, 1, 3, 5, 2, 4).reshape(o, c * stride**2, bh, bw)
    return F.conv2d(x, weight, bias)


def pointwise_strided_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           stride: tuple[int, int], pad: tuple[int, int], group: int) -> torch.Tensor:
    """F.conv2d of a 1x1 `weight` with `stride` and `pad`, as a stride-1 one over the pixels its
    windows read: output (i, j) is the padded pixel (s i, s j), so (h + 2 p - 1) // s + 1 rows
    as Caffe counts them (dilation cannot move a 1x1 window)."""
    if any(pad):
        x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]))
    return F.conv2d(x[:, :, :: stride[0], :: stride[1]], weight, bias, groups=group)


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
        if any(d <= 0 for d in self.dilation):
            # Caffe has no check here (its im2col then reads one pixel for every tap); torch's
            # convolution stops with a traceback.
            raise self.error(f"dilation {self.dilation} must be positive")
        channels, self.group, num_output = shape[1], cp.group, cp.num_output
        if num_output <= 0:
            raise self.error("num_output must be positive")
        if self.group <= 0:
            raise self.error("group must be positive")
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
        self._channels = channels
        #: Run as a stride-1 convolution over blocks of pixels (see the module doc).
        self.space_to_depth = False

    def space_to_depth_fits(self) -> bool:
        """2-D, one group, no dilation, one stride of at least 2 on both axes, and few input
        channels (at most SPACE_TO_DEPTH_CHANNELS once multiplied by stride^2)."""
        s = self.stride[0]
        return (self._conv is F.conv2d and self.group == 1 and self.dilation == (1, 1) and s >= 2
                and self.stride == (s, s) and self._channels * s * s <= SPACE_TO_DEPTH_CHANNELS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        bias = self.blobs[1] if self.bias_term else None
        if x.dim() == 4 and x.device.type == "cpu":
            # oneDNN convolves channels-last blobs without reordering, and the ReLU, pooling and
            # LRN that follow keep the format (max pooling is ~10x faster in it on CPU).
            x = x.contiguous(memory_format=torch.channels_last)
            if self.kernel == (1, 1) and self.stride != (1, 1) and not self.space_to_depth:
                return (pointwise_strided_conv(x, self.blobs[0], bias, self.stride, self.pad, self.group),)
        if self.space_to_depth:
            return (space_to_depth_conv(x, self.blobs[0], bias, self.stride[0], self.pad),)
        return (
            self._conv(x, self.blobs[0], bias, self.stride, self.pad, self.dilation, self.group),
        )
