"""Caffe's Pooling layer (MAX, AVE, global), with Caffe's own output size and AVE divisor.

Caffe's output size differs from the textbook one: it rounds up by default (`round_mode: CEIL`),
and with padding it drops a last window that would start in the right/bottom padding.  Its AVE
divisor counts the window clipped to the padded image (height + pad), not to the image, and its
MAX ignores padding.  PyTorch's pooling with `ceil_mode` and `count_include_pad` follows the same
rules (the same output size, the same clipped AVE divisor), so where its output size equals
Caffe's and it accepts the padding (at most half the kernel) the layer calls it directly: one
kernel, no padded copy.  Elsewhere (wider padding, or a window Caffe keeps beyond an unpadded
image) the input is padded explicitly, with the dtype's lowest value for MAX and 0 for AVE, only
as far as Caffe's windows reach, then pooled without implicit padding and divided by Caffe's
divisor.

Without padding, ceil rounding can keep a last window that starts past the image and holds no
pixel (a stride wider than the kernel).  Caffe's MAX starts every window at -FLT_MAX, so there
it outputs -FLT_MAX, as the lowest-value padding does here; its AVE divides 0 by 0 (NaN), as the
divisor 0 does here (golden case `pool_empty_window`).  Such a window sends no gradient, as in
Caffe's GPU backward; its CPU backward adds it to the pixel before the channel (a mask of -1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2

_P = caffe_pb2.PoolingParameter


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """Caffe's pooled extent before the padding clip (float division as Caffe does)."""
    ratio = float(size + 2 * pad - kernel) / stride
    return int(math.ceil(ratio) if ceil_mode else math.floor(ratio)) + 1


def torch_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """PyTorch's pooled extent (`pooling_output_shape`): it drops, in ceil mode, a last window
    that starts in the far padding, whether or not there is padding."""
    out = (size + 2 * pad - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def ave_divisor(size: int, out: int, kernel: int, stride: int, pad: int) -> torch.Tensor:
    """Per output position along one axis: Caffe's window length clipped to size + pad."""
    starts = torch.arange(out, dtype=torch.float64) * stride - pad
    ends = torch.clamp(starts + kernel, max=size + pad)
    return ends - starts


@register("Pooling")
class Pooling(Layer):
    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        pp = param.pooling_param
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), got {shape}")
        if len(param.top) != 1:
            raise self.error("only one top is supported (no MAX mask top)")
        if pp.pool not in (_P.MAX, _P.AVE):
            raise self.error(f"pool method {_P.PoolMethod.Name(pp.pool)} is not supported")
        self.method = pp.pool
        height, width = shape[2], shape[3]
        if pp.global_pooling:
            if pp.HasField("kernel_size") or pp.HasField("kernel_h") or pp.HasField("kernel_w"):
                raise self.error("with global_pooling the kernel size cannot be specified")
            kernel = (height, width)
        elif pp.HasField("kernel_size") == (pp.HasField("kernel_h") and pp.HasField("kernel_w")):
            raise self.error("give kernel_size, or kernel_h and kernel_w (not both)")
        else:
            kernel = (pp.kernel_size,) * 2 if pp.HasField("kernel_size") else (pp.kernel_h, pp.kernel_w)
        if pp.HasField("pad_h") != pp.HasField("pad_w") or (pp.HasField("pad") and pp.HasField("pad_h")):
            raise self.error("give pad, or pad_h and pad_w")
        if pp.HasField("stride_h") != pp.HasField("stride_w") or (
            pp.HasField("stride") and pp.HasField("stride_h")
        ):
            raise self.error("give stride, or stride_h and stride_w")
        pad = (pp.pad_h, pp.pad_w) if pp.HasField("pad_h") else (pp.pad,) * 2
        stride = (pp.stride_h, pp.stride_w) if pp.HasField("stride_h") else (pp.stride,) * 2
        if min(kernel) <= 0 or min(stride) <= 0:
            raise self.error(f"kernel {kernel} and stride {stride} must be positive")
        if pp.global_pooling and (any(pad) or stride != (1, 1)):
            raise self.error("with global_pooling only pad 0 and stride 1 are allowed")
        if any(p >= k for p, k in zip(pad, kernel)):
            raise self.error(f"pad {pad} must be smaller than kernel {kernel}")
        ceil_mode = pp.round_mode == _P.CEIL
        out = [pooled_size(s, k, st, p, ceil_mode) for s, k, st, p in zip((height, width), kernel, stride, pad)]
        if any(pad):
            out = [o - 1 if (o - 1) * st >= s + p else o for o, st, s, p in zip(out, stride, (height, width), pad)]
        if min(out) <= 0:
            raise self.error(f"input of shape {shape} is too small for kernel {kernel}")
        self.kernel, self.stride, self.pad, self.out = kernel, stride, pad, tuple(out)
        self.ceil_mode = ceil_mode
        self.native = all(
            2 * p <= k and torch_pooled_size(size, k, st, p, ceil_mode) == o
            for size, k, st, p, o in zip((height, width), kernel, stride, pad, out)
        )
        # Explicit padding on the far side: as far as Caffe's last window reaches, never less.
        self.far_pad = tuple(
            max(0, (o - 1) * st + k - p - s)
            for o, st, k, p, s in zip(out, stride, kernel, pad, (height, width))
        )
        if self.method == _P.AVE:
            dh = ave_divisor(height, out[0], kernel[0], stride[0], pad[0])
            dw = ave_divisor(width, out[1], kernel[1], stride[1], pad[1])
            self.register_buffer("divisor", (dh[:, None] * dw[None, :]).float(), persistent=False)
        self.top_shapes = [(shape[0], shape[1], out[0], out[1])]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if self.native:
            if self.method == _P.MAX:
                return (F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode),)
            return (
                F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode, count_include_pad=True),
            )
        return (self.padded_pool(x),)

    def padded_pool(self, x: torch.Tensor) -> torch.Tensor:
        """Caffe's pooling through explicit padding: any geometry Caffe accepts."""
        (ph, pw), (fh, fw) = self.pad, self.far_pad
        if ph or pw or fh or fw:
            fill = torch.finfo(x.dtype).min if self.method == _P.MAX else 0.0
            x = F.pad(x, (pw, fw, ph, fh), value=fill)
        if self.method == _P.MAX:
            y = F.max_pool2d(x, self.kernel, self.stride)
        else:
            y = F.avg_pool2d(x, self.kernel, self.stride, divisor_override=1)
        y = y[:, :, : self.out[0], : self.out[1]]
        if self.method == _P.AVE:
            y = y / self.divisor.to(y.dtype)
        return y
