"""Caffe's InsertSplits (src/caffe/util/insert_splits.cpp): where one top feeds several bottoms,
or a bottom and a loss, Caffe's Net::Init puts a Split layer after its producer, and every
.caffemodel Caffe writes (Net::ToProto) holds those Split layers with Caffe's names.

The engine computes with none (autograd sums a blob's gradients over its readers), but what Caffe
decides on the split net is decided on it here too: which layers run backward (Net::Init's walk
from the losses sees each reader's own Split top, so a reader that sends no gradient cuts only its
own), the net outputs and loss weights (replicate.net.wiring), and a snapshot's layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from replicate.proto import caffe_pb2

TopIndex = tuple[int, int]  # (layer, top)


@dataclass
class SplitNet:
    """The layers after InsertSplits, and for each the index of the layer it copies (None: a Split
    that InsertSplits added)."""

    layers: list[caffe_pb2.LayerParameter]
    origin: list[int | None]


def split_layer_name(layer: str, blob: str, top: int) -> str:
    return f"{blob}_{layer}_{top}_split"


def split_blob_name(layer: str, blob: str, top: int, k: int) -> str:
    return f"{blob}_{layer}_{top}_split_{k}"


def insert_splits(layers: Sequence[caffe_pb2.LayerParameter]) -> SplitNet:
    """Copies of `layers` (filtered to the net's state, bottoms all produced) with Caffe's Split
    layers inserted and the readers' bottoms renamed to their tops, as Caffe names them.  A loss
    weight counts as one more reader; where it is split off, the split's first top takes it and
    the layer's own loss weights are cleared (a LossLayer then gives itself its default 1 again,
    as Caffe's does in its setup, after this)."""
    last_top: dict[str, TopIndex] = {}
    source_of: dict[TopIndex, TopIndex] = {}  # (layer, bottom) -> the top it reads
    readers: dict[TopIndex, int] = {}
    loss_weight: dict[TopIndex, float] = {}
    for i, layer in enumerate(layers):
        for j, blob in enumerate(layer.bottom):
            top = last_top[blob]
            source_of[(i, j)] = top
            readers[top] = readers.get(top, 0) + 1
        for j, blob in enumerate(layer.top):
            last_top[blob] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            top = last_top[layer.top[j]]
            loss_weight[top] = layer.loss_weight[j]
            if loss_weight[top]:
                readers[top] = readers.get(top, 0) + 1
    out = SplitNet([], [])
    next_split: dict[TopIndex, int] = {}
    for i, layer in enumerate(layers):
        copy = caffe_pb2.LayerParameter()
        copy.CopyFrom(layer)
        out.layers.append(copy)
        out.origin.append(i)
        for j, blob in enumerate(layer.bottom):
            top = source_of[(i, j)]
            if readers.get(top, 0) > 1:
                k = next_split.get(top, 0)
                next_split[top] = k + 1
                copy.bottom[j] = split_blob_name(layers[top[0]].name, blob, top[1], k)
        for j, blob in enumerate(layer.top):
            count = readers.get((i, j), 0)
            if count <= 1:
                continue
            split = caffe_pb2.LayerParameter(name=split_layer_name(layer.name, blob, j), type="Split", bottom=[blob])
            weight = loss_weight.get((i, j), 0.0)
            for k in range(count):
                split.top.append(split_blob_name(layer.name, blob, j, k))
                if k == 0 and weight:
                    split.loss_weight.append(weight)
            out.layers.append(split)
            out.origin.append(None)
            if weight:
                copy.ClearField("loss_weight")
                next_split[(i, j)] = next_split.get((i, j), 0) + 1
    return out
