"""Our schema reads and writes Caffe's own binary files: proof that field numbers match.

Every binary fixture written by real Caffe parses with no unknown fields, holds the values the
golden arrays say, and re-serializes to a message that parses back equal.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from replicate.data.lmdb_io import LmdbReader
from replicate.errors import ReplicateError
from replicate.io.binary import read_binary, read_mean, read_net_binary, write_mean
from replicate.io.blobs import array_to_blob, blob_shape, blob_to_array
from replicate.io.model import load_caffemodel, save_caffemodel
from replicate.io.prototxt import format_text, parse_text, read_net_text, read_solver_text
from replicate.proto import caffe_pb2

GOLDEN = Path(__file__).parent / "golden"
CAFFE = GOLDEN / "caffe"
E2E = GOLDEN / "caffe_train_e2e"


def assert_no_unknown_fields(message: Message) -> None:
    """Walk every set message field: an unknown field means a field number we do not know."""
    assert len(UnknownFieldSet(message)) == 0, type(message).DESCRIPTOR.full_name
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        for item in value if field.is_repeated else [value]:
            assert_no_unknown_fields(item)


def assert_round_trip(message: Message) -> None:
    again = type(message)()
    again.ParseFromString(message.SerializeToString())
    assert again == message


WEIGHT_FILES = sorted(CAFFE.glob("*/weights.caffemodel"))


@pytest.mark.parametrize("path", WEIGHT_FILES, ids=lambda p: p.parent.name)
def test_caffemodels_written_by_caffe_parse_exactly(path: Path) -> None:
    net = read_net_binary(path)
    assert_no_unknown_fields(net)
    assert_round_trip(net)
    arrays = np.load(path.parent / "arrays.npz")
    with_blobs = [layer for layer in net.layer if layer.blobs]
    assert with_blobs
    for layer in with_blobs:
        for i, blob in enumerate(layer.blobs):
            np.testing.assert_array_equal(blob_to_array(blob), arrays[f"param/{layer.name}/{i}"])


def test_v1_caffemodel_with_legacy_dims() -> None:
    raw = read_net_binary(CAFFE / "caffemodel_v1" / "v1.caffemodel")
    assert_no_unknown_fields(raw)
    assert_round_trip(raw)
    assert len(raw.layers) == 2 and not raw.layer
    assert blob_shape(raw.layers[0].blobs[1]) == (1, 1, 1, 4)
    net = load_caffemodel(CAFFE / "caffemodel_v1" / "v1.caffemodel")
    assert [(layer.name, layer.type) for layer in net.layer] == [("conv", "Convolution"), ("ip", "InnerProduct")]
    arrays = np.load(CAFFE / "caffemodel_v1" / "arrays.npz")
    np.testing.assert_array_equal(blob_to_array(net.layer[0].blobs[0]), arrays["param/conv/0"])


def test_zero_axis_blob_as_caffe_writes_it() -> None:
    """Caffe's ToProto writes a zero-axis blob (Scale with num_axes 0) with no `shape` and no
    legacy dims; FromProto reads it back as a scalar, and so must we, and write it the same way."""
    caffes = caffe_pb2.BlobProto()
    caffes.data.append(2.5)
    assert blob_shape(caffes) == ()
    assert blob_to_array(caffes).shape == () and blob_to_array(caffes) == np.float32(2.5)
    ours = array_to_blob(np.float32(2.5).reshape(()))
    assert ours.SerializeToString() == caffes.SerializeToString()


def test_zero_axis_blob_from_caffes_net_save() -> None:
    """The scale_axes golden case's scalar Scale blobs, as real Caffe's Net::Save wrote them."""
    path = CAFFE / "scale_axes" / "weights.caffemodel"
    net = read_net_binary(path)
    blob = next(layer for layer in net.layer if layer.name == "sc_scalar").blobs[0]
    assert not blob.HasField("shape") and not blob.HasField("num")
    arrays = np.load(CAFFE / "scale_axes" / "arrays.npz")
    assert blob_shape(blob) == ()
    np.testing.assert_array_equal(blob_to_array(blob), arrays["param/sc_scalar/0"])
    assert net.SerializeToString() == path.read_bytes()


def test_mean_binaryproto() -> None:
    blob = read_binary(CAFFE / "data_lmdb_mean" / "mean.binaryproto", caffe_pb2.BlobProto())
    assert_no_unknown_fields(blob)
    assert_round_trip(blob)
    assert read_mean(CAFFE / "data_lmdb_mean" / "mean.binaryproto").shape == (1, 3, 10, 12)


def test_lmdb_datums_written_by_pycaffe() -> None:
    reader = LmdbReader(CAFFE / "data_lmdb_mean" / "train_lmdb")
    try:
        assert len(reader) == 6
        for i in range(len(reader)):
            datum = reader.datum(i)
            assert_no_unknown_fields(datum)
            assert (datum.channels, datum.height, datum.width) == (3, 10, 12)
            assert len(datum.data) == 3 * 10 * 12
    finally:
        reader.close()


@pytest.mark.parametrize("name", ["snap_iter_10", "snap_iter_20"])
def test_caffe_snapshots_parse(name: str) -> None:
    net = read_net_binary(E2E / "caffe" / f"{name}.caffemodel")
    assert_no_unknown_fields(net)
    assert_round_trip(net)
    state = read_binary(E2E / "caffe" / f"{name}.solverstate", caffe_pb2.SolverState())
    assert_no_unknown_fields(state)
    assert_round_trip(state)
    assert state.iter == int(name.rsplit("_", 1)[1])
    assert state.learned_net.endswith(f"{name}.caffemodel")
    learnable = [blob for layer in net.layer for blob in layer.blobs]
    assert len(state.history) == len(learnable)
    for history, blob in zip(state.history, learnable):
        assert blob_shape(history) == blob_shape(blob)


E2E_SHAPES = {
    "conv1": [(8, 3, 3, 3), (8,)], "conv2-new": [(8, 4, 3, 3), (8,)], "fc-new": [(5, 392), (5,)],
}


@pytest.mark.parametrize("name", ["init", "caffe/snap_iter_10", "caffe/snap_iter_20"])
def test_e2e_caffemodels_hold_the_nets_shapes(name: str) -> None:
    net = read_net_binary(E2E / f"{name}.caffemodel")
    assert_no_unknown_fields(net)
    shapes = {layer.name: [blob_shape(b) for b in layer.blobs] for layer in net.layer if layer.blobs}
    assert shapes == E2E_SHAPES


def test_e2e_snapshots_keep_the_frozen_layer_and_move_the_others() -> None:
    """Between Caffe's two snapshots the lr_mult-0 conv1 is bit-identical; the trained fc moved.

    (Caffe's run did not start from init.caffemodel: its log has no "Finetuning from" line.)
    """
    def layers(name: str) -> dict[str, list[np.ndarray]]:
        net = read_net_binary(E2E / "caffe" / f"{name}.caffemodel")
        return {layer.name: [blob_to_array(b) for b in layer.blobs] for layer in net.layer}

    at10, at20 = layers("snap_iter_10"), layers("snap_iter_20")
    for before, after in zip(at10["conv1"], at20["conv1"]):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(at10["fc-new"][0], at20["fc-new"][0])


def test_saved_caffemodel_keeps_legacy_dims_and_reads_back(tmp_path: Path) -> None:
    """A V1 file saved as V2 keeps its blobs' num/channels/height/width, as Caffe's
    upgrade_net_proto_binary does: only in that form does a 1x1x1x4 bias copy into a bias of 4
    (tests/test_io_upgrade.py loads it into a net)."""
    legacy = read_net_binary(CAFFE / "caffemodel_v1" / "v1.caffemodel")
    net = load_caffemodel(CAFFE / "caffemodel_v1" / "v1.caffemodel")
    save_caffemodel(tmp_path / "out.caffemodel", net)
    again = read_net_binary(tmp_path / "out.caffemodel")
    assert not again.layers and len(again.layer) == 2
    for layer, old in zip(again.layer, legacy.layers):
        for blob, old_blob in zip(layer.blobs, old.blobs):
            assert blob_shape(blob) == blob_shape(old_blob) and blob.HasField("num") and not blob.HasField("shape")
            np.testing.assert_array_equal(blob_to_array(blob), blob_to_array(old_blob))
    assert not list(tmp_path.glob(".tmp-*"))


def test_caffemodel_over_64_megabytes(tmp_path: Path) -> None:
    """protobuf's C++ reader stopped at 64 MB by default; the 233 MB CaffeNet must load."""
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="fc6", type="InnerProduct")
    values = np.arange(18_000_000, dtype=np.float32)
    array_to_blob(values.reshape(4500, 4000), layer.blobs.add())
    save_caffemodel(tmp_path / "big.caffemodel", net)
    assert (tmp_path / "big.caffemodel").stat().st_size > 64 * 2**20
    loaded = load_caffemodel(tmp_path / "big.caffemodel")
    array = blob_to_array(loaded.layer[0].blobs[0])
    assert array.shape == (4500, 4000) and array[-1, -1] == values[-1]


def test_mean_write_read(tmp_path: Path) -> None:
    mean = np.random.default_rng(0).random((3, 5, 4)).astype(np.float32)
    write_mean(tmp_path / "m.binaryproto", mean)
    blob = read_binary(tmp_path / "m.binaryproto", caffe_pb2.BlobProto())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 5, 4)
    np.testing.assert_array_equal(read_mean(tmp_path / "m.binaryproto")[0], mean)


PROTOTXTS = sorted(p for p in GOLDEN.rglob("*.prototxt") if "solver" not in p.name)
SOLVER_TEXTS = sorted(p for p in GOLDEN.rglob("*.prototxt") if "solver" in p.name)


@pytest.mark.parametrize("path", PROTOTXTS, ids=lambda p: str(p.relative_to(GOLDEN)))
def test_net_text_round_trip(path: Path) -> None:
    net = read_net_text(path)
    assert parse_text(format_text(net), caffe_pb2.NetParameter()) == net


@pytest.mark.parametrize("path", SOLVER_TEXTS, ids=lambda p: str(p.relative_to(GOLDEN)))
def test_solver_text_round_trip(path: Path) -> None:
    solver = read_solver_text(path)
    assert parse_text(format_text(solver), caffe_pb2.SolverParameter()) == solver


def test_text_error_names_file_line_column_and_token(tmp_path: Path) -> None:
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  kernel_sise: 3\n}\n')
    with pytest.raises(ReplicateError) as err:
        read_net_text(path)
    message = str(err.value)
    assert message.startswith(f"{path}:4:3:") and "kernel_sise" in message


def test_a_missing_brace_is_named_where_the_outer_field_is_read_inside(tmp_path: Path) -> None:
    # A solver with `train_state {` left open: Caffe's parser, and protobuf's, stop at the next
    # line with "NetState has no field named lr_policy"; the cause is the brace above.
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "train.prototxt"\ntrain_state { stage: "a } b"  # } in a string and a comment\nlr_policy: "step"\n')
    with pytest.raises(ReplicateError) as err:
        read_solver_text(path)
    assert str(err.value) == (
        f'{path}:3:1: Message type "caffe.NetState" has no field named "lr_policy"; "lr_policy" is a field '
        "of the top level, so a `}` is probably missing above, closing train_state (opened at line 2)"
    )


def test_a_missing_brace_two_levels_down_names_both_open_blocks() -> None:
    text = 'layer {\n  name: "c"\n  convolution_param {\n    weight_filler { type: "xavier"\n  top: "c"\n}\n'
    with pytest.raises(ReplicateError, match=r'"top" is a field of the enclosing layer, so 2 `}`s are probably '
                       r"missing above, closing convolution_param \(opened at line 3\), weight_filler \(opened at line 4\)"):
        parse_text(text, caffe_pb2.NetParameter(), "net.prototxt")


def test_a_misspelt_field_gets_no_brace_hint() -> None:
    with pytest.raises(ReplicateError) as err:
        parse_text('layer {\n  convolution_param { kernel_sise: 3 }\n}\n', caffe_pb2.NetParameter())
    assert "kernel_sise" in str(err.value) and "missing" not in str(err.value)


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    write_mean(tmp_path / "m.binaryproto", np.zeros((3, 2, 2), dtype=np.float32))
    assert stat.S_IMODE((tmp_path / "m.binaryproto").stat().st_mode) == 0o666 & ~umask


def test_mean_with_a_wrong_value_count_is_a_clear_error(tmp_path: Path) -> None:
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2)
    blob.data.extend([0.0] * 11)
    (tmp_path / "m.binaryproto").write_bytes(blob.SerializeToString())
    with pytest.raises(ReplicateError, match="m.binaryproto: not a valid mean blob"):
        read_mean(tmp_path / "m.binaryproto")


def test_binary_garbage_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(ReplicateError, match="not a valid binary NetParameter"):
        read_net_binary(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReplicateError, match="cannot read"):
        read_net_text(tmp_path / "nowhere.prototxt")


@pytest.mark.compiled
def test_every_name_a_message_class_serves_is_in_its_class_dict_once_imported() -> None:
    """torch.compile up to torch 2.11 reads class attributes with inspect.getattr_static and reads
    a name it does not find as None; protobuf's upb runtime puts a message class's enum values,
    enum types, field numbers and nested messages into its __dict__ only when Python first reads
    them.  So in a fresh process, straight after import, each must be found statically, with its
    value (replicate/proto/__init__.py)."""
    code = """
import inspect
from replicate.proto import caffe_pb2

def names(descriptor):
    for enum in descriptor.enum_types:
        yield enum.name
        yield from (value.name for value in enum.values)
    yield from (f"{field.name.upper()}_FIELD_NUMBER" for field in (*descriptor.fields, *descriptor.extensions))
    yield from (nested.name for nested in descriptor.nested_types)

def missing(cls, descriptor):
    for name in names(descriptor):
        try:
            found = inspect.getattr_static(cls, name)
        except AttributeError:
            yield f"{cls.__qualname__}.{name}"
            continue
        if found != getattr(cls, name):
            yield f"{cls.__qualname__}.{name} differs"
    for nested in descriptor.nested_types:
        yield from missing(getattr(cls, nested.name), nested)

found = [m for d in caffe_pb2.DESCRIPTOR.message_types_by_name.values() for m in missing(getattr(caffe_pb2, d.name), d)]
print(len(found), found[:5])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("0 "), out


TEXT_FORMAT = json.loads((CAFFE / "text_format.json").read_text(encoding="utf-8"))
#: Where our reader (Python protobuf's text_format.Parse) parts from Caffe's (C++ TextFormat::Parse):
#: spellings Caffe refuses whose value is still unambiguous, read as that value...
READ_THOUGH_CAFFE_REFUSES = {"plus": 'state { level: 3 }', "inff": 'layer { name: "x" type: "ReLU" relu_param { negative_slope: inf } }'}
#: ...and one Caffe reads that ours refuses, with its position.
REFUSED_THOUGH_CAFFE_READS = {"minus_space"}


@pytest.mark.parametrize("name", sorted(TEXT_FORMAT))
def test_prototxt_spelling_reads_as_caffes_text_parser(name: str) -> None:
    """Each snippet of tools/caffe_text_format.py as real Caffe read it: the same net (bytes
    compared, so that a NaN counts as equal), or refused where Caffe refused it, a non-repeated
    field given twice above all (Merge, which we used before, kept the last one silently)."""
    from replicate.io.upgrade import upgrade_net

    case = TEXT_FORMAT[name]
    if name in REFUSED_THOUGH_CAFFE_READS or ("caffe_error" in case and name not in READ_THOUGH_CAFFE_REFUSES):
        with pytest.raises(ReplicateError, match=r"^<string>:\d+:\d+: "):
            parse_text(case["text"], caffe_pb2.NetParameter())
        return
    ours = upgrade_net(parse_text(case["text"], caffe_pb2.NetParameter()))
    expected = READ_THOUGH_CAFFE_REFUSES.get(name) or case["caffe_net"]
    assert ours.SerializeToString(deterministic=True) == \
        parse_text(expected, caffe_pb2.NetParameter()).SerializeToString(deterministic=True)


def test_text_format_cases_cover_caffes_refusal_of_repeated_fields() -> None:
    repeated = {name: case for name, case in TEXT_FORMAT.items() if name.startswith("repeated_")}
    assert len(repeated) == 5
    assert all("is specified multiple times" in case["caffe_error"] for case in repeated.values())
    assert set(READ_THOUGH_CAFFE_REFUSES) <= {n for n, c in TEXT_FORMAT.items() if "caffe_error" in c}
    assert all("caffe_net" in TEXT_FORMAT[name] for name in REFUSED_THOUGH_CAFFE_READS)
