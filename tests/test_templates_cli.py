"""`python -m replicate generate`: options, bad input (exit 2, one line, nothing written), merging."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from replicate import cli
from replicate.cli import build_parser, main
from replicate.commands import demo, generate
from replicate.experiments.rundirs import default_solver_config
from replicate.invocation import command, interpreter
from replicate.io.prototxt import read_net_text, read_solver_text
from replicate.proto import caffe_pb2
from replicate.templates import load_arch

ROOT = Path(__file__).parent.parent


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_help_lists_every_option() -> None:
    done = subprocess.run([sys.executable, "-m", "replicate", "generate", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    for option in ("--treatment", "--all", "--split", "--n", "--target", "--per-class",
                   "--splits", "--treatments", "--ns", "--out", "--arch", "--num-output",
                   "--solver-config", "--data", "--single-net", "--val-loss", "--templates",
                   "--force"):
        assert option in done.stdout
    text = " ".join(done.stdout.split())  # argparse wraps the help to the terminal
    assert ("a relative DIR is taken from the current directory and written into each net as a path relative "
            "to the net's folder") in text


def _effective(argv: list[str]) -> dict[str, object]:
    """generate's options as parsed, the solver config as generate resolves its default."""
    options = vars(build_parser().parse_args(argv))
    options["solver_config"] = options["solver_config"] or default_solver_config(load_arch(options["arch"]), False)
    return {k: v for k, v in options.items() if k != "_run"}


def test_help_demo_example_is_what_demo_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # The demo's steps are this program's own commands: record them instead of running them (the
    # real run takes minutes and is tests/test_demo.py's), and compare its generate step.
    ran: list[list[str]] = []
    monkeypatch.setattr(cli, "main", lambda argv: ran.append(argv) or 0)
    monkeypatch.chdir(tmp_path)
    assert demo.run(build_parser().parse_args(["demo"])) == 0
    [demo_generate] = [argv for argv in ran if argv[0] == "generate"]
    doc = generate.__doc__ or ""
    command = doc[doc.index("Demo:") + len("Demo:"):].split("\n           (")[0]  # up to its comment
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:3] == ["python", "-m", "replicate"]
    assert _effective(words[3:]) == _effective(demo_generate)


def _bad_config(tmp: Path) -> list[str]:
    path = tmp / "bad.json"
    path.write_text('{"solver": {"max_iter": 10, "snapshot_prefix": "x", "base_lr": "fast"}}')
    return ["--solver-config", str(path)]


def _unknown_field(tmp: Path) -> list[str]:
    path = tmp / "unknown.json"
    path.write_text('{"solver": {"max_iter": 10, "snapshot_prefix": "x", "lr_warmup": 5}}')
    return ["--solver-config", str(path)]


def _bad_base(tmp: Path) -> list[str]:
    path = tmp / "base.json"
    path.write_text('{"solver": {"max_iter": 10, "snapshot_prefix": "x"}, "base": {"max_iter": "long"}}')
    return ["--solver-config", str(path)]


def _not_json(tmp: Path) -> list[str]:
    path = tmp / "broken.json"
    path.write_text('{"solver": {"max_iter": 10,')
    return ["--solver-config", str(path)]


def _templates(net_template: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        folder = tmp / "templates"
        folder.mkdir()
        (folder / "caffenet.prototxt.j2").write_text(net_template)
        (folder / "solver.prototxt.j2").write_text("")
        return ["--templates", str(folder)]
    return make


def _bad_arch(tmp: Path) -> list[str]:
    arch = json.loads((ROOT / "prototxt_templates/arch/demo.json").read_text())
    arch["conv2"]["group"] = 3  # does not divide 16 input channels
    path = tmp / "arch.json"
    path.write_text(json.dumps(arch))
    return ["--arch", str(path), "--num-output", "10"]


BAD = [
    (["--treatment", "AnC", "--n", "3"], "unknown treatment"),
    (["--treatment", "AnB", "--n", "8"], "n in 1..7"),
    (["--treatment", "AnB", "--n", "0"], "n in 1..7"),
    (["--treatment", "AnB+"], "treatment AnB+ needs --n, the layers it copies or freezes (1..7), e.g. --n 3"),
    (["--treatment", "random"], "treatment random needs --n"),
    (["--treatment", "reduced"], "treatment reduced needs --per-class K, the images per class (1..1300)"),
    (["--treatment", "AnB", "--n", "3", "--split", "4"], "split '4' does not exist"),
    (["--treatment", "BnB", "--n", "3", "--target", "C"], "target 'C'"),
    (["--treatment", "base", "--n", "3"], "takes no n"),
    (["--treatment", "random", "--n", "2", "--split", "0"], "takes no split"),
    (["--treatment", "reduced", "--per-class", "0"], "1..1300"),
    (["--treatment", "whole", "--per-class", "5"], "no images-per-class"),
    (["--all", "--splits", "7"], "split '7' does not exist"),
    (["--all", "--ns", "9"], "outside 1..7"),
    (["--all", "--treatments", "AnB,foo"], "unknown treatment 'foo'"),
    (["--all", "--n", "3"], "--n is an option of one net (--treatment); with --all use --splits/--treatments/--ns"),
    (["--all", "--split", "1", "--n", "3"], "--split, --n are options of one net (--treatment); with --all use"),
    (["--treatment", "AnB", "--n", "3", "--ns", "3"], "narrow --all"),
    (["--treatment", "AnB", "--n", "3", "--grid", "demo"], "--grid narrow --all"),
    (["--all", "--grid", "mine"], "unknown grid 'mine' (known: paper, demo)"),
    (["--all", "--grid", "demo", "--splits", "1", "--treatments", "AnB"], "no net of the demo grid matches"),
    (["--all", "--treatments", "random", "--splits", "0", "--ns", "1", "--arch", "demo"],
     "needs --num-output"),
    (["--treatment", "whole", "--num-output", "0"], "must be positive"),
    (["--treatment", "whole", "--arch", "resnet"], "unknown architecture 'resnet'"),
    (["--treatment", "whole", "--solver-config", "fast"], "unknown solver config 'fast'"),
    (["--treatment", "whole", "--solver-config", "/nonexistent/s.json"], "cannot read"),
    (_bad_config, "solver.base_lr: expected a number, got 'fast'"),
    (_unknown_field, "not a SolverParameter field"),
    (_bad_base, "base.max_iter: expected an integer"),
    (_not_json, "not valid JSON"),
    (_templates("name: {{ arch.net_name | pb }\n"), "caffenet.prototxt.j2:1"),
    (_templates("layer { name: {{ arch.net_name }} }\n"), "rendered train view"),
    (_bad_arch, "group 3 does not divide"),
    (["--treatment", "whole", "--templates", "/nonexistent/templates"], "directory not found"),
]


@pytest.mark.parametrize("args,reason", BAD)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args, reason: str) -> None:
    if callable(args):
        args = [*args(tmp_path), "--treatment", "whole"]
    out = tmp_path / "runs"
    assert main(["generate", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert reason.lower() in err.lower()
    assert not out.exists()


def test_existing_files_are_kept_unless_forced(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "--treatment", "base", "--split", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    before = _files(tmp_path)
    assert main(args) == 0  # same content: nothing to refuse
    assert _files(tmp_path) == before
    capsys.readouterr()
    assert main([*args, "--data", "/elsewhere"]) == 2
    assert "--force" in capsys.readouterr().err
    assert _files(tmp_path) == before
    assert main([*args, "--data", "/elsewhere", "--force"]) == 0
    assert "--force rewrote" not in capsys.readouterr().err  # nothing trained there yet
    net = read_net_text(tmp_path / "half1B" / "train.prototxt")
    assert net.layer[0].data_param.source == "/elsewhere/half1B_train"
    # Over a net that trained from the earlier files, --force says what it did.
    (tmp_path / "half1B" / "metrics.jsonl").write_text('{"kind": "done", "iter": 450000}\n')
    assert main([*args, "--data", "/again", "--force"]) == 0
    err = capsys.readouterr().err
    assert ("warning: --force rewrote the files of 1 net(s) that hold a run trained from the earlier "
                          "ones (half1B): their logs and snapshots now sit beside other settings") in err
    assert f"{tmp_path}/NET/solver.prototxt --force" in err
    assert main([*args, "--data", "/again", "--force"]) == 0  # nothing rewritten: nothing said
    assert "--force rewrote" not in capsys.readouterr().err


def test_malformed_existing_plan_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text("[1, 2]")
    assert main(["generate", "--treatment", "whole", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "netbase").exists()


def test_plans_merge_in_dependency_order(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--treatment", "AnB+", "--n", "5", "--target", "A",
                 "--out", str(tmp_path)]) == 0
    assert "starts from half0B" in capsys.readouterr().err
    assert main(["generate", "--treatment", "base", "--out", str(tmp_path)]) == 0
    nets = json.loads((tmp_path / "plan.json").read_text())["nets"]
    assert [(e["name"], e["depends_on"]) for e in nets] == [
        ("half0B", None), ("transfer-ft0B0A_1_5", "half0B")]
    assert nets[1]["weights"] == "../half0B/caffe_imagenet_train_iter_450000.caffemodel"


def test_default_names_follow_the_paper(tmp_path: Path) -> None:
    cases = {
        ("--treatment", "AnB", "--n", "3"): "transfer0A0B_1_3",
        ("--treatment", "AnB", "--n", "3", "--target", "A"): "transfer0B0A_1_3",
        ("--treatment", "BnB", "--n", "2"): "transfer0B0B_1_2",
        ("--treatment", "BnB+", "--n", "2", "--target", "A"): "transfer-ft0A0A_1_2",
        ("--treatment", "AnB", "--n", "7", "--split", "natman"): "transfernatmanAB_1_7",
        ("--treatment", "AnB", "--n", "7", "--split", "natman", "--target", "A"):
            "transfernatmanBA_1_7",
        ("--treatment", "base", "--split", "natman", "--target", "A"): "halfnatmanA",
        ("--treatment", "random", "--n", "4"): "nolearn_1_4",
        ("--treatment", "whole"): "netbase",
        ("--treatment", "reduced", "--per-class", "5"): "reduced-0005",
    }
    for args, name in cases.items():
        assert main(["generate", *args, "--out", str(tmp_path)]) == 0
        assert json.loads((tmp_path / name / "manifest.json").read_text())["name"] == name


def _phase_view(net: caffe_pb2.NetParameter, phase: int) -> list[caffe_pb2.LayerParameter]:
    kept = []
    for layer in net.layer:
        if all(rule.phase == phase for rule in layer.include):
            copy = caffe_pb2.LayerParameter()
            copy.CopyFrom(layer)
            copy.ClearField("include")
            kept.append(copy)
    return kept


def _without_learning(layers: list[caffe_pb2.LayerParameter]) -> list[caffe_pb2.LayerParameter]:
    for layer in layers:
        layer.ClearField("param")
        for field in ("convolution_param", "inner_product_param"):
            if layer.HasField(field):
                getattr(layer, field).ClearField("weight_filler")
                getattr(layer, field).ClearField("bias_filler")
    return layers


def test_single_net_is_train_and_val_by_phase(tmp_path: Path) -> None:
    split, single = tmp_path / "split", tmp_path / "single"
    args = ["generate", "--treatment", "AnB", "--n", "4", "--val-loss"]
    assert main([*args, "--out", str(split)]) == 0
    assert main([*args, "--out", str(single), "--single-net"]) == 0
    folder = single / "transfer0A0B_1_4"
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json", "net.prototxt", "solver.prototxt"]
    solver = read_solver_text(folder / "solver.prototxt")
    assert solver.net == "net.prototxt" and not solver.train_net and not solver.test_net
    net = read_net_text(folder / "net.prototxt")
    train = read_net_text(split / "transfer0A0B_1_4" / "train.prototxt")
    val = read_net_text(split / "transfer0A0B_1_4" / "val.prototxt")
    assert _phase_view(net, caffe_pb2.TRAIN) == list(train.layer)
    assert _without_learning(_phase_view(net, caffe_pb2.TEST)) == list(val.layer)


def test_val_loss_adds_the_2014_second_output(tmp_path: Path) -> None:
    assert main(["generate", "--treatment", "whole", "--val-loss", "--out", str(tmp_path)]) == 0
    val = read_net_text(tmp_path / "netbase" / "val.prototxt")
    assert [(l.type, list(l.bottom), list(l.top)) for l in val.layer[-3:]] == [
        ("Softmax", ["fc8"], ["prob"]),
        ("Accuracy", ["prob", "label"], ["accuracy"]),
        ("MultinomialLogisticLoss", ["prob", "label"], ["loss"]),
    ]
    assert main(["generate", "--treatment", "whole", "--out", str(tmp_path / "plain")]) == 0
    plain = read_net_text(tmp_path / "plain" / "netbase" / "val.prototxt")
    assert [l.type for l in plain.layer[-2:]] == ["Softmax", "Accuracy"]


def test_num_output_and_relative_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--treatment", "base", "--split", "2", "--target", "A",
                 "--num-output", "500", "--data", "store", "--out", "runs"]) == 0
    net = read_net_text(tmp_path / "runs" / "half2A" / "train.prototxt")
    assert net.layer[-2].inner_product_param.num_output == 500
    source = net.layer[0].data_param.source
    assert source == "../../store/half2A_train"
    resolved = os.path.normpath(tmp_path / "runs" / "half2A" / source)
    assert resolved == str(tmp_path / "store" / "half2A_train")


def test_demo_grid(tmp_path: Path) -> None:
    """The demo's nets (`--grid demo`, 41 of the paper's) all train the demo config's one
    schedule, as the paper's did; a copying net loads the base's last snapshot."""
    assert main(["generate", "--all", "--grid", "demo", "--arch", "demo", "--num-output", "10",
                 "--out", str(tmp_path)]) == 0
    nets = json.loads((tmp_path / "plan.json").read_text())["nets"]
    assert len(nets) == 4 + 1 + 7 + 7 + 14 + 4 + 4
    assert {e["arch"] for e in nets} == {"demo"} and {e["max_iter"] for e in nets} == {3000}
    for e in nets:
        solver = read_solver_text(tmp_path / e["name"] / "solver.prototxt")
        assert (solver.max_iter, solver.stepsize) == (3000, 2100)
        if e["weights"]:
            assert e["weights"] == f"../{e['depends_on']}/caffe_imagenet_train_iter_3000.caffemodel"
    manifest = json.loads((tmp_path / "transfer0A0B_1_2" / "manifest.json").read_text())
    assert manifest["solver_config"] == "demo"
    net = read_net_text(tmp_path / "transfer0A0B_1_2" / "train.prototxt")
    assert net.layer[0].transform_param.crop_size == 24
    assert net.layer[0].transform_param.scale == 0.015625
    assert net.layer[-2].inner_product_param.num_output == 10


def test_a_config_base_section_trains_the_base_nets_their_own_schedule(tmp_path: Path) -> None:
    """A solver config's "base" fields replace its solver's for base nets and netbase (so that
    they can converge before anything copies them); a copying net loads the base's last snapshot,
    not one at its own max_iter."""
    config = tmp_path / "bases_longer.json"
    config.write_text(json.dumps({"solver": {"max_iter": 100, "stepsize": 70, "snapshot": 100,
                                             "snapshot_prefix": "caffe_imagenet_train"},
                                  "base": {"max_iter": 300, "stepsize": 210, "snapshot": 300}}))
    out = tmp_path / "runs"
    assert main(["generate", "--all", "--arch", "demo", "--num-output", "10", "--splits", "0",
                 "--treatments", "base,BnB+,AnB,whole", "--ns", "2", "--solver-config", str(config),
                 "--out", str(out)]) == 0
    nets = json.loads((out / "plan.json").read_text())["nets"]
    base = {"half0A", "half0B", "netbase"}
    assert {e["name"] for e in nets} == base | {"transfer-ft0A0A_1_2", "transfer0A0B_1_2", "transfer0B0A_1_2"}
    for e in nets:
        solver = read_solver_text(out / e["name"] / "solver.prototxt")
        assert (e["max_iter"], solver.max_iter, solver.stepsize) == (
            (300, 300, 210) if e["name"] in base else (100, 100, 70))
        if e["weights"]:
            assert e["weights"] == f"../{e['depends_on']}/caffe_imagenet_train_iter_300.caffemodel"
    assert json.loads((out / "half0A" / "manifest.json").read_text())["solver_config"] == f"{config} (base nets)"


def test_missing_data_is_warned_with_how_to_make_it_and_full_scale_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--treatment", "AnB", "--n", "3", "--out", "runs"]) == 0
    err = capsys.readouterr().err
    assert ("warning: --data data does not exist: the nets read data/half0B_train, "
            "data/half0B_valid, data/half0A_train/mean.binaryproto.") in err
    assert f"{interpreter()} -m replicate data prepare ... --out data" in err and f"{command('demo')}`" in err
    assert ("the paper's full-scale nets (CaffeNet, batch 256, 450,000 iterations each), meant for GPUs; "
            f"`{command('demo')}` runs the treatments at CPU scale in minutes.") in err
    # Once the sets exist (a view, an LMDB), nothing is said about them; the demo architecture is
    # no full-scale net.  A set folder without its view is still missing.
    (tmp_path / "data" / "half0B_train").mkdir(parents=True)
    (tmp_path / "data" / "half0B_train" / "view.json").write_text("{}")
    (tmp_path / "data" / "half0B_valid").mkdir()
    (tmp_path / "data" / "half0B_valid" / "data.mdb").write_bytes(b"")
    (tmp_path / "data/half0B_train/mean.binaryproto").write_bytes(b"")
    demo_base = ["generate", "--treatment", "base", "--arch", "demo", "--num-output", "10", "--out", "demo"]
    assert main(demo_base) == 0
    assert capsys.readouterr().err == ""
    (tmp_path / "data/half0B_train/mean.binaryproto").unlink()
    (tmp_path / "data/half0B_valid/data.mdb").unlink()
    assert main(demo_base) == 0
    assert capsys.readouterr().err.startswith(
        "warning: 2 data file(s) are missing: the nets read data/half0B_valid, data/half0B_train/mean.binaryproto.")


def test_odd_data_paths_survive_quoting(tmp_path: Path) -> None:
    root = '/data/we"ird \\ dir/ü'
    assert main(["generate", "--treatment", "whole", "--data", root, "--out", str(tmp_path)]) == 0
    net = read_net_text(tmp_path / "netbase" / "train.prototxt")
    assert net.layer[0].data_param.source == f"{root}/whole_train"
    assert net.layer[0].transform_param.mean_file == f"{root}/whole_train/mean.binaryproto"
