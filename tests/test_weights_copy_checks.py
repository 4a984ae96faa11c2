"""A transfer net whose weights do not supply the layers it copies stops before its first iteration,
on the demo's architecture as `generate` draws it: an empty file, a base whose layers were renamed,
a base without one of the frozen layers; `--allow-missing-layers` accepts that knowingly and says
so; the random-frozen nets (no weights) train as before; a resume must restore every layer."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from replicate.cli import main
from replicate.io.model import load_caffemodel, save_caffemodel
from replicate.io.prototxt import parse_text
from replicate.net.compile import CompiledNet
from replicate.net.copy_check import frozen_layers, learnable_layers
from replicate.proto import caffe_pb2
from solver_support import params

#: The demo's solver, two iterations with a snapshot at each and one test at the end.
SOLVER = {"doc": "tiny", "solver": {"test_iter": 1, "test_interval": 2, "base_lr": 0.01, "lr_policy": "fixed",
                                    "display": 1, "max_iter": 2, "momentum": 0.9, "weight_decay": 0.0005,
                                    "snapshot": 1, "snapshot_prefix": "snap", "solver_mode": "CPU",
                                    "random_seed": 1}}
FROZEN = ["conv1", "conv2", "conv3"]
FRESH = ["conv4-new", "conv5-new", "fc6-new", "fc7-new", "fc8-new"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class synthetic dataset, its half0A/half0B/whole views, and half0A, AnB and AnB+ at
    n = 3 and the random-frozen net at n = 3, generated for the demo architecture; half0A trained
    (its final snapshot is what AnB copies)."""
    root = tmp_path_factory.mktemp("demo")
    config = root / "solver.json"
    config.write_text(json.dumps(SOLVER))
    for argv in (
        ["data", "synth", "--out", str(root / "src"), "--classes", "4", "--train-per-class", "4",
         "--val-per-class", "2", "--size", "28", "--seed", "1"],
        ["data", "prepare", "--train", str(root / "src/train.txt"), "--train-root", str(root / "src/train"),
         "--val", str(root / "src/val.txt"), "--val-root", str(root / "src/val"), "--synsets",
         str(root / "src/synsets.txt"), "--families", str(root / "src/families.txt"), "--splits", "1",
         "--reduced", "", "--resize", "28", "28", "--workers", "1", "--out", str(root / "data")],
        ["generate", "--all", "--arch", "demo", "--num-output", "4", "--splits", "0", "--ns", "3",
         "--treatments", "base,AnB,AnB+,random", "--solver-config", str(config), "--data", str(root / "data"),
         "--out", str(root / "runs")],
        ["train", str(root / "runs/half0A/solver.prototxt")],
    ):
        assert main(argv) == 0, argv
    return root


def _net(demo: Path, tmp_path: Path, name: str) -> Path:
    """A fresh copy of the generated net `name` (its data paths stay valid: they are absolute)."""
    net = tmp_path / name
    shutil.copytree(demo / "runs" / name, net, ignore=shutil.ignore_patterns("*.log", "*.jsonl", "snap_*"))
    return net / "solver.prototxt"


def _base(demo: Path) -> Path:
    return demo / "runs/half0A/snap_iter_2.caffemodel"


def _edited(source: Path, path: Path, edit) -> Path:
    """The caffemodel `source` with `edit` applied to each layer (None: drop the layer)."""
    model = load_caffemodel(source)
    kept = [layer for layer in model.layer if edit(layer) is not None]
    del model.layer[:]
    model.layer.extend(kept)
    save_caffemodel(path, model)
    return path


def _first_record(solver: Path) -> dict:
    return json.loads((solver.parent / "metrics.jsonl").read_text().splitlines()[0])


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], solver: Path) -> str:
    """Run `argv`, which must stop with a one-line error (exit 2) before any iteration; that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1] + "\n"
    assert err.startswith("error: ")
    log = (solver.parent / "train.log").read_text()
    assert "Iteration" not in log and "Starting Optimization" not in log
    assert not list(solver.parent.glob("snap_*")) and (solver.parent / "metrics.jsonl").read_text() == ""
    return err


def test_a_transfer_net_says_what_its_base_gave_it(demo: Path, tmp_path: Path) -> None:
    solver = _net(demo, tmp_path, "transfer0A0B_1_3")
    assert main(["train", str(solver), "--weights", str(_base(demo))]) == 0
    log = (solver.parent / "train.log").read_text()
    assert (f"weights.py:0] Copied 3 of the net's 8 learnable layers from {_base(demo)} (conv1, conv2, conv3); "
            f"not copied, left at their fillers: {', '.join(FRESH)}\n") in log
    assert "accepted knowingly" not in log
    assert _first_record(solver)["weights"] == {
        "files": [str(_base(demo))], "resumed": False, "layers": 8, "copied": FROZEN, "not_copied": FRESH,
        "accepted": [], "empty_files": [], "sha256": [hashlib.sha256(_base(demo).read_bytes()).hexdigest()]}


def test_an_empty_weights_file_is_refused(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    solver = _net(demo, tmp_path, "transfer0A0B_1_3")
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")  # a valid NetParameter with no layers
    err = _refused(capsys, ["train", str(solver), "--weights", str(empty)], solver)
    assert err == (f"error: weights file {empty} supplies none of the net's 8 learnable layers (conv1, conv2, conv3, "
                   f"{', '.join(FRESH)}): it holds no layer with weights; check the file, or add "
                   "--allow-missing-layers all to start them from their fillers knowingly\n")
    # Nothing learns in a test: every layer must be there.
    val = solver.parent / "val.prototxt"
    assert main(["test", "--model", str(val), "--weights", str(empty), "--iterations", "1"]) == 2
    assert "supplies none of the net's 8 learnable layers" in capsys.readouterr().err.splitlines()[-1]
    # Nor may the weights be left out: the fillers' random values would be scored.
    assert main(["test", "--model", str(val), "--iterations", "1"]) == 2
    assert capsys.readouterr().err == (
        "error: test needs the trained weights to score (--weights W.caffemodel), as caffe test does\n")


def test_a_base_with_renamed_layers_is_refused_even_where_nothing_is_frozen(
        demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def rename(layer):
        layer.name = f"{layer.name}-base"
        return layer

    renamed = _edited(_base(demo), tmp_path / "renamed.caffemodel", rename)
    solver = _net(demo, tmp_path, "transfer-ft0A0B_1_3")  # AnB+: every layer learns
    err = _refused(capsys, ["train", str(solver), "--weights", str(renamed)], solver)
    assert err.startswith(f"error: weights file {renamed} supplies none of the net's 8 learnable layers")
    assert "its layers with weights are conv1-base, conv2-base, conv3-base," in err


def test_a_base_without_a_frozen_layer_is_refused_and_accepted_knowingly(
        demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    partial = _edited(_base(demo), tmp_path / "partial.caffemodel", lambda l: None if l.name == "conv3" else l)
    solver = _net(demo, tmp_path, "transfer0A0B_1_3")
    err = _refused(capsys, ["train", str(solver), "--weights", str(partial)], solver)
    assert err == (f"error: weights file {partial} does not supply the net's layer conv3 (frozen, every lr_mult 0: "
                   "left at random fillers for the whole run); give a file that holds it, or add "
                   "--allow-missing-layers conv3 to accept that knowingly\n")
    assert main(["train", str(solver), "--weights", str(partial), "--force", "--allow-missing-layers", "conv3"]) == 0
    log = (solver.parent / "train.log").read_text()
    assert "--allow-missing-layers: accepted knowingly that conv3 is not copied (frozen, every lr_mult 0" in log
    record = _first_record(solver)["weights"]
    assert (record["copied"], record["accepted"]) == (["conv1", "conv2"], ["conv3"])
    after, base = params(solver.parent / "snap_iter_2.caffemodel"), params(_base(demo))
    np.testing.assert_array_equal(after["conv2"][0], base["conv2"][0])  # copied, frozen
    assert not np.array_equal(after["conv3"][0], base["conv3"][0])  # its fillers, as accepted
    # Nothing learns in a test: any layer the weights lack is refused there, frozen or not.
    val, trained = solver.parent / "val.prototxt", solver.parent / "snap_iter_2.caffemodel"
    lacking = _edited(trained, tmp_path / "lacking.caffemodel", lambda l: None if l.name == "fc6-new" else l)
    capsys.readouterr()
    assert main(["test", "--model", str(val), "--weights", str(lacking), "--iterations", "1"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: weights file {lacking} does not supply the net's layer fc6-new (a test would score random "
        "fillers); give a file that holds it, or add --allow-missing-layers fc6-new to accept that knowingly")
    assert main(["test", "--model", str(val), "--weights", str(lacking), "--iterations", "1",
                 "--allow-missing-layers", "fc6-new"]) == 0
    # A name that is no learnable layer of the net is a typo, not an acceptance.
    capsys.readouterr()
    assert main(["train", str(solver), "--weights", str(partial), "--force", "--allow-missing-layers", "conv33"]) == 2
    assert "--allow-missing-layers names conv33, not a learnable layer of the net" in capsys.readouterr().err


def test_the_random_frozen_nets_train_from_their_fillers(demo: Path, tmp_path: Path) -> None:
    solver = _net(demo, tmp_path, "nolearn_1_3")
    assert main(["train", str(solver)]) == 0
    assert "Finetuning" not in (solver.parent / "train.log").read_text()
    first = _first_record(solver)
    assert first["kind"] == "config" and first["weights"] is None  # said: no weights loaded
    assert (solver.parent / "snap_iter_2.caffemodel").is_file()


def test_a_resume_restores_every_layer_or_stops(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    solver = _net(demo, tmp_path, "nolearn_1_3")
    assert main(["train", str(solver)]) == 0
    snapshot = solver.parent / "snap_iter_1.solverstate"
    for ext in (".caffemodel", ".solverstate", ".solverstate.resume.json"):
        (solver.parent / f"snap_iter_2{ext}").unlink()
    capsys.readouterr()
    # The net changed since its snapshot was written: conv2 is another layer now.
    for net in ("train.prototxt", "val.prototxt"):
        path = solver.parent / net
        path.write_text(path.read_text().replace('name: "conv2"', 'name: "conv2b"'))
    assert main(["train", str(solver), "--snapshot", str(snapshot)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: weights file {solver.parent / 'snap_iter_1.caffemodel'} does not supply the net's layer conv2b "
        "(a snapshot of this net holds every learnable layer: the net has changed since it was written); give a "
        "file that holds it, or add --allow-missing-layers conv2b to accept that knowingly")
    for net in ("train.prototxt", "val.prototxt"):
        path = solver.parent / net
        path.write_text(path.read_text().replace('name: "conv2b"', 'name: "conv2"'))
    assert main(["train", str(solver), "--snapshot", str(snapshot)]) == 0
    assert f"Restored all 8 learnable layers of the net from {snapshot.with_suffix('.caffemodel')}" in (
        solver.parent / "train.log").read_text()
    configs = [json.loads(line) for line in (solver.parent / "metrics.jsonl").read_text().splitlines()
               if '"config"' in line]
    assert [c["weights"] and c["weights"]["resumed"] for c in configs] == [None, True]


def test_frozen_means_every_lr_mult_zero_and_batch_norm_statistics_are_not_frozen() -> None:
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
    layer { name: "frozen" type: "Convolution" bottom: "x" top: "a" param { lr_mult: 0 } param { lr_mult: 0 }
      convolution_param { num_output: 2 kernel_size: 1 } }
    layer { name: "half" type: "Convolution" bottom: "a" top: "b" param { lr_mult: 0 } param { lr_mult: 1 }
      convolution_param { num_output: 2 kernel_size: 1 } }
    layer { name: "bn" type: "BatchNorm" bottom: "b" top: "c" }
    layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }
    """
    param = parse_text(text, caffe_pb2.NetParameter())
    train, test = CompiledNet(param, caffe_pb2.TRAIN), CompiledNet(param, caffe_pb2.TEST)
    assert learnable_layers(train) == ["frozen", "half", "bn"]
    assert frozen_layers(train) == ["frozen"]  # bn accumulates its statistics while training
    assert frozen_layers(test) == ["frozen", "bn"]  # with global statistics nothing changes them
