"""Weight copy by layer name (Net::CopyTrainedLayersFrom) and snapshot protos (Net::ToProto)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from replicate.data.image import encode_jpeg
from replicate.data.lmdb_io import encoded_datum, write_lmdb
from replicate.errors import ReplicateError
from replicate.io.binary import write_mean
from replicate.io.blobs import blob_to_array
from replicate.io.model import load_caffemodel
from replicate.io.prototxt import parse_text, read_net_text
from replicate.net.compile import CompiledNet
from replicate.net.weights import copy_trained_layers, net_to_proto
from replicate.proto import caffe_pb2

GOLDEN = Path(__file__).parent / "golden"
V1_CASE = GOLDEN / "caffe" / "caffemodel_v1"
#: Every golden case whose Caffe wrote its net with Net::Save, in both roots.
SAVED_BY_CAFFE = sorted(GOLDEN.glob("caffe*/*/weights.caffemodel"))


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


@pytest.mark.parametrize("path", SAVED_BY_CAFFE, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_a_net_written_as_a_caffemodel_is_the_file_caffes_net_save_wrote(path: Path) -> None:
    """Net::ToProto, byte for byte: the layers as given, InsertSplits's Split layers with Caffe's
    names where one top feeds several layers (or a layer and a loss), the net's phase on every
    layer, BatchNorm's completed param specs, and each layer's blobs (here Caffe's own values,
    copied in by name)."""
    meta = json.loads((path.parent / "meta.json").read_text())
    net = CompiledNet(read_net_text(path.parent / "net.prototxt"), getattr(caffe_pb2, meta["phase"]))
    copy_trained_layers(net.layer_blobs(), load_caffemodel(path))
    assert net_to_proto(net.to_proto(), net.layer_blobs()).SerializeToString() == path.read_bytes()


def test_a_caffemodel_names_the_files_of_its_layers_as_the_net_gave_them(tmp_path: Path) -> None:
    """Layers read their data sources and mean files against the run's folder, but the written
    net keeps the names as given (Caffe writes what it was given): a .caffemodel does not depend
    on where its run lived.  Also Caffe's Split layers where a top feeds two layers, and the loss
    weight Caffe's LossLayer gives itself."""
    text = (
        'name: "n" layer { name: "d" type: "Data" top: "x" top: "label" '
        'transform_param { crop_size: 8 mean_file: "mean.binaryproto" } '
        'data_param { source: "db" batch_size: 2 backend: LMDB } } '
        'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 3 } } '
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" } '
        'layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" } '
    )
    param = parse_text(text, caffe_pb2.NetParameter())
    written = []
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        images = np.random.default_rng(0).integers(0, 256, (4, 10, 10, 3), dtype=np.uint8)
        write_lmdb(folder / "db", [(f"{i}", encoded_datum(encode_jpeg(im), i % 3)) for i, im in enumerate(images)])
        write_mean(folder / "mean.binaryproto", np.zeros((3, 10, 10), np.float32))
        net = CompiledNet(param, caffe_pb2.TRAIN, folder=folder)
        assert net.layer_params[0].data_param.source == str(folder / "db")  # what the layer reads
        written.append(net.to_proto())
    assert written[0] == written[1]
    layers = {layer.name: layer for layer in written[0].layer}
    assert layers["d"].data_param.source == "db" and layers["d"].transform_param.mean_file == "mean.binaryproto"
    assert list(layers["loss"].loss_weight) == [1.0] and not layers["acc"].loss_weight
    assert layers["ip_ip_0_split"].type == "Split" and layers["label_d_1_split"].type == "Split"
    assert list(layers["loss"].bottom) == ["ip_ip_0_split_0", "label_d_1_split_0"]
    assert list(layers["acc"].bottom) == ["ip_ip_0_split_1", "label_d_1_split_1"]
    assert all(layer.phase == caffe_pb2.TRAIN for layer in written[0].layer)
