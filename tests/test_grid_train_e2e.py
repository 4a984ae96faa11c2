"""The grid driving the real `python -m replicate train`: a base net, a net started from its
final weights, an interrupted run resumed from its solver state, and the status of it all."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from replicate.cli import main
from replicate.experiments import netstate
from replicate.experiments.planfile import read_plan
from replicate.experiments.status import collect


DATA = """layer {{ name: "data" type: "ImageData" top: "data" top: "label"
  image_data_param {{ source: "{list}" root_folder: "img/" batch_size: 2 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }}
"""
ACCURACY = 'layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy" }\n'
SOLVER = """train_net: "train.prototxt"
test_net: "val.prototxt"
test_iter: 1
test_interval: 2
base_lr: 0.01
lr_policy: "fixed"
momentum: 0.9
display: 1
max_iter: 4
snapshot: 2
snapshot_prefix: "snap"
solver_mode: CPU
random_seed: 1
"""


def _net(root: Path, name: str) -> None:
    net = root / name
    (net / "img").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (4, 4), (60 * i, 255 - 60 * i, 30)).save(net / "img" / f"{i}.png")
    (net / "list.txt").write_text("".join(f"{i}.png {i % 2}\n" for i in range(4)))
    (net / "train.prototxt").write_text(DATA.format(list="list.txt"))
    (net / "val.prototxt").write_text(DATA.format(list="list.txt") + ACCURACY)
    (net / "solver.prototxt").write_text(SOLVER)


def test_real_trainer_base_then_dependant_then_resume(tmp_path: Path, capsys) -> None:
    for name in ("b", "t"):
        _net(tmp_path, name)
    nets = [
        {"name": "b", "dir": "b", "solver": "solver.prototxt", "depends_on": None, "weights": None, "max_iter": 4},
        {"name": "t", "dir": "t", "solver": "solver.prototxt", "depends_on": "b",
         "weights": "../b/snap_iter_4.caffemodel", "max_iter": 4},
    ]
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps({"version": 1, "nets": nets}))
    run = ["grid", "run", "--plan", str(plan_path), "--device", "cpu", "--snapshot-keep", "2"]
    assert main(run) == 0, (tmp_path / "b" / "train.out").read_text()
    for name in ("b", "t"):
        assert (tmp_path / name / "snap_iter_2.caffemodel").is_file()  # the last 2 are kept
        assert (tmp_path / name / "snap_iter_4.caffemodel").is_file()
        assert (tmp_path / name / "snap_iter_4.solverstate").is_file()
        assert netstate.read_status(tmp_path / name)["state"] == "done"
    assert "--weights" in netstate.read_status(tmp_path / "t")["command"]
    reports = collect(read_plan(plan_path))
    assert [(r.state, r.iter) for r in reports] == [("done", 4), ("done", 4)]
    assert all(r.accuracy is not None and 0 <= r.accuracy <= 1 for r in reports)

    # Undo the end of b's run, as if it had been killed after iteration 2: it resumes there.
    for ext in ("caffemodel", "solverstate"):
        (tmp_path / "b" / f"snap_iter_4.{ext}").unlink()
    metrics = tmp_path / "b" / "metrics.jsonl"
    kept = [line for line in metrics.read_text().splitlines() if json.loads(line).get("kind") != "done"]
    metrics.write_text("\n".join(kept) + "\n")
    capsys.readouterr()
    assert main(run) == 0
    out = capsys.readouterr().out
    assert f"b: started, resuming from {tmp_path / 'b' / 'snap_iter_2.solverstate'}" in out
    assert "t: started" not in out  # finished: skipped
    assert (tmp_path / "b" / "snap_iter_4.caffemodel").is_file()


def test_a_net_whose_data_is_missing_fails_with_the_trainers_error_and_its_output_file(
        tmp_path: Path, capsys, monkeypatch) -> None:
    """The real trainer (forked from the preloaded server, whose last line in train.out is its CPU
    time) on a generated net whose data was never made: `grid run` and `grid status` say what
    the trainer said and where its output is.  An attempt that died before its first snapshot was
    there before: the grid restarts it with --force, and the failed restart leaves it as it was."""
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--treatment", "base", "--target", "A", "--arch", "demo", "--num-output", "4",
                 "--data", "nowhere", "--out", "runs"]) == 0
    net = Path("runs", "half0A")
    earlier = {"train.log": b"I0101 00:00:00.000000     1 solver.cpp:231] Iteration 1, loss = 2\n",
               "metrics.jsonl": b'{"kind": "train", "iter": 1, "loss": 2.0}\n'}
    for name, data in earlier.items():
        (net / name).write_bytes(data)
    capsys.readouterr()
    assert main(["grid", "run", "--plan", "runs/plan.json", "--device", "cpu"]) == 1
    source = Path("runs/half0A/../../nowhere/half0A_train").absolute()
    error = (f"layer 'data' (Data): {source}: data source does not exist "
             f"(trainer output: {net.absolute() / 'train.out'})")
    assert f"half0A: failed: {error}" in capsys.readouterr().out
    assert "--force" in netstate.read_status(net)["command"]
    assert {name: (net / name).read_bytes() for name in earlier} == earlier
    assert main(["grid", "status", "--plan", "runs/plan.json"]) == 0
    assert f"half0A  failed  1/3000  -         -     {error}" in capsys.readouterr().out  # iteration 1: the earlier attempt
