"""Caffe's Dropout: in TRAIN keeps each unit with probability 1-p and scales kept units by
1/(1-p); in TEST it is the identity (Caffe's inverted dropout, so no rescaling at test time).

The mask is drawn in the forward, unless a caller has handed the layer one with `use_masks` and
refills it with `draw_mask` before each forward.  A compiled training iteration needs that: code
torch.compile generates draws its random numbers from a stream of its own, so its masks would
differ from the ones eager code draws with the same generator state, and nothing could compare
the compiled iteration with the eager one (replicate.solver.compile_check).  Drawn outside, by
the same `bernoulli_` call on the same generator, the masks are the same whichever code runs
the arithmetic.  Either way a mask is drawn as a float32 tensor in the top's own (NCHW) order,
whatever the dtype and memory layout of the input, so that both draws are one and the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from replicate.layers.base import Layer, Shape, register
from replicate.proto import caffe_pb2


@register("Dropout")
class Dropout(Layer):
    min_bottoms = 1
    max_bottoms = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        self.ratio = float(param.dropout_param.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        self.top_shapes = [tuple(bottom_shapes[0])]
        #: The mask the forward uses when set (`use_masks`); None: the forward draws its own.
        self.keep: torch.Tensor | None = None

    @property
    def drops(self) -> bool:
        """Whether the forward drops anything (TRAIN with a nonzero ratio)."""
        return self.phase == caffe_pb2.TRAIN and self.ratio != 0.0

    def use_masks(self, device: torch.device) -> None:
        """From now on the forward multiplies by `keep`, a mask for the top's shape on `device`
        that `draw_mask` refills."""
        self.keep = torch.empty(self.top_shapes[0], dtype=torch.float32, device=device)

    def draw_mask(self) -> None:
        """Draw the next mask into `keep`, by the call the forward would make."""
        self.keep.bernoulli_(1.0 - self.ratio)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if not self.drops:
            return (x,)
        if self.keep is None:
            # float32 and contiguous whatever x is (bf16 under autocast, channels_last after a
            # convolution): the draw is then the same as `draw_mask`'s.
            keep = torch.empty(x.shape, dtype=torch.float32, device=x.device).bernoulli_(1.0 - self.ratio)
        elif self.keep.shape == x.shape:
            keep = self.keep
        else:
            raise self.error(f"input of shape {tuple(x.shape)}, the mask drawn for it has {tuple(self.keep.shape)}")
        return (x * keep.to(x.dtype) * (1.0 / (1.0 - self.ratio)),)
