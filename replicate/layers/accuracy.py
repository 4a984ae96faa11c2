"""Caffe's Accuracy: fraction of (non-ignored) samples whose true class is among the top k.

Caffe ranks the classes with `std::partial_sort` of (score, class index) pairs under
`std::greater`, and a sample is correct when its label is among the first k: ties in score go to
the HIGHER class index.  That is the rule of BVLC Caffe from July 2014 (commit 907c78a, top_k) to
2017 and of the pycaffe the golden fixtures come from.  The spring-2014 Caffe the paper ran took
the first maximum (a strict `>` scan: ties to the LOWER index); BVLC's 2017 rewrite counts every
tie against the true class.  Only tied scores tell the three apart (a collapsed net's uniform
outputs: with balanced classes, the first two give the same accuracy).  An optional
second top holds the per-class accuracy.  The 2014 Caffe Accuracy also reported the mean -log
probability of the true class; nets reproduce that with a MultinomialLogisticLoss layer on the
same bottoms (see multinomial_logistic_loss.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from replicate.layers.axes import canonical_axis
from replicate.layers.base import Layer, Shape, register
from replicate.layers.labels import LabelRange, scores_and_labels
from replicate.proto import caffe_pb2


@register("Accuracy")
class Accuracy(Layer):
    min_bottoms = 2
    max_bottoms = 2
    label_bottom = 1

    def __init__(self, param: caffe_pb2.LayerParameter, phase: int, bottom_shapes: Sequence[Shape]):
        super().__init__(param, phase, bottom_shapes)
        ap = param.accuracy_param
        shape, label_shape = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.axis = canonical_axis(self, ap.axis, len(shape))
        self.top_k = ap.top_k
        self.classes = shape[self.axis]
        if self.top_k > self.classes:
            raise self.error(f"top_k ({self.top_k}) exceeds the number of classes ({self.classes})")
        outer, inner = math.prod(shape[: self.axis]), math.prod(shape[self.axis + 1 :])
        if outer * inner != math.prod(label_shape):
            raise self.error(
                f"number of labels ({math.prod(label_shape)}) must match outer*inner "
                f"({outer}*{inner}) of predictions of shape {shape}"
            )
        self.ignore_label = ap.ignore_label if ap.HasField("ignore_label") else None
        if len(param.top) not in (1, 2):
            raise self.error(f"takes 1 or 2 top blobs, got {len(param.top)}")
        self.top_shapes = [()] + ([(self.classes,)] if len(param.top) == 2 else [])

    def backward_refusal(self, bottom_index: int) -> str | None:
        return "has no backward (Caffe: Not Implemented Yet)"

    def label_range(self) -> LabelRange:
        return LabelRange(self.name, self.type, self.classes, self.ignore_label)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.checks_labels:
            self.label_range().check(label, self.checks_labels)
        with torch.no_grad():
            scores, safe, valid = scores_and_labels(x, label, self.axis, self.ignore_label)
            true_score = scores.gather(1, safe)
            index = torch.arange(scores.shape[1], device=scores.device).view(1, -1, 1)
            ahead = (scores > true_score) | ((scores == true_score) & (index > safe))
            correct = (ahead.sum(dim=1, keepdim=True) < self.top_k) & valid
            count = valid.sum()
            acc = correct.sum().to(x.dtype) / count.clamp(min=1).to(x.dtype)
            if len(self.top_shapes) == 1:
                return (acc,)
            flat_labels = safe[valid]
            per_class_n = torch.bincount(flat_labels, minlength=self.classes).to(x.dtype)
            per_class_ok = torch.bincount(safe[correct], minlength=self.classes).to(x.dtype)
            per_class = torch.where(
                per_class_n > 0, per_class_ok / per_class_n.clamp(min=1), torch.zeros_like(per_class_n)
            )
            return acc, per_class
