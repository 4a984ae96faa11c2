"""Creating a layer's parameter blobs, filled the way Caffe's fillers fill them.

Layers call this rather than the filler module directly so every parameter is created the same
way (float32 `nn.Parameter`, Caffe's filler semantics) whichever layer owns it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from replicate.layers.fillers import fill
from replicate.proto import caffe_pb2


def new_param(shape: Sequence[int], filler: caffe_pb2.FillerParameter) -> nn.Parameter:
    """A float32 parameter of `shape` filled by Caffe's filler `filler`."""
    data = torch.empty(tuple(shape), dtype=torch.float32)
    filled = fill(data, filler)  # fills in place; a returned tensor is taken as the value
    return nn.Parameter(data if filled is None else filled)
