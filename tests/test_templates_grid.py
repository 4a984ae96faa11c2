"""`generate --all`: the authors' whole grid, named, wired and frozen like the originals.

The grid is generated once (148 nets, about a second) and every test reads it.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

from replicate.cli import main
from replicate.io.prototxt import read_net_text, read_solver_text
from replicate.proto import caffe_pb2
from replicate.templates import net_seed
from replicate.treatments import WEIGHT_LAYERS

REFERENCE = Path(__file__).parent.parent / "results" / "paper_reference.csv"


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grid")
    assert main(["generate", "--all", "--out", str(out), "--data", "/data"]) == 0
    return out


@pytest.fixture(scope="module")
def plan(grid: Path) -> list[dict[str, Any]]:
    return json.loads((grid / "plan.json").read_text())["nets"]


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, str]]:
    with open(REFERENCE, newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def _manifest(grid: Path, name: str) -> dict[str, Any]:
    return json.loads((grid / name / "manifest.json").read_text())


def _weight_layers(net: caffe_pb2.NetParameter) -> list[caffe_pb2.LayerParameter]:
    layers = [l for l in net.layer if l.type in ("Convolution", "InnerProduct")]
    assert len(layers) == 8
    return layers


def test_every_reference_net_is_generated_and_nothing_else(
        grid: Path, plan: list[dict[str, Any]], reference: dict[str, dict[str, str]]) -> None:
    names = [e["name"] for e in plan]
    assert len(names) == len(set(names)) == len(reference) == 148
    assert set(names) == set(reference)
    for name in names:
        assert sorted(p.name for p in (grid / name).iterdir()) == [
            "manifest.json", "solver.prototxt", "train.prototxt", "val.prototxt"]


def test_family_split_and_n_agree_with_the_reference(
        plan: list[dict[str, Any]], reference: dict[str, dict[str, str]]) -> None:
    for entry in plan:
        row = reference[entry["name"]]
        assert entry["family"] == row["family"], entry["name"]
        assert entry["n"] == int(row["n"]), entry["name"]
        if row["family"] == "reduced":
            assert entry["split"] is None
        else:
            assert (entry["split"] or "") == row["split"], entry["name"]
        assert entry["max_iter"] == int(row["final_iter"]), entry["name"]


def _expected_base(name: str) -> str | None:
    found = re.fullmatch(r"transfer(?:-ft)?(\d)([AB])\d[AB]_1_\d", name)
    if found:
        return f"half{found.group(1)}{found.group(2)}"
    found = re.fullmatch(r"transfernatman([AB])[AB]_1_\d", name)
    return f"halfnatman{found.group(1)}" if found else None


def test_dependencies_and_weights(grid: Path, plan: list[dict[str, Any]]) -> None:
    position = {e["name"]: i for i, e in enumerate(plan)}
    for entry in plan:
        base = _expected_base(entry["name"])
        assert entry["depends_on"] == base, entry["name"]
        manifest = _manifest(grid, entry["name"])
        assert manifest["weights_from"] == base
        if base is None:
            assert entry["weights"] is None and manifest["weights"] is None
            continue
        assert position[base] < position[entry["name"]]
        assert entry["weights"] == f"../{base}/caffe_imagenet_train_iter_450000.caffemodel"
        assert manifest["weights"] == entry["weights"]
        # The base net's own solver snapshots exactly there when it finishes.
        solver = read_solver_text(grid / base / "solver.prototxt")
        assert entry["weights"] == f"../{base}/{solver.snapshot_prefix}_iter_{solver.max_iter}" \
            ".caffemodel"
        assert solver.snapshot_after_train


def test_frozen_and_renamed_layers_follow_n(grid: Path, plan: list[dict[str, Any]]) -> None:
    for entry in plan:
        name, n = entry["name"], entry["n"]
        frozen_treatment = name.startswith(("transfer0", "transfer1", "transfer2", "transfer3",
                                            "transfernatman", "nolearn"))
        copies = name.startswith("transfer")
        layers = _weight_layers(read_net_text(grid / name / "train.prototxt"))
        for i, (layer, key) in enumerate(zip(layers, WEIGHT_LAYERS), start=1):
            mults = [(p.lr_mult, p.decay_mult) for p in layer.param]
            if frozen_treatment and i <= n:
                assert mults == [(0, 0), (0, 0)], f"{name}: {key}"
            else:
                assert mults == [(1, 1), (2, 0)], f"{name}: {key}"
            assert layer.name == (f"{key}-new" if copies and i > n else key), name
        manifest = _manifest(grid, name)
        assert manifest["frozen_layers"] == (list(WEIGHT_LAYERS[:n]) if frozen_treatment else [])
        # The val net uses the same names, so the solver shares the trained layers with it.
        val_names = [l.name for l in _weight_layers(read_net_text(grid / name / "val.prototxt"))]
        assert val_names == [l.name for l in layers]


def test_random_frozen_nets_have_plain_names_and_no_weights(grid: Path) -> None:
    for n in range(1, 8):
        manifest = _manifest(grid, f"nolearn_1_{n}")
        assert manifest["weights"] is None and manifest["renamed_layers"] == []
        assert manifest["datasets"] == {"train": "whole_train", "val": "whole_valid",
                                        "mean": "whole_train"}


def test_reduced_nets_use_the_reduced_solver(grid: Path, plan: list[dict[str, Any]]) -> None:
    for entry in plan:
        solver = read_solver_text(grid / entry["name"] / "solver.prototxt")
        if entry["family"] == "reduced":
            assert (solver.base_lr, solver.stepsize, solver.max_iter) == (
                pytest.approx(0.0125), 64000, 200000)
        else:
            assert (solver.base_lr, solver.stepsize, solver.max_iter) == (
                pytest.approx(0.01), 100000, 450000)


def test_no_net_tests_before_its_first_update(grid: Path, plan: list[dict[str, Any]]) -> None:
    """The authors' 2014 Caffe first tested at iteration test_interval (original_curves.csv starts
    at 1000 for all 148 nets).  A test at iteration 0 would not only cost one: a test net reads on
    from where its last test stopped, so on the natman halves (1000 x 50 images against 22,450 and
    27,550) every later test would read other images than the authors' test of that iteration."""
    for entry in plan:
        solver = read_solver_text(grid / entry["name"] / "solver.prototxt")
        assert solver.HasField("test_initialization") and not solver.test_initialization, entry["name"]


def test_data_sets_follow_the_originals(grid: Path) -> None:
    # Transfers read the target's images but subtract the base net's mean (copied into every
    # original transfer folder); validation always uses the training set's mean.
    m = _manifest(grid, "transfernatmanAB_1_3")
    assert m["datasets"] == {"train": "halfnatmanB_train", "val": "halfnatmanB_valid",
                             "mean": "halfnatmanA_train"}
    m = _manifest(grid, "reduced-0050")
    assert m["datasets"] == {"train": "reduced0050_train", "val": "whole_valid",
                             "mean": "reduced0050_train"}
    assert _manifest(grid, "reduced-1300")["datasets"]["train"] == "whole_train"
    for view in ("train", "val"):
        net = read_net_text(grid / "transfer1B1A_1_5" / f"{view}.prototxt")
        data = net.layer[0]
        assert data.transform_param.mean_file == "/data/half1B_train/mean.binaryproto"
        assert data.data_param.source == f"/data/half1A_{'train' if view == 'train' else 'valid'}"


def test_every_net_is_v2_and_its_own_upgrade(grid: Path, plan: list[dict[str, Any]]) -> None:
    upgrade = pytest.importorskip("replicate.io.upgrade")
    for entry in plan:
        for view in ("train", "val"):
            net = read_net_text(grid / entry["name"] / f"{view}.prototxt")
            assert len(net.layers) == 0 and len(net.layer) > 0
            assert upgrade.upgrade_net(net) == net
        solver = read_solver_text(grid / entry["name"] / "solver.prototxt")
        assert upgrade.upgrade_solver(solver) == solver


def test_every_net_uses_only_v2_fields(grid: Path, plan: list[dict[str, Any]]) -> None:
    for entry in plan:
        for view in ("train", "val"):
            net = read_net_text(grid / entry["name"] / f"{view}.prototxt")
            assert not net.layers and not net.input and not net.input_dim
            for layer in net.layer:
                assert layer.type
                if layer.HasField("data_param"):  # transform fields live in transform_param
                    for old in ("mean_file", "crop_size", "mirror", "scale"):
                        assert not layer.data_param.HasField(old)
        solver = read_solver_text(grid / entry["name"] / "solver.prototxt")
        assert not solver.HasField("solver_type")


def test_a_seeded_config_gives_every_net_its_own_seed_and_the_papers_none(grid: Path, tmp_path: Path) -> None:
    """The authors' solvers set no random_seed (Caffe seeded each net from the clock); a config
    that fixes one (the demo's) seeds each net from it and the net's name, so that a transfer
    net's new layers never start from its base net's own draws."""
    assert not read_solver_text(grid / "half0A" / "solver.prototxt").HasField("random_seed")
    assert _manifest(grid, "half0A")["random_seed"] is None
    out = tmp_path / "demo"
    assert main(["generate", "--all", "--arch", "demo", "--num-output", "10", "--splits", "0",
                 "--treatments", "base,BnB", "--ns", "3", "--out", str(out)]) == 0
    seeds = {name: read_solver_text(out / name / "solver.prototxt").random_seed
             for name in ("half0A", "transfer0A0A_1_3")}
    assert seeds == {name: net_seed(1, name) for name in seeds}
    assert len(set(seeds.values())) == 2 and seeds["half0A"] == _manifest(out, "half0A")["random_seed"]
    assert net_seed(2, "half0A") != net_seed(1, "half0A")

