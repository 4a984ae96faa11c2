"""Trained weights in and out of a net, by layer name, as Caffe's Net does.

Transfer learning in the paper rests on this rule: `CopyTrainedLayersFrom` copies every source
layer whose *name* matches a layer of the net and ignores the rest, which is why the authors'
transfer nets rename the layers above n with a `-new` suffix to keep them at their random start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from replicate.errors import ReplicateError
from replicate.io.blobs import array_to_blob, blob_shape, blob_to_array, is_legacy
from replicate.proto import caffe_pb2


@dataclass
class CopyReport:
    """Which source layers were copied into the net and which had no layer of that name."""

    copied: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _shape_equal(target: Sequence[int], blob: caffe_pb2.BlobProto) -> bool:
    """Blob::ShapeEquals: a `shape` must equal the target's; legacy 4-D dims are compared from the
    end, the target's missing leading axes counting as 1 (a bias of 4 matches 1x1x1x4)."""
    if not is_legacy(blob):
        return tuple(target) == blob_shape(blob)
    return len(target) <= 4 and (1,) * (4 - len(target)) + tuple(target) == blob_shape(blob)


def copy_trained_layers(
    layer_blobs: Mapping[str, Sequence[nn.Parameter]], source: caffe_pb2.NetParameter
) -> CopyReport:
    """Copy `source`'s blobs into the net's parameters by layer name (Net::CopyTrainedLayersFrom).

    `source` must be upgraded (V2 `layer` entries).  A layer whose blob count or shapes differ
    stops with both shapes: the fix is renaming the layer so it learns from scratch.
    """
    report = CopyReport()
    for layer in source.layer:
        if layer.name not in layer_blobs:
            report.ignored.append(layer.name)
            continue
        targets = layer_blobs[layer.name]
        if len(targets) != len(layer.blobs):
            raise ReplicateError(
                f"cannot copy weights of layer '{layer.name}': the source has {len(layer.blobs)} "
                f"blob(s), the net's layer has {len(targets)}"
            )
        for j, (target, blob) in enumerate(zip(targets, layer.blobs)):
            if not _shape_equal(target.shape, blob):
                raise ReplicateError(
                    f"cannot copy param {j} of layer '{layer.name}': source shape "
                    f"{blob_shape(blob)}, target shape {tuple(target.shape)}; rename the layer "
                    "to learn it from scratch instead"
                )
            try:
                array = blob_to_array(blob)
            except ValueError as err:  # Caffe's FromProto CHECK on the value count
                raise ReplicateError(f"cannot copy param {j} of layer '{layer.name}': {err}") from None
            values = torch.from_numpy(array.reshape(tuple(target.shape)))
            with torch.no_grad():
                target.copy_(values)
        report.copied.append(layer.name)
    return report


def net_to_proto(
    net_param: caffe_pb2.NetParameter, layer_blobs: Mapping[str, Sequence[torch.Tensor]]
) -> caffe_pb2.NetParameter:
    """The NetParameter Caffe's Net::ToProto writes into a snapshot: `net_param`'s layers (a
    CompiledNet's `to_proto`) each with its current blobs."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    for layer in out.layer:
        del layer.blobs[:]
        for tensor in layer_blobs.get(layer.name, ()):
            array_to_blob(tensor.detach().to("cpu", torch.float32).numpy(), layer.blobs.add())
    return out
