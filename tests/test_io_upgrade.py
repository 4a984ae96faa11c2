"""Legacy upgrade: the authors' 2014 V0 files upgrade to exactly what Caffe's own tools made."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from replicate.errors import ReplicateError
from replicate.io.model import load_caffemodel, load_net, load_solver
from replicate.io.prototxt import parse_text, read_net_text, read_solver_text
from replicate.io.upgrade import net_needs_upgrade, upgrade_net, upgrade_solver
from replicate.proto import caffe_pb2

LEGACY = Path(__file__).parent / "golden" / "caffe" / "legacy"
NETS = sorted(LEGACY.glob("*/*_train.v0.prototxt")) + sorted(LEGACY.glob("*/*_val.v0.prototxt"))
SOLVERS = sorted(LEGACY.glob("*/*solver.v0.prototxt"))


def _upgraded_twin(path: Path) -> Path:
    return path.with_name(path.name.replace(".v0.", ".upgraded."))


@pytest.mark.parametrize("path", NETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_v0_net_upgrades_to_caffes_own_result(path: Path) -> None:
    ours = load_net(path)
    caffes = read_net_text(_upgraded_twin(path))
    assert ours == caffes
    assert not net_needs_upgrade(ours)


@pytest.mark.parametrize("path", SOLVERS, ids=lambda p: p.parent.name)
def test_v0_solver_upgrades_to_caffes_own_result(path: Path) -> None:
    assert load_solver(path) == read_solver_text(_upgraded_twin(path))


def test_the_legacy_fixtures_are_all_there() -> None:
    assert len(NETS) == 4 and len(SOLVERS) == 2


FUZZ = LEGACY / "upgrade_fuzz"
FUZZ_CASES = json.loads((FUZZ / "cases.json").read_text())


@pytest.mark.parametrize("seed", sorted(FUZZ_CASES))
def test_random_legacy_net_upgrades_as_caffes_upgrade_net_proto_text(seed: str, tmp_path: Path) -> None:
    """Random V0/V1 nets (tools/caffe_fuzz_upgrade.py) Caffe's own tool upgraded: ours writes the
    same net, or refuses where Caffe aborted, reported errors, or read past the fields it was given
    (a short input_dim, a negative V0 new_height/new_width wrapped to 4294967295)."""
    from replicate.cli import main

    case = FUZZ_CASES[seed]
    source, target = FUZZ / f"{seed}.in.prototxt", tmp_path / "out.prototxt"
    if case["expect"] == "equal":
        assert case["caffe_rc"] == 0 and case["caffe_error"] is None
        assert main(["upgrade", str(source), str(target)]) == 0
        assert read_net_text(target) == read_net_text(FUZZ / f"{seed}.caffe.prototxt")
    else:
        with pytest.raises(ReplicateError, match=re.escape(case["ours"])):
            load_net(source)


def test_the_fuzz_cases_cover_each_outcome() -> None:
    rcs = Counter((case["expect"], case["caffe_rc"]) for case in FUZZ_CASES.values())
    assert rcs[("equal", 0)] >= 10 and rcs[("refused", 0)] >= 3 and rcs[("refused", 1)] >= 1
    assert rcs[("refused", -6)] >= 5  # glog's abort


def test_v1_data_layers_get_transform_param_only_where_a_field_moves() -> None:
    """Caffe's UpgradeNetDataTransformation runs only when some V1 data layer sets a transform
    field in its own message; then every V1 data layer gets its own message and a
    transform_param, empty where nothing moved (upgrade_net_proto_text writes `transform_param {}`)."""
    plain = 'layers { name: "d" type: DATA top: "d" } layers { name: "w" type: WINDOW_DATA top: "w" }'
    untouched = upgrade_net(parse_text(plain, caffe_pb2.NetParameter()))
    assert not any(layer.HasField("transform_param") or layer.HasField("data_param") for layer in untouched.layer)
    moved = upgrade_net(parse_text(plain + ' layers { name: "i" type: IMAGE_DATA top: "i" image_data_param { mirror: true } }',
                                   caffe_pb2.NetParameter()))
    assert [layer.HasField("transform_param") for layer in moved.layer] == [True, True, True]
    assert moved.layer[0].HasField("data_param") and moved.layer[1].HasField("window_data_param")
    assert moved.layer[2].transform_param.mirror and not moved.layer[2].image_data_param.HasField("mirror")


V1_NET = """
name: "v1"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layers {
  name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 4 kernel_size: 3 }
}
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers {
  name: "train_data" type: DATA top: "d" top: "l"
  data_param { source: "db" batch_size: 5 mean_file: "m.binaryproto" crop_size: 6 mirror: true scale: 0.5 }
  include { phase: TRAIN }
}
layers { name: "loss" type: SOFTMAX_LOSS bottom: "conv" bottom: "l" loss_weight: 2 }
"""

V2_EXPECTED = """
name: "v1"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer {
  name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 }
}
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer {
  name: "train_data" type: "Data" top: "d" top: "l"
  include { phase: TRAIN }
  transform_param { scale: 0.5 mirror: true crop_size: 6 mean_file: "m.binaryproto" }
  data_param { source: "db" batch_size: 5 }
}
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "l" loss_weight: 2 }
"""


def test_v1_net_with_inputs_and_transform_fields() -> None:
    net = parse_text(V1_NET, caffe_pb2.NetParameter())
    assert net_needs_upgrade(net)
    assert upgrade_net(net) == parse_text(V2_EXPECTED, caffe_pb2.NetParameter())


def test_v0_padding_layer_is_folded_into_the_conv() -> None:
    v0 = parse_text(
        """
        input: "data"
        layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
        layers { layer { name: "conv1" type: "conv" num_output: 3 kernelsize: 5 } bottom: "pad1" top: "conv1" }
        """,
        caffe_pb2.NetParameter(),
    )
    net = upgrade_net(v0)
    assert [layer.name for layer in net.layer] == ["conv1"]
    assert list(net.layer[0].bottom) == ["data"]
    assert list(net.layer[0].convolution_param.pad) == [2]


def test_v0_parameter_on_the_wrong_layer_type_is_refused() -> None:
    v0 = parse_text(
        'input: "x" layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "x" top: "x" }',
        caffe_pb2.NetParameter(),
    )
    with pytest.raises(ReplicateError, match="num_output.*relu"):
        upgrade_net(v0)


def test_old_batch_norm_params_are_frozen() -> None:
    net = parse_text(
        'layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }',
        caffe_pb2.NetParameter(),
    )
    upgraded = upgrade_net(net)
    assert [(p.lr_mult, p.decay_mult) for p in upgraded.layer[0].param] == [(0, 0)] * 3


@pytest.mark.parametrize(
    "enum, name",
    [("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
     ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")],
)
def test_solver_type_enum_becomes_string(enum: str, name: str) -> None:
    solver = upgrade_solver(parse_text(f"solver_type: {enum}", caffe_pb2.SolverParameter()))
    assert solver.type == name and not solver.HasField("solver_type")


def test_solver_with_both_type_fields_is_refused() -> None:
    with pytest.raises(ReplicateError, match="solver_type"):
        upgrade_solver(parse_text('solver_type: ADAM type: "Adam"', caffe_pb2.SolverParameter()))


def test_upgrade_command_writes_what_caffe_wrote(tmp_path: Path) -> None:
    from replicate.cli import main

    source = LEGACY / "half0A" / "imagenet_train.v0.prototxt"
    assert main(["upgrade", str(source), str(tmp_path / "net.prototxt")]) == 0
    assert read_net_text(tmp_path / "net.prototxt") == read_net_text(_upgraded_twin(source))
    solver = LEGACY / "half0A" / "imagenet_solver.v0.prototxt"
    assert main(["upgrade", "--solver", str(solver), str(tmp_path / "solver.prototxt")]) == 0
    assert read_solver_text(tmp_path / "solver.prototxt") == read_solver_text(_upgraded_twin(solver))


def test_upgrade_command_bad_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    from replicate.cli import main

    bad = tmp_path / "bad.prototxt"
    bad.write_text("layers { layer { type: \n")
    assert main(["upgrade", str(bad), str(tmp_path / "out.prototxt")]) == 2
    assert not (tmp_path / "out.prototxt").exists()


def test_upgrade_command_output_in_a_missing_folder_or_a_folder_is_one_line(tmp_path: Path, capsys) -> None:
    from replicate.cli import main

    source = LEGACY / "half0A" / "imagenet_train.v0.prototxt"
    assert main(["upgrade", str(source), str(tmp_path / "nodir" / "x.prototxt")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path}/nodir/x.prototxt: folder {tmp_path}/nodir "
                                       "does not exist\n")
    assert main(["upgrade", str(source), str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path}: is a folder; name the file to write, "
                                       f"e.g. {tmp_path}/imagenet_train.v0.prototxt\n")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_upgrade_command_names_the_option_that_reads_a_solver_or_a_net(tmp_path: Path, capsys) -> None:
    from replicate.cli import main

    solver = LEGACY / "half0A" / "imagenet_solver.v0.prototxt"
    assert main(["upgrade", str(solver), str(tmp_path / "out.prototxt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {solver}:1:1: ") and err.endswith("; it parses as a solver: pass --solver\n")
    net = LEGACY / "half0A" / "imagenet_train.v0.prototxt"
    assert main(["upgrade", "--solver", str(net), str(tmp_path / "out.prototxt")]) == 2
    assert capsys.readouterr().err.endswith("; it parses as a net: leave out --solver\n")
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layers { layer { type: \n")
    assert main(["upgrade", str(bad), str(tmp_path / "out.prototxt")]) == 2
    assert "parses as" not in capsys.readouterr().err
    assert not (tmp_path / "out.prototxt").exists()


def test_upgrade_command_writes_a_v1_caffemodel_as_caffes_upgrade_net_proto_binary(tmp_path: Path) -> None:
    """Bit for bit what Caffe's tool wrote: V2 layers, the blobs' legacy 4-D dims kept.  Rewritten
    as a `shape` of 1x1x1x4, the conv bias no longer copies into a bias of 4 (Caffe aborts "shape
    mismatch"), nor did it into ours: the upgraded file has to load where the V1 file did."""
    from replicate.cli import main
    from replicate.net.weights import copy_trained_layers

    target = tmp_path / "net.caffemodel"
    assert main(["upgrade", str(LEGACY.parent / "caffemodel_v1" / "v1.caffemodel"), str(target)]) == 0
    assert target.read_bytes() == (LEGACY / "caffemodel_v1.upgraded.caffemodel").read_bytes()
    blobs = {"conv": [torch.nn.Parameter(torch.zeros(4, 3, 3, 3)), torch.nn.Parameter(torch.zeros(4))],
             "ip": [torch.nn.Parameter(torch.zeros(5, 196)), torch.nn.Parameter(torch.zeros(5))]}
    assert copy_trained_layers(blobs, load_caffemodel(target)).copied == ["conv", "ip"]
