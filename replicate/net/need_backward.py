"""Caffe's backward plan: which layers run Backward and which bottoms receive a gradient.

Caffe decides this once in `Net::Init` (forward pass: a layer needs backward if a bottom or a
learnable parameter does; backward pass: only layers whose tops reach a loss, and not those whose
every top is cut by `propagate_down`; `force_backward` turns everything on where the layer
allows).  Autograd computes the same gradients for the loss on its own; the plan matters where a
caller seeds gradients on non-loss blobs (Caffe ignores those) and to cut autograd's graph where
Caffe computes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from replicate.proto import caffe_pb2


@dataclass
class BackwardPlan:
    layer_needs: list[bool]
    bottom_needs: list[list[bool]]
    #: Per blob: whether Caffe computes its gradient (some consumer propagates down into it).
    blob_gets_diff: dict[str, bool]
    #: Per layer and bottom: whether the layer that made the bottom runs Backward, reading the
    #: diff this layer leaves there (whatever this layer's flags say).
    bottom_diff_read: list[list[bool]]


def backward_plan(
    layers: Sequence[caffe_pb2.LayerParameter],
    tops: Sequence[Sequence[str]],
    loss_weights: Sequence[Sequence[float]],
    param_lr_mults: Sequence[Sequence[float]],
    allow_force_backward: Sequence[Sequence[bool]],
    force_backward: bool,
) -> BackwardPlan:
    blob_needs: dict[str, bool] = {}
    layer_needs: list[bool] = []
    bottom_needs: list[list[bool]] = []
    for i, lp in enumerate(layers):
        needs = False
        bottoms = []
        for j, b in enumerate(lp.bottom):
            need = blob_needs.get(b, False)
            needs |= need
            bottoms.append(lp.propagate_down[j] if j < len(lp.propagate_down) else need)
        needs |= any(m != 0 for m in param_lr_mults[i])
        for t in tops[i]:
            blob_needs.setdefault(t, False)
            if needs:
                blob_needs[t] = True
        layer_needs.append(needs)
        bottom_needs.append(bottoms)

    under_loss: set[str] = set()
    skip: set[str] = set()
    for i in range(len(layers) - 1, -1, -1):
        lp = layers[i]
        contributes = any(
            w != 0 or t in under_loss for t, w in zip(tops[i], loss_weights[i])
        )
        all_skipped = all(t in skip for t in tops[i])
        if layer_needs[i] and all_skipped:
            layer_needs[i] = False
            bottom_needs[i] = [False] * len(lp.bottom)
        if not contributes:
            layer_needs[i] = False
        for j, b in enumerate(lp.bottom):
            if contributes:
                under_loss.add(b)
            else:
                bottom_needs[i][j] = False
            if not bottom_needs[i][j]:
                skip.add(b)

    if force_backward:
        for i, lp in enumerate(layers):
            layer_needs[i] = True
            for j in range(len(lp.bottom)):
                bottom_needs[i][j] = bottom_needs[i][j] or allow_force_backward[i][j]
    gets_diff = {t: False for names in tops for t in names}
    for lp, needs in zip(layers, bottom_needs):
        for b, need in zip(lp.bottom, needs):
            gets_diff[b] = gets_diff[b] or need
    made_by: dict[str, int] = {}
    diff_read = []
    for i, lp in enumerate(layers):
        diff_read.append([b in made_by and layer_needs[made_by[b]] for b in lp.bottom])
        made_by.update((t, i) for t in tops[i])
    return BackwardPlan(layer_needs, bottom_needs, gets_diff, diff_read)
