"""Caffe's MultinomialLogisticLoss: mean over the batch of -log(max(p[label], 1e-20)).

Its bottom is already a probability (a Softmax output).  The backward is Caffe's own
(`multinomial_logistic_loss_layer.cpp`): -top_diff / N / max(p[label], 1e-20) at each label's
entry, so a probability under the threshold (0 included) gets a large finite gradient, where
autograd through the clamp would give it 0 (the real-Caffe case `multinomial_logistic_loss` has
such rows).  On the validation net this is exactly
the second number the 2014 Caffe Accuracy layer reported (`Test score #1`, mean -log probability
of the true class, same 1e-20 threshold), so the paper's val nets can log it as a net output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from replicate.layers.base import Layer, Shape, register
from replicate.layers.labels import LabelRange
from replicate.proto import caffe_pb2

LOG_THRESHOLD = 1e-20


class _CaffeLogLoss(torch.autograd.Function):
    """-sum(log(max(p[label], 1e-20))) / N from (N, dim) probabilities and (N, 1) labels, with
    Caffe's gradient: -loss_diff / N divided by the clamped probability at the label."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        picked = flat.gather(1, labels).clamp(min=LOG_THRESHOLD)
        ctx.save_for_backward(picked, labels)
        ctx.shape = flat.shape
        return -torch.log(picked).sum() / flat.shape[0]

    @staticmethod
    def backward(ctx, loss_diff: torch.Tensor):
        picked, labels = ctx.saved_tensors
        scale = -loss_diff / ctx.shape[0]
        grad = torch.zeros(ctx.shape, dtype=picked.dtype, device=picked.device)
        return grad.scatter(1, labels, scale / picked), None


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(Layer):
    min_bottoms = 2
    max_bottoms = 2
    default_loss_weight = 1.0
    auto_top_blobs = True
    label_bottom = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        shape, label_shape = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if not shape:
            raise self.error("the probability bottom needs a batch axis")
        self.dim = math.prod(shape[1:])
        if math.prod(label_shape) != shape[0]:
            raise self.error(f"needs one label per sample ({shape[0]}), got shape {label_shape}")
        if len(param.top) > 1:
            raise self.error(f"takes at most 1 top blob, got {len(param.top)}")
        self.top_shapes = [()]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def label_range(self) -> LabelRange:
        return LabelRange(self.name, self.type, self.dim)

    def forward(self, prob: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor]:
        if self.checks_labels:
            self.label_range().check(label, self.checks_labels)
        num = prob.shape[0]
        flat = prob.reshape(num, self.dim)
        labels = label.reshape(num, 1).long()
        return (_CaffeLogLoss.apply(flat, labels),)
