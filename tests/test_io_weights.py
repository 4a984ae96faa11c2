"""Weight copy by layer name (Net::CopyTrainedLayersFrom) and snapshot protos (Net::ToProto)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from replicate.errors import ReplicateError
from replicate.io.blobs import blob_to_array
from replicate.io.model import load_caffemodel
from replicate.io.prototxt import parse_text, read_net_text
from replicate.net.weights import copy_trained_layers, net_to_proto
from replicate.proto import caffe_pb2

V1_CASE = Path(__file__).parent / "golden" / "caffe" / "caffemodel_v1"


def _params(**shapes: list[tuple[int, ...]]) -> dict[str, list[nn.Parameter]]:
    return {name: [nn.Parameter(torch.zeros(s)) for s in blob_shapes] for name, blob_shapes in shapes.items()}


def test_v1_caffemodel_copies_with_the_legacy_shape_rule() -> None:
    # The V1 file stores the bias as 1x1x1x4 and the ip weight as 1x1x5x196.
    blobs = _params(conv=[(4, 3, 3, 3), (4,)], ip=[(5, 196), (5,)], extra=[(2,)])
    report = copy_trained_layers(blobs, load_caffemodel(V1_CASE / "v1.caffemodel"))
    assert report.copied == ["conv", "ip"] and report.ignored == []
    arrays = np.load(V1_CASE / "arrays.npz")
    for name in ("conv", "ip"):
        for i in range(2):
            np.testing.assert_array_equal(blobs[name][i].detach().numpy(), arrays[f"param/{name}/{i}"])
    assert torch.all(blobs["extra"][0] == 0)


def test_renamed_layers_are_ignored_and_keep_their_values() -> None:
    blobs = _params(conv=[(4, 3, 3, 3), (4,)])
    blobs_new = {"conv-new": blobs["conv"]}
    report = copy_trained_layers(blobs_new, load_caffemodel(V1_CASE / "v1.caffemodel"))
    assert report.copied == [] and report.ignored == ["conv", "ip"]
    assert torch.all(blobs["conv"][0] == 0)


def test_shape_mismatch_names_layer_and_both_shapes() -> None:
    blobs = _params(conv=[(8, 3, 3, 3), (8,)])
    with pytest.raises(ReplicateError, match=r"param 0 of layer 'conv'.*\(4, 3, 3, 3\).*\(8, 3, 3, 3\)"):
        copy_trained_layers(blobs, load_caffemodel(V1_CASE / "v1.caffemodel"))


def test_legacy_shape_with_a_wrong_trailing_dim_is_refused() -> None:
    blobs = _params(conv=[(4, 3, 3, 3), (5,)])
    with pytest.raises(ReplicateError, match=r"param 1 of layer 'conv'.*\(1, 1, 1, 4\)"):
        copy_trained_layers(blobs, load_caffemodel(V1_CASE / "v1.caffemodel"))


def test_blob_count_mismatch() -> None:
    blobs = _params(conv=[(4, 3, 3, 3)])
    with pytest.raises(ReplicateError, match="source has 2 blob.*layer has 1"):
        copy_trained_layers(blobs, load_caffemodel(V1_CASE / "v1.caffemodel"))


def test_blob_with_too_few_values_names_layer_and_blob() -> None:
    source = load_caffemodel(V1_CASE / "v1.caffemodel")
    del source.layer[0].blobs[1].data[-1]
    blobs = _params(conv=[(4, 3, 3, 3), (4,)])
    with pytest.raises(ReplicateError, match=r"param 1 of layer 'conv': blob holds 3 values"):
        copy_trained_layers(blobs, source)


def test_net_to_proto_writes_current_blobs_by_layer() -> None:
    net_param = read_net_text(V1_CASE / "net.prototxt")
    blobs = {"conv": [torch.full((4, 3, 3, 3), 2.0), torch.arange(4.0)]}
    proto = net_to_proto(net_param, blobs)
    assert [layer.name for layer in proto.layer] == [layer.name for layer in net_param.layer]
    conv = next(layer for layer in proto.layer if layer.name == "conv")
    assert list(conv.blobs[0].shape.dim) == [4, 3, 3, 3]
    np.testing.assert_array_equal(blob_to_array(conv.blobs[1]), np.arange(4.0, dtype=np.float32))
    ip = next(layer for layer in proto.layer if layer.name == "ip")
    assert len(ip.blobs) == 0
    # The round trip: what a snapshot holds copies back into a fresh net.
    fresh = {"conv": [nn.Parameter(torch.zeros(4, 3, 3, 3)), nn.Parameter(torch.zeros(4))]}
    copy_trained_layers(fresh, proto)
    assert torch.equal(fresh["conv"][1].detach(), torch.arange(4.0))


def test_every_matching_source_layer_is_copied_in_order_like_caffe() -> None:
    source = parse_text(
        'layer { name: "a" blobs { shape { dim: 1 } data: 1 } } layer { name: "a" blobs { shape { dim: 1 } data: 2 } }',
        caffe_pb2.NetParameter(),
    )
    blobs = _params(a=[(1,)])
    copy_trained_layers(blobs, source)
    # Caffe copies every matching source layer in order, so the last one's values remain.
    assert blobs["a"][0].item() == 2.0
