"""Caffe's SoftmaxWithLoss: mean (by Caffe's normalization mode) of -log softmax(x)[label].

Forward and backward are Caffe's own pair (`softmax_loss_layer.cpp`), from one softmax: the loss
is -log(max(prob[label], FLT_MIN)) summed over non-ignored positions and divided by the
normalizer; the gradient is (prob - onehot) * top_diff / normalizer, zero at ignored labels.
Autograd through log_softmax would give the same gradient only up to exp(log(prob)) rounding and
costs a second softmax.  An optional second top is the softmax itself, through which Caffe sends
no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from replicate.layers.base import Layer, Shape, register
from replicate.layers.labels import LabelRange, scores_and_labels
from replicate.proto import caffe_pb2

FLT_MIN = float(torch.finfo(torch.float32).tiny)
_Mode = caffe_pb2.LossParameter


def normalization_mode(loss_param: caffe_pb2.LossParameter) -> int:
    """Caffe's rule: `normalization` if set, else the deprecated `normalize` (VALID/BATCH_SIZE)."""
    if not loss_param.HasField("normalization") and loss_param.HasField("normalize"):
        return _Mode.VALID if loss_param.normalize else _Mode.BATCH_SIZE
    return loss_param.normalization


def normalizer(mode: int, outer: int, inner: int, valid: torch.Tensor) -> torch.Tensor | float:
    """Caffe's `get_normalizer`, never below 1."""
    if mode == _Mode.FULL:
        return float(max(1, outer * inner))
    if mode == _Mode.VALID:
        return valid.clamp(min=1.0)
    if mode == _Mode.BATCH_SIZE:
        return float(max(1, outer))
    return 1.0


class _CaffeSoftmaxLoss(torch.autograd.Function):
    """(loss, prob) from scores (outer, C, inner); d loss / d scores is Caffe's backward."""

    @staticmethod
    def forward(
        ctx, scores: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor, norm: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        prob = torch.softmax(scores, dim=1)
        nll = -torch.log(prob.gather(1, safe).clamp(min=FLT_MIN))
        loss = torch.where(valid, nll, torch.zeros_like(nll)).sum() / norm
        ctx.save_for_backward(prob, safe, valid, norm)
        ctx.mark_non_differentiable(prob)
        return loss, prob

    @staticmethod
    def backward(ctx, loss_diff: torch.Tensor, _prob_diff: torch.Tensor):
        prob, safe, valid, norm = ctx.saved_tensors
        diff = prob.scatter_add(1, safe, torch.full(safe.shape, -1.0, dtype=prob.dtype, device=prob.device))
        scale = loss_diff / norm  # Caffe's loss_weight / normalizer
        return diff * torch.where(valid, scale, torch.zeros_like(scale)), None, None, None


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Layer):
    min_bottoms = 2
    max_bottoms = 2
    default_loss_weight = 1.0
    auto_top_blobs = True
    label_bottom = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        shape, label_shape = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        axis = param.softmax_param.axis
        self.axis = axis if axis >= 0 else axis + len(shape)
        if not 0 <= self.axis < len(shape):
            raise self.error(f"softmax axis {axis} out of range for input of shape {shape}")
        outer, inner = math.prod(shape[: self.axis]), math.prod(shape[self.axis + 1 :])
        if not label_shape or label_shape[0] != shape[0]:
            # Caffe's LossLayer::Reshape CHECKs this before the count: labels (4,) for scores
            # (2, 5, 2) have the right count but another first axis, and Caffe aborts.
            raise self.error(
                f"the predictions (shape {shape}) and labels (shape {label_shape}) need the same first "
                "dimension (Caffe's LossLayer aborts)")
        if outer * inner != math.prod(label_shape):
            raise self.error(
                f"number of labels ({math.prod(label_shape)}) must match outer*inner "
                f"({outer}*{inner}) of predictions of shape {shape}"
            )
        lp = param.loss_param
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        self.mode = normalization_mode(lp)
        if len(param.top) > 2:
            raise self.error(f"takes at most 2 top blobs, got {len(param.top)}")
        self.top_shapes = [()] + ([shape] if len(param.top) == 2 else [])
        self.classes = shape[self.axis]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def label_range(self) -> LabelRange:
        return LabelRange(self.name, self.type, self.classes, self.ignore_label)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.checks_labels:
            self.label_range().check(label, self.checks_labels)
        scores, safe, valid = scores_and_labels(x, label, self.axis, self.ignore_label)
        outer, inner = scores.shape[0], scores.shape[2]
        norm = normalizer(self.mode, outer, inner, valid.sum().to(x.dtype))
        if not isinstance(norm, torch.Tensor):
            # A fill on the device: torch.tensor(norm, device=...) would copy from the host and wait.
            norm = torch.full((), norm, dtype=x.dtype, device=x.device)
        loss, prob = _CaffeSoftmaxLoss.apply(scores, safe, valid, norm)
        if len(self.top_shapes) == 2:
            return loss, prob.reshape(x.shape)
        return (loss,)
