"""Caffe's parameter fillers (filler.hpp), with its fan rules.

The random streams cannot match Caffe's (boost's mt19937 draws), so what is matched is the
distribution and every deterministic rule: fan_in = count / shape[0], fan_out = count / shape[1]
(integer division, as Caffe computes them), sparse Gaussian masks, the bilinear kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2

Filler = caffe_pb2.FillerParameter


def _fans(t: torch.Tensor) -> tuple[int, int]:
    count = t.numel()
    fan_in = count // t.shape[0]
    fan_out = count // t.shape[1] if t.dim() > 1 else count
    return fan_in, fan_out


def _fan_n(t: torch.Tensor, f: Filler) -> float:
    fan_in, fan_out = _fans(t)
    if f.variance_norm == Filler.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if f.variance_norm == Filler.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def _no_sparse(f: Filler) -> None:
    if f.sparse != -1:
        raise ReplicateError(f"filler '{f.type}' does not support sparse (only gaussian does)")


def _constant(t: torch.Tensor, f: Filler, g: torch.Generator | None) -> None:
    _no_sparse(f)
    t.fill_(f.value)


def _uniform(t: torch.Tensor, f: Filler, g: torch.Generator | None) -> None:
    _no_sparse(f)
    t.uniform_(f.min, f.max, generator=g)


def _gaussian(t: torch.Tensor, f: Filler, g: torch.Generator | None) -> None:
    t.normal_(f.mean, f.std, generator=g)
    if f.sparse < -1:
        raise ReplicateError(f"gaussian filler: sparse must be >= -1, got {f.sparse}")
    if f.sparse >= 0:
        if f.sparse > t.shape[0]:
            raise ReplicateError(
                f"gaussian filler: sparse {f.sparse} exceeds the {t.shape[0]} outputs of blob {tuple(t.shape)}"
            )
        # Each weight survives with probability sparse / num_outputs (Caffe's Bernoulli mask),
        # so every output keeps `sparse` inputs on average.
        keep = torch.empty_like(t).bernoulli_(f.sparse / t.shape[0], generator=g)
        t.mul_(keep)


def _positive_unitball(t: torch.Tensor, f: Filler, g: torch.Generator | None) -> None:
    _no_sparse(f)
    t.uniform_(0.0, 1.0, generator=g)
    rows = t.view(t.shape[0], -1)
    rows.div_(rows.sum(dim=1, keepdim=True))


def _xavier(t: torch.Tensor, f: Filler, g: torch.Generator | None) -> None:
    _no_sparse(f)
    scale = math.sqrt(3.0 / _fan_n(t, f))
    t.uniform_(-scale, scale, generator=g)


def _msra(t: torch.Tensor, f: Filler, g: torch.Generator | None) -> None:
    _no_sparse(f)
    t.normal_(0.0, math.sqrt(2.0 / _fan_n(t, f)), generator=g)


def _bilinear(t: torch.Tensor, f: Filler, g: torch.Generator | None) -> None:
    """The upsampling kernel of Caffe's BilinearFiller (square 4-D kernels only)."""
    _no_sparse(f)
    if t.dim() != 4 or t.shape[2] != t.shape[3]:
        raise ReplicateError(f"bilinear filler needs a 4-D blob with square kernels, got {tuple(t.shape)}")
    width = t.shape[3]
    factor = math.ceil(width / 2.0)
    # Caffe's current centre, (width - 1) / 2f; the older (2f - 1 - f % 2) / 2f made odd
    # kernels such as 3 or 7 lopsided.  Arithmetic in float32, as Caffe's Dtype does it.
    centre = torch.tensor((width - 1) / (2.0 * factor), dtype=torch.float32)
    axis = torch.arange(width, dtype=torch.float32)
    weights = 1 - (axis / factor - centre).abs()
    t.copy_((weights[:, None] * weights[None, :]).expand_as(t))


_FILLERS: dict[str, Callable[[torch.Tensor, Filler, torch.Generator | None], None]] = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def fill(tensor: torch.Tensor, filler: Filler, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill `tensor` in place as Caffe's filler of `filler.type` would; returns it."""
    try:
        rule = _FILLERS[filler.type]
    except KeyError:
        raise ReplicateError(
            f"unknown filler type '{filler.type}'; known: {', '.join(sorted(_FILLERS))}"
        ) from None
    if tensor.numel() == 0:
        raise ReplicateError(f"cannot fill an empty blob of shape {tuple(tensor.shape)}")
    with torch.no_grad():
        rule(tensor, filler, generator)
    return tensor
