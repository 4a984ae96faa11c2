"""Integer labels against class scores, as Caffe's softmax loss and accuracy read them.

Both view predictions as (outer, classes, inner) around the class axis, cast float labels to int
(truncation, Caffe's static_cast), skip `ignore_label`, and stop on a label outside the classes.
That check reads the labels on the host, so it runs in eager mode only: a compiled graph cannot
branch on data without breaking, and there an out-of-range label still fails in the gather
(an index error) instead of reading another class's score.
"""

from __future__ import annotations

import math

import torch

from replicate.layers.base import Layer


def scores_and_labels(
    layer: Layer, x: torch.Tensor, label: torch.Tensor, axis: int, ignore_label: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores (outer, C, inner), labels (outer, 1, inner) with ignored ones set to 0, valid mask).

    Shapes come from the tensors, so a net fed another batch size (Caffe's Reshape) works.
    """
    classes = x.shape[axis]
    outer = math.prod(x.shape[:axis])
    scores = x.reshape(outer, classes, -1)
    labels = label.reshape(outer, 1, scores.shape[2]).long()
    if ignore_label is None:
        valid = torch.ones_like(labels, dtype=torch.bool)
    else:
        valid = labels != ignore_label
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    if not torch.compiler.is_compiling() and ((safe < 0) | (safe >= classes)).any():
        raise layer.error(f"label out of range [0, {classes})")
    return scores, safe, valid
