"""Integer labels against class scores, as Caffe's softmax loss and accuracy read them.

Both view predictions as (outer, classes, inner) around the class axis, cast float labels to int
(truncation, Caffe's static_cast), skip `ignore_label`, and stop on a label outside the classes.

The range check needs the labels' values, which on a GPU means waiting for the device.  So it is
not part of a layer's forward: the net checks each batch's labels on the host, where the batch
arrives from its data or input layer (`CompiledNet.feed`), against every layer that reads them.
Only a label blob computed by another layer is checked in the reading layer's forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from replicate.errors import ReplicateError


@dataclass(frozen=True)
class LabelRange:
    """The labels a layer accepts: [0, classes), and `ignore_label` anywhere."""

    layer: str
    type: str
    classes: int
    ignore_label: int | None = None

    def check(self, labels: torch.Tensor, blob: str) -> None:
        """Stop with Caffe's complaint when a label is out of range.  Reads the values: a
        device tensor is copied to the host first (a sync), so pass host tensors."""
        values = labels.detach().reshape(-1).cpu().long()
        if self.ignore_label is not None:
            values = values[values != self.ignore_label]
        bad = values[(values < 0) | (values >= self.classes)]
        if bad.numel():
            raise ReplicateError(
                f"layer '{self.layer}' ({self.type}): label {int(bad[0])} in blob '{blob}' out of range "
                f"[0, {self.classes})"
            )


def scores_and_labels(
    x: torch.Tensor, label: torch.Tensor, axis: int, ignore_label: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores (outer, C, inner), labels (outer, 1, inner) with ignored ones set to 0, valid mask).

    Shapes come from the tensors, so a net fed another batch size (Caffe's Reshape) works.  The
    labels are taken as checked (see the module's docstring).
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
    return scores, safe, valid
